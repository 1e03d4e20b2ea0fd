"""`ltoguard-link`: a linker wrapper for `-C linker=ltoguard-link` / `[target.X] linker`.

For `-C linker-plugin-lto` builds LTO runs in the linker (clang/lld's LTO plugin),
not in rustc, and very large non-LTO links can also need gigabytes: this runs the
real linker (LTOGUARD_LINKER, default `cc`) under the same semaphore and memory
admission as guarded compiles. Inside a job ltoguard already admitted
(LTOGUARD_HELD is set), or with mode off, the link passes straight through.
"""

from __future__ import annotations

import os
import sys

from ltoguard.commands.common import error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def _output_name(args: Sequence[str]) -> str:
    for i, a in enumerate(args):
        if a == "-o" and i + 1 < len(args):
            return os.path.basename(args[i + 1])
        if a.startswith("-o") and len(a) > 2:
            return os.path.basename(a[2:])
    return "link"


def main(argv: Sequence[str] | None = None) -> int:
    from ltoguard import guard
    from ltoguard.config import load
    from ltoguard.jobs import command_job
    from ltoguard.passthrough import exec_program, nested

    args = sys.argv[1:] if argv is None else list(argv)
    try:
        settings = load()
    except Exception as exc:  # SettingsError: one line naming the setting
        return error(str(exc))
    cmd = [settings.linker, *args]
    if nested() or settings.mode == "off":
        return exec_program(cmd)
    name = _output_name(args)
    # The hash cargo appends (app-0123abcd) differs per build; learn per output name.
    stem = name.rsplit("-", 1)[0] if "-" in name else name
    return guard.run_job(command_job(cmd, "link", stem, None), settings)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
