"""Real repository-service processes on 127.0.0.1, for multi-replica tests."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from shared.embedded_pg import free_port


@dataclass
class ServiceProcess:
    """One `repository-service serve` process."""

    instance_id: str
    port: int
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        """Return the base URL."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the process (without migrating: the database is already migrated)."""
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "repository_service.cli",
            "serve",
            "--no-migrate",
            env={
                **os.environ,
                **self.env,
                "QRS_PORT": str(self.port),
                "QRS_INSTANCE_ID": self.instance_id,
            },
            stdout=log,
            stderr=log,
        )
        log.close()

    async def wait_ready(self, session: aiohttp.ClientSession, within: float = 30) -> None:
        """Wait until the process answers /health/live."""
        async with asyncio.timeout(within):
            while True:
                assert self.process is not None and self.process.returncode is None, (
                    self.log_path.read_text()[-3000:]
                )
                try:
                    async with session.get(f"{self.url}/health/live") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the process: no shutdown code runs."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)

    async def stop(self) -> None:
        """SIGTERM the process and wait for it (SIGKILL after 10 s)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def replica_env(
    database_url: str, lbs_url: str, jwks_file: Path, *, trust_root: Path, **extra: str
) -> dict[str, str]:
    """Return the environment of a test replica trusting the backend root in `trust_root`."""
    return {
        "QRS_DATABASE_URL": database_url,
        "QRS_LBS_URL": lbs_url,
        "QRS_LBS_ISSUER": "http://lbs.test",
        "QRS_LBS_TRUST_ROOT_FILE": str(trust_root),
        "QRS_AUTH_JWKS_FILE": str(jwks_file),
        "QRS_AUTH_ISSUERS": "test-issuer",
        "QRS_LOG_FORMAT": "json",
        **extra,
    }


def make_replicas(count: int, env: dict[str, str], log_dir: Path) -> list[ServiceProcess]:
    """Return `count` replicas (not started) with distinct ports and instance ids."""
    return [
        ServiceProcess(f"qrs-{n}", free_port(), env, log_dir / f"qrs-{n}.log")
        for n in range(1, count + 1)
    ]


async def backend_root_file(env: dict[str, str], path: Path) -> Path:
    """Write the root key of the backend configured by `env` with `license-backend keys root`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "license_backend.cli",
        "keys",
        "root",
        "--file",
        str(path),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, (out + err).decode(errors="replace")
    return path
