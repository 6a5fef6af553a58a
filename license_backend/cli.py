"""`license-backend`: serve, migrate, and the vendor's admin commands."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import BinaryIO, TypeVar

import asyncpg

from license_backend.app import MissingEncryptionKey, create_app
from license_backend.auth import ADMIN_TOKEN_PREFIX, hash_token
from license_backend.catalog.importer import Imported, Refused, import_licenses
from license_backend.catalog.models import LicenseCreate
from license_backend.catalog.service import Catalog
from license_backend.settings import LbsSettings
from license_backend.signing.keyring import KeyRing
from shared.cli import (
    add_settings_flags,
    emit,
    run_service,
    run_until_stopped,
    secret,
    settings_from_args,
)
from shared.db import Conn
from shared.logging import configure_logging
from shared.migrations import apply_migrations

MIGRATIONS = Path(__file__).with_name("migrations")
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `license-backend`."""
    common = argparse.ArgumentParser(add_help=False)
    add_settings_flags(common, LbsSettings)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser = argparse.ArgumentParser(prog="license-backend", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations")
    sub.add_parser("migrate", parents=[common], help="apply migrations and exit")
    token = sub.add_parser("admin-token", help="admin API tokens").add_subparsers(
        dest="action", required=True
    )
    create_token = token.add_parser("create", parents=[common], help="print a new admin token")
    create_token.add_argument("--name", required=True)
    lic = sub.add_parser("license", help="catalog licenses").add_subparsers(
        dest="action", required=True
    )
    create = lic.add_parser("create", parents=[common], help="create a license")
    create.add_argument("--owner", required=True)
    create.add_argument("--organization", required=True)
    create.add_argument("--professional", type=int, required=True)
    create.add_argument("--analyzer", type=int, required=True)
    create.add_argument("--tokens", type=int, default=0)
    create.add_argument("--analyzer-minutes", type=int, default=0)
    create.add_argument("--valid-to", type=date.fromisoformat, default=None)
    create.add_argument(
        "--max-activations", type=int, default=1, help="sites the license may be active at"
    )
    imp = lic.add_parser(
        "import",
        parents=[common],
        help="create licenses from JSON lines, one create body a line",
        description=(
            "Create a license per line of FILE (JSON lines; '-' reads stdin), each line the"
            " body of POST /v1/admin/licenses. Prints line, serial, control number and key per"
            " license imported (JSON lines with --json) once its batch is committed; refused"
            " lines are reported with their number and reason, the others still imported."
            " Exit status 1 when any line was not imported."
        ),
    )
    imp.add_argument("file", help="JSON lines file, or - for standard input")
    imp.add_argument(
        "--batch-size",
        type=int,
        default=500,
        help="licenses created per transaction (all of a batch or none)",
    )
    imp.add_argument(
        "--from-line", type=int, default=1, help="skip the lines before this one (to resume)"
    )
    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="action", required=True)
    keys.add_parser("rotate", parents=[common], help="add a new current signing key")
    root = keys.add_parser(
        "root", parents=[common], help="print the root public key (the sites' trust anchor)"
    )
    root.add_argument("--file", type=Path, default=None, help="write it to this file instead")
    keys.add_parser(
        "rotate-root", parents=[common], help="add a new root key certified by the current one"
    )
    return parser


async def create_admin_token(settings: LbsSettings, name: str) -> str:
    """Store the hash of a new admin token and return the token."""
    token = ADMIN_TOKEN_PREFIX + secrets.token_urlsafe(32)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute(
            "INSERT INTO admin_tokens (id, name, token_hash) VALUES ($1, $2, $3)",
            uuid.uuid4(),
            name,
            hash_token(token),
        )
    finally:
        await conn.close()
    return token


async def _keyring(settings: LbsSettings, conn: Conn) -> KeyRing:
    if settings.key_encryption_key is None:
        raise MissingEncryptionKey()
    keyring = KeyRing(secret(settings.key_encryption_key).encode(), settings.public_url)
    await keyring.ensure_key(conn)
    return keyring


async def _run(args: argparse.Namespace, settings: LbsSettings) -> int:
    if args.command == "serve":
        app = create_app(settings)
        if not args.no_migrate:
            await apply_migrations(settings.database_url, MIGRATIONS)
        await run_until_stopped(app, settings.host, settings.port, reuse_port=settings.reuse_port)
        return 0
    await apply_migrations(settings.database_url, MIGRATIONS)
    if args.command == "migrate":
        if settings.key_encryption_key is not None:
            # The root key is made here when it can be: the trust anchor exists before the
            # first start, so `keys root` may run against a database no backend served yet.
            await _with_keyring(settings, _loaded)
        emit({"migrated": True}, args.json, "migrations applied")
    elif args.command == "admin-token":
        token = await create_admin_token(settings, args.name)
        emit({"name": args.name, "token": token}, args.json, token)
    elif args.command == "keys":
        await _keys(args, settings)
    elif args.command == "license" and args.action == "import":
        return await _import_licenses(args, settings)
    elif args.command == "license":
        await _create_license(args, settings)
    return 0


async def _with_keyring(
    settings: LbsSettings, action: Callable[[KeyRing, Conn], Awaitable[T]]
) -> T:
    """Run `action` on the backend's key ring (made complete: root and signing key)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        keyring = await _keyring(settings, conn)
        return await action(keyring, conn)
    finally:
        await conn.close()


async def _keys(args: argparse.Namespace, settings: LbsSettings) -> None:
    if args.action == "rotate":
        kid = await _with_keyring(settings, lambda keyring, conn: keyring.rotate(conn))
        emit({"kid": kid}, args.json, f"new current signing key: {kid}")
    elif args.action == "rotate-root":
        kid = await _with_keyring(settings, lambda keyring, conn: keyring.rotate_root(conn))
        emit({"kid": kid}, args.json, f"new current root key: {kid}")
    elif args.action == "root":
        keyring = await _with_keyring(settings, _loaded)
        text = json.dumps(keyring.root_jwk())
        if args.file is None:
            print(text)
        else:
            args.file.write_text(text + "\n")
            emit(
                {"kid": keyring.root_jwk()["kid"], "file": str(args.file)},
                args.json,
                f"root key {keyring.root_jwk()['kid']} written to {args.file}",
            )


async def _loaded(keyring: KeyRing, conn: Conn) -> KeyRing:
    return keyring


@asynccontextmanager
async def _catalog(settings: LbsSettings) -> AsyncIterator[Catalog]:
    """The catalog on a small pool of its own, for one command."""
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            keyring = await _keyring(settings, conn)
        yield Catalog(
            pool,
            keyring,
            issuer=settings.public_url,
            ttl=settings.definition_ttl_seconds,
            secret=secret(settings.control_secret),
        )
    finally:
        await pool.close()


async def _create_license(args: argparse.Namespace, settings: LbsSettings) -> None:
    body = LicenseCreate(
        owner=args.owner,
        organization=args.organization,
        professional=args.professional,
        analyzer=args.analyzer,
        tokens=args.tokens,
        analyzer_minutes=args.analyzer_minutes,
        valid_to=args.valid_to,
        max_activations=args.max_activations,
    )
    async with _catalog(settings) as catalog:
        created = await catalog.create(body)
    text = f"serial:  {created.number}\ncontrol: {created.control}\nkey:     {created.key}"
    emit(created.dump(), args.json, text)


async def _import_licenses(args: argparse.Namespace, settings: LbsSettings) -> int:
    if not 1 <= args.batch_size <= 10_000 or args.from_line < 1:
        print(
            "error: --batch-size must be in [1, 10000] and --from-line at least 1", file=sys.stderr
        )
        return 2
    stream: BinaryIO = args.stream
    async with _catalog(settings) as catalog:
        summary = await import_licenses(
            catalog,
            stream,
            batch_size=args.batch_size,
            from_line=args.from_line,
            report=lambda item: _print_imported(item, args.json),
        )
    done: dict[str, object] = {"imported": summary.imported, "refused": summary.refused}
    if summary.stopped_at is not None:
        done |= {"stoppedAtLine": summary.stopped_at, "reason": summary.stop_reason}
    if args.json:
        print(json.dumps(done), flush=True)
    else:
        text = f"imported {summary.imported} license(s), refused {summary.refused} line(s)"
        if summary.stopped_at is not None:
            text += (
                f"; stopped ({summary.stop_reason}): nothing from line {summary.stopped_at} on"
                f" was imported (rerun with --from-line {summary.stopped_at})"
            )
        print(text, file=sys.stderr)
    return 0 if summary.refused == 0 and summary.stopped_at is None else 1


def _print_imported(item: Imported | Refused, as_json: bool) -> None:
    if isinstance(item, Refused):
        if as_json:
            print(json.dumps({"line": item.line, "error": item.reason}))
        else:
            print(f"line {item.line}: {item.reason}", file=sys.stderr)
        return
    lic = item.license
    if as_json:
        print(
            json.dumps(
                {"line": item.line, "number": lic.number, "control": lic.control, "key": lic.key}
            )
        )
    else:
        print(f"{item.line}\t{lic.number}\t{lic.control}\t{lic.key}")


def main(argv: list[str] | None = None) -> int:
    """Run the `license-backend` command."""
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(LbsSettings, args)
        importing = args.command == "license" and args.action == "import"
        # `keys root` prints the trust anchor and `license import` the keys made on stdout;
        # log lines must not mix into them.
        configure_logging(
            settings.log_format,
            stream=sys.stderr if args.command == "keys" or importing else None,
        )
        if importing:
            # Opened here, before the event loop runs: reading it is the command's whole job.
            with open(0 if args.file == "-" else args.file, "rb", closefd=args.file != "-") as f:
                args.stream = f
                return run_service(_run(args, settings))
        return run_service(_run(args, settings))
    except MissingEncryptionKey as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
