"""Lower layers never import higher ones: `shared` imports neither service nor `licensing`,
and neither service imports the other (or `licensing`, which sits above both)."""

from __future__ import annotations

import ast
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
