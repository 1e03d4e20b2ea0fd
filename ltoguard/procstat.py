"""/proc/PID/stat: the one parser, and the cargo run a process belongs to.

Imports only os, so the pass-through path (configfiles.py, once per build) may use
it; proctree.py builds its process tree on it.
"""

from __future__ import annotations


def parse_stat(raw: bytes) -> tuple[str, str, int, int] | None:
    """(name, state, ppid, start time in clock ticks) from /proc/PID/stat's contents;
    None if they are not that."""
    # The name (field 2) may hold spaces and ')': it runs to the last ')'.
    head, paren, rest = raw.rpartition(b")")
    _, open_paren, name = head.partition(b"(")
    fields = rest.split()
    if not paren or not open_paren or len(fields) < 20:
        return None
    try:
        return name.decode("utf-8", "replace"), fields[0].decode(), int(fields[1]), int(fields[19])
    except ValueError:
        return None


def read_stat(pid: int) -> tuple[str, str, int, int] | None:
    """/proc/PID/stat, parsed; None if the process is gone (or there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except OSError:
        return None


# How many processes up from a job's parent cargo may be (a linker run by
# ltoguard-link is rustc's child; wrappers of wrappers add levels).
CARGO_LEVELS = 8


def cargo_run(pid: int, levels: int) -> str:
    """The cargo invocation ``pid`` runs under, as "PID-STARTTIME" (the start time
    tells a reused pid apart), looking at ``pid`` and up to ``levels - 1`` of its
    ancestors; "" outside cargo or without /proc."""
    for _ in range(levels):
        st = read_stat(pid)
        if st is None:
            return ""
        name, _state, ppid, start = st
        if name == "cargo":
            return f"{pid}-{start}"
        if ppid <= 1:
            return ""
        pid = ppid
    return ""
