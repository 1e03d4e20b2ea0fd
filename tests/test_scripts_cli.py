"""The scripts' command lines: each answers --help, and those that need psutil run
under the checkout's .venv when started with a Python that lacks it
(scripts/checkout_venv.py), or say in one line what to do."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
VENV_PYTHON = SCRIPTS.parent / ".venv" / "bin" / "python"
# The Python this venv was made from, with -S (no site-packages) and -E (no
# PYTHONPATH): psutil cannot be found, whatever it has installed.
BARE = [getattr(sys, "_base_executable", sys.executable), "-S", "-E"]


# The command-line scripts start with a shebang; the rest are modules they share.
@pytest.mark.parametrize(
    "script",
    sorted(p.name for p in SCRIPTS.glob("*.py") if p.read_bytes().startswith(b"#!")),
)
def test_every_script_answers_help(script: str) -> None:
    got = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert got.returncode == 0, got.stderr
    assert len(got.stdout.splitlines()) >= 3, got.stdout


@pytest.mark.skipif(not VENV_PYTHON.exists(), reason="no .venv in this checkout")
@pytest.mark.parametrize("script", ["bench_make_lending.py", "bench_waiter.py", "stress.py"])
def test_a_script_started_without_psutil_runs_under_the_venv(script: str) -> None:
    got = subprocess.run(
        [*BARE, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 0, got.stderr
    assert "usage:" in got.stdout.lower()


def test_without_a_venv_it_says_how_to_make_one(tmp_path: Path) -> None:
    scripts = tmp_path / "checkout" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy(SCRIPTS / "checkout_venv.py", scripts)
    (scripts / "needs.py").write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "sys.path.insert(0, str(Path(__file__).resolve().parent.parent))\n"
        "from scripts.checkout_venv import use_checkout_venv\n"
        "use_checkout_venv()\n"
        "print('ran')\n"
    )
    got = subprocess.run(
        [*BARE, str(scripts / "needs.py")], capture_output=True, text=True, timeout=60
    )
    assert got.returncode == 1
    assert got.stdout == ""
    assert got.stderr.strip() == (
        "needs.py: error: needs psutil; run `bash scripts/test.sh` once"
        f" (it makes {tmp_path / 'checkout' / '.venv'}), then run needs.py again"
    )
