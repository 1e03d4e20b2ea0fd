"""Memory cgroups: the limits on a process's groups and the kernel's OOM kill counters;
and the CPUs a process may use (its affinity, and a cgroup v2 CPU quota).

A bound is the limit minus the usage that cannot be reclaimed (see ``working_set``),
for every group the process is in and each of its ancestors, v1 memory controller
and v2 alike, since psutil's ``virtual_memory()`` does not see these limits. Every
function takes ``root`` so tests can build a fake /proc and /sys.
"""

from __future__ import annotations

import functools
import os
import re

from ltoguard.sizes import format_size
from ltoguard.structs import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

# v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712 with
# 4 KiB pages, other values with other page sizes); anything this large is no limit.
UNLIMITED_THRESHOLD = 1 << 60


@struct(frozen=True)
class Constraint:
    """One source of a memory bound: free bytes now, its limit/total, and what it is."""

    available: int
    total: int
    source: str


def read_optional(path: str) -> str | None:
    # Every cgroup file is optional: controllers may be absent, files unreadable
    # inside containers, groups removed under us. A missing bound is not an error.
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _read_int(path: str) -> int | None:
    text = read_optional(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _stat_field(path: str, field: str) -> int | None:
    text = read_optional(path)
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == field:
            try:
                return int(parts[1])
            except ValueError:
                return None
    return None


def _stat_fields(path: str) -> dict[str, int]:
    """Every ``name value`` line of a memory.stat file (empty when unreadable)."""
    out: dict[str, int] = {}
    for line in (read_optional(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


# memory.stat's names for: page cache, mapped page cache, shmem.
V1_NAMES = ("cache", "mapped_file", "shmem")
V2_NAMES = ("file", "file_mapped", "shmem")


def working_set(usage: int, stat: dict[str, int], names: tuple[str, str, str]) -> int:
    """What of a group's usage reclaim cannot free: usage minus the page cache that no
    process maps and that is not shmem.

    Page cache a compile wrote or read (rlibs, sources) is reclaimed before the
    kernel kills anything, so it counts as free; the compiler's own mapped library
    pages stay counted, once: a second rustc maps the same pages and adds none
    (what each job adds is its anonymous memory, which is what estimates count).
    Dirty pages (the rlibs cargo just wrote) count as free too: reclaim has them
    written back and frees them, as MemAvailable counts them (docs/design.md).
    The "working set" of docker and the kubelet counts inactive_file as reclaimable
    instead; the larger of the two reclaimable figures is taken.
    """
    cache, mapped, shmem = (stat.get(n, 0) for n in names)
    unmapped = cache - mapped - shmem - stat.get("unevictable", 0)
    return max(0, usage - max(stat.get("inactive_file", 0), unmapped))


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


@struct(frozen=True)
class _Mount:
    version: int  # 1 or 2
    root: str  # the cgroup path the mount shows at its mount point
    mountpoint: str


@functools.lru_cache(maxsize=4)
def _cgroup_mounts(mountinfo: str) -> tuple[_Mount, ...]:
    # Parsed once per distinct mount table: a waiting head reads memory on every
    # recheck, and parsing a long mountinfo was most of that cost.
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lfields, rfields = left.split(), right.split()
        if len(lfields) < 5 or len(rfields) < 3:
            continue
        fstype, superopts = rfields[0], rfields[2].split(",")
        root, mountpoint = _unescape(lfields[3]), _unescape(lfields[4])
        if fstype == "cgroup" and "memory" in superopts:
            mounts.append(_Mount(1, root, mountpoint))
        elif fstype == "cgroup2":
            mounts.append(_Mount(2, root, mountpoint))
    return tuple(mounts)


def _own_cgroups(cgroup_text: str) -> dict[int, str]:
    """Map 1 (memory controller) and 2 (unified) to this process's cgroup path."""
    paths: dict[int, str] = {}
    for line in cgroup_text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            paths.setdefault(2, path)
        elif "memory" in controllers.split(","):
            paths.setdefault(1, path)
    return paths


def under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def cgroup_dirs(root: str, pid: int | str) -> list[tuple[int, list[str]]]:
    """For each cgroup version, the directories from the process's group up to the mount.

    Paths are prefixed with ``root`` so tests can build a fake /proc and /sys.
    """
    mountinfo = read_optional(under(root, f"/proc/{pid}/mountinfo"))
    cgroup_text = read_optional(under(root, f"/proc/{pid}/cgroup"))
    if mountinfo is None or cgroup_text is None:
        return []
    own = _own_cgroups(cgroup_text)
    mounts = _cgroup_mounts(mountinfo)
    result: list[tuple[int, list[str]]] = []
    for version in (1, 2):
        path = own.get(version)
        if path is None:
            continue
        for mount in mounts:
            if mount.version != version:
                continue
            top = under(root, mount.mountpoint)
            if mount.root == "/":
                rel = path
            elif path == mount.root or path.startswith(mount.root.rstrip("/") + "/"):
                rel = path[len(mount.root) :]
            else:
                # A cgroup namespace or a bind mount of an unrelated subtree: the
                # mount point is the only group we can place ourselves in.
                rel = "/"
            parts = [p for p in rel.split("/") if p and p != "."]
            if ".." in parts or not os.path.isdir(top):
                continue
            dirs = [os.path.join(top, *parts[:i]) for i in range(len(parts), -1, -1)]
            result.append((version, dirs))
            break
    return result


def _v1_constraint(d: str) -> Constraint | None:
    limit = _read_int(os.path.join(d, "memory.limit_in_bytes"))
    if limit is None or limit >= UNLIMITED_THRESHOLD:
        return None  # most levels: the usage is not read (a running job reads these often)
    usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
    if usage is None:
        return None
    # total_ is the hierarchical counter, matching usage_in_bytes under use_hierarchy.
    fields = _stat_fields(os.path.join(d, "memory.stat"))
    if "total_cache" in fields or "total_inactive_file" in fields:
        fields = {k[len("total_") :]: v for k, v in fields.items() if k.startswith("total_")}
    working = working_set(usage, fields, V1_NAMES)
    return Constraint(max(0, limit - working), limit, f"cgroup v1 {d} (limit {format_size(limit)})")


def _v2_limit(d: str, name: str) -> int | None:
    text = read_optional(os.path.join(d, name))
    if text is None or text.strip() == "max":
        return None
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return None if value >= UNLIMITED_THRESHOLD else value


def _v2_constraint(d: str) -> Constraint | None:
    # memory.high is not an OOM limit, but above it the kernel throttles and
    # reclaims hard: a job admitted past it would crawl, so it bounds us too.
    limits = []
    for name in ("memory.max", "memory.high"):
        value = _v2_limit(d, name)
        if value is not None:
            limits.append((value, name))
    if not limits:
        return None
    usage = _read_int(os.path.join(d, "memory.current"))
    if usage is None:
        return None
    limit, name = min(limits)
    working = working_set(usage, _stat_fields(os.path.join(d, "memory.stat")), V2_NAMES)
    label = "limit" if name == "memory.max" else "memory.high"
    return Constraint(
        max(0, limit - working), limit, f"cgroup v2 {d} ({label} {format_size(limit)})"
    )


def _each_group(
    root: str, pid: int | str, v1: Callable[[str], T | None], v2: Callable[[str], T | None]
) -> list[tuple[int, str, T]]:
    """(version, group, what the reader for its version found) for each of ``pid``'s
    cgroups where that is not None, innermost first."""
    found = []
    for version, dirs in cgroup_dirs(root, pid):
        reader = v1 if version == 1 else v2
        for d in dirs:
            value = reader(d)
            if value is not None:
                found.append((version, d, value))
    return found


def cgroup_constraints(*, root: str = "/", pid: int | str = "self") -> list[Constraint]:
    """Every memory limit on ``pid``'s cgroups (v1 memory controller and v2), innermost first."""
    return [c for _, _, c in _each_group(root, pid, _v1_constraint, _v2_constraint)]


def cgroup_oom_kills(*, root: str = "/", pid: int | str = "self") -> int | None:
    """OOM kills counted in ``pid``'s own memory cgroup, or None if not available.

    Read it before and after a child runs: an increase while the child died of
    SIGKILL means the OOM killer, not a user, killed it. v1 counts a kill in the
    victim's own group (memory.oom_control), v2 counts it there and in every
    ancestor (memory.events), so the process's own group sees a kill of its child.
    """
    for version, dirs in cgroup_dirs(root, pid):
        name = "memory.oom_control" if version == 1 else "memory.events"
        count = _stat_field(os.path.join(dirs[0], name), "oom_kill")
        if count is not None:
            return count
    return None


def host_oom_kills(*, root: str = "/") -> int | None:
    """OOM kills on the whole host since boot (/proc/vmstat, Linux >= 4.13), or None."""
    return _stat_field(under(root, "/proc/vmstat"), "oom_kill")


def _v1_swap_room(d: str) -> int | None:
    # memsw bounds RAM plus swap together: the swap allowance is what it grants
    # beyond the RAM limit, and what is in swap now is memsw usage beyond RAM usage.
    memsw = _read_int(os.path.join(d, "memory.memsw.limit_in_bytes"))
    if memsw is None or memsw >= UNLIMITED_THRESHOLD:
        return None
    memsw_usage = _read_int(os.path.join(d, "memory.memsw.usage_in_bytes"))
    usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
    limit = _read_int(os.path.join(d, "memory.limit_in_bytes"))
    if memsw_usage is None or usage is None:
        return None
    allowance = memsw - limit if limit is not None and limit < UNLIMITED_THRESHOLD else memsw
    return max(0, allowance - max(0, memsw_usage - usage))


def _v2_swap_room(d: str) -> int | None:
    limit = _v2_limit(d, "memory.swap.max")
    current = _read_int(os.path.join(d, "memory.swap.current"))
    if limit is None or current is None:
        return None
    return max(0, limit - current)


def cgroup_swap_room(*, root: str = "/", pid: int | str = "self") -> list[tuple[int, str]]:
    """Swap each of ``pid``'s cgroups still allows (bytes, which group), innermost
    first; a group without a swap limit is not listed (the host's swap bounds it)."""
    found = _each_group(root, pid, _v1_swap_room, _v2_swap_room)
    return [(room, f"cgroup v{version} {d}") for version, d, room in found]


def _v2_cpus(d: str) -> int | None:
    """CPUs a v2 group's ``cpu.max`` ("QUOTA PERIOD"; "max PERIOD": none) allows,
    rounded up."""
    fields = (read_optional(os.path.join(d, "cpu.max")) or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, -(-quota // period)) if quota > 0 and period > 0 else None


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def usable_cpus(*, root: str = "/", pid: int | str = "self", affinity: int | None = None) -> int:
    """CPUs ``pid`` may run on: its affinity (a container's CPU set, not the host's
    count; ``affinity`` stands in for it), and no more than a cgroup v2 CPU quota
    (``cpu.max``) of its group or an ancestor allows, rounded up, as Rust's
    ``available_parallelism``, and so cargo's default ``-j``, counts them. A cgroup
    v1 quota is not read."""
    cpus = _affinity() if affinity is None else affinity
    return min([cpus, *(q for _, _, q in _each_group(root, pid, lambda d: None, _v2_cpus))])


@functools.lru_cache(maxsize=1)
def cpus_here() -> int:
    """`usable_cpus` of this process, read once."""
    return usable_cpus()
