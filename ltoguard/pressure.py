"""Memory pressure (Linux PSI): the share of time tasks stalled waiting for memory.

Free memory says how much is left; pressure says what running short already costs:
with swap, a build can keep going on swapped pages while its tasks stall. ``some``
is the share of time at least one task stalled, ``full`` the share all of them did.
Read from /proc/pressure/memory (the host) and, on cgroup v2, every group's
``memory.pressure`` from the process's own up to the mount. `Brake` is what
admission and the running jobs' watch read (admission.brake's rules).
"""

from __future__ import annotations

import os

from ltoguard.admission import (
    DEFAULT_PRESSURE,
    Level,
    PressureLimits,
    braking,
    pressure_figure,
    pressure_level,
)
from ltoguard.cgroups import cgroup_dirs, read_optional, under
from ltoguard.structs import struct


@struct(frozen=True)
class Pressure:
    """One PSI file: averages over 10 and 60 seconds, in percent."""

    source: str
    some10: float
    some60: float
    full10: float
    full60: float


def parse(text: str, source: str) -> Pressure | None:
    """A PSI file's contents (``some avg10=... avg60=...`` and ``full ...`` lines)."""
    avg: dict[str, float] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind not in ("some", "full"):
            continue
        for field in rest.split():
            key, _, value = field.partition("=")
            if key in ("avg10", "avg60"):
                try:
                    avg[f"{kind}{key[3:]}"] = float(value)
                except ValueError:
                    return None
    if "some10" not in avg or "some60" not in avg:
        return None
    # A "full" line is missing from the host's cpu file before 5.13; tolerated here too.
    return Pressure(
        source, avg["some10"], avg["some60"], avg.get("full10", 0.0), avg.get("full60", 0.0)
    )


def host(*, root: str = "/") -> Pressure | None:
    """The whole host's memory pressure; None without PSI (kernel < 4.20, psi=0)."""
    path = under(root, "/proc/pressure/memory")
    text = read_optional(path)
    return None if text is None else parse(text, "host")


def cgroups(*, root: str = "/", pid: int | str = "self") -> list[Pressure]:
    """Memory pressure of each cgroup v2 group the process is in, innermost first."""
    found = []
    for version, dirs in cgroup_dirs(root, pid):
        if version != 2:
            continue
        for d in dirs:
            text = read_optional(os.path.join(d, "memory.pressure"))
            p = None if text is None else parse(text, f"cgroup v2 {d}")
            if p is not None:
                found.append(p)
    return found


def all_pressures(*, root: str = "/", pid: int | str = "self") -> list[Pressure]:
    """The host's pressure, then every cgroup's: what `ltoguard status` shows."""
    h = host(root=root)
    return ([h] if h is not None else []) + cgroups(root=root, pid=pid)


def psi_path(*, root: str = "/", pid: int | str = "self") -> str | None:
    """The one PSI file the brake reads: the innermost cgroup v2 group's
    memory.pressure (a container's own stalls, not its neighbours'), else the
    host's; None without PSI (cgroup v1 groups have none of their own)."""
    for version, dirs in cgroup_dirs(root, pid):
        if version == 2:
            for d in dirs:
                path = os.path.join(d, "memory.pressure")
                if os.path.exists(path):
                    return path
    path = under(root, "/proc/pressure/memory")
    return path if read_optional(path) is not None else None


class Brake:
    """Memory pressure read by one waiting or running job, reading by reading, with
    admission.braking's hysteresis. One small file read per reading."""

    def __init__(self, path: str | None, limits: PressureLimits = DEFAULT_PRESSURE) -> None:
        self.path = path
        self.limits = limits
        self.on = False  # the brake holds
        self.level = Level.NONE  # of the last reading
        self.last: Pressure | None = None
        self._levels: list[Level] = []

    @classmethod
    def here(cls, *, root: str = "/", pid: int | str = "self") -> Brake:
        return cls(psi_path(root=root, pid=pid))

    def read(self) -> Level:
        text = None if self.path is None else read_optional(self.path)
        p = None if text is None else parse(text, self.path or "")
        self.last = p
        self.level = pressure_level(
            None if p is None else p.some10, None if p is None else p.full10, self.limits
        )
        self._levels = [*self._levels, self.level][-max(1, self.limits.sustained) :]
        self.on = braking(self.on, self._levels, self.limits)
        return self.level

    def forget(self) -> None:
        """Start over: the next readings decide afresh."""
        self.on, self.level, self.last, self._levels = False, Level.NONE, None, []

    def figure(self) -> tuple[float, str]:
        """The percentage to show and which avg10 it is (full or some)."""
        if self.last is None:
            return 0.0, "full"
        return pressure_figure(self.last.some10, self.last.full10, self.limits)

    def text(self) -> str:
        value, kind = self.figure()
        return f"memory pressure {value:.0f}% ({kind} avg10)"
