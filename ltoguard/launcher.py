"""Write the fast launcher that `scripts/install.sh` registers as the wrapper.

cargo runs the wrapper once per crate, and most of a pass-through call is the
interpreter starting. A pip console script starts Python with `site`, which
scans site-packages and runs every `.pth` file. The launcher's shebang runs
Python with `-I -S` (isolated: no PYTHON* variables, no user site, no `site`),
then puts the package's folder and this environment's site-packages on sys.path
itself. Same code, same behaviour, less start-up time per rustc call.

Usage: python -m ltoguard.launcher DEST
"""

from __future__ import annotations

import os
import sys
import sysconfig

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def render(python: str, paths: Sequence[str]) -> str:
    lines = [
        f"#!{python} -IS",
        "# ltoguard's fast launcher (python -m ltoguard.launcher); see ltoguard/launcher.py.",
        "import sys",
        f"sys.path[:0] = {list(paths)!r}",
        "from ltoguard.cli import main",
        "sys.exit(main())",
    ]
    return "\n".join(lines) + "\n"


def site_paths() -> list[str]:
    out: list[str] = []
    for p in (package_root(), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]):
        if p not in out:
            out.append(p)
    return out


def package_root() -> str:
    """The folder holding the ltoguard package this environment has installed (the
    checkout itself for an editable install). Not the folder `python -m` was run
    from: install.sh runs in a checkout, whose own ltoguard/ shadows the installed
    copy there, and a launcher naming it would run the checkout's code in every
    build, whatever branch it is on later."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cwd = os.getcwd()
    if os.path.realpath(here) != os.path.realpath(cwd):
        return here
    from importlib.machinery import PathFinder

    rest = [p for p in sys.path if p and os.path.realpath(p) != os.path.realpath(cwd)]
    spec = PathFinder.find_spec("ltoguard", rest)
    if spec is None or spec.origin is None or not spec.submodule_search_locations:
        # None on the path past this folder (an editable install of this checkout
        # finds it here, or through an import hook the path does not show): this one.
        return here
    return os.path.dirname(os.path.abspath(list(spec.submodule_search_locations)[0]))


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        sys.stderr.write("usage: python -m ltoguard.launcher DEST\n")
        return 2
    dest = args[0]
    tmp = f"{dest}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(render(sys.executable, site_paths()))
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
