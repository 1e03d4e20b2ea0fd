"""Real memory cgroups for tests and scripts/bench_memory.py: a fresh child group with
a limit, on cgroup v1 or v2, whichever the host has (v1 first).

cgroup v1: root can mkdir a child under its own memory group and set
memory.limit_in_bytes; the OOM killer then acts inside it and counts its kills in
memory.oom_control. cgroup v2: a child gets a memory limit only when its parent has
memory in cgroup.subtree_control, which the kernel refuses to enable in a group that
holds processes (the root group excepted), so the child goes under the nearest group
at or above our own that has it enabled or may enable it; memory.max is the limit,
memory.swap.max 0 keeps swap from hiding an OOM, memory.events counts the kills.
Where neither works, callers skip with the reason given here.

A group may also get a swap allowance (``swap=``): v1's memory.memsw.limit_in_bytes
(RAM plus swap, which needs the kernel's swap accounting) or v2's memory.swap.max.
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


def own_v2_dir(root: str = "/") -> tuple[Path | None, Path | None, str]:
    """This process's cgroup v2 directory (``0::/PATH`` under the cgroup2 mount) and
    the mount's top directory, or None, None and why not. ``root`` is for fake trees."""
    base = Path(root)
    try:
        cgroup = (base / "proc/self/cgroup").read_text()
        mountinfo = (base / "proc/self/mountinfo").read_text()
    except OSError as exc:
        return None, None, f"cannot read /proc: {exc}"
    path = next((ln[3:] for ln in cgroup.splitlines() if ln.startswith("0::")), None)
    mount = None
    for ln in mountinfo.splitlines():
        left, sep, right = ln.partition(" - ")
        if sep and right.split()[:1] == ["cgroup2"]:
            mount = left.split()
    if path is None or mount is None:
        return None, None, "no cgroup v2 hierarchy mounted"
    shown = mount[3].rstrip("/")
    if shown and path != shown and not path.startswith(shown + "/"):
        return None, None, f"the cgroup2 mount shows {mount[3]}, not our group {path}"
    parts = [p for p in path[len(shown) :].split("/") if p]
    if ".." in parts:
        return None, None, f"our cgroup v2 path {path} leaves its mount"
    top = base / mount[4].lstrip("/")
    return top.joinpath(*parts), top, ""


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def v2_parent(root: str = "/") -> tuple[Path | None, bool, str]:
    """Where a v2 child group with a memory limit can go: the nearest group at or
    above ours with memory in its cgroup.controllers and either already in its
    cgroup.subtree_control or enabled there (True: still to enable). None and why
    not where no group qualifies. Nothing is written here."""
    own, top, why = own_v2_dir(root)
    if own is None or top is None:
        return None, False, why
    if not (top / "cgroup.controllers").exists():
        return None, False, f"no cgroup v2 group at {own}"
    refused = []
    group = own
    while True:
        # The real root has no cgroup.type and may enable controllers with processes.
        is_root = not (group / "cgroup.type").exists()
        if "memory" not in _words(group / "cgroup.controllers"):
            refused.append(f"{group}: no memory in cgroup.controllers")
        elif not os.access(group, os.W_OK):
            refused.append(f"{group}: not writable (needs root or a delegated subtree)")
        elif "memory" in _words(group / "cgroup.subtree_control"):
            return group, False, ""
        elif not os.access(group / "cgroup.subtree_control", os.W_OK):
            refused.append(f"{group}: cgroup.subtree_control not writable")
        elif _words(group / "cgroup.procs") and not is_root:
            refused.append(f"{group}: holds processes, so cannot enable memory for a child")
        else:
            return group, True, ""
        if group == top or top not in group.parents:
            break
        group = group.parent
    if all("no memory in cgroup.controllers" in r for r in refused):
        return None, False, f"no cgroup v2 memory controller on this host (at {top})"
    return None, False, "no cgroup v2 group can give a child a memory limit: " + "; ".join(refused)


def remove_group(path: Path) -> None:
    """Kill every process of a memory group, then remove it (gone already: fine)."""
    for _ in range(100):
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
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
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


def oom_kills_in(group: Path) -> int:
    """The oom_kill count of a memory group: v1's memory.oom_control, v2's memory.events."""
    name = "memory.oom_control" if (group / "memory.oom_control").exists() else "memory.events"
    for line in (group / name).read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _stat(group: Path) -> dict[str, int]:
    out = {}
    for line in (group / "memory.stat").read_text().splitlines():
        name, _, value = line.partition(" ")
        out[name] = int(value)
    return out


def host_swap_total() -> int:
    """SwapTotal in bytes (0 without swap)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("SwapTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def swap_unavailable(group: Path, version: int) -> str:
    """Empty if a child of ``group`` can get a swap allowance, else why not."""
    if host_swap_total() <= 0:
        return "the host has no swap (SwapTotal 0; root can add a swapfile: mkswap, swapon)"
    name = "memory.memsw.limit_in_bytes" if version == 1 else "memory.swap.max"
    # The v2 root group has no memory.swap.max of its own, only its children do.
    v2_root = version == 2 and not (group / "cgroup.type").exists()
    if not v2_root and not (group / name).exists():
        why = "swap accounting is off (swapaccount=1)" if version == 1 else "no swap controller"
        return f"no {name} in {group}: {why}"
    return ""


class MemoryCgroup:
    """A child memory cgroup with a hard limit (v1 or v2), and with ``swap`` an
    allowance of that much swap beside it (None: v1 as the parent allows, v2 none).
    Use as a context manager."""

    def __init__(self, limit: int, swap: int | None = None) -> None:
        own, why = _writable_v1_memory_dir()
        self.version = 1
        enable = False
        if own is None:
            own, enable, why2 = v2_parent()
            if own is None:
                raise RuntimeError(f"{why}; {why2}")
            self.version = 2
        if enable:
            # A no-op where already enabled; the kernel refuses it while `own` has processes.
            (own / "cgroup.subtree_control").write_text("+memory")
        if swap is not None:
            why = swap_unavailable(own, self.version)
            if why:
                raise RuntimeError(why)
        self.path = own / f"ltoguard-test-{os.getpid()}-{next(_counter)}"
        self.path.mkdir()
        try:
            if self.version == 1:
                (self.path / "memory.limit_in_bytes").write_text(str(limit))
                if swap is not None:
                    # memsw counts RAM and swap together; it may not be below the RAM limit.
                    (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit + swap))
            else:
                (self.path / "memory.max").write_text(str(limit))
                if (self.path / "memory.swap.max").exists():
                    # Without an allowance, swap would let a job outgrow the limit
                    # slowly instead of being killed.
                    (self.path / "memory.swap.max").write_text(str(swap or 0))
        except OSError:
            self.path.rmdir()
            raise
        self.limit = limit
        self.swap = swap

    @staticmethod
    def unavailable() -> str:
        """Empty if a cgroup can be made here, else why neither v1 nor v2 works (for
        pytest.skip)."""
        own, why = _writable_v1_memory_dir()
        if own is not None:
            return ""
        parent, _, why2 = v2_parent()
        return "" if parent is not None else f"{why}; {why2}"

    @staticmethod
    def swap_unavailable() -> str:
        """Empty if a group with a swap allowance can be made here, else why not."""
        own, why = _writable_v1_memory_dir()
        if own is not None:
            return swap_unavailable(own, 1)
        parent, _, why2 = v2_parent()
        if parent is None:
            return f"{why}; {why2}"
        return swap_unavailable(parent, 2)

    def swap_used(self) -> int:
        """Bytes of the group in swap now (0 where it cannot be read)."""
        try:
            if self.version == 1:
                memsw = int((self.path / "memory.memsw.usage_in_bytes").read_text())
                return max(0, memsw - self.usage())
            return int((self.path / "memory.swap.current").read_text())
        except (OSError, ValueError):
            return 0

    def enter_command(self) -> list[str]:
        """A prefix that moves the command into this group, then execs it."""
        return ["sh", "-c", f'echo $$ > {self.path}/cgroup.procs && exec "$@"', "sh"]

    def oom_kills(self) -> int:
        return oom_kills_in(self.path)

    def usage(self) -> int:
        """Bytes charged to the group now, page cache included."""
        name = "memory.usage_in_bytes" if self.version == 1 else "memory.current"
        return int((self.path / name).read_text())

    def max_usage(self) -> int:
        """The most ever charged; a v2 kernel before 5.19 has no memory.peak: usage now."""
        if self.version == 1:
            return int((self.path / "memory.max_usage_in_bytes").read_text())
        peak = self.path / "memory.peak"
        return int(peak.read_text()) if peak.exists() else self.usage()

    def stat(self) -> dict[str, int]:
        """memory.stat under v1's hierarchical names (total_rss, total_mapped_file,
        total_inactive_file, total_cache) on either version."""
        try:
            fields = _stat(self.path)
        except (OSError, ValueError):
            return {}
        if self.version == 1:
            return fields
        v2_names = {"anon": "rss", "file_mapped": "mapped_file", "file": "cache"}
        out = {f"total_{v2_names.get(k, k)}": v for k, v in fields.items()}
        return out

    def charged(self) -> int:
        """Anonymous plus mapped file memory: what reclaiming page cache cannot free."""
        stat = self.stat()
        return stat.get("total_rss", 0) + stat.get("total_mapped_file", 0)

    def cleanup(self) -> None:
        remove_group(self.path)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
