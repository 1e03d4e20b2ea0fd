"""The memory a process tree holds: anonymous resident memory, summed and sampled.

Anonymous, not all resident memory: file-backed pages (rustc's own
librustc_driver.so) are shared page cache, not memory a new job adds. The sampler
runs in a thread of the guarded wrapper while its compile runs.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ltoguard.sizes import KiB

if TYPE_CHECKING:
    import psutil  # type: ignore[import-untyped, unused-ignore]

_Tree = TypeVar("_Tree")  # how one way of listing names the descendants


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
    if has_children_files():
        return anon_rss(pid) + sum(anon_rss(child) for child in descendants(pid))
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


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks (/proc/PID/stat field 22), None if gone:
    with the pid, it names one process (a pid is reused once its process is reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # The name (field 2) is in parentheses and may hold spaces or ')'.
            fields = f.read().rpartition(b")")[2].split()
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def has_children_files() -> bool:
    """Whether this kernel lists a task's children in /proc (CONFIG_PROC_CHILDREN)."""
    return os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")


def descendants(pid: int) -> list[int]:
    """Every descendant of ``pid``, from /proc/PID/task/TID/children: a few small
    reads per process of the tree, not a scan of every process on the host.

    Each pid once: when a thread that forked ends, the kernel hands its children to
    another thread of the process, and a listing read meanwhile can name them twice."""
    seen = {pid}
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue  # gone meanwhile
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue  # the thread ended meanwhile
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    found.append(kid)
                    todo.append(kid)
    return found


def _read_status(pid: int) -> str | None:
    # The process may be gone or a zombie by now: no status is not an error.
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _status_rss_hwm(pid: int) -> tuple[int, int] | None:
    """(anonymous RSS, its high-water mark) of one process from /proc, or None.

    The kernel keeps VmHWM for all resident memory only; the file-backed part of a
    compiler barely moves, so VmHWM minus the current file/shmem pages is the
    anonymous peak, including spikes between samples.
    """
    text = _read_status(pid)
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

    Descendants are listed every ``rescan`` seconds (or less often when that is
    slow) from the tree's own /proc/PID/task/*/children files, ~0.03 ms for a
    compile and its linker; each ``interval`` only the known processes are read.
    No psutil on Linux: importing it and its scan of every /proc/*/stat (1-4 ms with
    65-90 processes) were a quarter of a guarded job's own CPU; psutil remains the
    fallback where the kernel has no children files, or no /proc.
    The root's VmHWM (its kernel-kept high-water mark) covers spikes between
    samples: for fat LTO the peak is inside rustc itself (RUSTC-FACTS.md, "Where the memory goes").
    Every 0.25 s by default: the sampling thread then costs ~0.2% of a core
    (measured over 5 s; 0.7% through psutil, its import included), which every
    running guarded job pays.
    """

    def __init__(self, pid: int, interval: float = 0.25, rescan: float = 2.0) -> None:
        self.pid = pid
        self.interval = interval
        self.rescan = rescan
        self._peak = 0
        self._current = 0
        self.samples = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started: int | None = None
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
        if not has_children_files():
            self._run_psutil()
            return
        started = self._started
        if started is not None:
            self._loop(lambda: descendants(self.pid), lambda kids: self._sample_proc(started, kids))

    def _loop(self, scan: Callable[[], _Tree], sample: Callable[[_Tree], bool]) -> None:
        """Sample every ``interval`` until the process is gone or ``stop()`` (then once
        more); list its descendants again every ``rescan`` seconds."""
        next_scan = 0.0
        while True:
            now = time.monotonic()
            if now >= next_scan:
                children = scan()
                # Back off on hosts where listing is slow: scans stay under ~1% of a core.
                next_scan = now + max(self.rescan, 100 * (time.monotonic() - now))
            alive = sample(children)
            if not alive or self._stop.wait(self.interval):
                if alive:
                    sample(children)
                return

    def _sample_proc(self, started: int, children: list[int]) -> bool:
        # Once the lead reaps the compile its pid may belong to another process:
        # the start time tells them apart. A zombie has no Vm lines: done too.
        status = _status_rss_hwm(self.pid)
        if status is None or start_time(self.pid) != started:
            return False
        total, hwm = status
        total += sum(anon_rss(pid) for pid in children)
        self._record(total, hwm)
        return True

    def _record(self, total: int, hwm: int) -> None:
        with self._lock:
            self._current = total
            self._peak = max(self._peak, total, hwm)
            self.samples += 1

    def _run_psutil(self) -> None:
        import psutil  # type: ignore[import-untyped, unused-ignore]

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return

        def scan() -> dict[int, psutil.Process]:
            try:
                return {c.pid: c for c in root.children(recursive=True)}
            except psutil.Error:
                return {}

        self._loop(scan, lambda kids: self._sample(root, kids))

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
        self._record(total, hwm)
        return True
