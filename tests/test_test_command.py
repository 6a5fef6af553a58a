"""`scripts/test`, the README's test command: the browser tests take Debian's Chromium or
Playwright's own; the script hands pytest its arguments and the Chromium it found; where there
is no Chromium and none can be installed, it stops with one line saying what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.embedded_pg import free_port
from tests import chromium

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "test"


def executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_the_browser_tests_take_debian_s_chromium_or_playwright_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(chromium.ENV, raising=False)
    bundled = tmp_path / "ms-playwright" / "chromium-1" / "chrome-linux64" / "chrome"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert chromium.choose(bundled) is None  # Playwright's, not downloaded
    executable(bundled)
    assert chromium.choose(bundled) == bundled  # Playwright's own, when it is all there is

    debian = executable(tmp_path / "usr" / "bin" / "chromium")
    monkeypatch.setenv("PATH", str(debian.parent))
    assert chromium.choose(bundled) == debian  # a chromium on PATH comes first
    assert chromium.choose(None) == debian

    chrome = executable(tmp_path / "opt" / "chrome")
    monkeypatch.setenv(chromium.ENV, str(chrome))
    assert chromium.choose(bundled) == chrome  # the one asked for, above all
    monkeypatch.setenv(chromium.ENV, str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="is not an executable file"):
        chromium.choose(bundled)


def bare_path(folder: Path) -> dict[str, str]:
    """An environment whose PATH has bash and this Python only: no chromium, no apt-get."""
    folder.mkdir()
    (folder / "bash").symlink_to("/bin/bash")
    python = folder / "python3"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != chromium.ENV}
    return {**env, "PATH": str(folder)}


def test_without_a_chromium_it_says_in_one_line_what_to_install(tmp_path: Path) -> None:
    env = bare_path(tmp_path / "bin")
    # Playwright has no Chromium of its own here, and its download server does not answer.
    env["PLAYWRIGHT_BROWSERS_PATH"] = str(tmp_path / "ms-playwright")
    env["PLAYWRIGHT_DOWNLOAD_HOST"] = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [str(SCRIPT), "-q", "tests/test_readme.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""  # pytest never ran
    lines = done.stderr.strip().splitlines()
    assert "scripts/test: no Chromium found; trying python -m playwright install chromium" in lines
    assert lines[-1] == f"scripts/test: {chromium.WHAT_TO_INSTALL}"
    assert not list((tmp_path / "ms-playwright").glob("chromium-*/*/chrome"))


def test_it_hands_pytest_its_arguments_and_the_chromium_it_found(tmp_path: Path) -> None:
    env = bare_path(tmp_path / "bin")
    found = executable(tmp_path / "bin" / "chromium")
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import os\n\n"
        "def test_chromium() -> None:\n"
        f"    assert os.environ['CHROMIUM_PATH'] == {str(found)!r}\n"
    )
    done = subprocess.run(
        [str(SCRIPT), "-q", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
