"""The state directory as an attack surface: whose directory it is,
symlinks planted in it, records as hostile data, and sharing it between users.

Real ltoguard processes (the CLI, so exit codes and messages are what users see)
in front of the fake rustc of scripts/fakerustc.py. Each test names its protection.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ltoguard import records
from tests.procs import (
    NOBODY,
    Procs,
    as_nobody,
    clean_env,
    counter_max,
    ltoguard_cmd,
    make_fake_rustc,
    prime,
    starts,
    state_leftovers,
    system_python,
    tickets,
    wait_for,
)

# slow: every test runs several real ltoguard processes (~30 s in all here).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def fingerprint(path: Path) -> tuple[bytes, int, int, int]:
    st = path.lstat()
    return path.read_bytes(), st.st_mode, st.st_mtime_ns, st.st_uid


def run_cli(
    rustc: Path, env: dict[str, str], crate: str = "c"
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ltoguard_cmd(rustc, crate), env=dict(env, FAKE_NAME=crate), capture_output=True, timeout=60
    )


# -- whose directory ----------------------------------------------------------------


def _other_owner(d: Path) -> None:
    d.mkdir(mode=0o700)
    os.chown(d, NOBODY, NOBODY)


def _world_writable(d: Path) -> None:
    d.mkdir()
    d.chmod(0o777)


def _group_writable(d: Path) -> None:
    d.mkdir()
    d.chmod(0o770)


def _symlink(d: Path) -> None:
    real = d.parent / "real-target"
    real.mkdir(mode=0o700)
    d.symlink_to(real)


def _not_a_dir(d: Path) -> None:
    d.write_text("")


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_other_owner, f"belongs to uid {NOBODY}"),
        (_world_writable, "sticky"),
        (_group_writable, "sticky"),
        (_symlink, "symlink"),
        (_not_a_dir, "not a directory"),
    ],
    ids=["other-owner", "world-writable", "group-writable", "symlink", "file"],
)
def test_untrusted_state_dir_is_refused_with_the_reason(
    tmp_path: Path, make: Callable[[Path], None], why: str
) -> None:
    """Protection: statedir.check_dir_stat on the lstat of LTOGUARD_DIR. Without it
    another user could pre-create (or redirect) the directory and own our locks."""
    state = tmp_path / "state"
    make(state)
    rustc = make_fake_rustc(tmp_path)
    r = run_cli(rustc, clean_env(tmp_path, state))
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("ltoguard: error: "), lines
    assert str(state) in lines[0] and why in lines[0], lines[0]
    assert r.stdout == b""
    assert starts(tmp_path) == []  # the compile did not run unguarded either
    if (tmp_path / "real-target").exists():
        assert list((tmp_path / "real-target").iterdir()) == []


# -- planted symlinks ---------------------------------------------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    v = tmp_path / "victim"
    v.write_bytes(b"precious\n")
    v.chmod(0o640)
    return v


@pytest.mark.parametrize(
    "name",
    [
        "slot-0.lock",
        "slot-1.lock",
        "mutex.lock",
        "memory-history-{uid}.json",
        "events-{uid}.jsonl",
        "events-{uid}.1.jsonl",
    ],
)
@pytest.mark.parametrize("dangling", [False, True], ids=["to-victim", "dangling"])
def test_symlinks_planted_in_the_state_dir_are_never_followed(
    tmp_path: Path, victim: Path, name: str, dangling: bool
) -> None:
    """Protection: every file in the state dir is opened relative to the directory
    fd with O_NOFOLLOW, and replaced by rename. Following the link would open,
    truncate, append to or chmod the victim, or create the dangling link's target."""
    state = tmp_path / "state"
    env = clean_env(tmp_path, state, LTOGUARD_SLOTS="2")
    rustc = prime(tmp_path, env)
    link = state / name.format(uid=os.geteuid())
    if link.exists():
        link.unlink()
    target = tmp_path / "created-through-link" if dangling else victim
    link.symlink_to(target)
    before = fingerprint(victim)
    for i in range(2):
        r = run_cli(rustc, env, f"c{i}")
        assert r.returncode in (0, 1, 2)
    assert fingerprint(victim) == before
    assert not (tmp_path / "created-through-link").exists()


@pytest.mark.parametrize("name", ["mutex.lock", "slot-0.lock"])
def test_symlinked_lock_file_gets_a_one_line_error(tmp_path: Path, victim: Path, name: str) -> None:
    state = tmp_path / "state"
    env = clean_env(tmp_path, state)
    rustc = prime(tmp_path, env)
    (state / name).unlink()
    (state / name).symlink_to(victim)
    r = run_cli(rustc, env)
    lines = r.stderr.decode().splitlines()
    assert r.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("ltoguard: error: ") and name in lines[0]


def test_symlinked_record_and_temp_names_are_never_followed(
    tmp_path: Path, victim: Path, procs: Procs
) -> None:
    """Protection: the record is written to an O_EXCL|O_NOFOLLOW temp file and renamed
    over its name (rename replaces a link, never writes through it). The waiter's
    pid is known while it waits, so its record name can be planted in advance."""
    state = tmp_path / "state"
    env = clean_env(tmp_path, state)
    rustc = make_fake_rustc(tmp_path)
    h = procs.holder(rustc, env, "h")
    assert starts(tmp_path) == ["h"]
    w = procs.start(ltoguard_cmd(rustc, "w"), dict(env, FAKE_NAME="w"))
    assert wait_for(lambda: len(tickets(state)) == 1)
    uid, pid = os.geteuid(), w.pid
    (state / f"run-{uid}-{pid}.json").symlink_to(victim)
    before = fingerprint(victim)
    h.release()
    assert h.wait(timeout=30) == 0
    assert w.wait(timeout=30) == 0
    assert fingerprint(victim) == before
    assert starts(tmp_path) == ["h", "w"]


# -- records are data ---------------------------------------------------------------

HOSTILE = "__import__('os').system('touch {pwned}')"


def _wait_behind_our_slot(
    procs: Procs, rustc: Path, env: dict[str, str], state: Path, seconds: float
) -> subprocess.Popen[bytes]:
    """Compile "c" while this test holds slot 0, so it waits (and reads slot 0's
    record) for `seconds` after it queued; then the slot is free for it."""
    fd = os.open(state / "slot-0.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        p = procs.start(ltoguard_cmd(rustc, "c"), dict(env, FAKE_NAME="c"))
        assert wait_for(lambda: len(tickets(state)) == 1)
        time.sleep(seconds)
    finally:
        os.close(fd)
    return p


def test_hostile_record_values_are_inert(tmp_path: Path, procs: Procs) -> None:
    """Protection: records are parsed with json.loads and only type-checked fields
    are used. A record for a held slot (so the waiter reads and shows it) full of
    code strings, shell syntax and huge numbers runs nothing and breaks nothing."""
    state = tmp_path / "state"
    env = clean_env(tmp_path, state)
    rustc = prime(tmp_path, env)
    pwned = tmp_path / "PWNED"
    code = HOSTILE.format(pwned=pwned)
    rec = {
        "pid": os.getpid(),
        "slot": 0,
        "crate": code,
        "types": [code, {"__class__": code}],
        "lto": f"$(touch {pwned})",
        "cwd": f"`touch {pwned}`",
        "workspace": "../../../../",
        "started": time.time(),
        "estimate": 10**300,
        "child": code,
        "key": "x" * 40000,
        "uid": os.geteuid(),
    }
    (state / f"run-{os.geteuid()}-{os.getpid()}.json").write_text(json.dumps(rec))
    # Several admission attempts read the record.
    p = _wait_behind_our_slot(procs, rustc, env, state, 0.3)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert not pwned.exists()
    assert starts(tmp_path) == ["prime", "c"]


def test_waiting_line_stays_one_line_whatever_the_record_says(tmp_path: Path, procs: Procs) -> None:
    state = tmp_path / "state"
    env = clean_env(tmp_path, state)
    rustc = prime(tmp_path, env)
    rec = {
        "pid": os.getpid(),
        "slot": 0,
        "crate": "evil\nltoguard: error: forged\x1b[2J\r",
        "started": time.time(),
    }
    (state / f"run-{os.geteuid()}-{os.getpid()}.json").write_text(json.dumps(rec))
    p = _wait_behind_our_slot(procs, rustc, env, state, 0.2)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0
    assert len(err.splitlines()) == 1, err
    assert b"\x1b" not in err and b"\r" not in err


def test_deeply_nested_record_does_not_crash_admission(tmp_path: Path, procs: Procs) -> None:
    state = tmp_path / "state"
    env = clean_env(tmp_path, state)
    rustc = prime(tmp_path, env)
    sleeper = procs.start(["sleep", "60"], dict(os.environ))
    (state / f"run-{os.geteuid()}-{sleeper.pid}.json").write_text("[" * 30000 + "]" * 30000)
    r = run_cli(rustc, env)
    assert r.returncode == 0, r.stderr[-300:]


@pytest.mark.parametrize(
    "fields",
    [
        {"slot": "../../../etc/passwd"},
        {"slot": 0, "crate": "../../../../tmp/evil/crate"},
        {"slot": -1},
        {"slot": 10**40},
        {"slot": True},
        {"slot": 0, "started": "yesterday"},
        {"slot": [0]},
    ],
    ids=[
        "slot-path",
        "crate-path",
        "slot-negative",
        "slot-huge",
        "slot-bool",
        "started-str",
        "slot-list",
    ],
)
def test_records_cannot_steer_reads_or_writes_outside_the_state_dir(
    tmp_path: Path, procs: Procs, fields: dict[str, object]
) -> None:
    """Protection: file names are built only from our own uid/pid and small slot
    integers from the slot files' names, never from record contents. A record with
    path-like or odd values creates nothing outside the state dir and leaves
    admission alone."""
    state = tmp_path / "state"
    env = clean_env(tmp_path, state)
    rustc = prime(tmp_path, env)
    sleeper = procs.start(["sleep", "60"], dict(os.environ))
    rec = {"pid": sleeper.pid, "crate": "ghost", "started": time.time(), **fields}
    (state / f"run-{os.geteuid()}-{sleeper.pid}.json").write_text(json.dumps(rec))
    outside = sorted(os.listdir(tmp_path))
    slots_before = sorted(n for n in os.listdir(state) if n.startswith("slot-"))
    r = run_cli(rustc, env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    assert sorted(os.listdir(tmp_path)) == outside
    assert sorted(n for n in os.listdir(state) if n.startswith("slot-")) == slots_before
    assert not Path("/tmp/evil").exists()


# -- a directory shared between users -------------------------------------------------


def test_shared_sticky_dir_serves_two_users_who_cannot_touch_each_other(
    world: Path, procs: Procs
) -> None:
    """Protection: a root-owned 1777 directory is accepted for every user; lock
    files are created 0644 and opened read-only (flock needs no write access), so
    both users share the slots; the sticky bit stops uid 65534 from deleting or
    replacing root's files; records whose owner differs from the uid in their name
    are dropped, so uid 65534 cannot forge root's."""
    from ltoguard.semaphore import Semaphore
    from ltoguard.statedir import open_state_dir

    shared = world / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    logs = world / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    for f in ("log.jsonl", "counter.json"):
        (logs / f).touch()
        (logs / f).chmod(0o666)
    rustc = make_fake_rustc(world, python=system_python())
    env = clean_env(logs, shared)
    (logs / "xdg-config").chmod(0o777)
    env["HOME"] = str(logs)
    root_job = procs.holder(rustc, env, "rootjob", cwd=world)
    assert starts(logs) == ["rootjob"]
    nobody_job = procs.start(
        as_nobody(ltoguard_cmd(rustc, "nobodyjob")),
        dict(env, FAKE_NAME="nobodyjob", FAKE_EXIT="3"),
        cwd=world,
    )
    # uid 65534 queues behind root's compile: one set of slots for both users.
    assert wait_for(lambda: any(f"-{NOBODY}-" in n for n in tickets(shared)))
    assert starts(logs) == ["rootjob"]

    root_record = f"run-0-{root_job.pid}.json"
    assert (shared / root_record).exists()
    before = {n: fingerprint(shared / n) for n in ("slot-0.lock", "mutex.lock", root_record)}
    attacks = [
        f"rm -f {shared}/slot-0.lock {shared}/mutex.lock",
        f"rm -f {shared}/{root_record}",
        f"echo '{{}}' > {shared}/{root_record}",
        f"mv -f {shared}/mutex.lock {shared}/gone",
        f"chmod 777 {shared}/slot-0.lock",
    ]
    for cmd in attacks:
        r = subprocess.run(as_nobody(["sh", "-c", cmd]), capture_output=True, cwd=world)
        assert r.returncode != 0, cmd
    assert {n: fingerprint(shared / n) for n in before} == before

    # A forged record: root's name, uid 65534's file. Root's processes ignore it.
    forged = f"run-0-{os.getpid()}.json"
    payload = json.dumps({"pid": os.getpid(), "slot": 1, "crate": "forged", "started": 1e12})
    r = subprocess.run(
        as_nobody(["sh", "-c", f"printf '%s' '{payload}' > {shared}/{forged}"]), cwd=world
    )
    assert r.returncode == 0
    path, dir_fd = open_state_dir(str(shared))
    try:
        records = Semaphore(path, dir_fd).read_records()
    finally:
        os.close(dir_fd)
    assert [r.get("crate") for r in records.values()] == ["rootjob"]

    root_job.release()
    assert root_job.wait(timeout=30) == 0
    assert nobody_job.wait(timeout=30) == 3
    assert starts(logs) == ["rootjob", "nobodyjob"]
    assert counter_max(logs) == 1
    assert [n for n in state_leftovers(shared) if n != forged] == []


def test_a_ticket_is_believed_only_from_the_uid_its_name_claims(tmp_path: Path) -> None:
    """Waiters behind a head act on its ticket (its estimate, its marks): one written
    by another user under this uid's name, or this user's under another's, says
    nothing."""
    me = os.geteuid()
    fields = {"estimate": 1 << 30, "alone": True}
    for uid in (me, me + 1):
        (tmp_path / records.ticket_name(1, uid, 42)).write_text(json.dumps(fields))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert records.read_ticket(fd, records.ticket_name(1, me, 42)) == fields
        assert records.read_ticket(fd, records.ticket_name(1, me + 1, 42)) == {}
    finally:
        os.close(fd)
