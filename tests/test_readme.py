"""The README tells the truth: its configuration tables match the settings models, and its
quick start is exactly two commands, the second being what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

from licensing.settings_doc import block

ROOT = Path(__file__).resolve().parent.parent


def test_configuration_tables_are_generated_from_the_settings() -> None:
    readme = (ROOT / "README.md").read_text()
    assert block() in readme, (
        "README is stale: run `python -m licensing.settings_doc --write README.md`"
    )


def test_quick_start_is_two_commands_and_ci_runs_the_second() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```\n(.+?)\n```", quick, re.DOTALL)
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert "licensing up" in commands[0]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
