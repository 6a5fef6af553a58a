"""The README's quick start as a newcomer runs it: a fresh clone of this repository, a new
virtualenv, the first command (install, then `licensing up`), then everything the stack prints
and the README shows against that stack (the `curl` lines, the admin page's link, the token
command), and the second command, `scripts/test`, on a browser test of the fresh clone.

The clone is of the checked-out commit, with the tracked files' uncommitted changes applied:
untracked files are not in it, as they would not be in a real clone."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from playwright.async_api import async_playwright

from shared.embedded_pg import free_port
from tests import chromium

ROOT = Path(__file__).resolve().parent.parent
XRFKEY = "0123456789abcdef"


def readme() -> str:
    return (ROOT / "README.md").read_text()


def quick_start() -> tuple[str, str]:
    """Return the quick start's two commands."""
    section = readme().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    first, second = re.findall(r"```\n(.+?)\n```", section, re.DOTALL)
    return first, second


def readme_token_command() -> str:
    """Return the README's command that mints a token for the stack of `licensing up`."""
    found = re.findall(r"`(QRS_DEV_ISSUER_KEY_FILE=[^`]+)`", readme())
    assert len(found) == 1, found
    return str(found[0])


def fresh_clone(into: Path) -> Path:
    """Clone this repository's checked-out commit into a new folder, with a new virtualenv."""
    git = ["git", "-c", "advice.detachedHead=false"]
    head = subprocess.run(
        [*git, "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run([*git, "clone", "-q", "--no-checkout", str(ROOT), str(into)], check=True)
    subprocess.run([*git, "-C", str(into), "checkout", "-q", head], check=True)
    changes = subprocess.run(
        [*git, "-C", str(ROOT), "diff", "HEAD", "--binary"], capture_output=True, check=True
    ).stdout
    if changes:
        subprocess.run([*git, "-C", str(into), "apply"], input=changes, check=True)
    subprocess.run([sys.executable, "-m", "venv", str(into / ".venv")], check=True)
    return into


def newcomer_env() -> dict[str, str]:
    """This environment without this test's own virtualenv or Chromium choice."""
    own_bin = str(Path(sys.executable).parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", chromium.ENV, "PYTEST_ADDOPTS"}
    }
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != own_bin)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def in_venv(clone: Path, command: str, **kwargs: bool) -> asyncio.subprocess.Process:
    """Start a shell command in the clone, its virtualenv activated, as a newcomer would."""
    return await asyncio.create_subprocess_exec(
        "bash",
        "-c",
        f". .venv/bin/activate && {command}",
        cwd=clone,
        env=newcomer_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        **kwargs,
    )


async def run(clone: Path, command: str, seconds: float = 120) -> str:
    """Run a shell command in the clone's virtualenv; return its output; it must succeed."""
    proc = await in_venv(clone, command)
    async with asyncio.timeout(seconds):
        out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{command}\n{text[-4000:]}"
    return text


async def test_the_readme_quick_start_from_a_fresh_clone(tmp_path: Path) -> None:
    clone = await asyncio.to_thread(fresh_clone, tmp_path / "clone")
    first, second = quick_start()
    assert first.endswith("licensing up")
    lbs_port, qrs_port = free_port(), free_port()  # the defaults may be taken on this machine
    stack = await in_venv(
        clone, f"{first} --lbs-port {lbs_port} --qrs-port {qrs_port}", start_new_session=True
    )
    assert stack.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(600):  # the install, then the start
            while not (seen and seen[-1].startswith("Press Ctrl-C")):
                line = (await stack.stdout.readline()).decode(errors="replace")
                assert line, "".join(seen[-40:])
                seen.append(line)
        banner = "".join(seen[-30:])
        qrs = f"http://127.0.0.1:{qrs_port}"

        # The printed curl lines, run by curl as printed.
        curls = re.findall(r"^\s*(curl -s .+)$", banner, re.MULTILINE)
        assert len(curls) == 3, banner
        for line in curls:
            answer = json.loads(await run(clone, line))
            assert "error" not in answer, (line, answer)

        # The README's token command is the one printed, and its token is trusted.
        command = readme_token_command()
        assert re.search(r"More tokens +(.+)", banner).group(1) == command  # type: ignore[union-attr]
        token = (await run(clone, command)).strip()
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{qrs}/qrs/license",
                params={"xrfkey": XRFKEY},
                headers={"X-Qlik-Xrfkey": XRFKEY, "Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["keyDetails"].startswith("License Number:")

        # The admin page's link shows the demo license in a browser.
        link = re.search(r"Admin page +(\S+)", banner)
        serial = re.search(r"serial (\d{16})", banner)
        assert link is not None and serial is not None
        async with async_playwright() as pw:
            binary = chromium.choose(Path(pw.chromium.executable_path))
            assert binary is not None, chromium.WHAT_TO_INSTALL
            browser = await pw.chromium.launch(executable_path=str(binary), args=chromium.ARGS)
            try:
                page = await browser.new_page()
                await page.goto(link.group(1))
                await page.wait_for_selector(
                    "body[data-license]:not([data-busy])", state="attached"
                )
                assert await page.get_attribute("body", "data-license") == "signedKey"
                digits = (await page.input_value("#serial")).replace(" ", "")
                assert digits == serial.group(1)
                assert await page.text_content("#license-status") == "Valid"
            finally:
                await browser.close()

        # The second command, in the same virtualenv, on one of the fresh clone's browser tests.
        out = await run(
            clone,
            f"{second} tests/test_qmc_page.py -k token_from_the_fragment -p no:cacheprovider"
            f" --basetemp {tmp_path / 'inner'}",
            seconds=300,
        )
        assert re.search(r"\b1 passed\b", out), out[-3000:]
    finally:
        os.killpg(stack.pid, signal.SIGINT)
        async with asyncio.timeout(30):
            rest, _ = await stack.communicate()
    assert stack.returncode == 0, rest.decode(errors="replace")[-3000:]
    assert not (clone / ".licensing" / "postgres" / "postmaster.pid").exists()
