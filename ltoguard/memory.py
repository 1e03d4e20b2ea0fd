"""How much memory a new guarded job can count on, under the ``LTOGUARD_MEMORY`` setting.

The tightest of the host's available memory and every cgroup bound
(ltoguard.cgroups), or an explicit budget. Only the guarded path and the subcommands
import this module: the pass-through path, which every rustc call takes, stays tiny.
psutil is imported only where /proc/meminfo cannot be read (macOS).
"""

from __future__ import annotations

from ltoguard.cgroups import Constraint, cgroup_constraints, cgroup_swap_room, under
from ltoguard.configvalues import MemorySetting, parse_memory_setting
from ltoguard.sizes import format_size
from ltoguard.structs import struct


@struct(frozen=True)
class MemorySnapshot:
    """The memory a new guarded job can count on now.

    ``total`` is the size of the bound that decided ``available`` (cgroup limit,
    RAM size or the explicit budget): the scale for the critical floor.
    ``constraints`` lists every bound that was found, for diagnostics.
    """

    available: int
    total: int
    source: str
    constraints: tuple[Constraint, ...] = ()


@struct(frozen=True)
class HostMemory:
    available: int
    total: int
    source: str = "MemAvailable"  # "psutil" without a readable MemAvailable (off Linux)


def host_memory(meminfo: str = "/proc/meminfo") -> HostMemory:
    """MemAvailable and MemTotal, as psutil reports them on Linux, read directly: every
    waiting job reads this, and importing psutil would cost each one memory (a
    many-binary build has several waiting at once, under a memory cap)."""
    try:
        with open(meminfo, "rb") as f:
            fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
        kib = {k: int(v.split()[0]) * 1024 for k, v in fields.items() if v.split()}
        return HostMemory(kib[b"MemAvailable"], kib[b"MemTotal"])
    except (OSError, ValueError, KeyError, IndexError):
        pass
    import psutil  # type: ignore[import-untyped, unused-ignore]

    vm = psutil.virtual_memory()
    return HostMemory(int(vm.available), int(vm.total), "psutil")


def available_memory(
    setting: MemorySetting | str | None = None,
    *,
    guarded_usage: int = 0,
    root: str = "/",
    pid: int | str = "self",
    host: HostMemory | None = None,
) -> MemorySnapshot:
    """The memory a new guarded job can count on, under the ``LTOGUARD_MEMORY`` setting.

    ``setting`` (parsed, or the text: parse_memory_setting) None or ``auto``: the
    tightest of host and cgroup bounds.
    ``-SIZE``: that, minus SIZE kept free for everything else (floored at 0).
    ``SIZE``: a cap on the sum of the guarded jobs' memory. ``guarded_usage`` is
    what the running guarded jobs hold now, so the budget left is SIZE minus it;
    the real free memory still bounds it (a budget larger than the machine must not
    admit a job the machine cannot hold).

    Raises ValueError (parse_memory_setting's) on a bad setting given as text.
    """
    if isinstance(setting, str):
        setting = parse_memory_setting(setting)

    hm = host if host is not None else host_memory()
    found = [Constraint(hm.available, hm.total, f"host ({hm.source})")]
    found += cgroup_constraints(root=root, pid=pid)
    tightest = min(found, key=lambda c: c.available)
    constraints = tuple(found)

    if setting is not None and setting.size < 0:
        reserve = -setting.size
        return MemorySnapshot(
            max(0, tightest.available - reserve),
            tightest.total,
            f"{tightest.source} minus {format_size(reserve)} kept free"
            f" (LTOGUARD_MEMORY={setting.text})",
            constraints,
        )
    if setting is not None:
        left = max(0, setting.size - guarded_usage)
        if left <= tightest.available:
            return MemorySnapshot(
                left,
                setting.size,
                f"LTOGUARD_MEMORY={setting.text} budget ({format_size(guarded_usage)} held by"
                " guarded jobs)",
                constraints,
            )
    return MemorySnapshot(tightest.available, tightest.total, tightest.source, constraints)


def host_swap_free(meminfo: str = "/proc/meminfo") -> int:
    """SwapFree in bytes; 0 without swap or where /proc/meminfo cannot be read."""
    try:
        with open(meminfo, "rb") as f:
            for line in f.read().splitlines():
                if line.startswith(b"SwapFree:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def available_swap(
    setting: MemorySetting | str | None = None,
    *,
    root: str = "/",
    pid: int | str = "self",
    meminfo: str | None = None,
) -> int:
    """Free swap a guarded job could spill into: the host's SwapFree, bounded by what
    each cgroup still allows. 0 under an explicit ``LTOGUARD_MEMORY=SIZE`` budget: a
    budget is a cap on the jobs' memory, and swap must not stretch it."""
    if isinstance(setting, str):
        setting = parse_memory_setting(setting)
    if setting is not None and setting.size >= 0:
        return 0
    free = host_swap_free(meminfo if meminfo is not None else under(root, "/proc/meminfo"))
    if free <= 0:
        return 0  # no swap: the cgroup files are not worth reading
    rooms = [room for room, _ in cgroup_swap_room(root=root, pid=pid)]
    return min([free, *rooms])
