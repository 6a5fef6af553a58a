"""Lower layers never import higher ones: `shared` imports neither service nor `licensing`,
and neither service imports the other (or `licensing`, which sits above both). Inside a
package laid out as views → service → repository, only the repository runs SQL."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each package and the top-level packages of this project it must not import.
FORBIDDEN = {
    "shared": {"license_backend", "repository_service", "licensing"},
    "license_backend": {"repository_service", "licensing"},
    "repository_service": {"license_backend", "licensing"},
}


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Return the absolute names of the modules that the file at `path` under `root` imports."""
    package = list(path.relative_to(root).parent.parts)
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                names.add(node.module)
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_no_higher_layer(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if name.split(".")[0] in FORBIDDEN[package]
    ]
    assert not offences, "\n".join(offences)


# Packages inside a service and the modules they must not import: a lower package announces
# what changed and the app wires the higher ones to it.
FORBIDDEN_INSIDE = {
    "repository_service/license": {"repository_service.access"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN_INSIDE))
def test_package_imports_no_sibling_above_it(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    offences = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        for banned in FORBIDDEN_INSIDE[package]
        if name == banned or name.startswith(banned + ".")
    ]
    assert not offences, "\n".join(offences)


def test_the_check_sees_absolute_and_relative_imports(tmp_path: Path) -> None:
    source = tmp_path / "shared" / "web" / "probe.py"
    source.parent.mkdir(parents=True)
    source.write_text("import license_backend.app\nfrom ..sql import load\nfrom . import errors\n")
    assert imported_modules(source, tmp_path) == {"license_backend.app", "shared.sql", "shared.web"}


# Packages laid out as views → service → repository: only `repository.py` runs SQL, and the
# SQL itself is in the package's `queries.sql`.
REPOSITORY_ONLY_SQL = ("repository_service/access/admin", "repository_service/users")
_RUNS_SQL = {"fetch", "fetchrow", "fetchval", "execute", "executemany", "one"}
_SQL_TEXT = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")


def sql_offences(path: Path) -> list[str]:
    """Return where the module at `path` runs a statement or holds SQL text, in line order."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in _RUNS_SQL:
                found.append((node.lineno, f"calls {name}"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if _SQL_TEXT.search(node.value):
                found.append((node.lineno, "holds SQL"))
    return [f"{path.name}:{line} {what}" for line, what in sorted(found)]


@pytest.mark.parametrize("package", REPOSITORY_ONLY_SQL)
def test_only_the_repository_runs_sql(package: str) -> None:
    files = [p for p in sorted((ROOT / package).glob("*.py")) if p.name != "repository.py"]
    assert files
    offences = [offence for path in files for offence in sql_offences(path)]
    assert not offences, "\n".join(offences)


def test_the_sql_check_sees_statements_and_sql_text(tmp_path: Path) -> None:
    source = tmp_path / "views.py"
    source.write_text(
        "async def f(pool):\n"
        "    await pool.fetchval(Q)\n"
        "    await one(pool, Q)\n"
        "Q = 'DELETE FROM users WHERE id = $1'\n"
        "DOC = 'Delete a user, then select another.'\n"
    )
    assert sql_offences(source) == [
        "views.py:2 calls fetchval",
        "views.py:3 calls one",
        "views.py:4 holds SQL",
    ]
