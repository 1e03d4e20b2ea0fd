"""The one process-tree API (ltoguard.proctree): its /proc parsers as tables, and
listing, signalling and measuring real process trees in each of the three ways it
reads them (the kernel's children files; psutil's listing where the kernel has none;
psutil for everything where there is no /proc), a reaped and a reused pid included.
The peak sampler's tests on real processes are in test_memory.py; how it reads the
kernel's high-water mark is tested here, on parsed status files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ltoguard import process, proctree
from ltoguard.jobs import cargo_build_id
from ltoguard.proctree import Memory, Proc, Stat, parse_stat, parse_status
from ltoguard.sizes import KiB, MiB
from tests.conftest import needs_children_files
from tests.procs import Procs, pid_alive, wait_for

pytestmark = pytest.mark.timeout(60)

AWKWARD = "a) b ) (c 9"  # spaces and parentheses: a naive split shifts every field


def stat_line(pid: int, name: bytes, state: str = "S", ppid: int = 1, start: int = 98765) -> bytes:
    """A /proc/PID/stat line as Linux writes it (52 fields)."""
    rest = [state, str(ppid), "7", "7", "0", "-1", "4194560", "9", "0", "0", "0", "5", "3"]
    rest += ["0", "0", "20", "0", "17", "0", str(start), "31457280", "2048"]
    rest += ["0"] * (50 - len(rest))
    return b"%d (%s) %s\n" % (pid, name, " ".join(rest).encode())


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (stat_line(1234, b"rustc"), Stat("rustc", "S", 1, 98765)),
        (stat_line(42, AWKWARD.encode(), "R", 7, 5), Stat(AWKWARD, "R", 7, 5)),
        (stat_line(42, b"x) 1 2 3 (y", "T", 7, 5), Stat("x) 1 2 3 (y", "T", 7, 5)),
        (stat_line(42, b"", "Z", 3, 1), Stat("", "Z", 3, 1)),
        (stat_line(42, b"cargo\xff", ppid=9), Stat("cargo\N{REPLACEMENT CHARACTER}", "S", 9, 98765)),
        (stat_line(42, b"rustc")[:40], None),  # cut short
        (stat_line(42, b"rustc").replace(b"98765", b"9876x"), None),
        (b"42 rustc S 1 7 7 0 -1 4194560 9 0 0 0 5 3 0 0 20 0 17 0 98765 3 2048 0\n", None),
        (b"42 (rustc S 1 7 7 0 -1 4194560 9 0 0 0 5 3 0 0 20 0 17 0 98765 3 2048 0\n", None),
        (b"", None),
    ],
    ids=["plain", "awkward", "digits-in-name", "empty-name", "not-utf8", "short", "bad-start",
         "no-parens", "no-close", "empty"],
)  # fmt: skip
def test_parse_stat(raw: bytes, expected: Stat | None) -> None:
    assert parse_stat(raw) == expected


def status(**kib: int) -> bytes:
    lines = ["Name:\trustc", "State:\tR (running)", "Tgid:\t42"]
    lines += [f"{name}:\t{value} kB" for name, value in kib.items()]
    return ("\n".join([*lines, "Threads:\t17", ""])).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # VmHWM minus the file and shmem pages now: the anonymous peak if those pages
        # held still (the sampler subtracts the most it saw: PeakSampler).
        (status(VmHWM=500_000, VmRSS=300_000, RssAnon=200_000, RssFile=90_000, RssShmem=10_000),
         Memory(200_000 * KiB, 400_000 * KiB, 100_000 * KiB, 500_000 * KiB)),
        # No RssAnon (kernels before 4.5): resident minus shared.
        (status(VmHWM=500_000, VmRSS=300_000, RssFile=100_000),
         Memory(200_000 * KiB, 400_000 * KiB, 100_000 * KiB, 500_000 * KiB)),
        # The peak is never below what is held now.
        (status(VmHWM=100_000, VmRSS=100_000, RssAnon=60_000, RssFile=80_000),
         Memory(60_000 * KiB, 60_000 * KiB, 80_000 * KiB, 100_000 * KiB)),
        (status(), None),  # a zombie: no Vm lines
        (b"Name:\tx\nVmHWM:\nVmRSS:\t8 kB\n", None),  # a field without its figure
        (b"Name:\tx\nVmRSS:\t8 kB\nVmHWM:\t9 kB", Memory(8 * KiB, 9 * KiB, 0, 9 * KiB)),  # no last newline
        (status(VmRSS=300_000, RssAnon=200_000), None),
        (b"", None),
    ],
    ids=["all", "no-RssAnon", "peak-floor", "zombie", "no-figure", "no-newline", "no-hwm", "empty"],
)  # fmt: skip
def test_parse_status(raw: bytes, expected: Memory | None) -> None:
    assert parse_status(raw) == expected


def reading(hwm: int, rss: int, anon: int, file: int) -> Memory | None:
    """A parsed /proc/PID/status with these figures in MiB."""
    return parse_status(
        status(VmHWM=hwm * 1024, VmRSS=rss * 1024, RssAnon=anon * 1024, RssFile=file * 1024)
    )


def test_evicted_file_pages_do_not_count_as_anonymous_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a cap the kernel evicts the compiler's mapped code: the high-water mark
    stays, the file pages go. The peak is the mark minus the most file pages seen,
    not minus those left (which once recorded 190 MiB for a 96 MiB job)."""
    readings = iter([reading(hwm=176, rss=170, anon=90, file=80), reading(180, 101, 96, 5)])
    monkeypatch.setattr(proctree, "memory", lambda pid: next(readings))
    monkeypatch.setattr(proctree, "start_time", lambda pid: 1.0)
    sampler = proctree.PeakSampler(12345)
    assert sampler._sample(1.0, []) and sampler.peak == 96 * MiB
    assert sampler._sample(1.0, []) and sampler.current == 96 * MiB
    assert sampler.peak == 100 * MiB  # 180 - 80, not 180 - 5


def test_a_spike_between_samples_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the file pages steady, the high-water mark still catches a spike the
    samples missed (fat LTO's last one)."""
    readings = iter([reading(hwm=170, rss=170, anon=90, file=80), reading(400, 180, 100, 80)])
    monkeypatch.setattr(proctree, "memory", lambda pid: next(readings))
    monkeypatch.setattr(proctree, "start_time", lambda pid: 1.0)
    sampler = proctree.PeakSampler(12345)
    assert sampler._sample(1.0, []) and sampler._sample(1.0, [])
    assert sampler.peak == 320 * MiB


def test_a_late_spike_after_eviction_counts_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """File pages evicted early do not shrink a spike that comes later: the mark is
    read less the file pages around its rise, not the most ever seen."""
    readings = iter(
        [reading(170, 170, 90, 80), reading(170, 100, 95, 5), reading(305, 105, 100, 5)]
    )
    monkeypatch.setattr(proctree, "memory", lambda pid: next(readings))
    monkeypatch.setattr(proctree, "start_time", lambda pid: 1.0)
    sampler = proctree.PeakSampler(12345)
    assert all(sampler._sample(1.0, []) for _ in range(3))
    assert sampler.peak == 300 * MiB


def test_the_parsers_read_this_process() -> None:
    stat = proctree.read_stat(os.getpid())
    assert stat is not None and stat.ppid == os.getppid() and stat.state == "R"
    mem = proctree.memory(os.getpid())
    assert mem is not None and 10 * MiB < mem.anon <= mem.peak


# -------------------------------------------------------------------------- real trees

# A parent (named AWKWARD) that starts a grandchild, prints its pid and waits; with
# ALLOC in its argv, the grandchild holds that many bytes first.
PARENT = f"""
import subprocess, sys
open("/proc/self/comm", "w").write({AWKWARD!r})
code = "import sys, time; b = bytearray(int(sys.argv[1])); b[::4096] = "
code += "b'x' * len(b[::4096]); print(1, flush=True); time.sleep(60)"
kid = subprocess.Popen([sys.executable, "-c", code, sys.argv[1]], stdout=subprocess.PIPE)
kid.stdout.readline()
print(kid.pid, flush=True)
sys.stdin.read()
"""


def state(pid: int) -> str:
    """The process's state letter, read past proctree (which a test may blind)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f.read().rpartition(b") ")[2][:1].decode()


@pytest.fixture
def family(procs: Procs) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """(the parent, its grandchild's pid), the grandchild holding 64 MiB."""
    parent = procs.start(
        [sys.executable, "-c", PARENT, str(64 * MiB)], dict(os.environ), text=True,
        stdin=subprocess.PIPE,
    )  # fmt: skip
    assert parent.stdout is not None
    yield parent, int(parent.stdout.readline())


def test_tree_lists_descendants_first_each_with_its_start_time(
    way: str, family: tuple[subprocess.Popen[str], int]
) -> None:
    parent, kid = family
    found = proctree.tree(parent.pid)
    assert [p.pid for p in found] == [kid, parent.pid]
    assert all(p.start == proctree.start_time(p.pid) for p in found)
    assert proctree.descendants(parent.pid) == [kid]
    assert proctree.descendants(kid) == []
    assert os.getpid() not in [p.pid for p in found]
    mine = proctree.tree(os.getpid())
    assert mine[-1].pid == os.getpid() and {parent.pid, kid} <= {p.pid for p in mine}


def test_job_memory_sums_the_tree(way: str, family: tuple[subprocess.Popen[str], int]) -> None:
    parent, kid = family
    parent_mem, kid_mem = proctree.memory(parent.pid), proctree.memory(kid)
    assert parent_mem is not None and kid_mem is not None
    assert 64 * MiB <= kid_mem.anon < 128 * MiB
    total = proctree.job_memory(parent.pid)
    assert total >= 64 * MiB + parent_mem.anon - 4 * MiB  # a little may move meanwhile
    assert total < 64 * MiB + parent_mem.anon + 32 * MiB


def test_a_reused_pid_is_not_signalled(way: str, family: tuple[subprocess.Popen[str], int]) -> None:
    parent, kid = family
    [kid_proc, parent_proc] = proctree.tree(parent.pid)
    # The same pid, started at another time: another process that took the pid over.
    proctree.send(Proc(kid, kid_proc.start + 1), signal.SIGKILL)
    proctree.send(Proc(parent_proc.pid, parent_proc.start - 1), signal.SIGKILL)
    assert pid_alive(kid) and parent.poll() is None
    proctree.send(kid_proc, signal.SIGSTOP)
    assert wait_for(lambda: state(kid) == "T")
    proctree.send(kid_proc, signal.SIGCONT)
    assert wait_for(lambda: state(kid) in ("R", "S"))


def test_a_reaped_pid_names_nothing(way: str, procs: Procs) -> None:
    child = procs.start([sys.executable, "-c", "input()"], dict(os.environ), stdin=subprocess.PIPE)
    [proc] = proctree.tree(child.pid)
    assert proctree.job_memory(child.pid) > 0
    child.kill()
    child.wait()
    assert proctree.start_time(child.pid) is None
    assert proctree.tree(child.pid) == []
    assert proctree.descendants(child.pid) == []
    assert proctree.memory(child.pid) is None and proctree.job_memory(child.pid) == 0
    proctree.send(proc, signal.SIGKILL)  # nothing to signal, nothing raised


def test_kill_tree_kills_the_compile_and_its_children(
    way: str, family: tuple[subprocess.Popen[str], int]
) -> None:
    parent, kid = family
    process.kill_tree(parent.pid)
    assert parent.wait(timeout=10) == -signal.SIGKILL
    assert wait_for(lambda: not pid_alive(kid), timeout=10)


def test_a_zombie_holds_no_memory(procs: Procs) -> None:
    child = procs.start([sys.executable, "-c", "pass"], dict(os.environ))
    assert wait_for(lambda: state(child.pid) == "Z")
    assert proctree.memory(child.pid) is None and proctree.job_memory(child.pid) == 0
    assert proctree.start_time(child.pid) is not None  # not reaped: the pid is still its own
    child.wait()


def test_cargo_build_id_finds_the_cargo_ancestor_by_its_name(procs: Procs) -> None:
    """Through the one stat parser: the ancestor whose name is exactly "cargo"."""
    code = (
        "import subprocess, sys; open('/proc/self/comm', 'w').write(sys.argv[1]); "
        "kid = subprocess.Popen([sys.executable, '-c', 'input()'], stdin=subprocess.PIPE); "
        "print(kid.pid, flush=True); sys.stdin.read()"
    )
    for name, found in (("cargo", True), ("cargo) S 1", False), (AWKWARD, False)):
        parent = procs.start(
            [sys.executable, "-c", code, name], dict(os.environ), text=True, stdin=subprocess.PIPE
        )
        assert parent.stdout is not None
        kid = int(parent.stdout.readline())
        want = f"{parent.pid}-{proctree.start_time(parent.pid)}" if found else ""
        assert cargo_build_id(kid) == want, name


@needs_children_files
def test_on_linux_nothing_here_imports_psutil() -> None:
    """Listing, signalling, killing and measuring a tree read /proc only: psutil is
    the fallback for kernels without children files and platforms without /proc."""
    code = (
        "import signal, subprocess, sys\n"
        "from ltoguard import pause, process, proctree\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "assert proctree.job_memory(p.pid) > 0 and proctree.descendants(p.pid) == []\n"
        "[me] = proctree.tree(p.pid)\n"
        "proctree.send(me, signal.SIGSTOP)\n"
        "proctree.send(me, signal.SIGCONT)\n"
        "process.kill_tree(p.pid)\n"
        "print(p.wait(), 'psutil' in sys.modules)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert got.stdout.split() == [str(-signal.SIGKILL), "False"], got.stderr


HOLDER = """
import sys
held = bytearray(int(sys.argv[1]))
for i in range(0, len(held), 4096):
    held[i] = 1
print("ready", flush=True)
sys.stdin.read()
"""


@needs_children_files
def test_compiling_beside_counts_the_parents_other_compiles_and_never_an_ltoguard(
    tmp_path: os.PathLike[str], procs: Procs
) -> None:
    """cargo's children named rustc or build-script-*, each with its tree; not one
    named otherwise, nor one with a process running the job's own interpreter in its
    tree (a waiter whatever its name, or a build script's cargo with a waiter under
    it: waiting for it would never end), nor the job itself. The compiles' memory
    here is `sort`'s, holding what it was fed until its input ends."""
    sleeper = f"{sys.executable} -c 'import time; time.sleep(60)'"
    scripts = {  # shells named as compiles, `sort` under each
        "rustc": ("#!/bin/sh\nsort -S 64M\n", 32),
        "build-script-build": ("#!/bin/sh\nsort -S 64M\n", 16),
        "ltoguard": ("#!/bin/sh\nsort -S 64M\n", 8),
        "nested/rustc": (f"#!/bin/sh\n{sleeper} &\nsort -S 64M\n", 8),  # a waiter in it
    }
    started: dict[str, subprocess.Popen[bytes]] = {}
    for name, (text, size) in scripts.items():
        path = os.path.join(tmp_path, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        p = procs.start([path], dict(os.environ), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert p.stdin is not None
        p.stdin.write(b"x\n" * (size * MiB // 2))
        p.stdin.flush()
        started[name] = p
    os.mkdir(os.path.join(tmp_path, "waiter"))
    alias = os.path.join(tmp_path, "waiter", "rustc")
    os.symlink(sys.executable, alias)  # a waiter named rustc, holding 8 MiB
    waiter = procs.start(
        [alias, "-c", HOLDER, str(8 * MiB)], dict(os.environ), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    me = procs.start([sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    assert waiter.stdout is not None and waiter.stdout.readline() == "ready\n"
    for name, (_, size) in scripts.items():
        pid = started[name].pid
        assert wait_for(lambda p=pid, s=size: proctree.job_memory(p) >= s * MiB, timeout=30), name
    assert len(proctree.descendants(started["nested/rustc"].pid)) == 2  # the waiter, sort
    assert proctree.read_stat(waiter.pid).name == "rustc"  # type: ignore[union-attr]
    assert proctree.read_stat(started["build-script-build"].pid).name == "build-script-bu"  # type: ignore[union-attr]
    got = proctree.compiling_beside(me=me.pid, parent=os.getpid())
    want = proctree.job_memory(started["rustc"].pid) + proctree.job_memory(
        started["build-script-build"].pid
    )
    assert got >= 48 * MiB
    assert abs(got - want) < 4 * MiB  # the same two trees, read a moment apart
    assert proctree.compiling_beside(me=me.pid, parent=me.pid) == 0  # no children


def test_compiling_beside_is_zero_without_a_parent_to_look_under() -> None:
    assert proctree.compiling_beside(parent=1) == 0  # init: cargo is gone


# A process named cargo: starts a process named by each argument (a symlink: the
# interpreter, or `sleep` for NAME:sleep, so its comm is that name), prints their
# pids, and waits.
FAKE_CARGO = """
import os, subprocess, sys
kids = []
for arg in sys.argv[1:]:
    name, _, kind = arg.partition(":")
    alias = os.path.join(os.path.dirname(sys.argv[0]), name)
    argv = [alias, "60"] if kind else [alias, "-c", "import time; time.sleep(60)"]
    kids.append(subprocess.Popen(argv))
print(" ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.read()
"""


@needs_children_files
@pytest.mark.parametrize(
    ("parent", "kids", "quiet"),
    [
        ("cargo", ["me"], True),
        ("cargo", ["me", "ltoguard"], True),  # a waiter: no compile
        ("cargo", ["me", "rustc"], True),  # a waiter by another name: this interpreter
        ("cargo", ["me", "rustc:sleep"], False),
        ("cargo", ["me", "build-script-build:sleep"], False),
        ("cargo", ["me", "sccache:sleep"], False),  # any other child may be a compile
        ("rustc", ["me"], False),  # ltoguard as rustc's linker: cargo is not in sight
    ],
)
def test_nothing_compiling_beside_needs_cargo_as_the_parent_and_no_compile_under_it(
    tmp_path: os.PathLike[str], procs: Procs, parent: str, kids: list[str], quiet: bool
) -> None:
    sleep = shutil.which("sleep")
    assert sleep is not None
    for name, _, kind in (k.partition(":") for k in [parent, *kids]):
        os.symlink(sleep if kind else sys.executable, os.path.join(tmp_path, name))
    script = os.path.join(tmp_path, "fake.py")
    with open(script, "w") as f:
        f.write(FAKE_CARGO)
    p = procs.start(
        [os.path.join(tmp_path, parent), script, *kids], dict(os.environ), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert p.stdout is not None
    pids = [int(x) for x in p.stdout.readline().split()]
    assert proctree.read_stat(p.pid).name == parent  # type: ignore[union-attr]
    assert wait_for(lambda: all(proctree.read_stat(k) is not None for k in pids))
    assert proctree.nothing_compiling_beside(me=pids[0], parent=p.pid) is quiet


@needs_children_files
def test_nothing_compiling_beside_cannot_tell_under_a_cargo_that_cargo_runs(
    tmp_path: os.PathLike[str], procs: Procs
) -> None:
    """A cargo run by a build script or by cargo: the outer build's compiles are not
    its children."""
    for name in ("cargo", "me"):
        os.symlink(sys.executable, os.path.join(tmp_path, name))
    script = os.path.join(tmp_path, "fake.py")
    with open(script, "w") as f:
        f.write(FAKE_CARGO)
    p = procs.start(
        [os.path.join(tmp_path, "cargo"), script, "cargo", "me"], dict(os.environ), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    assert p.stdout is not None
    inner, me = (int(x) for x in p.stdout.readline().split())
    assert wait_for(lambda: proctree.read_stat(inner) is not None)
    assert proctree.read_stat(inner).name == "cargo"  # type: ignore[union-attr]
    assert proctree.nothing_compiling_beside(me=me, parent=p.pid) is True  # its children: ours
    assert proctree.nothing_compiling_beside(me=me, parent=inner) is False  # under cargo


def test_nothing_compiling_beside_cannot_tell_without_a_parent() -> None:
    assert proctree.nothing_compiling_beside(parent=0) is False
    assert proctree.nothing_compiling_beside() is False  # under pytest, not cargo
