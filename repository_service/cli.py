"""`repository-service`: serve, migrate, and mint dev caller tokens."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import asyncpg

from repository_service.app import create_app
from repository_service.bootstrap import split_identity
from repository_service.lbs.client import read_pinned_keys, read_trust_roots
from repository_service.settings import QrsSettings
from repository_service.tls import server_ssl_context
from shared import jose
from shared.cli import (
    add_settings_flags,
    emit,
    run_service,
    run_until_stopped,
    settings_from_args,
)
from shared.logging import configure_logging
from shared.migrations import apply_migrations

MIGRATIONS = Path(__file__).with_name("migrations")
DEV_ISSUER = "repository-service-dev"
_TTL = re.compile(r"^(\d+)([smhd]?)$")


def parse_ttl(text: str) -> int:
    """Parse `90`, `90s`, `15m`, `1h` or `2d` into seconds."""
    match = _TTL.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 1h, 15m, 90s)")
    scale = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return int(match.group(1)) * scale


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of `repository-service`."""
    common = argparse.ArgumentParser(add_help=False)
    add_settings_flags(common, QrsSettings)
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser = argparse.ArgumentParser(prog="repository-service", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", parents=[common], help="run the HTTP service")
    serve.add_argument("--no-migrate", action="store_true", help="do not apply migrations")
    sub.add_parser("migrate", parents=[common], help="apply migrations and exit")
    token = sub.add_parser("token", parents=[common], help="mint a dev caller token")
    token.add_argument("--user", required=True, help=r"DIR\user")
    token.add_argument("--ttl", type=parse_ttl, default=3600, help="lifetime (default 1h)")
    return parser


def mint_token(settings: QrsSettings, identity: str, ttl: int) -> str:
    """Sign a caller token with the dev issuer key."""
    if settings.dev_issuer_key_file is None:
        raise SystemExit("error: QRS_DEV_ISSUER_KEY_FILE is not set; dev tokens are disabled")
    directory, user_id = split_identity(identity)
    key = jose.private_key_from_pem(settings.dev_issuer_key_file.read_bytes())
    now = int(time.time())
    issuer = settings.auth_issuers[0] if settings.auth_issuers else DEV_ISSUER
    claims = {
        "iss": issuer,
        "aud": settings.auth_audience,
        "iat": now,
        "exp": now + ttl,
        "userDirectory": directory,
        "userId": user_id,
    }
    return jose.sign(claims, key, typ=jose.CALLER_TYP)


def trust_problem(settings: QrsSettings) -> str | None:
    """Say why the site could not tell the vendor's keys from anyone else's, if it could not."""
    if settings.lbs_jwks_file is not None:
        name, path, read = "QRS_LBS_JWKS_FILE", settings.lbs_jwks_file, read_pinned_keys
    elif settings.lbs_trust_root_file is not None:
        name, path, read = "QRS_LBS_TRUST_ROOT_FILE", settings.lbs_trust_root_file, read_trust_roots
    else:
        return (
            "neither QRS_LBS_TRUST_ROOT_FILE nor QRS_LBS_JWKS_FILE is set, so the site would"
            " trust any key set served at QRS_LBS_URL. Set QRS_LBS_TRUST_ROOT_FILE to the"
            " vendor's root public key (`license-backend keys root`), or QRS_LBS_JWKS_FILE to"
            " pinned signing keys."
        )
    try:
        read(path)
    except (OSError, ValueError) as exc:
        return f"{name} ({path}) is not usable: {exc}"
    return None


async def _run(args: argparse.Namespace, settings: QrsSettings) -> int:
    if args.command == "serve":
        app = create_app(settings)
        if not args.no_migrate:
            await apply_migrations(settings.database_url, MIGRATIONS)
        await run_until_stopped(app, settings.host, settings.port, server_ssl_context(settings))
    elif args.command == "migrate":
        await apply_migrations(settings.database_url, MIGRATIONS)
        emit({"migrated": True}, args.json, "migrations applied")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the `repository-service` command."""
    args = build_parser().parse_args(argv)
    settings = settings_from_args(QrsSettings, args)
    if args.command == "token":
        try:
            token = mint_token(settings, args.user, args.ttl)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        emit({"token": token, "user": args.user, "ttlSeconds": args.ttl}, args.json, token)
        return 0
    if args.command == "serve" and (problem := trust_problem(settings)):
        print(f"error: {problem}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    try:
        return run_service(_run(args, settings))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
