"""The fast launcher install.sh writes: which copy of ltoguard it runs."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ltoguard
from ltoguard import launcher

PACKAGE = Path(ltoguard.__file__).resolve().parent


def paths_in(script: Path) -> list[str]:
    line = next(x for x in script.read_text().splitlines() if x.startswith("sys.path[:0] = "))
    value: list[str] = ast.literal_eval(line.split(" = ", 1)[1])
    return value


@pytest.mark.timeout(60)
def test_made_in_a_checkout_it_runs_the_installed_copy(tmp_path: Path) -> None:
    """install.sh runs `python -m ltoguard.launcher` in the checkout, whose own
    ltoguard/ shadows the installed one there: the launcher must still name the
    installed copy, or every build would run whatever the checkout holds later."""
    installed, checkout = tmp_path / "site", tmp_path / "checkout"
    for where in (installed, checkout):
        shutil.copytree(PACKAGE, where / "ltoguard", ignore=shutil.ignore_patterns("__pycache__"))
    (installed / "ltoguard" / "__init__.py").write_text('__version__ = "installed-copy"\n')
    dest = tmp_path / "ltoguard-fast"
    env = dict(os.environ, PYTHONPATH=str(installed), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONSAFEPATH", None)  # 3.11+: it would keep the folder off the path
    subprocess.run(
        [sys.executable, "-m", "ltoguard.launcher", str(dest)], cwd=checkout, env=env, check=True
    )
    paths = paths_in(dest)
    assert paths[0] == str(installed)
    assert str(checkout) not in paths
    shown = subprocess.run(
        [str(dest), "--version"], cwd=checkout, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == "ltoguard installed-copy"


def test_made_elsewhere_it_names_the_package_it_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From any other folder (and for an editable install, whose package is the
    checkout) the launcher names the folder the package was imported from."""
    monkeypatch.chdir(tmp_path)
    assert os.path.realpath(launcher.site_paths()[0]) == str(PACKAGE.parent)
    monkeypatch.chdir(PACKAGE.parent)
    assert os.path.realpath(launcher.site_paths()[0]) == str(PACKAGE.parent)
