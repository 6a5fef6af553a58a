"""LBS_REUSE_PORT: several `license-backend serve` processes share one address (one per core
on a host); without it a second process cannot listen there."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp

from shared.embedded_pg import free_port
from tests.conftest import DatabaseFactory


async def serve(env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "license_backend.cli",
            "serve",
            "--no-migrate",
            env=env,
            stdout=out,
            stderr=out,
        )


async def answers(url: str) -> bool:
    # A new connection each time: the kernel picks a listener per connection.
    try:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/health/live") as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def wait_answering(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    async with asyncio.timeout(30):
        while not await answers(url):
            assert proc.returncode is None, log.read_text()[-3000:]
            await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await proc.wait()


async def test_two_processes_share_a_port_only_with_reuse_port(
    databases: DatabaseFactory, encryption_key: str, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "LBS_DATABASE_URL": await databases.clone("lbs"),
        "LBS_KEY_ENCRYPTION_KEY": encryption_key,
        "LBS_PORT": str(port),
        "LBS_LOG_FORMAT": "json",
    }
    logs = [tmp_path / f"lbs-{n}.log" for n in range(3)]
    shared = {**env, "LBS_REUSE_PORT": "true"}
    first = await serve(shared, logs[0])
    try:
        await wait_answering(url, first, logs[0])
        second = await serve(shared, logs[1])
        try:
            # The second one listens beside the first: it serves once the first has gone.
            await asyncio.sleep(3)
            assert second.returncode is None, logs[1].read_text()[-3000:]
            await stop(first)
            await wait_answering(url, second, logs[1])

            # A process without the option cannot listen where another does.
            lone = await serve(env, logs[2])
            async with asyncio.timeout(30):
                assert await lone.wait() != 0
            assert "address already in use" in logs[2].read_text()
        finally:
            await stop(second)
    finally:
        await stop(first)
