"""Which Chromium the admin-page tests drive, and getting one where none is.

The tests take, in this order: the binary named by CHROMIUM_PATH; a `chromium` (Debian's,
/usr/bin/chromium) or `chromium-browser` on PATH; Playwright's own Chromium, if
`python -m playwright install chromium` has put it in Playwright's browser folder.

Run as a script (`scripts/test` does), it prints the Chromium it found. When there is none it
tries to install one, as root with `apt-get install -y chromium` where apt-get is, then with
`python -m playwright install chromium` (which downloads from Playwright's own servers), and
otherwise stops with one line saying what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ENV = "CHROMIUM_PATH"
# Headless, and no calls home: on a closed network those fail, many at a time.
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAMES = ("chromium", "chromium-browser")
WHAT_TO_INSTALL = (
    "no Chromium for the admin-page tests, and none could be installed here: install one"
    " (as root: apt-get install -y chromium; or: python -m playwright install chromium),"
    f" or set {ENV} to a Chromium or Chrome binary"
)


def on_path() -> Path | None:
    """Return the Chromium on PATH (Debian's is /usr/bin/chromium), if there is one."""
    for name in NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def choose(bundled: Path | None) -> Path | None:
    """Return the Chromium to drive, given where Playwright keeps its own (or None).

    A CHROMIUM_PATH that names no executable file raises ValueError: it was asked for.
    """
    given = os.environ.get(ENV)
    if given:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValueError(f"{ENV}={given} is not an executable file")
        return path
    found = on_path()
    if found is not None:
        return found
    if bundled is not None and bundled.is_file():
        return bundled
    return None


def playwright_chromium() -> Path | None:
    """Return where Playwright keeps its own Chromium (present or not), or None without it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as pw:
        return Path(pw.chromium.executable_path)


def find() -> Path | None:
    """Return the Chromium to drive, or None when there is none."""
    return choose(playwright_chromium())


def _say(text: str) -> None:
    print(f"scripts/test: {text}", file=sys.stderr, flush=True)


def _attempt(what: str, *commands: list[str]) -> bool:
    """Run the commands in turn, quietly; say what failed; return whether all succeeded."""
    _say(f"no Chromium found; trying {what}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in commands:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            _say(f"{what} failed: {lines[0] if lines else f'exit {done.returncode}'}")
            return False
    return True


def install() -> None:
    """Try to install a Chromium: Debian's as root where apt-get is, then Playwright's."""
    apt = shutil.which("apt-get")
    if apt is not None and os.geteuid() == 0:
        quiet = [apt, "-qq"]
        if _attempt(
            "apt-get install -y chromium", [*quiet, "update"], [*quiet, "install", "-y", "chromium"]
        ):
            return
    if playwright_chromium() is not None:
        _attempt(
            "python -m playwright install chromium",
            [sys.executable, "-m", "playwright", "install", "chromium"],
        )


def main() -> int:
    """Print the Chromium to drive, installing one if needed; 1 with one line if impossible."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        _say("the test extra is not installed in this Python: pip install -e '.[test]'")
        return 1
    try:
        found = find()
        if found is None:
            install()
            found = find()
    except ValueError as exc:
        _say(str(exc))
        return 1
    if found is None:
        _say(WHAT_TO_INSTALL)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
