"""`licensing up` end to end: the whole stack starts, the printed calls work, Ctrl-C stops
everything cleanly (exit 0, no server left behind), and a second start reuses the data."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import sys
from pathlib import Path

import aiohttp
import jwt

from repository_service.about.views import BUILD_VERSION
from shared.embedded_pg import free_port


async def start_stack(
    data_dir: Path, lbs_port: int, qrs_port: int, *extra: str
) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "licensing.devstack",
        "up",
        "--data-dir",
        str(data_dir),
        "--lbs-port",
        str(lbs_port),
        "--qrs-port",
        str(qrs_port),
        *extra,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(90):
        while True:
            line = (await proc.stdout.readline()).decode()
            assert line, "".join(seen[-30:])
            seen.append(line)
            if line.startswith("Press Ctrl-C"):
                return proc, "".join(seen)


async def stop_stack(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(10):  # SPEC 8.28: exits within 10 s
        out, _ = await proc.communicate()
    assert proc.returncode is not None
    if proc.returncode != 0:
        print(out.decode(errors="replace")[-3000:])  # why it failed, in the test's output
    return proc.returncode


async def minted_token(command: str) -> str:
    """Run a printed `repository-service token` line in a shell; return the token."""
    bin_dir = str(Path(sys.executable).parent)  # where `repository-service` is installed
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        command,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
        stdout=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, command
    return out.decode().strip()


async def test_licensing_up_runs_the_stack_and_stops_cleanly(tmp_path: Path) -> None:
    lbs_port, qrs_port = free_port(), free_port()
    proc, banner = await start_stack(tmp_path / "data", lbs_port, qrs_port)
    try:
        curls = re.findall(r"curl -s (.+)", banner)
        assert len(curls) == 3
        async with aiohttp.ClientSession() as http:
            for line in curls:
                headers = dict(re.findall(r"-H '([^:]+): ([^']+)'", line))
                url = re.findall(r"'(http[^']+)'", line)[-1]
                async with http.get(url, headers=headers) as resp:
                    assert resp.status == 200, (url, await resp.text())
            token = re.search(r"#token=(\S+)", banner)
            assert token is not None
            # The printed command mints more tokens that this stack trusts.
            command = re.search(r"More tokens +(.+)", banner)
            assert command is not None
            minted = await minted_token(command.group(1))
            for bearer in (token.group(1), minted):
                async with http.get(
                    f"http://127.0.0.1:{qrs_port}/qrs/license",
                    params={"xrfkey": "0123456789abcdef"},
                    headers={
                        "X-Qlik-Xrfkey": "0123456789abcdef",
                        "Authorization": f"Bearer {bearer}",
                    },
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    license = await resp.json()
            # The site was given the backend's own root key as its trust anchor.
            async with http.get(
                f"http://127.0.0.1:{lbs_port}/.well-known/license-roots.json"
            ) as resp:
                chain = (await resp.json())["chain"]
        root = json.loads((tmp_path / "data" / "lbs-trust-root.json").read_text())
        assert root["kid"] == jwt.decode(chain[-1], options={"verify_signature": False})["sub"]
        assert license["keyDetails"].startswith("License Number:")
    finally:
        code = await stop_stack(proc)
    assert code == 0
    pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
    assert not pid_file.exists()  # the embedded server was stopped

    # A second start finds its data: same demo license, no second one.
    proc, banner_again = await start_stack(tmp_path / "data", lbs_port, qrs_port)
    assert await stop_stack(proc) == 0
    serial = re.search(r"serial (\d{16})", banner).group(1)  # type: ignore[union-attr]
    assert f"serial {serial}" in banner_again


async def test_licensing_up_tls_prints_a_qsapi_example_that_works(tmp_path: Path) -> None:
    lbs_port, qrs_port = free_port(), free_port()
    proc, banner = await start_stack(tmp_path / "data", lbs_port, qrs_port, "--tls")
    try:
        certs = tmp_path / "data" / "certs"
        for name in ("root.pem", "client.pem", "client_key.pem"):
            assert (certs / name).is_file()
        # The bearer examples work over HTTPS, trusting the printed CA.
        curl = re.findall(r"curl -s --cacert '([^']+)' (.+)", banner)[0]
        headers = dict(re.findall(r"-H '([^:]+): ([^']+)'", curl[1]))
        url = re.findall(r"'(https[^']+)'", curl[1])[-1]
        trust = ssl.create_default_context(cafile=curl[0])
        async with aiohttp.ClientSession() as http, http.get(url, headers=headers, ssl=trust) as r:
            assert r.status == 200, await r.text()
        # The qsAPI example runs as printed: unchanged qsAPI, client certificate, X-Qlik-User.
        code = re.search(r'python -c "(.+)"', banner)
        assert code is not None
        example = await asyncio.create_subprocess_exec(
            sys.executable, "-W", "ignore", "-c", code.group(1), stdout=asyncio.subprocess.PIPE
        )
        async with asyncio.timeout(60):
            out, _ = await example.communicate()
        assert example.returncode == 0
        version, users = out.decode().split()[-2:]
        assert version == BUILD_VERSION and int(users) >= 1
    finally:
        assert await stop_stack(proc) == 0
