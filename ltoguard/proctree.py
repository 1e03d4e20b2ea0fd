"""A compile's process tree and the memory it holds, read from /proc.

The one place ltoguard lists processes and reads their memory: the peak sampler,
pausing and killing a compile, admission and ``ltoguard status`` all go through it.
Memory is anonymous resident memory, not all of it: file-backed pages (rustc's own
librustc_driver.so) are shared page cache, not memory a new job adds. psutil is
imported only where the kernel lists no children (no CONFIG_PROC_CHILDREN) or
there is no /proc (macOS): importing it costs every guarded job memory and CPU.
"""

from __future__ import annotations

import contextlib
import os
import time

from ltoguard import procstat
from ltoguard.sizes import KiB
from ltoguard.structs import struct


@struct(frozen=True)
class Stat:
    """The fields of /proc/PID/stat that ltoguard reads."""

    name: str  # comm: at most 15 bytes, any of them spaces or parentheses
    state: str  # "R", "S", "T" (stopped), "Z" (zombie)...
    ppid: int
    start: int  # clock ticks after boot: with the pid, it names one process


@struct(frozen=True)
class Memory:
    """One process's anonymous resident memory, in bytes."""

    anon: int  # now
    peak: int  # its high-water mark (= anon where the kernel keeps none for us): spikes between samples count
    shared: int = 0  # its file and shmem pages now, which ``peak`` took off the high-water mark
    hwm: int = 0  # the kernel's high-water mark of all its resident pages (0: none kept)


@struct(frozen=True)
class Proc:
    """One process: its pid, reused once the process is reaped, and its start time,
    which tells the next process under that pid apart."""

    pid: int
    start: float


def _read(path: str) -> bytes | None:
    # os.open, not open(): no buffered file object for a few hundred bytes, read often.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None  # the process went away between open and read
    finally:
        os.close(fd)


def has_proc() -> bool:
    """Whether processes can be read from /proc (Linux), rather than through psutil."""
    return os.path.exists("/proc/self/stat")


def has_children_files() -> bool:
    """Whether this kernel lists a task's children in /proc (CONFIG_PROC_CHILDREN)."""
    return os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def parse_stat(raw: bytes) -> Stat | None:
    """The contents of /proc/PID/stat, parsed; None if they are not that."""
    fields = procstat.parse_stat(raw)
    return None if fields is None else Stat(*fields)


def read_stat(pid: int) -> Stat | None:
    """/proc/PID/stat, parsed; None if the process is gone (or there is no /proc)."""
    raw = _read(f"/proc/{pid}/stat")
    return None if raw is None else parse_stat(raw)


def start_time(pid: int) -> float | None:
    """When the process started, None if it is gone: compared, never shown (clock
    ticks from /proc, seconds since the epoch from psutil)."""
    stat = read_stat(pid)
    if stat is not None:
        return stat.start
    if has_proc():
        return None
    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, parents before their children; [] if it is gone.

    From /proc/PID/task/TID/children: a few small reads per process of the tree, not
    a scan of every process on the host (which is what psutil does on Linux)."""
    if not has_children_files():
        return _psutil_descendants(pid)
    # Each pid once: when a thread that forked ends, the kernel hands its children to
    # another thread of the process, and a listing read meanwhile can name them twice.
    seen = {pid}
    found: list[int] = []
    todo = [pid]
    while todo:
        for kid in children(todo.pop()):
            if kid not in seen:
                seen.add(kid)
                found.append(kid)
                todo.append(kid)
    return found


def children(pid: int) -> list[int]:
    """``pid``'s children, from /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN);
    [] if it is gone. A pid may appear twice (see `descendants`)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone meanwhile
    found: list[int] = []
    for tid in tids:
        raw = _read(f"/proc/{pid}/task/{tid}/children")
        found.extend(map(int, raw.split() if raw else ()))
    return found


def _psutil_descendants(pid: int) -> list[int]:
    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        return [int(p.pid) for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def tree(pid: int) -> list[Proc]:
    """``pid``'s descendants, then ``pid`` itself, each with its start time, so that
    a signal sent later reaches no process that took a pid over; [] if it is gone."""
    found = []
    for p in [*descendants(pid), pid]:
        started = start_time(p)
        if started is not None:  # ended since the listing
            found.append(Proc(p, started))
    return found


def send(proc: Proc, sig: int) -> None:
    """Send ``sig`` to the process, unless it has ended (its pid then names nothing, or another)."""
    if start_time(proc.pid) == proc.start:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, sig)


def parse_status(raw: bytes) -> Memory | None:
    """Anonymous memory and its peak from /proc/PID/status; None without Vm lines (a zombie).

    The kernel keeps a high-water mark (VmHWM) for all resident memory only. VmHWM
    minus the file and shmem pages now is the anonymous peak if those pages held
    still; under memory pressure the kernel evicts them and this figure is too high,
    so the sampler, which sees them over time, works from ``hwm`` and ``shared``."""
    kib: dict[bytes, int] = {}
    for name in (b"VmRSS", b"VmHWM", b"RssAnon", b"RssFile", b"RssShmem"):
        # Found, not split into lines: the sampler parses this every quarter second.
        at = raw.find(b"\n" + name + b":")
        if at >= 0:
            with contextlib.suppress(ValueError, IndexError):
                kib[name] = int(raw[at + len(name) + 2 :].split(None, 1)[0]) * KiB
    if b"VmRSS" not in kib or b"VmHWM" not in kib:
        return None
    shared = kib.get(b"RssFile", 0) + kib.get(b"RssShmem", 0)
    anon = kib.get(b"RssAnon", max(0, kib[b"VmRSS"] - shared))
    return Memory(anon, max(anon, kib[b"VmHWM"] - shared), shared, kib[b"VmHWM"])


def memory(pid: int) -> Memory | None:
    """One process's anonymous resident memory; None if it is gone or a zombie."""
    raw = _read(f"/proc/{pid}/status")
    if raw is not None:
        return parse_status(raw)
    if has_proc():
        return None
    import psutil  # type: ignore[import-untyped, unused-ignore]

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        info = proc.memory_info()
    except psutil.Error:
        return None
    # Resident minus shared (file-backed) where psutil reports it; no peak is kept.
    anon = max(0, int(getattr(info, "rss", 0)) - int(getattr(info, "shared", 0)))
    return Memory(anon, anon)


def job_memory(pid: int) -> int:
    """A job's memory now: the anonymous resident memory of its whole tree (the
    compiler and its linker), in bytes; 0 if it is gone.

    The sampler's peaks, and so the estimates, measure the tree: admission and
    ``ltoguard status`` compare an estimate with this figure. Not PSS, which needs
    smaps_rollup (slow, and root-only for other users' processes); a compile's tree
    shares little anonymous memory (the linker is exec'd)."""
    return _anon([pid, *descendants(pid)])


def _anon(pids: list[int]) -> int:
    found = (memory(p) for p in pids)
    return sum(m.anon for m in found if m is not None)


# The names (comm) of what cargo runs to compile: rustc, and build scripts
# (build-script-build, cut to 15 bytes). A guarded job's ltoguard is not one: its
# compile runs under it, and a waiter holds no compile.
COMPILER = "rustc"
BUILD_SCRIPT = "build-script-"


def compiling_beside(me: int | None = None, parent: int | None = None) -> int:
    """What the compiles ``parent`` (default: this process's, cargo) runs beside
    ``me`` (default: this process) hold now: the anonymous memory of each child
    named as a compile, with its tree, in bytes. 0 where the kernel lists no
    children, or where the parent runs no compiles (sccache's client, rustc running
    a linker).

    Never a compile with another ltoguard in its tree (one running this
    interpreter, whatever its name: a waiter, or one under a build script that runs
    cargo): a waiter ends only once admitted, and waiting for it would never end."""
    me = os.getpid() if me is None else me
    parent = os.getppid() if parent is None else parent
    if parent <= 0 or not has_children_files():
        return 0
    ours = _exe(me)
    total = 0
    for kid, name in _siblings(me, parent):
        if name != COMPILER and not name.startswith(BUILD_SCRIPT):
            continue
        tree = [kid, *descendants(kid)]
        if ours is not None and any(_exe(p) == ours for p in tree):
            continue
        total += _anon(tree)
    return total


def nothing_compiling_beside(me: int | None = None, parent: int | None = None) -> bool:
    """Is the parent of ``me`` (default: this process) cargo, with no child but
    ltoguards (processes running this interpreter: waiters and guarded jobs)? Any
    other child may be a compile, whatever its name (rustc, a build script,
    sccache's client, clippy-driver). False wherever it cannot tell: no children
    files, another parent (rustc running ltoguard as its linker, sccache's client),
    or a cargo that a build script or another cargo runs (the outer build's
    compiles are not its children)."""
    me = os.getpid() if me is None else me
    parent = os.getppid() if parent is None else parent
    stat = read_stat(parent) if parent > 0 else None
    if stat is None or stat.name != "cargo" or not has_children_files():
        return False
    above = read_stat(stat.ppid) if stat.ppid > 0 else None
    if above is not None and (above.name == "cargo" or above.name.startswith(BUILD_SCRIPT)):
        return False
    ours = _exe(me)
    return ours is not None and all(_exe(kid) == ours for kid, _ in _siblings(me, parent))


def _siblings(me: int, parent: int) -> list[tuple[int, str]]:
    """The live (not zombie) children of ``parent`` other than ``me``, with their names."""
    found = []
    for kid in set(children(parent)) - {me}:
        stat = read_stat(kid)
        if stat is not None and stat.state != "Z":
            found.append((kid, stat.name))
    return found


def _exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None


class PeakSampler:
    """Samples the memory of a process tree in a background thread and keeps the peak.

    The descendants are listed again every ``rescan`` seconds (less often where
    listing is slow); each ``interval`` only the processes known are read. The
    root's high-water mark covers spikes between samples: for fat LTO the peak is
    inside rustc itself. A sample every quarter second by default: every running
    guarded job pays for this thread.
    """

    def __init__(self, pid: int, interval: float = 0.25, rescan: float = 2.0) -> None:
        self.pid = pid
        self.interval = interval
        self.rescan = rescan
        self._peak = 0
        self._current = 0
        # The root's high-water mark and file pages at the last sample (sampling thread only).
        self._last_hwm = 0
        self._last_shared = 0
        self.samples = 0
        import threading  # here, not at the top: a waiting job never samples (test_waiter_imports)

        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"ltoguard-peak-{pid}", daemon=True)

    @property
    def peak(self) -> int:
        with self._lock:
            return self._peak

    @property
    def current(self) -> int:
        with self._lock:
            return self._current

    @property
    def sampling(self) -> bool:
        """Whether the sampling thread still runs: it ends by itself once the process is gone."""
        return self._thread.is_alive()

    def start(self) -> PeakSampler:
        # The start time is read here, by the caller, before it can reap the process:
        # read in the thread, it could already be another process's.
        self._started = start_time(self.pid)
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
        """Sample every ``interval`` until the process is gone or ``stop()`` (then once
        more); list its descendants again every ``rescan`` seconds."""
        started = self._started
        if started is None:
            return
        children: list[int] = []
        next_scan = 0.0
        while True:
            now = time.monotonic()
            if now >= next_scan:
                children = descendants(self.pid)
                # Back off on hosts where listing is slow: scans stay under ~1% of a core.
                next_scan = now + max(self.rescan, 100 * (time.monotonic() - now))
            alive = self._sample(started, children)
            if not alive or self._stop.wait(self.interval):
                if alive:
                    self._sample(started, children)
                return

    def _sample(self, started: float, children: list[int]) -> bool:
        # Once the main thread reaps the compile its pid may belong to another process:
        # the start time tells them apart. A zombie has no memory to read: done too.
        root = memory(self.pid)
        if root is None or start_time(self.pid) != started:
            return False
        found = (memory(pid) for pid in children)
        total = root.anon + sum(m.anon for m in found if m is not None)
        # The mark counts file pages too, which memory pressure evicts: it counts only
        # when it rose since the last sample, less the more file pages of the two.
        hwm_anon = 0
        if root.hwm > self._last_hwm:
            hwm_anon = root.hwm - max(root.shared, self._last_shared)
        self._last_hwm, self._last_shared = root.hwm, root.shared
        with self._lock:
            self._current = total
            self._peak = max(self._peak, total, hwm_anon)
            self.samples += 1
        return True
