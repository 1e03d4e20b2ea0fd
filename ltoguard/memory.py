"""How much memory a guarded job may use: sizes, budgets, cgroups, process trees.

Only the guarded path imports this module (it pulls in psutil and threading); the
pass-through path must stay tiny (issue #3).

Available memory is the tightest of the host's available memory and, for every
cgroup the process is in and each of its ancestors, the limit minus the usage that
cannot be reclaimed (usage minus inactive page cache, the "working set" docker and
the kubelet use). psutil's ``virtual_memory()`` alone does not see cgroup limits
(RUSTC-FACTS.md, "Memory limits").
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped, unused-ignore]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# v1 reports "no limit" as PAGE_COUNTER_MAX * PAGE_SIZE (9223372036854771712 with
# 4 KiB pages, other values with other page sizes); anything this large is no limit.
UNLIMITED_THRESHOLD = 1 << 60

SIZE_EXAMPLES = (
    "accepted: 12G, 1500M, 512MiB, 2.5GB or plain bytes (1073741824), optionally"
    " negative for 'all but' (-3G); units are binary: K/M/G/T = KiB/MiB/GiB/TiB"
)

_UNITS = {"": 1, "b": 1}
for _i, _letter in enumerate("kmgt", start=1):
    for _suffix in ("", "b", "ib"):
        _UNITS[_letter + _suffix] = 1024**_i

_SIZE_RE = re.compile(r"\s*([+-]?)\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """Parse a size such as ``12G``, ``1500M``, ``512MiB``, ``2.5GB`` or ``1073741824``.

    Every unit is binary (``GB`` means GiB too): the setting is compared with
    cgroup limits and RAM sizes, which are binary, and docker reads ``-m 2g`` the
    same way. A leading ``-`` returns a negative number (``-3G``: "all but 3 GiB").
    Fractions of a byte are dropped. Zero is refused: a zero budget admits nothing.
    """
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"invalid size {text!r}: {SIZE_EXAMPLES}")
    sign, number, unit = m.groups()
    multiplier = _UNITS.get(unit.lower())
    if multiplier is None:
        raise ValueError(f"invalid size {text!r}: unknown unit {unit!r}; {SIZE_EXAMPLES}")
    try:
        value = int(Decimal(number) * multiplier)
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"invalid size {text!r}: {SIZE_EXAMPLES}") from exc
    if value == 0:
        raise ValueError(f"invalid size {text!r}: must not be zero; {SIZE_EXAMPLES}")
    return -value if sign == "-" else value


def format_size(n: int) -> str:
    """Human size with binary units: ``1.5 GiB``, ``700 MiB``, ``512 B``."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    for name, unit in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= unit:
            value = n / unit
            text = f"{value:.0f}" if value >= 100 else f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{sign}{text} {name}"
    return f"{sign}{n} B"


class Constraint(NamedTuple):
    """One source of a memory bound: free bytes now, its limit/total, and what it is."""

    available: int
    total: int
    source: str


@dataclass(frozen=True)
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


class HostMemory(NamedTuple):
    available: int
    total: int


def host_memory() -> HostMemory:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    vm = psutil.virtual_memory()
    return HostMemory(int(vm.available), int(vm.total))


# ---------------------------------------------------------------------------
# cgroups


def _read(path: str) -> str | None:
    # Every cgroup file is optional: controllers may be absent, files unreadable
    # inside containers, groups removed under us. A missing bound is not an error.
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _read_int(path: str) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _stat_field(path: str, field: str) -> int | None:
    text = _read(path)
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


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


class _Mount(NamedTuple):
    version: int  # 1 or 2
    root: str  # the cgroup path the mount shows at its mount point
    mountpoint: str


@functools.lru_cache(maxsize=4)
def _cgroup_mounts(mountinfo: str) -> tuple[_Mount, ...]:
    # Parsed once per distinct mount table: a waiting head reads memory twice a
    # second, and parsing a long mountinfo was most of that cost.
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


def _under(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _cgroup_dirs(root: str, pid: int | str) -> list[tuple[int, list[str]]]:
    """For each cgroup version, the directories from the process's group up to the mount.

    Paths are prefixed with ``root`` so tests can build a fake /proc and /sys.
    """
    mountinfo = _read(_under(root, f"/proc/{pid}/mountinfo"))
    cgroup_text = _read(_under(root, f"/proc/{pid}/cgroup"))
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
            top = _under(root, mount.mountpoint)
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
    usage = _read_int(os.path.join(d, "memory.usage_in_bytes"))
    if limit is None or usage is None or limit >= UNLIMITED_THRESHOLD:
        return None
    stat = os.path.join(d, "memory.stat")
    # total_ is the hierarchical counter, matching usage_in_bytes under use_hierarchy.
    inactive = _stat_field(stat, "total_inactive_file")
    if inactive is None:
        inactive = _stat_field(stat, "inactive_file") or 0
    working = max(0, usage - inactive)
    return Constraint(max(0, limit - working), limit, f"cgroup v1 {d} (limit {format_size(limit)})")


def _v2_limit(d: str, name: str) -> int | None:
    text = _read(os.path.join(d, name))
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
    usage = _read_int(os.path.join(d, "memory.current"))
    if not limits or usage is None:
        return None
    limit, name = min(limits)
    inactive = _stat_field(os.path.join(d, "memory.stat"), "inactive_file") or 0
    working = max(0, usage - inactive)
    label = "limit" if name == "memory.max" else "memory.high"
    return Constraint(
        max(0, limit - working), limit, f"cgroup v2 {d} ({label} {format_size(limit)})"
    )


def cgroup_constraints(*, root: str = "/", pid: int | str = "self") -> list[Constraint]:
    """Every memory limit on ``pid``'s cgroups (v1 memory controller and v2), innermost first."""
    found = []
    for version, dirs in _cgroup_dirs(root, pid):
        reader = _v1_constraint if version == 1 else _v2_constraint
        for d in dirs:
            c = reader(d)
            if c is not None:
                found.append(c)
    return found


def available_memory(
    setting: str | None = None,
    *,
    guarded_usage: int = 0,
    root: str = "/",
    pid: int | str = "self",
    host: HostMemory | None = None,
) -> MemorySnapshot:
    """The memory a new guarded job can count on, under the ``LTOGUARD_MEMORY`` setting.

    ``setting`` None, empty or ``auto``: the tightest of host and cgroup bounds.
    ``-SIZE``: that, minus SIZE kept free for everything else (floored at 0).
    ``SIZE``: a cap on the sum of the guarded jobs' memory. ``guarded_usage`` is
    what the running guarded jobs hold now, so the budget left is SIZE minus it;
    the real free memory still bounds it (a budget larger than the machine must not
    admit a job the machine cannot hold).

    Raises ValueError naming LTOGUARD_MEMORY and the accepted forms on a bad setting.
    """
    explicit: int | None = None
    if setting is not None and setting.strip().lower() not in ("", "auto"):
        try:
            explicit = parse_size(setting)
        except ValueError as exc:
            raise ValueError(f"LTOGUARD_MEMORY={setting!r}: {exc}") from None

    hm = host if host is not None else host_memory()
    found = [Constraint(hm.available, hm.total, "host (psutil)")]
    found += cgroup_constraints(root=root, pid=pid)
    tightest = min(found, key=lambda c: c.available)
    constraints = tuple(found)

    if explicit is not None and explicit < 0:
        reserve = -explicit
        return MemorySnapshot(
            max(0, tightest.available - reserve),
            tightest.total,
            f"{tightest.source} minus {format_size(reserve)} kept free (LTOGUARD_MEMORY={setting})",
            constraints,
        )
    if explicit is not None:
        left = max(0, explicit - guarded_usage)
        if left <= tightest.available:
            return MemorySnapshot(
                left,
                explicit,
                f"LTOGUARD_MEMORY={setting} budget ({format_size(guarded_usage)} held by"
                " guarded jobs)",
                constraints,
            )
    return MemorySnapshot(tightest.available, tightest.total, tightest.source, constraints)


def cgroup_oom_kills(*, root: str = "/", pid: int | str = "self") -> int | None:
    """OOM kills counted in ``pid``'s own memory cgroup, or None if not available.

    Read it before and after a child runs: an increase while the child died of
    SIGKILL means the OOM killer, not a user, killed it. v1 counts a kill in the
    victim's own group (memory.oom_control), v2 counts it there and in every
    ancestor (memory.events), so the process's own group sees a kill of its child.
    """
    for version, dirs in _cgroup_dirs(root, pid):
        name = "memory.oom_control" if version == 1 else "memory.events"
        count = _stat_field(os.path.join(dirs[0], name), "oom_kill")
        if count is not None:
            return count
    return None


def host_oom_kills(*, root: str = "/") -> int | None:
    """OOM kills on the whole host since boot (/proc/vmstat, Linux >= 4.13), or None."""
    return _stat_field(_under(root, "/proc/vmstat"), "oom_kill")


# ---------------------------------------------------------------------------
# process trees


def _anon(info: object) -> int:
    """Anonymous resident memory from psutil's memory_info: rss minus file-backed/shared.

    File-backed pages (rustc's own librustc_driver.so, ~100+ MiB mapped by every
    rustc) are shared page cache, not memory a new job adds: counting them made
    two jobs that fit (cgroup charge ~395 MiB each) look like 2 x 550 MiB.
    """
    rss = int(getattr(info, "rss", 0))
    shared = int(getattr(info, "shared", 0))
    return max(0, rss - shared)


def anon_rss(pid: int) -> int:
    """Anonymous resident memory of one process from /proc/PID/statm (resident - shared):
    one small read, cheap enough for a waiting head's every poll."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
        return max(0, int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def tree_rss(pid: int) -> int:
    """Anonymous resident memory of ``pid`` and all its descendants, in bytes; 0 if gone.

    Not PSS: PSS needs smaps_rollup (slow, and root-only for other users'
    processes); a rustc tree shares little anonymous memory (the linker is exec'd).
    """
    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        proc = psutil.Process(pid)
        total = _anon(proc.memory_info())
        children = proc.children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        with contextlib.suppress(psutil.Error):
            total += _anon(child.memory_info())
    return total


def _status_rss_hwm(pid: int) -> tuple[int, int] | None:
    """(anonymous RSS, its high-water mark) of one process from /proc, or None.

    The kernel keeps VmHWM for all resident memory only; the file-backed part of a
    compiler barely moves, so VmHWM minus the current file/shmem pages is the
    anonymous peak, including spikes between samples.
    """
    text = _read(f"/proc/{pid}/status")
    if text is None:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            try:
                fields[name] = int(rest.split()[0]) * KiB
            except (ValueError, IndexError):
                pass
    if "VmRSS" not in fields or "VmHWM" not in fields:
        return None
    shared = fields.get("RssFile", 0) + fields.get("RssShmem", 0)
    anon = fields.get("RssAnon", max(0, fields["VmRSS"] - shared))
    return anon, max(anon, fields["VmHWM"] - shared)


class PeakSampler:
    """Samples the memory of a process tree in a background thread and keeps the peak.

    Listing descendants means reading every /proc/*/stat (2-4 ms with 90 processes
    here, ~40 us per process), so that happens every ``rescan`` seconds, or less
    often when a scan is slow; each ``interval`` only the known processes are read.
    The root's VmHWM (its kernel-kept high-water mark) covers spikes between
    samples: for fat LTO the peak is inside rustc itself (RUSTC-FACTS.md, "Where the memory goes").
    """

    def __init__(self, pid: int, interval: float = 0.1, rescan: float = 2.0) -> None:
        self.pid = pid
        self.interval = interval
        self.rescan = rescan
        self._peak = 0
        self._current = 0
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"ltoguard-peak-{pid}", daemon=True)

    @property
    def peak(self) -> int:
        with self._lock:
            return self._peak

    @property
    def current(self) -> int:
        with self._lock:
            return self._current

    def start(self) -> PeakSampler:
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop sampling (takes one last sample if the process is still there); return the peak."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.peak

    def __enter__(self) -> PeakSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        children: dict[int, psutil.Process] = {}
        next_scan = 0.0
        while True:
            now = time.monotonic()
            if now >= next_scan:
                try:
                    children = {c.pid: c for c in root.children(recursive=True)}
                except psutil.Error:
                    children = {}
                # Back off on hosts with many processes: scans stay under ~1% of a core.
                next_scan = now + max(self.rescan, 100 * (time.monotonic() - now))
            alive = self._sample(root, children)
            if not alive or self._stop.wait(self.interval):
                if alive:
                    self._sample(root, children)
                return

    def _sample(self, root: psutil.Process, children: dict[int, psutil.Process]) -> bool:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        # is_running() compares start times: after the lead reaps the child its
        # pid may already belong to another process.
        if not root.is_running():
            return False
        hwm = 0
        status = _status_rss_hwm(root.pid)
        if status is not None:
            total, hwm = status
        else:
            # No Vm lines: a zombie (Linux) or a platform without /proc.
            try:
                if root.status() == psutil.STATUS_ZOMBIE:
                    return False
                total = _anon(root.memory_info())
            except psutil.Error:
                return False
        for pid, child in list(children.items()):
            try:
                total += _anon(child.memory_info())
            except psutil.Error:
                del children[pid]
        with self._lock:
            self._current = total
            self._peak = max(self._peak, total, hwm)
            self.samples += 1
        return True
