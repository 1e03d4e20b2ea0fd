"""Memory pressure (Linux PSI): the share of time tasks stalled waiting for memory.

Free memory says how much is left; pressure says what running short already costs:
with swap, a build can keep going on swapped pages while its tasks stall. ``some``
is the share of time at least one task stalled, ``full`` the share all of them did.
Read from /proc/pressure/memory (the host) and, on cgroup v2, every group's
``memory.pressure`` from the process's own up to the mount.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ltoguard.cgroups import cgroup_dirs, read_optional, under


@dataclass(frozen=True)
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
