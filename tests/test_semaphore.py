"""Cross-process behaviour of the guarded path, with real ltoguard processes and a fake rustc."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ltoguard import locks, process, semaphore
from ltoguard.admission import Admission, Why, slot_cap
from ltoguard.semaphore import Semaphore, Snapshot
from ltoguard.statedir import open_state_dir
from tests.procs import (
    LTO_BIN,
    Procs,
    clean_env,
    counter_max,
    cpu_fraction,
    cpu_seconds,
    ltoguard_cmd,
    make_fake_rustc,
    pid_alive,
    read_log,
    starts,
    tickets,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


@dataclass
class Setup:
    state: Path
    rustc: Path
    env: dict[str, str]
    log: Path
    tmp: Path


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    state = tmp_path / "state"
    rustc = make_fake_rustc(tmp_path)
    env = clean_env(tmp_path, state)
    return Setup(state=state, rustc=rustc, env=env, log=tmp_path / "log.jsonl", tmp=tmp_path)


@pytest.mark.parametrize(("m", "n"), [(6, 1), (8, 3)])
@pytest.mark.slow
def test_never_more_than_n(setup: Setup, procs: Procs, m: int, n: int) -> None:
    env = dict(setup.env, LTOGUARD_SLOTS=str(n), FAKE_SLEEP="0.3")
    ps = [
        procs.start(ltoguard_cmd(setup.rustc, f"bin{i}"), dict(env, FAKE_NAME=f"bin{i}"))
        for i in range(m)
    ]
    for p in ps:
        assert p.wait(timeout=60) == 0
    assert len(starts(setup.tmp)) == m
    # Measured by the children themselves: never more than N at once, and N reached.
    assert counter_max(setup.tmp) == n


@pytest.mark.slow
def test_fifo_order(setup: Setup, procs: Procs) -> None:
    env = dict(setup.env)
    first = procs.holder(setup.rustc, env, "first")
    assert starts(setup.tmp) == ["first"]
    names = [f"w{i}" for i in range(6)]
    waiters = []
    for name in names:
        waiters.append(
            procs.start(
                ltoguard_cmd(setup.rustc, name), dict(env, FAKE_NAME=name, FAKE_SLEEP="0.05")
            )
        )
        # Each waiter must have queued before the next one starts.
        expected = len(waiters)
        assert wait_for(lambda n=expected: len(tickets(setup.state)) >= n)
    first.release()
    for p in [first.proc, *waiters]:
        assert p.wait(timeout=60) == 0
    order = starts(setup.tmp)
    assert order == ["first", *names]


def test_kill9_holder_frees_slot_quickly(setup: Setup, procs: Procs) -> None:
    env = dict(setup.env, FAKE_SLEEP="30")
    holder = procs.start(ltoguard_cmd(setup.rustc, "holder"), dict(env, FAKE_NAME="holder"))
    assert wait_for(lambda: len(starts(setup.tmp)) == 1)
    waiter = procs.start(
        ltoguard_cmd(setup.rustc, "waiter"), dict(env, FAKE_NAME="waiter", FAKE_SLEEP="0")
    )
    assert wait_for(lambda: len(tickets(setup.state)) == 1)
    slot = setup.state / "slot-0.lock"
    fd = os.open(slot, os.O_RDONLY)
    try:
        os.killpg(
            holder.pid, signal.SIGKILL
        )  # the wrapper and its rustc, like an OOM kill of the group
        t0 = time.monotonic()
        # The slot is free as soon as the kernel reaps the holder: probe it ourselves.
        freed_or_taken = wait_for(
            lambda: _slot_free_or_taken_by_waiter(fd, setup.tmp), timeout=5, interval=0.002
        )
        elapsed = time.monotonic() - t0
    finally:
        os.close(fd)
    assert freed_or_taken
    assert elapsed < 0.1, f"slot freed after {elapsed * 1000:.0f} ms"
    assert waiter.wait(timeout=30) == 0
    assert starts(setup.tmp) == ["holder", "waiter"]


def _slot_free_or_taken_by_waiter(fd: int, log_dir: Path) -> bool:
    if len(starts(log_dir)) >= 2:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return True


def test_killing_only_the_wrapper_does_not_leave_an_orphan_beside_the_next_job(
    setup: Setup, procs: Procs
) -> None:
    env = dict(setup.env, FAKE_SLEEP="30")
    holder = procs.start(ltoguard_cmd(setup.rustc, "holder"), dict(env, FAKE_NAME="holder"))
    assert wait_for(lambda: len(starts(setup.tmp)) == 1)
    child_pid = next(int(e["pid"]) for e in read_log(setup.log) if e["what"] == "start")
    waiter = procs.start(
        ltoguard_cmd(setup.rustc, "waiter"), dict(env, FAKE_NAME="waiter", FAKE_SLEEP="0.2")
    )
    assert wait_for(lambda: len(tickets(setup.state)) == 1)
    os.kill(holder.pid, signal.SIGKILL)  # only ltoguard, not its rustc
    holder.wait(timeout=10)
    assert wait_for(lambda: not pid_alive(child_pid), timeout=5), (
        "the orphaned compile kept running"
    )
    assert waiter.wait(timeout=30) == 0
    assert counter_max(setup.tmp) == 1


@pytest.mark.parametrize("code", [0, 1, 3, 101, 255])
def test_exit_code_passed_through(setup: Setup, procs: Procs, code: int) -> None:
    p = procs.start(ltoguard_cmd(setup.rustc, "c"), dict(setup.env, FAKE_EXIT=str(code)))
    assert p.wait(timeout=30) == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM, signal.SIGABRT])
def test_death_by_signal_passed_through(setup: Setup, procs: Procs, sig: int) -> None:
    p = procs.start(ltoguard_cmd(setup.rustc, "c"), dict(setup.env, FAKE_SIGNAL=str(int(sig))))
    assert p.wait(timeout=30) == -sig


def test_pass_through_exit_and_signal(setup: Setup, procs: Procs) -> None:
    rlib = ["--crate-type", "lib", "--emit=dep-info,metadata,link", "-C", "linker-plugin-lto"]
    p = procs.start(ltoguard_cmd(setup.rustc, "lib", rlib), dict(setup.env, FAKE_EXIT="7"))
    assert p.wait(timeout=30) == 7
    p = procs.start(ltoguard_cmd(setup.rustc, "lib", rlib), dict(setup.env, FAKE_SIGNAL="9"))
    assert p.wait(timeout=30) == -9
    # exec'd: the pass-through path never created state
    assert not setup.state.exists()


@pytest.mark.parametrize("guarded", [True, False])
def test_stdout_and_stderr_byte_exact(setup: Setup, procs: Procs, guarded: bool) -> None:
    out = bytes(range(256)) * 40 + b"\xff\xfe no newline"
    err = b'{"$message_type":"diagnostic"}\n\x80\x81'
    extra = LTO_BIN if guarded else ["--crate-type", "lib"]
    env = dict(setup.env, FAKE_STDOUT_HEX=out.hex(), FAKE_STDERR_HEX=err.hex())
    p = procs.start(ltoguard_cmd(setup.rustc, "c", extra), env)
    stdout, stderr = p.communicate(timeout=30)
    assert p.returncode == 0
    assert stdout == out
    assert stderr == err


def test_jobserver_fds_reach_the_child(setup: Setup, procs: Procs) -> None:
    r, w = os.pipe()
    try:
        env = dict(
            setup.env,
            CARGO_MAKEFLAGS=f"-j --jobserver-fds={r},{w} --jobserver-auth={r},{w}",
            FAKE_CHECK_FDS=f"{r},{w}",
        )
        p = procs.start(ltoguard_cmd(setup.rustc, "c"), env, pass_fds=(r, w))
        assert p.wait(timeout=30) == 0
    finally:
        os.close(r)
        os.close(w)
    fds = [e["what"] for e in read_log(setup.log) if e["what"].startswith("fds")]
    assert fds == [f"fds {r},{w}"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_to_running_wrapper_reaches_child(setup: Setup, procs: Procs, sig: int) -> None:
    env = dict(setup.env, FAKE_SLEEP="30", FAKE_TRAP="42")
    p = procs.start(ltoguard_cmd(setup.rustc, "c"), env)
    assert wait_for(lambda: len(starts(setup.tmp)) == 1)
    time.sleep(0.2)  # let the child install its handlers
    os.kill(p.pid, sig)  # the wrapper only, as CI cancellation does
    assert p.wait(timeout=10) == 42
    assert f"signal {int(sig)}" in [e["what"] for e in read_log(setup.log)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
@pytest.mark.slow
def test_interrupted_waiter_exits_at_once_holding_nothing(
    setup: Setup, procs: Procs, sig: int
) -> None:
    env = dict(setup.env, FAKE_SLEEP="1.5")
    holder = procs.start(ltoguard_cmd(setup.rustc, "holder"), dict(env, FAKE_NAME="holder"))
    assert wait_for(lambda: len(starts(setup.tmp)) == 1)
    w1 = procs.start(ltoguard_cmd(setup.rustc, "w1"), dict(env, FAKE_NAME="w1", FAKE_SLEEP="0"))
    assert wait_for(lambda: len(tickets(setup.state)) == 1)
    w2 = procs.start(ltoguard_cmd(setup.rustc, "w2"), dict(env, FAKE_NAME="w2", FAKE_SLEEP="0"))
    assert wait_for(lambda: len(tickets(setup.state)) == 2)
    os.kill(w1.pid, sig)
    t0 = time.monotonic()
    assert w1.wait(timeout=5) == -sig
    assert time.monotonic() - t0 < 1.0
    assert holder.wait(timeout=30) == 0
    assert w2.wait(timeout=30) == 0
    assert starts(setup.tmp) == ["holder", "w2"]
    assert tickets(setup.state) == []
    assert list(setup.state.glob("run-*.json")) == []


@pytest.mark.slow
def test_waiting_line_names_the_holder(setup: Setup, procs: Procs) -> None:
    env = dict(setup.env, FAKE_SLEEP="1")
    holder = procs.start(ltoguard_cmd(setup.rustc, "bigbin"), dict(env, FAKE_NAME="bigbin"))
    assert wait_for(lambda: len(starts(setup.tmp)) == 1)
    w = procs.start(ltoguard_cmd(setup.rustc, "other"), dict(env, FAKE_SLEEP="0"))
    _, err = w.communicate(timeout=30)
    holder.wait(timeout=30)
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("ltoguard: ")
    assert "other" in line and "bigbin" in line and f"pid {holder.pid}" in line


@pytest.mark.slow
def test_holder_record_published_and_removed(setup: Setup, procs: Procs) -> None:
    env = dict(setup.env, FAKE_SLEEP="1")
    holder = procs.start(ltoguard_cmd(setup.rustc, "recorded"), env)
    assert wait_for(lambda: len(starts(setup.tmp)) == 1)
    records = list(setup.state.glob("run-*.json"))
    assert len(records) == 1
    rec = json.loads(records[0].read_text())
    assert rec["pid"] == holder.pid and rec["crate"] == "recorded" and rec["lto"] == "fat"
    assert rec["types"] == ["bin"] and rec["slot"] == 0
    assert holder.wait(timeout=30) == 0
    assert list(setup.state.glob("run-*.json")) == []


@pytest.mark.slow
def test_lowering_n_never_exceeds_the_n_in_force(setup: Setup, procs: Procs) -> None:
    env = dict(setup.env, FAKE_SLEEP="1", LTOGUARD_SLOTS="2")
    a = procs.start(ltoguard_cmd(setup.rustc, "a"), dict(env, FAKE_NAME="a"))
    b = procs.start(ltoguard_cmd(setup.rustc, "b"), dict(env, FAKE_NAME="b"))
    assert wait_for(lambda: len(starts(setup.tmp)) == 2)
    c = procs.start(
        ltoguard_cmd(setup.rustc, "c"),
        dict(env, FAKE_NAME="c", LTOGUARD_SLOTS="1", FAKE_SLEEP="0"),
    )
    for p in (a, b, c):
        assert p.wait(timeout=30) == 0
    log = read_log(setup.log)
    ends = [e["t"] for e in log if e["what"] == "end" and e["name"] in ("a", "b")]
    c_start = next(e["t"] for e in log if e["what"] == "start" and e["name"] == "c")
    assert c_start >= max(ends)


@pytest.mark.slow
def test_waiters_do_not_spin(setup: Setup, procs: Procs) -> None:
    holder = procs.holder(setup.rustc, setup.env)
    waiters = [
        procs.start(ltoguard_cmd(setup.rustc, f"w{i}"), dict(setup.env, FAKE_SLEEP="0"))
        for i in range(3)
    ]
    for w in waiters:  # each prints its waiting line once its first look is done
        assert w.stderr is not None and b"waits" in w.stderr.readline()
    before = [cpu_seconds(w.pid) for w in waiters]
    time.sleep(2.0)
    used = sorted((cpu_seconds(w.pid) - b) / 2.0 for w, b in zip(waiters, before))
    holder.release()
    for w in waiters:
        assert w.wait(timeout=60) == 0
    # The head probes the held slot every 50 ms and decides in full every 0.5 s
    # (~0.5% of a core here; a loop without its sleep takes a whole
    # core); the two behind it block on the ticket ahead and use nothing.
    assert used[2] < 0.02, used
    assert used[1] < 0.002, used


def test_mode_off_and_link(setup: Setup, procs: Procs) -> None:
    non_lto_bin = ["--crate-type", "bin", "--emit=dep-info,link", "-C", "opt-level=3"]
    env = dict(setup.env, LTOGUARD_MODE="link")
    p = procs.start(ltoguard_cmd(setup.rustc, "plainbin", non_lto_bin), env)
    assert p.wait(timeout=30) == 0
    assert setup.state.exists()  # guarded: link mode guards every final link
    env = dict(setup.env, LTOGUARD_MODE="off", LTOGUARD_DIR=str(setup.tmp / "never"))
    p = procs.start(ltoguard_cmd(setup.rustc, "ltobin"), env)
    assert p.wait(timeout=30) == 0
    assert not (setup.tmp / "never").exists()


def test_bad_settings_fail_with_one_line(setup: Setup, procs: Procs) -> None:
    for var, value in [
        ("LTOGUARD_SLOTS", "many"),
        ("LTOGUARD_SLOTS", "0"),
        ("LTOGUARD_MODE", "fast"),
    ]:
        p = procs.start(ltoguard_cmd(setup.rustc, "c"), dict(setup.env, **{var: value}))
        _, err = p.communicate(timeout=30)
        assert p.returncode == 2
        lines = err.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ltoguard: error: ") and var in lines[0], (
            lines
        )
    assert starts(setup.tmp) == []


def test_version_and_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ltoguard", "--version"], capture_output=True, check=True
    )
    assert out.stdout.decode().startswith("ltoguard ")
    out = subprocess.run(
        [sys.executable, "-m", "ltoguard", "--help"], capture_output=True, check=True
    )
    assert "rustc-workspace-wrapper" in out.stdout.decode()


def test_state_dir_removed_while_queued(setup: Setup, procs: Procs) -> None:
    """The queue is recreated: the waiter neither hangs nor crashes, and statuses are kept."""
    import shutil

    env = dict(setup.env)
    holder = procs.holder(setup.rustc, dict(env, FAKE_EXIT="5"))
    waiter = procs.start(ltoguard_cmd(setup.rustc, "waiter"), dict(env, FAKE_EXIT="6"))
    assert wait_for(lambda: len(tickets(setup.state)) == 1)
    # The waiter may recreate files while rmtree walks the directory: retry.
    for _ in range(50):
        try:
            shutil.rmtree(setup.state)
            break
        except OSError:
            time.sleep(0.05)
    assert waiter.wait(timeout=30) == 6
    holder.release()
    _, err = holder.proc.communicate(timeout=30)
    assert holder.proc.returncode == 5
    # The gate works on afterwards. (Not "the directory exists now": when rmtree
    # had to retry, its second pass may remove the directory the waiter had just
    # made again; that was a race of the test, seen under load.)
    after = procs.start(ltoguard_cmd(setup.rustc, "after"), dict(env, FAKE_EXIT="7"))
    assert after.wait(timeout=30) == 7
    assert setup.state.is_dir()


@pytest.mark.slow
def test_head_waiting_for_memory_does_not_spin(setup: Setup, procs: Procs) -> None:
    # Two slots, set by hand: memory decides, on a runner with one CPU too (under
    # `auto` the CPUs would, there).
    env = dict(setup.env, LTOGUARD_MEMORY="200M", LTOGUARD_SLOTS="2")
    holder = procs.holder(setup.rustc, env)
    waiter = procs.start(ltoguard_cmd(setup.rustc, "waiter"), env)
    assert waiter.stderr is not None
    line = waiter.stderr.readline().decode()  # the one waiting line: memory is the reason
    assert "free" in line and "needs" in line, line
    used = cpu_fraction(waiter.pid, 2.0)
    holder.release()
    assert waiter.wait(timeout=30) == 0
    # ~0.5% of a core here. How often the head decides, and how often it reads
    # memory, is pinned exactly by test_waiting_head_decides_again_* and by
    # test_waiting_head_rereads_memory_only_when_it_may_have_changed.
    assert used < 0.02, used


@pytest.mark.parametrize("guard", ["always", "auto"])
def test_file_override_reaches_the_pass_through_path(
    setup: Setup, procs: Procs, guard: str
) -> None:
    """cli's quick file scan: `guard = "always"` in Cargo.toml guards a non-LTO bin."""
    ws = setup.tmp / "ws"
    ws.mkdir()
    (ws / "Cargo.toml").write_text(
        f'[workspace]\nmembers = []\n[workspace.metadata.ltoguard.crates.plain-bin]\nguard = "{guard}"\n'
    )
    non_lto_bin = ["--crate-type", "bin", "--emit=dep-info,link", "-C", "opt-level=3"]
    env = dict(setup.env, XDG_CONFIG_HOME=str(setup.tmp / "no-config"))
    p = procs.start(ltoguard_cmd(setup.rustc, "plain_bin", non_lto_bin), env, cwd=ws)
    assert p.wait(timeout=30) == 0
    assert setup.state.exists() == (guard == "always")


class _HeadBehindAHolder:
    """An in-process holder of slot 0, and a waiter thread at the head of the queue
    whose policy records each decision (running jobs seen) and says yes once `fits`."""

    def __init__(self, tmp_path: Path) -> None:
        path, dir_fd = open_state_dir(str(tmp_path / "s"))
        self.holder = Semaphore(path, dir_fd)
        self.held = self.holder.acquire({"crate": "holder"}, lambda snap: slot_cap(snap.running, 1))
        waiter = Semaphore(path, os.dup(dir_fd))
        waiter.pid = os.getpid() + 4_000_000  # its own ticket and record names
        self.calls: list[int] = []
        self.fits = threading.Event()
        self.got: list[Any] = []
        self.thread = threading.Thread(
            target=lambda: self.got.append(waiter.acquire({"crate": "w"}, self.policy))
        )
        self.thread.start()

    def policy(self, snap: Snapshot) -> Admission:
        self.calls.append(snap.running)
        return Admission(self.fits.is_set(), Why.FITS if self.fits.is_set() else Why.NO_ROOM)

    def admit(self) -> Any:
        self.fits.set()
        self.thread.join(timeout=10)
        assert self.got
        slot = self.got[0]
        self.holder.release(slot)
        return slot


@pytest.mark.slow
def test_waiting_head_decides_again_when_a_held_slot_frees(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between decisions the head only probes the slots it saw held (a flock each):
    a freed one brings the next decision at once, without waiting for FULL_RECHECK."""
    monkeypatch.setattr(semaphore, "FULL_RECHECK", 3600.0)
    q = _HeadBehindAHolder(tmp_path)
    try:
        time.sleep(1.0)  # 20 polls
        assert q.calls == [1]  # decided once; the polls only probed the held slot
        q.holder.release(q.held)
        assert wait_for(lambda: len(q.calls) >= 2, timeout=10)
        assert q.calls[1] == 0
        assert q.admit().index == 0
    finally:
        q.fits.set()
        q.thread.join(timeout=10)


def test_waiting_head_decides_again_every_full_recheck(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory moves without any slot changing hands: the head still re-decides."""
    monkeypatch.setattr(semaphore, "FULL_RECHECK", 0.1)
    q = _HeadBehindAHolder(tmp_path)
    try:
        assert wait_for(lambda: len(q.calls) >= 4, timeout=10)
        assert set(q.calls) == {1}
        assert q.admit().index == 1  # slot 0 is still held
    finally:
        q.fits.set()
        q.thread.join(timeout=10)
        q.holder.release(q.held)


def test_a_head_waiting_for_the_builds_compiles_decides_every_full_recheck(
    tmp_path: Path,
) -> None:
    """No slot is held, so there is none to probe between decisions: the head waiting
    for the build's ordinary compiles (COMPILING) looks again every FULL_RECHECK, not
    every HEAD_POLL (which took the mutex and listed the directory 20 times a second)."""
    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    sem = Semaphore(path, dir_fd)
    calls: list[float] = []
    done = threading.Event()

    def policy(snap: Snapshot) -> Admission:
        calls.append(time.monotonic())
        return Admission(done.is_set(), Why.FIRST if done.is_set() else Why.COMPILING)

    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(sem.acquire({"crate": "w"}, policy)))
    thread.start()
    try:
        time.sleep(1.2)
        assert 2 <= len(calls) <= 4, calls  # about every FULL_RECHECK (0.5 s)
    finally:
        done.set()
        thread.join(timeout=10)
    assert got and got[0].index == 0
    sem.release(got[0])


@pytest.mark.parametrize("moment", ["_enqueue", "_try_admit"])
def test_a_signal_as_a_ticket_or_slot_changes_hands_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    """The waiter's handler raises. A signal that lands just after the ticket file
    is made, or just after the slot and its record are taken, is held back until
    the cleanup that drops them is in force (CI once caught the first one)."""
    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    sem = Semaphore(path, dir_fd)
    original = getattr(sem, moment)

    def then_signal(*args: Any) -> Any:
        result = original(*args)
        os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(sem, moment, then_signal)
    process.raise_on_signals()
    try:
        with pytest.raises(process.Interrupted):
            sem.acquire({"crate": "w"}, lambda snap: slot_cap(snap.running, 1))
    finally:
        for s in process.FORWARDED:
            signal.signal(s, signal.SIG_DFL)
    assert [n for n in os.listdir(path) if n.startswith(("q-", "run-"))] == []
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == set()  # nothing left blocked
    monkeypatch.undo()
    sem.release(
        sem.acquire({"crate": "next"}, lambda snap: slot_cap(snap.running, 1))
    )  # the slot is free


def test_a_signal_before_the_compiler_exists_reaches_it_once_it_does(procs: Procs) -> None:
    fwd = process.Forwarder()
    fwd.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # admitted, not started yet: kept
        assert fwd.pending == [signal.SIGTERM]
        child = procs.start(
            [sys.executable, "-c", "import time; time.sleep(30)"], stdout=None, stderr=None
        )
        fwd.forward_to(child)
        assert child.wait(timeout=10) == -signal.SIGTERM
        assert fwd.pending == []
        os.kill(os.getpid(), signal.SIGINT)  # it has ended: kept, not lost
        assert fwd.pending == [signal.SIGINT]
        assert fwd.received == [signal.SIGTERM, signal.SIGINT]  # a rerun must not start
    finally:
        for s in process.FORWARDED:
            signal.signal(s, signal.SIG_DFL)


def test_a_heads_probe_is_not_a_running_job(tmp_path: Path) -> None:
    """The head's probe holds a free slot's lock (shared) for an instant. Whoever
    counts running jobs in that instant (a running job deciding whether to stop
    itself, `status`) must not see a phantom second job."""
    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    sem = Semaphore(path, dir_fd)
    a = sem.acquire({"crate": "a"}, lambda snap: slot_cap(snap.running, 2))
    b = sem.acquire({"crate": "b"}, lambda snap: slot_cap(snap.running, 2))
    sem.release(b)
    probe = os.open(os.path.join(path, locks.slot_name(b.index)), os.O_RDONLY)
    try:
        assert locks.all_held([probe]) is False  # it frees: the head decides now
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)  # the probe's instant, frozen
        with sem.mutex():
            snap = sem.snapshot()
        assert [h.slot for h in snap.holders] == [a.index]
        assert b.index in snap.free_slots
    finally:
        os.close(probe)
        sem.release(a)


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK])
def test_a_slot_lock_that_cannot_be_taken_is_an_error_not_a_free_slot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Fails closed: on a filesystem without flock the slot is not taken as free (a
    job would run unguarded) but raised, and run_job names LTOGUARD_DIR."""
    path, dir_fd = open_state_dir(str(tmp_path / "state"))
    fd = os.open(os.path.join(path, locks.slot_name(0)), os.O_RDONLY | os.O_CREAT, 0o644)

    def no_flock(_fd: int, _op: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    try:
        for shared in (False, True):
            with pytest.raises(OSError) as info:
                locks.try_lock(fd, shared=shared)
            assert info.value.errno == code
        with pytest.raises(OSError):
            locks.take_new_slot(dir_fd, [])
    finally:
        os.close(fd)
        os.close(dir_fd)


def test_an_attempt_s_end_is_handled_before_its_slot_is_freed(tmp_path: Path) -> None:
    """What ends an attempt (the guard learns its peak there) runs while the slot is
    still held: a waiter woken by the freed slot must find the peak learned."""
    from ltoguard.attempt import Attempt
    from ltoguard.jobs import Job, JobRecord

    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    sem = Semaphore(path, dir_fd)
    job = Job(["true"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    record = JobRecord(job, 1 << 20, "history")
    slot = sem.acquire(record.ticket, lambda snap: slot_cap(snap.running, 1))
    held_then: list[int] = []

    def ended(result: object) -> None:
        with sem.mutex():
            held_then.append(sem.snapshot().running)

    result = Attempt(record, sem, None, None).run(slot, process.Forwarder(), None, ended)
    assert result.code == 0
    assert held_then == [1]
    with sem.mutex():
        assert sem.snapshot().running == 0


def _guard_here(run: Any) -> Any:
    """A guard run in this test's process: its signal handlers put back after."""
    handlers = {s: signal.getsignal(s) for s in process.FORWARDED}
    try:
        return run()
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def test_the_guard_learns_the_peak_before_the_slot_is_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guard hands `Attempt.run` what ends an attempt: the peak is in the history
    while the slot is still held (here: an attempt that stands in for the real one
    looks at the history between calling it and freeing the slot)."""
    from ltoguard import attempt
    from ltoguard.config import Settings
    from ltoguard.guard import GuardedRun
    from ltoguard.history import history_file
    from ltoguard.jobs import Job

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    job = Job(["true"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    in_history: list[list[int]] = []

    def run(self: Any, slot: Any, signals: Any, lease: Any = None, ended: Any = None) -> Any:
        if slot.sigmask is not None:
            process.restore_signals(slot.sigmask)  # as the real one: held since admission
        result = attempt.AttemptResult(0, 50 << 20)
        if ended is not None:
            ended(result)
        cache = tmp_path / "cache" / "ltoguard" / history_file(os.geteuid())
        with open(cache) as f:
            in_history.append(json.load(f)["entries"]["k"]["peaks"])
        self.sem.release(slot)
        return result

    monkeypatch.setattr(attempt.Attempt, "run", run)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert _guard_here(GuardedRun(job, Settings({}), Semaphore(path, dir_fd)).run) == 0
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == mask  # none left blocked
    assert in_history == [[50 << 20]]


def test_a_rerun_alone_is_marked_in_its_record_on_one_cpu_too(tmp_path: Path) -> None:
    """Where no waiter may backfill (one CPU, one slot), the rerun's run record must
    still say ``alone``: the others' policies keep out of its way by it."""

    class Alone:
        alone = True
        may_backfill = False

        def __call__(self, snap: Snapshot) -> Admission:
            return Admission(snap.running == 0, Why.ALONE)

    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    sem = Semaphore(path, dir_fd)
    slot = sem.acquire({"crate": "w"}, Alone())
    try:
        record = json.loads((tmp_path / "s" / slot.record_name).read_text())
        assert record["alone"] is True
    finally:
        sem.release(slot)


@pytest.mark.parametrize("why", ["stopped itself", "out of memory"])
def test_a_job_that_queues_again_is_queued_before_its_slot_is_freed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, why: str
) -> None:
    """A job stopped to save memory, or rerunning alone after an OOM kill, queues
    again at its first position. Its ticket is there before its slot is freed: a
    waiter woken by the freed slot finds it ahead (it would take its place, or start
    beside the rerun alone), and the next attempt waits on that very ticket."""
    from ltoguard import attempt
    from ltoguard.config import Settings
    from ltoguard.guard import GuardedRun
    from ltoguard.jobs import Job

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    job = Job(["true"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    seen: list[tuple[int, list[dict[str, Any]]]] = []  # (slot's seq, live tickets)

    def run(self: Any, slot: Any, signals: Any, lease: Any = None, ended: Any = None) -> Any:
        if slot.sigmask is not None:
            process.restore_signals(slot.sigmask)  # as the real one: held since admission
        first = not seen
        result = attempt.AttemptResult(
            0 if not first else -9,
            50 << 20,
            stopped_itself=first and why == "stopped itself",
            out_of_memory=first and why == "out of memory",
        )
        if ended is not None:
            ended(result)
        seen.append((slot.seq, self.sem.queue()))
        self.sem.release(slot)
        return result

    monkeypatch.setattr(attempt.Attempt, "run", run)
    assert _guard_here(GuardedRun(job, Settings({}), Semaphore(path, dir_fd)).run) == 0
    (seq, queued), (seq_again, after) = seen
    assert [t["pid"] for t in queued] == [os.getpid()], "not queued again before the release"
    assert queued[0]["estimate"] >= 50 << 20  # the raised estimate, in the ticket
    assert queued[0].get("alone", False) is (why == "out of memory")
    assert seq_again == seq  # admitted on that ticket, at its first position
    assert after == []
    assert list((tmp_path / "s").glob("q-*")) == []


@pytest.mark.parametrize("ends", ["a signal", "an error"])
def test_a_job_ended_between_two_attempts_leaves_no_ticket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ends: str
) -> None:
    """The first attempt stops itself (so the job queued again on a new ticket), then
    a signal that came during it, or an error before the next wait, ends the job:
    the ticket it queued again on is dropped, once, and nobody waits behind it."""
    from ltoguard import attempt
    from ltoguard.config import Settings
    from ltoguard.guard import GuardedRun
    from ltoguard.jobs import Job

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(process, "exit_like", lambda code: code)  # not die by it
    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    job = Job(["true"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    queued: list[int] = []

    def run(self: Any, slot: Any, signals: Any, lease: Any = None, ended: Any = None) -> Any:
        if slot.sigmask is not None:
            process.restore_signals(slot.sigmask)
        result = attempt.AttemptResult(-9, 50 << 20, stopped_itself=True)
        ended(result)
        queued.append(len(self.sem.queue()))
        self.sem.release(slot)
        if ends == "a signal":
            signals.received.append(signal.SIGTERM)  # as its handler does
        return result

    acquire = GuardedRun._acquire
    calls: list[int] = []

    def failing_acquire(self: Any, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("before the wait")
        return acquire(self, *args)

    monkeypatch.setattr(attempt.Attempt, "run", run)
    if ends == "an error":
        monkeypatch.setattr(GuardedRun, "_acquire", failing_acquire)
    runner = GuardedRun(job, Settings({}), Semaphore(path, dir_fd))
    if ends == "a signal":
        assert _guard_here(runner.run) == -signal.SIGTERM
    else:
        with pytest.raises(RuntimeError):
            _guard_here(runner.run)
    assert queued == [1]  # it had queued again
    assert list((tmp_path / "s").glob("q-*")) == []
    assert runner.requeued is None
