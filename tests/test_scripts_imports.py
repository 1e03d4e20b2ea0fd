"""scripts/ never imports tests/: the tests import scripts (the fake rustc, the
reaper, the memory cgroups, the generators), so the other direction would be a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_script_imports_tests() -> None:
    found = {
        p.name: [m for m in imported_modules(p) if m == "tests" or m.startswith("tests.")]
        for p in sorted(SCRIPTS.glob("*.py"))
    }
    assert {name: mods for name, mods in found.items() if mods} == {}
    # The parser sees imports at all: conftest imports tests.procs.
    assert "tests.procs" in imported_modules(Path(__file__).with_name("conftest.py"))
