"""Faults while guarded compiles run or wait: kill -9, a state dir that
vanishes or turns read-only, a full disk, stale records, odd clocks and signals.

Each test names the protection it checks; it fails if that protection is removed.
Real ltoguard processes in front of the fake rustc of tests/procs.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import (
    NOBODY,
    Procs,
    as_nobody,
    clean_env,
    counter_max,
    live_processes_running,
    ltoguard_cmd,
    make_fake_rustc,
    pid_alive,
    prime,
    starts,
    state_leftovers,
    system_python,
    tickets,
    wait_for,
)

# slow: real ltoguard processes under faults, ~1 s a test (~25 s in all here).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def env_(tmp_path: Path) -> dict[str, str]:
    return clean_env(tmp_path, tmp_path / "state")


def one_line_messages(err: bytes) -> list[str]:
    """ltoguard's stderr: every line its own (no traceback, no stray output)."""
    lines = err.decode(errors="replace").splitlines()
    assert all(line.startswith("ltoguard: ") for line in lines), lines
    return lines


def slot_is_free(state: Path, k: int = 0) -> bool:
    fd = os.open(state / f"slot-{k}.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


# -- kill -9 ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [11, 12])
def test_kill9_of_waiters_and_holders_keeps_fifo_for_survivors(
    tmp_path: Path, procs: Procs, env_: dict[str, str], seed: int
) -> None:
    """Protection: slots are kernel locks (freed when the holder's process group
    dies) and dead waiters' tickets are skipped (their lock is gone). Without either
    the survivors hang; without FIFO they start out of order."""
    rng = random.Random(seed)
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    holder = procs.holder(rustc, env_, "h")
    assert starts(tmp_path) == ["h"]
    names = [f"w{i}" for i in range(8)]
    waiters = {}
    for i, name in enumerate(names):
        # Some waiters will run long enough to be killed while holding the slot.
        waiters[name] = procs.start(
            ltoguard_cmd(rustc, name), dict(env_, FAKE_NAME=name, FAKE_SLEEP="0.4")
        )
        assert wait_for(lambda n=i + 1: len(tickets(state)) == n)
    killed_waiting = rng.sample(names, 2)
    killed_running = rng.choice([n for n in names if n not in killed_waiting])
    wrapper_only = rng.random() < 0.5  # the wrapper alone, or wrapper and compiler
    for name in killed_waiting:
        os.killpg(waiters[name].pid, signal.SIGKILL)
        assert waiters[name].wait(timeout=10) == -signal.SIGKILL
    time.sleep(rng.uniform(0, 0.2))
    os.killpg(holder.pid, signal.SIGKILL)  # a holder dies mid-compile
    assert holder.wait(timeout=10) == -signal.SIGKILL
    assert wait_for(lambda: killed_running in starts(tmp_path), timeout=30)
    time.sleep(rng.uniform(0, 0.3))
    victim = waiters[killed_running]
    if wrapper_only:
        os.kill(victim.pid, signal.SIGKILL)
    else:
        os.killpg(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    survivors = [n for n in names if n not in killed_waiting and n != killed_running]
    for name in survivors:
        assert waiters[name].wait(timeout=60) == 0, name
    order = [n for n in starts(tmp_path) if n in survivors]
    assert order == survivors  # FIFO for the survivors
    assert killed_waiting[0] not in starts(tmp_path)
    assert counter_max(tmp_path) == 1  # counted by the compiles: an orphan would make 2
    assert live_processes_running(rustc) == []
    # Tickets of waiters killed at the tail of the queue stay until the next
    # invocation walks past them (it removes its own user's dead tickets).
    after = procs.start(ltoguard_cmd(rustc, "after"), dict(env_, FAKE_NAME="after"))
    assert after.wait(timeout=30) == 0
    assert tickets(state) == []
    # What may stay: the records of the two holders killed mid-compile (never
    # counted: their slots are free); nothing else.
    assert all(n.startswith("run-") for n in state_leftovers(state))
    assert slot_is_free(state)


def test_records_of_killed_holders_are_cleaned_up_later(
    tmp_path: Path, procs: Procs, env_: dict[str, str]
) -> None:
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    h = procs.start(ltoguard_cmd(rustc, "h"), dict(env_, FAKE_NAME="h", FAKE_SLEEP="30"))
    assert wait_for(lambda: starts(tmp_path) == ["h"])
    os.killpg(h.pid, signal.SIGKILL)
    h.wait(timeout=10)
    p = procs.start(ltoguard_cmd(rustc, "next"), env_)
    assert p.wait(timeout=30) == 0
    assert state_leftovers(state) == []


# -- the state directory vanishes or turns read-only --------------------------------


def remove_tree(path: Path) -> None:
    """rm -rf while live waiters may recreate files in it (rmdir then fails with
    ENOTEMPTY): retry until it is gone."""
    for _ in range(100):
        try:
            shutil.rmtree(path)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)
    raise AssertionError(f"could not remove {path}")


def test_state_dir_removed_while_one_runs(
    tmp_path: Path, procs: Procs, env_: dict[str, str]
) -> None:
    """Protection: a running holder keeps its slot fd and directory fd, so removing
    the directory cannot lose its exit status or hang it; a later invocation
    recreates the directory (0700) and runs. (The two then run side by side: a
    removed state dir splits the semaphore, like removing any lock directory.)"""
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    holder = procs.holder(rustc, dict(env_, FAKE_EXIT="5"), "h")
    remove_tree(state)
    late = procs.start(ltoguard_cmd(rustc, "late"), dict(env_, FAKE_NAME="late", FAKE_EXIT="7"))
    _, err = late.communicate(timeout=30)
    assert late.returncode == 7, err
    one_line_messages(err)
    assert state.is_dir() and stat.S_IMODE(state.stat().st_mode) == 0o700
    holder.release()
    _, err = holder.proc.communicate(timeout=30)
    assert holder.proc.returncode == 5
    one_line_messages(err)
    assert live_processes_running(rustc) == []


def test_waiter_survives_state_dir_removal(
    tmp_path: Path, procs: Procs, env_: dict[str, str]
) -> None:
    """A waiter must either carry on (and run its compile) or stop with one line
    (exit 2); never a traceback, never a hang."""
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    holder = procs.holder(rustc, env_, "h")
    waiter = procs.start(ltoguard_cmd(rustc, "w"), dict(env_, FAKE_NAME="w", FAKE_EXIT="6"))
    assert wait_for(lambda: len(tickets(state)) == 1)
    remove_tree(state)
    holder.release()
    assert holder.wait(timeout=30) == 0
    _, err = waiter.communicate(timeout=30)
    lines = one_line_messages(err)
    assert waiter.returncode in (6, 2)
    if waiter.returncode == 2:
        assert lines[-1].startswith("ltoguard: error: ")


def nobody_env(base: Path, state: Path, **extra: str) -> dict[str, str]:
    logs = base / "logs"
    logs.mkdir(exist_ok=True)
    os.chown(logs, NOBODY, NOBODY)
    env = clean_env(logs, state, **extra)
    os.chown(logs / "xdg-config", NOBODY, NOBODY)
    env["HOME"] = str(logs)
    return env


def test_state_dir_made_read_only_mid_build(world: Path, procs: Procs) -> None:
    """Protection: open_state_dir checks writability before queueing. A new
    invocation fails with one line naming the directory (exit 2), holding nothing
    and running nothing; the running holder finishes with its own exit status.
    As uid 65534, since root ignores mode bits."""
    rustc = make_fake_rustc(world, python=system_python())
    state = world / "state"
    state.mkdir(mode=0o700)
    os.chown(state, NOBODY, NOBODY)
    env = nobody_env(world, state)
    logs = world / "logs"
    holder = procs.holder(
        rustc, dict(env, FAKE_EXIT="4"), "h", cmd=as_nobody(ltoguard_cmd(rustc, "h")), cwd=world
    )
    assert starts(logs) == ["h"]
    state.chmod(0o500)
    late = procs.start(
        as_nobody(ltoguard_cmd(rustc, "late")), dict(env, FAKE_NAME="late"), cwd=world
    )
    _, err = late.communicate(timeout=30)
    assert late.returncode == 2
    lines = one_line_messages(err)
    assert len(lines) == 1 and lines[0].startswith("ltoguard: error: ") and str(state) in lines[0]
    assert "late" not in starts(logs)
    assert tickets(state) == []
    holder.release()
    _, err = holder.proc.communicate(timeout=30)
    assert holder.proc.returncode == 4
    one_line_messages(err)  # warnings about the history/record, one line each
    assert slot_is_free(state)
    assert live_processes_running(rustc) == []


# -- a full disk ------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    probe = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError):
            os.write(probe, b"x")
    finally:
        os.close(probe)
        os.unlink(directory / "probe")


def test_disk_fills_while_the_compile_runs(tmp_path: Path, small_fs: Path, procs: Procs) -> None:
    """Protection: history and event writes after the compile are best effort (one
    warning line each); the exit status and the slot release do not depend on them."""
    rustc = make_fake_rustc(tmp_path)
    state = small_fs / "state"
    env = clean_env(tmp_path, state)
    c = procs.holder(rustc, dict(env, FAKE_EXIT="9"), "c")
    time.sleep(0.2)  # past the record update that names the child
    fill(small_fs)
    c.release()
    _, err = c.proc.communicate(timeout=30)
    assert c.proc.returncode == 9
    lines = one_line_messages(err)
    assert all(line.startswith("ltoguard: warning: ") for line in lines), lines
    assert slot_is_free(state)
    assert [n for n in state_leftovers(state) if n.startswith(("run-", "q-"))] == []


def test_disk_already_full_still_runs_the_compile(
    tmp_path: Path, small_fs: Path, procs: Procs
) -> None:
    rustc = make_fake_rustc(tmp_path)
    state = small_fs / "state"
    env = clean_env(tmp_path, state)
    first = procs.start(ltoguard_cmd(rustc, "first"), env)  # lock files exist from here on
    assert first.wait(timeout=30) == 0
    fill(small_fs)
    p = procs.start(ltoguard_cmd(rustc, "c"), dict(env, FAKE_NAME="c", FAKE_EXIT="7"))
    _, err = p.communicate(timeout=30)
    one_line_messages(err)
    assert p.returncode == 7
    assert "c" in starts(tmp_path)


# -- stale records, pid reuse, clocks ---------------------------------------------


def _sleeper(procs: Procs) -> subprocess.Popen[bytes]:
    return procs.start(["sleep", "60"], dict(os.environ))


def _plant_record(state: Path, pid: int, **fields: object) -> Path:
    rec = {"pid": pid, "slot": 0, "crate": "ghost", "started": time.time(), "uid": os.geteuid()}
    rec.update(fields)
    path = state / f"run-{os.geteuid()}-{pid}.json"
    path.write_text(json.dumps(rec))
    return path


@pytest.mark.parametrize(
    "started",
    [pytest.param(0.0, id="now"), pytest.param(1e6, id="future"), pytest.param(-1e6, id="past")],
)
def test_record_naming_a_reused_live_pid_does_not_hold_the_slot(
    tmp_path: Path, procs: Procs, env_: dict[str, str], started: float
) -> None:
    """Protection: the slot lock, not the record, says who runs. A record for slot 0
    left by a dead holder whose pid now belongs to a live unrelated process (and
    with a wall-clock start far off) must not make anyone wait: display only."""
    rustc = prime(tmp_path, env_)
    state = tmp_path / "state"
    other = _sleeper(procs)
    _plant_record(state, other.pid, started=time.time() + started, child=other.pid)
    p = procs.start(ltoguard_cmd(rustc, "c"), dict(env_, FAKE_NAME="c"))
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0
    assert err == b""  # no "waits" line: it was admitted at once
    assert pid_alive(other.pid)  # and nobody touched the unrelated process


def test_dead_tickets_with_odd_sequence_numbers_do_not_block(
    tmp_path: Path, procs: Procs, env_: dict[str, str]
) -> None:
    """Protection: a ticket counts only while its owner holds its lock. Dead tickets
    at the head (seq 0, or a wall-clock-like number) are skipped; our own user's are
    removed, another user's are left alone."""
    rustc = prime(tmp_path, env_)
    state = tmp_path / "state"
    dead = _sleeper(procs)
    mine = state / f"q-{0:020d}-{os.geteuid()}-{dead.pid}.json"
    mine.write_text("{}")
    wallclock = state / f"q-{time.time_ns() % 10**20:020d}-{os.geteuid()}-1.json"
    wallclock.write_text("{}")
    theirs = state / f"q-{1:020d}-{NOBODY}-2.json"
    theirs.write_text("{}")
    os.chown(theirs, NOBODY, NOBODY)
    p = procs.start(ltoguard_cmd(rustc, "c"), dict(env_, FAKE_NAME="c"))
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0 and err == b""
    assert not mine.exists()
    assert theirs.exists()


def test_live_ticket_with_huge_sequence_number_does_not_block_others(
    tmp_path: Path, procs: Procs, env_: dict[str, str]
) -> None:
    """Protection: the queue is ordered by seq, so a live waiter whose seq is
    absurdly large (a clock from the future) is behind everyone: it cannot block
    the others, who are admitted at once."""
    rustc = prime(tmp_path, env_)
    state = tmp_path / "state"
    holder_script = (
        "import fcntl, os, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    future = procs.start(
        [sys.executable, "-c", holder_script, str(state / f"q-{10**20 - 1}-{os.geteuid()}-3.json")],
        dict(os.environ),
    )
    assert future.stdout is not None and future.stdout.readline() == b"locked\n"
    p = procs.start(ltoguard_cmd(rustc, "c"), dict(env_, FAKE_NAME="c"))
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0 and err == b""


def test_queue_order_uses_the_monotonic_clock(
    tmp_path: Path, procs: Procs, env_: dict[str, str]
) -> None:
    """Protection: tickets are ordered by CLOCK_MONOTONIC, which a wall-clock change
    (NTP step, DST, an admin's `date -s`) does not move. With realtime the order
    would jump whenever the clock is set."""
    if abs(time.time_ns() - time.monotonic_ns()) < 3600 * 10**9:
        pytest.skip("monotonic and realtime clocks too close to tell apart")
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    h = procs.holder(rustc, env_, "h")
    w = procs.start(ltoguard_cmd(rustc, "w"), dict(env_, FAKE_NAME="w"))
    assert wait_for(lambda: len(tickets(state)) == 1)
    seq = int(tickets(state)[0].split("-")[1])
    assert abs(seq - time.monotonic_ns()) < 60 * 10**9
    h.release()
    assert h.wait(timeout=30) == 0 and w.wait(timeout=30) == 0


# -- signals ----------------------------------------------------------------------

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_to_the_whole_group_while_running(
    tmp_path: Path, procs: Procs, env_: dict[str, str], sig: int
) -> None:
    """Ctrl-C in a terminal signals wrapper and compiler at once. Protection: the
    compiler dies by the signal and ltoguard dies by the same signal (cargo shows
    it), the slot is free at once and no process is left."""
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    p = procs.start(ltoguard_cmd(rustc, "c"), dict(env_, FAKE_NAME="c", FAKE_SLEEP="30"))
    assert wait_for(lambda: starts(tmp_path) == ["c"])
    os.killpg(p.pid, sig)
    assert p.wait(timeout=10) == -sig
    assert wait_for(lambda: live_processes_running(rustc) == [], timeout=5)
    assert slot_is_free(state)
    assert (
        tickets(state) == [] and [n for n in state_leftovers(state) if n.startswith("run-")] == []
    )


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_to_a_waiting_group(
    tmp_path: Path, procs: Procs, env_: dict[str, str], sig: int
) -> None:
    """Protection: a waiter interrupted by a signal drops its ticket, dies by the
    signal at once and never starts its compile; the holder is unaffected."""
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    h = procs.holder(rustc, dict(env_, FAKE_EXIT="3"), "h")
    w = procs.start(ltoguard_cmd(rustc, "w"), dict(env_, FAKE_NAME="w"))
    assert wait_for(lambda: len(tickets(state)) == 1)
    os.killpg(w.pid, sig)
    assert w.wait(timeout=5) == -sig
    assert tickets(state) == []
    h.release()
    assert h.wait(timeout=30) == 3
    assert starts(tmp_path) == ["h"]
    assert live_processes_running(rustc) == []
    assert state_leftovers(state) == []
