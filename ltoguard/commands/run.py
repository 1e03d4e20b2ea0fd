"""`ltoguard run [--slots N] [--memory SIZE] [--name NAME] [--estimate SIZE] -- CMD ARGS...`.

Runs any heavy command (a C++ link, wasm-opt, a test shard) under the same
semaphore and memory admission as guarded compiles: like GNU parallel's `sem`,
but crash-safe (flock), FIFO, and memory-aware, with per-command learned peaks.
"""

from __future__ import annotations

import argparse
import os

from ltoguard.commands.common import error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ltoguard run",
        description="Run a command under ltoguard's system-wide, memory-aware semaphore.",
    )
    p.add_argument(
        "--slots", help="at most N such jobs at once (default: the LTOGUARD_SLOTS setting)"
    )
    p.add_argument(
        "--memory", help="budget for guarded jobs, e.g. 12G or -3G (default: LTOGUARD_MEMORY)"
    )
    p.add_argument(
        "--name", help="name to show and to learn memory under (default: the command's name)"
    )
    p.add_argument(
        "--estimate", help="expected peak memory of this command, e.g. 3G (default: learned)"
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    return p


def main(argv: Sequence[str]) -> int:
    from ltoguard import guard
    from ltoguard.config import load
    from ltoguard.jobs import command_job
    from ltoguard.passthrough import exec_program, nested

    args = _parser().parse_args(list(argv))
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        return error("`ltoguard run` needs a command after `--`")
    env = dict(os.environ)
    if args.slots is not None:
        env["LTOGUARD_SLOTS"] = args.slots
    if args.memory is not None:
        env["LTOGUARD_MEMORY"] = args.memory
    try:
        settings = load(env)
        estimate = None
        if args.estimate is not None:
            from ltoguard.sizes import parse_size

            estimate = parse_size(args.estimate)
            if estimate <= 0:
                raise ValueError(f"--estimate {args.estimate!r} must be a positive size such as 3G")
    except Exception as exc:  # SettingsError / ValueError: one line naming the setting
        return error(str(exc))
    if nested():
        return exec_program(cmd)
    return guard.run_job(command_job(cmd, "run", args.name, estimate), settings)
