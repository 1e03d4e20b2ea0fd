#!/usr/bin/env python3
"""Run a command under a hard memory cap, the way a small CI runner or container has one.

    memcap.py --check                 can a cap be made here? (exit 0 yes, 1 no: why on stderr)
    memcap.py --check-swap            can a cap with a swap allowance be made here?
    memcap.py SIZE -- CMD ARGS...     run CMD in a fresh memory cgroup limited to SIZE
    memcap.py SIZE+SWAP -- CMD ...    the same, with SWAP of swap allowed beside SIZE of RAM

Where a cap comes from, first that works:
  cgroup v1   root, a writable v1 memory controller: a child of our own memory group
              (memory.limit_in_bytes; kills counted in memory.oom_control)
  cgroup v2   root or a delegated subtree: a child of the nearest group at or above our
              own that has the memory controller enabled for its children or may
              enable it (memory.max, memory.swap.max 0; kills counted in memory.events)
  systemd     `systemd-run --user --scope -p MemoryMax=SIZE` where a user manager runs

A swap allowance needs swap on the host and, on v1, the kernel's swap accounting
(memory.memsw.limit_in_bytes); on v2 memory.swap.max. Without one the cap allows no
swap on v2 (memory.swap.max 0) and leaves v1's memsw as the parent has it.

After CMD ends it prints one line, `memcap: N OOM kills under a SIZE cap`, to stderr
(when the kills can be counted) and exits with CMD's status. Used by scripts/demo.sh.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

MiB = 1 << 20
CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from scripts.cgroups import oom_kills_in, remove_group, swap_unavailable, v2_parent  # noqa: E402


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    if t and t[-1] in units:
        return int(float(t[:-1]) * units[t[-1]])
    return int(t)


def parse_cap(text: str) -> tuple[int, int | None]:
    """SIZE or SIZE+SWAP: the RAM limit and the swap allowance (None: not given)."""
    ram, plus, swap = text.partition("+")
    return parse_size(ram), (parse_size(swap) if plus else None)


def _own_group(controller: str) -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        num, ctrls, path = line.split(":", 2)
        if controller == "" and num == "0" and ctrls == "":
            return path
        if controller and controller in ctrls.split(","):
            return path
    return None


def _mount(fstype: str, option: str | None) -> str | None:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        wanted = rfields and rfields[0] == fstype and fields[3] == "/"
        if wanted and (option is None or option in rfields[2].split(",")):
            return fields[4]
    return None


class Cap:
    """A fresh child cgroup with a memory limit (v1 or v2)."""

    def __init__(self, version: int, parent: Path, enable: bool = False) -> None:
        self.version = version
        self.enable = enable  # +memory still to be written in the parent
        self.path = parent / f"memcap-{os.getpid()}-{time.monotonic_ns()}"

    @classmethod
    def find(cls) -> tuple[Cap | None, str]:
        try:
            v1_mount, v1_group = _mount("cgroup", "memory"), _own_group("memory")
        except OSError as exc:
            return None, f"cannot read /proc ({exc.strerror})"
        if v1_mount and v1_group is not None:
            parent = Path(v1_mount) / v1_group.lstrip("/")
            if os.access(parent, os.W_OK):
                return cls(1, parent), ""
        v2, enable, why = v2_parent()
        if v2 is not None:
            return cls(2, v2, enable), ""
        return None, f"no writable memory cgroup: not cgroup v1 with root; {why}"

    def swap_unavailable(self) -> str:
        """Empty if this cap can have a swap allowance, else why not."""
        return swap_unavailable(self.path.parent, self.version)

    def create(self, limit: int, swap: int | None = None) -> None:
        if self.enable:
            (self.path.parent / "cgroup.subtree_control").write_text("+memory")
        self.path.mkdir()
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        (self.path / name).write_text(str(limit))
        if self.version == 1 and swap is not None:
            # memsw counts RAM and swap together, so it is the limit plus the allowance.
            (self.path / "memory.memsw.limit_in_bytes").write_text(str(limit + swap))
        if self.version == 2 and (self.path / "memory.swap.max").exists():
            # Without an allowance, swap would let the build outgrow the cap slowly
            # instead of being killed.
            (self.path / "memory.swap.max").write_text(str(swap or 0))

    def oom_kills(self) -> int:
        return oom_kills_in(self.path)

    def remove(self) -> None:
        remove_group(self.path)


def _systemd_run() -> str | None:
    exe = shutil.which("systemd-run")
    if exe is None:
        return None
    probe = subprocess.run(
        [exe, "--user", "--scope", "--quiet", "-p", "MemoryMax=64M", "true"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    return exe if probe.returncode == 0 else None


def run(limit: int, cmd: Sequence[str], swap: int | None = None) -> int:
    cap, why = Cap.find()
    if swap is not None:
        why = why if cap is None else cap.swap_unavailable()
        if why:
            print(f"memcap: error: no cap with swap here: {why}", file=sys.stderr)
            return 125
    if cap is None:
        exe = _systemd_run()
        if exe is None:
            print(f"memcap: error: {why}; no `systemd-run --user` either", file=sys.stderr)
            return 125
        return subprocess.call(
            [exe, "--user", "--scope", "--quiet", "-p", f"MemoryMax={limit}", *cmd]
        )
    assert cap is not None
    cap.create(limit, swap)
    what = f"{limit // MiB} MiB" + ("" if swap is None else f" + {swap // MiB} MiB swap")
    try:
        procs = cap.path / "cgroup.procs"
        proc = subprocess.Popen(
            ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *cmd],
            start_new_session=False,
        )
        try:
            code = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            code = proc.wait()
        kills = cap.oom_kills()
        print(f"memcap: {kills} OOM kills under a {what} cap", file=sys.stderr)
        return code if code >= 0 else 128 - code
    finally:
        cap.remove()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--check"]:
        cap, why = Cap.find()
        if cap is not None:
            print(f"cgroup v{cap.version} under {cap.path.parent}")
            return 0
        if _systemd_run() is not None:
            print("systemd-run --user --scope -p MemoryMax=")
            return 0
        print(f"memcap: {why}; no `systemd-run --user` either", file=sys.stderr)
        return 1
    if args == ["--check-swap"]:
        cap, why = Cap.find()
        why = why if cap is None else cap.swap_unavailable()
        if cap is not None and not why:
            print(f"cgroup v{cap.version} under {cap.path.parent}, with swap")
            return 0
        print(f"memcap: no cap with swap here: {why}", file=sys.stderr)
        return 1
    if args in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if len(args) < 3 or args[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    limit, swap = parse_cap(args[0])
    return run(limit, args[2:], swap)


if __name__ == "__main__":
    raise SystemExit(main())
