"""`licensing up`: the whole stack on one machine for development and demos.

Starts an embedded Postgres (or uses --database-url), migrates both databases, runs the
license backend and the repository service in this process, creates a demo license,
applies its signed key to the site, and prints tokens and example calls. Ctrl-C stops all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import signal
import ssl
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web
from cryptography.fernet import Fernet

from license_backend.app import create_app as create_lbs
from license_backend.cli import MIGRATIONS as LBS_MIGRATIONS
from license_backend.keys import KEYRING as LBS_KEYRING
from license_backend.settings import LbsSettings
from repository_service.app import create_app as create_qrs
from repository_service.cli import DEV_ISSUER, mint_token
from repository_service.cli import MIGRATIONS as QRS_MIGRATIONS
from repository_service.settings import QrsSettings
from repository_service.tls import SERVICE_ACCOUNT_NAME as SERVICE_ACCOUNT
from repository_service.tls import server_ssl_context
from shared import jose
from shared.cli import run_service
from shared.devcerts import HOSTS, DevCertificates, make_dev_certificates, qsapi_example
from shared.embedded_pg import EmbeddedPostgres, free_port
from shared.logging import configure_logging
from shared.migrations import apply_migrations

ADMIN_USER = "DEMO\\admin"
XRFKEY = "0123456789abcdef"


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of `licensing`."""
    parser = argparse.ArgumentParser(prog="licensing", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole stack until Ctrl-C")
    up.add_argument("--data-dir", type=Path, default=Path(".licensing"))
    up.add_argument(
        "--database-url", default=None, help="use this Postgres server instead of the embedded one"
    )
    up.add_argument("--lbs-port", type=int, default=9200)
    up.add_argument("--qrs-port", type=int, default=4242)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--poll-interval", type=float, default=600.0)
    up.add_argument(
        "--tls",
        action="store_true",
        help="serve the repository service over HTTPS with dev certificates (DATA_DIR/certs)",
    )
    return parser


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _secret_file(path: Path, make: Any) -> str:
    """Read a generated secret, making it on first use (mode 0600)."""
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


async def _ensure_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(server_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(server_url, name)


class DevStack:
    """The running pieces of `licensing up`."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.data_dir: Path = args.data_dir.resolve()
        self.postgres: EmbeddedPostgres | None = None
        self.runners: list[web.AppRunner] = []
        self.certs: DevCertificates | None = None
        self.client_tls: ssl.SSLContext | bool = True

    async def start(self) -> dict[str, str]:
        """Start everything and return what to print."""
        await asyncio.to_thread(self.data_dir.mkdir, parents=True, exist_ok=True)
        server_url = self.args.database_url or await asyncio.to_thread(self._start_postgres)
        lbs_db = await _ensure_database(server_url, "lbs")
        qrs_db = await _ensure_database(server_url, "qrs")
        await apply_migrations(lbs_db, LBS_MIGRATIONS)
        await apply_migrations(qrs_db, QRS_MIGRATIONS)
        admin_token = _secret_file(
            self.data_dir / "lbs-admin-token",
            lambda: "lbsa_dev_" + Fernet.generate_key().decode()[:32],
        )
        host = self.args.host
        lbs_url = f"http://{host}:{self.args.lbs_port}"
        trust_root = await self._start_backend(lbs_db, lbs_url, admin_token)
        qrs_settings = await self._start_site(qrs_db, lbs_url, trust_root)
        qrs_token = mint_token(qrs_settings, ADMIN_USER, 12 * 3600)
        qrs_url = f"{'https' if self.args.tls else 'http'}://{host}:{self.args.qrs_port}"
        demo = await self._demo_license(lbs_url, admin_token, qrs_url, qrs_token)
        issuer_pem = qrs_settings.dev_issuer_key_file
        assert issuer_pem is not None
        return {
            "lbs_url": lbs_url,
            "qrs_url": qrs_url,
            "admin_token": admin_token,
            "qrs_token": qrs_token,
            "token_command": token_command(self.args.data_dir / issuer_pem.name),
            **demo,
            **self._tls_info(host),
        }

    async def _start_backend(self, database_url: str, lbs_url: str, admin_token: str) -> Path:
        """Serve the license backend; return the file of its root key, the site's trust anchor."""
        lbs_settings = LbsSettings.model_validate(
            dict(
                database_url=database_url,
                host=self.args.host,
                port=self.args.lbs_port,
                public_url=lbs_url,
                admin_tokens=admin_token,
                key_encryption_key=_secret_file(
                    self.data_dir / "lbs-key-encryption-key", lambda: Fernet.generate_key().decode()
                ),
                control_secret=_secret_file(
                    self.data_dir / "lbs-control-secret", lambda: Fernet.generate_key().decode()
                ),
            )
        )
        lbs_app = create_lbs(lbs_settings)
        await self._serve(lbs_app, self.args.host, self.args.lbs_port)
        # The site trusts this backend's root key and nothing else, as a real site would.
        trust_root = self.data_dir / "lbs-trust-root.json"
        trust_root.write_text(json.dumps(lbs_app[LBS_KEYRING].root_jwk()) + "\n")
        return trust_root

    def _dev_issuer(self) -> tuple[Path, Path]:
        """The dev caller-token issuer's key (made once) and the key set the site trusts."""
        issuer_pem = self.data_dir / "dev-issuer.pem"
        if not issuer_pem.exists():
            issuer_pem.write_bytes(jose.private_key_to_pem(jose.generate_private_key()))
            issuer_pem.chmod(0o600)
        issuer_key = jose.private_key_from_pem(issuer_pem.read_bytes())
        jwks_file = self.data_dir / "callers.jwks.json"
        jwks_file.write_text(json.dumps(jose.jwks([issuer_key.public_key()])))
        return issuer_pem, jwks_file

    async def _start_site(self, database_url: str, lbs_url: str, trust_root: Path) -> QrsSettings:
        """Serve the repository service (over HTTPS with `--tls`); return its settings."""
        host = self.args.host
        issuer_pem, jwks_file = self._dev_issuer()
        roles = {ADMIN_USER: ["RootAdmin"]}
        tls: dict[str, Any] = {}
        if self.args.tls:
            self.certs = await asyncio.to_thread(
                make_dev_certificates, self.data_dir / "certs", (*HOSTS, host)
            )
            self.client_tls = ssl.create_default_context(cafile=self.certs.root)
            tls = {
                "tls_cert_file": self.certs.server,
                "tls_key_file": self.certs.server_key,
                "client_ca_file": self.certs.root,
            }
            # The platform's service account, which qsAPI acts as by default.
            roles[SERVICE_ACCOUNT] = ["RootAdmin"]
        qrs_settings = QrsSettings.model_validate(
            dict(
                **tls,
                database_url=database_url,
                host=host,
                port=self.args.qrs_port,
                lbs_url=lbs_url,
                lbs_trust_root_file=trust_root,
                auth_jwks_file=jwks_file,
                # The issuer `repository-service token` signs as, so that its tokens work here.
                auth_issuers=DEV_ISSUER,
                dev_issuer_key_file=issuer_pem,
                bootstrap_roles=roles,
                poll_interval_seconds=self.args.poll_interval,
            )
        )
        await self._serve(
            create_qrs(qrs_settings), host, self.args.qrs_port, server_ssl_context(qrs_settings)
        )
        return qrs_settings

    def _tls_info(self, host: str) -> dict[str, str]:
        """Return the CA to trust and the client example to print, when serving HTTPS."""
        if self.certs is None:
            return {}
        example = qsapi_example(self.certs, host, self.args.qrs_port)
        return {"ca": str(self.certs.root), "tls": example}

    def _start_postgres(self) -> str:
        port_file = self.data_dir / "postgres.port"
        port = int(port_file.read_text()) if port_file.exists() else free_port()
        port_file.write_text(str(port))
        self.postgres = EmbeddedPostgres(self.data_dir / "postgres", port=port)
        try:
            self.postgres.start()
        except RuntimeError:
            # The remembered port may be taken now: use a fresh one.
            self.postgres.port = free_port()
            port_file.write_text(str(self.postgres.port))
            self.postgres.start()
        return self.postgres.url

    async def _serve(
        self, app: web.Application, host: str, port: int, tls: ssl.SSLContext | None = None
    ) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=3)
        await runner.setup()
        self.runners.append(runner)
        await web.TCPSite(runner, host, port, ssl_context=tls).start()

    async def _demo_license(
        self, lbs_url: str, admin_token: str, qrs_url: str, qrs_token: str
    ) -> dict[str, str]:
        demo_file = self.data_dir / "demo-license.json"
        connector = aiohttp.TCPConnector(ssl=self.client_tls)
        async with aiohttp.ClientSession(connector=connector) as http:
            if not demo_file.exists():
                body = {
                    "owner": "Demo Owner",
                    "organization": "Demo Organization",
                    "professional": 10,
                    "analyzer": 20,
                    "tokens": 50,
                    "analyzerMinutes": 6000,
                }
                async with http.post(
                    f"{lbs_url}/v1/admin/licenses",
                    json=body,
                    headers={"Authorization": f"Bearer {admin_token}"},
                ) as r:
                    r.raise_for_status()
                    demo_file.write_text(json.dumps(await r.json()))
            demo = json.loads(demo_file.read_text())
            headers = {"Authorization": f"Bearer {qrs_token}", "X-Qlik-Xrfkey": XRFKEY}
            params = {"xrfkey": XRFKEY}
            async with http.get(f"{qrs_url}/qrs/license", headers=headers, params=params) as r:
                licensed = r.status == 200
            if not licensed:
                async with http.post(
                    f"{qrs_url}/qrs/license",
                    json={"key": demo["key"]},
                    headers=headers,
                    params=params,
                ) as r:
                    if r.status != 201:
                        raise RuntimeError(f"applying the demo key failed: {await r.text()}")
        return {"serial": demo["number"], "control": demo["control"]}

    async def stop(self) -> None:
        """Stop the services, then the database."""
        for runner in reversed(self.runners):
            await runner.cleanup()
        if self.postgres is not None:
            await asyncio.to_thread(self.postgres.stop)


def token_command(issuer_pem: Path, user: str = ADMIN_USER) -> str:
    """Return the shell command that mints another caller token this stack trusts."""
    return (
        f"QRS_DEV_ISSUER_KEY_FILE={shlex.quote(str(issuer_pem))}"
        f" repository-service token --user {shlex.quote(user)}"
    )


def _qrs_curl(base: str, token: str, path: str, ca: str | None = None) -> str:
    headers = f"-H 'X-Qlik-Xrfkey: {XRFKEY}' -H 'Authorization: Bearer {token}'"
    trust = f"--cacert '{ca}' " if ca else ""
    return f"curl -s {trust}{headers} '{base}{path}?xrfkey={XRFKEY}'"


def banner(info: dict[str, str]) -> str:
    """Return the text printed once the stack is up."""
    qrs, lbs, tok = info["qrs_url"], info["lbs_url"], info["qrs_token"]
    ca = info.get("ca")
    return f"""
Site licensing is up.

  License backend     {lbs}    admin token: {info["admin_token"]}
  Repository service  {qrs}    token for DEMO\\admin (RootAdmin, 12 h):
    {tok}
  Admin page          {qrs}/qmc/license#token={tok}
  More tokens         {info["token_command"]}
  Demo license        serial {info["serial"]}  control {info["control"]}

Try:
  {_qrs_curl(qrs, tok, "/qrs/license", ca)}
  {_qrs_curl(qrs, tok, "/qrs/license/accesstypeoverview", ca)}
  curl -s -H 'Authorization: Bearer {info["admin_token"]}' '{lbs}/v1/admin/licenses'
{info.get("tls", "")}
Press Ctrl-C to stop.
"""


async def _up(args: argparse.Namespace) -> int:
    stack = DevStack(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        info = await stack.start()
        print(banner(info), flush=True)
        await stop.wait()
    finally:
        await stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the `licensing` command."""
    args = build_parser().parse_args(argv)
    configure_logging("console" if sys.stdout.isatty() else "json")
    try:
        return run_service(_up(args))
    except (OSError, RuntimeError, asyncpg.PostgresError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
