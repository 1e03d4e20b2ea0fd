"""Real memory cgroups for tests and scripts/bench_memory.py: a child group under our
own, with a limit.

cgroup v1 (this kind of machine): root can mkdir a child under its own memory group
and set memory.limit_in_bytes; the OOM killer then acts inside it and counts its kills
in memory.oom_control. cgroup v2 needs the memory controller delegated to a group
without processes; where neither works, callers skip with the reason given here.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

_counter = itertools.count()


def own_v1_memory_dir() -> tuple[Path | None, str]:
    """This process's cgroup v1 memory directory, or None and why not."""
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        return None, f"cannot read /proc: {exc}"
    path = None
    for ln in cgroup.splitlines():
        parts = ln.split(":", 2)
        if len(parts) == 3 and "memory" in parts[1].split(","):
            path = parts[2]
    mount = None
    for ln in mountinfo.splitlines():
        if " - cgroup " in ln and "memory" in ln.split(" - ")[1].split()[2].split(","):
            mount = ln.split()
    if path is None or mount is None:
        return None, "no cgroup v1 memory controller on this host"
    if mount[3] != "/":
        return None, f"the v1 memory mount shows {mount[3]}, not the hierarchy root"
    return Path(mount[4]) / path.lstrip("/"), ""


def _writable_v1_memory_dir() -> tuple[Path | None, str]:
    own, why = own_v1_memory_dir()
    if own is not None and not os.access(own / "cgroup.procs", os.W_OK):
        return None, f"{own} is not writable (needs root and a writable cgroup v1 memory mount)"
    return own, why


def oom_kills_in(group: Path) -> int:
    """The oom_kill count of a v1 memory group, read straight from memory.oom_control."""
    for line in (group / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


class MemoryCgroup:
    """A child memory cgroup with a hard limit. Use as a context manager."""

    def __init__(self, limit: int) -> None:
        own, why = _writable_v1_memory_dir()
        if own is None:
            raise RuntimeError(why)
        self.path = own / f"ltoguard-test-{os.getpid()}-{next(_counter)}"
        self.path.mkdir()
        try:
            (self.path / "memory.limit_in_bytes").write_text(str(limit))
        except OSError:
            self.path.rmdir()
            raise
        self.limit = limit

    @staticmethod
    def unavailable() -> str:
        """Empty if a cgroup can be made here, else why not (for pytest.skip)."""
        own, why = _writable_v1_memory_dir()
        return "" if own is not None else why

    def enter_command(self) -> list[str]:
        """A prefix that moves the command into this group, then execs it."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh"]

    def oom_kills(self) -> int:
        return oom_kills_in(self.path)

    def max_usage(self) -> int:
        return int((self.path / "memory.max_usage_in_bytes").read_text())

    def cleanup(self) -> None:
        for _ in range(100):
            try:
                pids = [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
            except OSError:
                return
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.05)
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.1)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
