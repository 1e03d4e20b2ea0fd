"""Per-job peak-memory history and the estimates drawn from it; where the history is
kept, and how a job reads and records it, is history.py (HistoryStore).

The history file is JSON only (never executed or evaluated), written atomically
(a temp file in the same directory, then os.replace) so a reader never sees half a
file, opened with O_NOFOLLOW and refused unless it belongs to the current uid. A
file that cannot be used is ignored with one warning: the history only sharpens
estimates, a build must never fail over it.
"""

from __future__ import annotations

import enum
import errno
import json
import math
import os
import stat
from collections.abc import Callable, Iterable

from ltoguard import curves
from ltoguard.curves import Curve
from ltoguard.messages import warning
from ltoguard.sizes import GiB, MiB, format_size
from ltoguard.statedir import write_private_file
from ltoguard.structs import struct

# Used when neither this job nor a sibling has run before: most fat-LTO links fit
# in it, and a 7 GiB CI runner can still start three; the first run's peaks replace it.
DEFAULT_ESTIMATE = 2 * GiB
# On a smaller budget, half of it: a roomy budget starts an unknown job beside
# another while a tight one keeps them apart (a pair that does not fit after all
# pauses its youngest, which stops and queues again only if memory gets critical).
DEFAULT_ESTIMATE_FRACTION = 2
DEFAULT_ESTIMATE_MIN = 256 * MiB


class Basis(str, enum.Enum):
    """Where an estimate comes from; the value is what records, events and the
    history commands write and read."""

    HISTORY = "history"  # this job's largest recent peak, plus headroom
    SIBLINGS_SCALED = "siblings, scaled by inputs"
    SIBLINGS = "siblings"
    HISTORY_OTHER_TOOLCHAIN = "history, other toolchain"
    SIBLINGS_OTHER_TOOLCHAIN = "siblings, other toolchain"
    INPUTS = "inputs"  # the cold prediction alone
    DEFAULT = "default"  # nothing known
    CONFIGURED = "configured"  # the crate's memory setting
    RAISED = "raised"  # queued again after outgrowing its estimate

    def __str__(self) -> str:
        return self.value

    @property
    def relearnable(self) -> bool:
        """May a job still improve on it while it waits? A sibling that finishes
        meanwhile knows more than the default, and the job's own history more than both."""
        return self in _RELEARNABLE


_RELEARNABLE = (
    Basis.DEFAULT,
    Basis.INPUTS,
    Basis.SIBLINGS,
    Basis.SIBLINGS_SCALED,
    Basis.HISTORY_OTHER_TOOLCHAIN,
    Basis.SIBLINGS_OTHER_TOOLCHAIN,
)


def default_estimate(budget_total: int) -> int:
    """The estimate for a job with no history and no siblings, under a budget of this size."""
    return min(
        DEFAULT_ESTIMATE, max(DEFAULT_ESTIMATE_MIN, budget_total // DEFAULT_ESTIMATE_FRACTION)
    )


# The estimate is the largest of the last MAX_SAMPLES peaks, unpadded: that maximum
# covers run-to-run spread already, and a job that outgrows it beside another is
# paused (pause_step), not killed. A lead here kept pairs that fit from running.
HISTORY_HEADROOM = 1.0

MAX_SAMPLES = 5  # peaks kept per job: enough to smooth one odd run
MAX_KEYS = 500  # jobs kept; the least recently recorded go first

FORMAT_VERSION = 1  # "toolchain" was added as an optional field: older readers skip it
# A job's peaks under another compiler are only a hint: compiler updates have
# doubled fat-LTO memory before. Raised by this much, and the running job's own
# growth is watched as ever.
OTHER_TOOLCHAIN_FACTOR = 1.5


def _canon(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def job_key(
    crate_name: str,
    workspace: str,
    opt_level: str,
    lto: str,
    debuginfo: str,
    target: str,
    crate_types: Iterable[str],
) -> str:
    """Identify one guarded compile across builds: same crate, same memory-relevant settings."""
    return _canon(
        [workspace, crate_name, opt_level, lto, debuginfo, target, sorted(set(crate_types))]
    )


def group_key(workspace: str, opt_level: str, lto: str, debuginfo: str, target: str) -> str:
    """The workspace and profile: jobs in one group link mostly the same dependencies."""
    return _canon([workspace, opt_level, lto, debuginfo, target])


def _no_warning(path: str, reason: str) -> None:
    pass


def _warn_line(path: str, reason: str) -> None:
    # A warning during a compile that goes on: past cargo's message cache.
    warning(f"ignoring unreadable memory history {path}: {reason}")


class HistoryError(ValueError):
    pass


@struct
class Entry:
    group: str
    peaks: list[int]
    toolchain: str = ""  # "" in files written before toolchains were recorded
    inputs: dict[str, int] | None = None  # inputs.Inputs of the last run (None: unknown)
    curve: Curve | None = None  # its memory over the last run that gave one


def _validate(data: object) -> dict[str, Entry]:
    if not isinstance(data, dict):
        raise HistoryError("not a JSON object")
    if data.get("version") != FORMAT_VERSION:
        raise HistoryError(f"unknown format version {data.get('version')!r}")
    entries = data.get("entries")
    if not isinstance(entries, dict):
        raise HistoryError("'entries' is not an object")
    result: dict[str, Entry] = {}
    for key, entry in entries.items():
        if not isinstance(entry, dict):
            raise HistoryError(f"entry {key!r} is not an object")
        group, peaks = entry.get("group"), entry.get("peaks")
        if not isinstance(group, str) or not isinstance(peaks, list) or not peaks:
            raise HistoryError(f"entry {key!r} needs a string 'group' and a list 'peaks'")
        for p in peaks:
            # bool is an int subclass; true is not a peak.
            if not isinstance(p, int) or isinstance(p, bool) or p <= 0:
                raise HistoryError(f"entry {key!r} has a peak that is not a positive integer")
        toolchain = entry.get("toolchain", "")
        if not isinstance(toolchain, str):
            raise HistoryError(f"entry {key!r} has a 'toolchain' that is not a string")
        result[key] = Entry(
            group,
            peaks[-MAX_SAMPLES:],
            toolchain,
            _inputs(entry.get("inputs")),
            curves.parse(entry.get("curve")),
        )
    return result


def _inputs(value: object) -> dict[str, int] | None:
    """An entry's recorded inputs; anything malformed counts as unknown (it is a hint)."""
    if not isinstance(value, dict):
        return None
    out = {}
    for name in ("deps", "crates", "source", "meta", "generic"):
        v = value.get(name, None if name in ("deps", "crates", "source") else 0)  # came later
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            return None
        out[name] = v
    return out


def _same(entry: Entry, toolchain: str) -> bool:
    """Was the entry learned with this toolchain? A caller that does not know its
    toolchain takes every entry as its own (as before toolchains were recorded)."""
    return not toolchain or entry.toolchain == toolchain


class History:
    """Recorded peaks per job key, each job tagged with its group (workspace + profile)
    and the toolchain it was measured with."""

    def __init__(self) -> None:
        # Insertion order is recency order: record() moves a key to the end and
        # trimming drops from the front.
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[str, str, list[int]]]:
        """(key, group, peaks) for every job, least recently recorded first."""
        return [(k, e.group, list(e.peaks)) for k, e in self._entries.items()]

    def peaks(self, key: str) -> list[int]:
        entry = self._entries.get(key)
        return list(entry.peaks) if entry else []

    def curve(self, key: str, toolchain: str = "") -> Curve | None:
        """The job's memory over its last run that gave a curve, with this toolchain."""
        entry = self._entries.get(key)
        return entry.curve if entry is not None and _same(entry, toolchain) else None

    def curve_for(
        self, key: str, group: str, estimate: int, basis: Basis, toolchain: str = ""
    ) -> Curve | None:
        """The memory curve a job is admitted with, for an estimate of this basis: its
        own with its own history, a sibling's with its siblings', else none."""
        if basis == Basis.HISTORY:
            return self.curve(key, toolchain)
        if basis in (Basis.SIBLINGS_SCALED, Basis.SIBLINGS):
            return self.sibling_curve(group, estimate, toolchain)
        return None

    def sibling_curve(self, group: str, estimate: int, toolchain: str = "") -> Curve | None:
        """For a job with no curve of its own: the curve of the sibling whose peak is
        nearest its estimate, its length scaled by their ratio (a bigger binary takes
        longer to link, much as it takes more memory)."""
        best: tuple[float, float, Curve] | None = None  # (distance, ratio, curve)
        for e in self._entries.values():
            if e.group != group or e.curve is None or not _same(e, toolchain):
                continue
            ratio = estimate / max(1, max(e.peaks))
            distance = abs(math.log(max(ratio, 1e-9)))
            if best is None or distance < best[0]:
                best = (distance, ratio, e.curve)
        if best is None:
            return None
        _, ratio, curve = best
        return Curve(curve.seconds * ratio, curve.shape)

    def toolchain(self, key: str) -> str:
        entry = self._entries.get(key)
        return entry.toolchain if entry else ""

    def merged_under(self, other: History, toolchain: str = "") -> History:
        """This history, with ``other``'s jobs that it lacks (an older file under the
        current one); for a job in both, the entry measured with ``toolchain`` wins,
        else this one."""
        out = History()
        out._entries = dict(other._entries)
        for key, entry in self._entries.items():
            theirs = out._entries.get(key)
            if theirs is None or not (
                toolchain and theirs.toolchain == toolchain != entry.toolchain
            ):
                out._entries.pop(key, None)
                out._entries[key] = entry  # recency order: ours are the newer
        return out

    @classmethod
    def load(
        cls, path: str, *, dir_fd: int | None = None, quiet: bool = False, label: str = ""
    ) -> History:
        """Read the history; missing means empty, anything unusable means empty plus one warning
        naming ``label`` (else ``path``); none with `quiet`, for a re-read by a process that
        already warned."""
        history = cls()
        warn_line = _no_warning if quiet else _warn_line

        def _warn(path: str, reason: str) -> None:
            warn_line(label or path, reason)

        try:
            # O_NONBLOCK: a FIFO planted here must not hang the build in open().
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(path, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            return history
        except OSError as exc:
            reason = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            _warn(path, reason)
            return history
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                _warn(path, "not a regular file")
                return history
            if st.st_uid != os.geteuid():
                _warn(path, f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()})")
                return history
            with os.fdopen(fd, "rb", closefd=False) as f:
                raw = f.read()
            history._entries = _validate(json.loads(raw.decode("utf-8")))
        except OSError as exc:
            _warn(path, exc.strerror or str(exc))
            history._entries = {}
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            _warn(path, str(exc) or type(exc).__name__)
            history._entries = {}
        finally:
            os.close(fd)
        return history

    def save(self, path: str, *, dir_fd: int | None = None) -> None:
        """Replace the file atomically; raises OSError (callers decide whether to warn)."""
        entries: dict[str, dict[str, object]] = {}
        for k, e in self._entries.items():
            entries[k] = {"group": e.group, "peaks": e.peaks}
            if e.toolchain:
                entries[k]["toolchain"] = e.toolchain
            if e.inputs is not None:
                entries[k]["inputs"] = e.inputs
            if e.curve is not None:
                entries[k]["curve"] = e.curve.as_json()
        data = {"version": FORMAT_VERSION, "entries": entries}
        payload = json.dumps(data, separators=(",", ":")).encode("utf-8")
        write_private_file(dir_fd, path, payload, mode=0o600, durable=True)

    def record(
        self,
        key: str,
        group: str,
        peak_bytes: int,
        toolchain: str = "",
        inputs: dict[str, int] | None = None,
        curve: Curve | None = None,
    ) -> None:
        if peak_bytes <= 0:
            return  # a job whose memory could not be sampled says nothing
        entry = self._entries.pop(key, None)
        same = entry is not None and entry.toolchain == toolchain
        peaks = entry.peaks if same and entry is not None else []
        # A new toolchain starts the job's peaks afresh: its memory may differ a lot.
        peaks = (peaks + [int(peak_bytes)])[-MAX_SAMPLES:]
        if inputs is None and entry is not None:
            inputs = entry.inputs  # a run that read no inputs forgets none
        if curve is None and entry is not None and same:
            curve = entry.curve  # a run that gave none (cut short, too short) keeps the last
        self._entries[key] = Entry(group, peaks, toolchain, inputs, curve)
        while len(self._entries) > MAX_KEYS:
            del self._entries[next(iter(self._entries))]

    def estimate(
        self,
        key: str,
        group: str,
        default: int = DEFAULT_ESTIMATE,
        toolchain: str = "",
        inputs: dict[str, int] | None = None,
        predict: Callable[[dict[str, int]], int] | None = None,
        headroom: float = HISTORY_HEADROOM,
        line: Callable[[dict[str, int]], int] | None = None,
    ) -> tuple[int, Basis]:
        """Expected peak of a job and where that figure comes from.

        ``history``: this job's largest recent peak plus headroom. ``siblings, scaled
        by inputs``: ``line`` (by default ``predict``) for this job's ``inputs``,
        scaled by how far it was off for its siblings (same group: same workspace and
        profile), the median of them, plus headroom. ``siblings``: where
        they have no inputs recorded, the largest sibling figure (a new binary of a
        workspace links much the same as its siblings). All of these count only peaks measured
        with this ``toolchain``; failing those, figures from another toolchain are a
        hint, raised by OTHER_TOOLCHAIN_FACTOR (``history, other toolchain`` /
        ``siblings, other toolchain``). ``inputs``: the cold prediction alone.
        ``default``: nothing at all.
        """
        entry = self._entries.get(key)
        if entry is not None and _same(entry, toolchain):
            return int(max(entry.peaks) * headroom), Basis.HISTORY
        group_entries = [e for e in self._entries.values() if e.group == group]
        same = [e for e in group_entries if _same(e, toolchain)]
        if same and inputs is not None and predict is not None:
            scale = line or predict
            ratios = sorted(max(e.peaks) / max(1, scale(e.inputs)) for e in same if e.inputs)
            if ratios:
                # The median sibling's miss (the upper of two), not the worst: one
                # sibling far off would raise every estimate, and a job above the
                # median is caught by the pause.
                scaled = scale(inputs) * ratios[len(ratios) // 2] * headroom
                return int(scaled), Basis.SIBLINGS_SCALED
        if same:
            return int(max(max(e.peaks) for e in same) * headroom), Basis.SIBLINGS
        hint = headroom * OTHER_TOOLCHAIN_FACTOR
        if entry is not None:
            return int(max(entry.peaks) * hint), Basis.HISTORY_OTHER_TOOLCHAIN
        if group_entries:
            peak = max(max(e.peaks) for e in group_entries)
            return int(peak * hint), Basis.SIBLINGS_OTHER_TOOLCHAIN
        if inputs is not None and predict is not None:
            return predict(inputs), Basis.INPUTS
        return default, Basis.DEFAULT


def describe(estimate: int, basis: str) -> str:
    """``~700 MiB (history)``, for admission messages."""
    return f"~{format_size(estimate)} ({basis})"
