"""The event log: append, rotation, tolerant reading, failures that must not raise."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltoguard import events
from tests.procs import Procs, clean_env, ltoguard_cmd

UID = os.geteuid()


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield d, fd
    finally:
        os.close(fd)


def ev(crate: str, queued: float, finished: float | None = None, **kw: object) -> dict[str, object]:
    e: dict[str, object] = {
        "v": 1,
        "crate": crate,
        "queued": queued,
        "admitted": queued,
        "finished": queued + 1 if finished is None else finished,
    }
    e.update(kw)
    return e


def test_append_then_read(state: tuple[Path, int]) -> None:
    d, fd = state
    events.append_event(fd, UID, ev("a", 10.0))
    events.append_event(fd, UID, ev("b", 20.0, samples=[[20.0, 5], [21.0, 0]]))
    path = d / f"events-{UID}.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert [json.loads(x)["crate"] for x in lines] == ["a", "b"]
    got = events.read_events(fd, UID)
    assert [e["crate"] for e in got] == ["a", "b"]
    assert got[1]["samples"] == [[20.0, 5], [21.0, 0]]


def test_read_sorts_by_queue_time_and_merges_users(state: tuple[Path, int]) -> None:
    d, fd = state
    events.append_event(fd, UID, ev("late", 50.0))
    events.append_event(fd, UID, ev("early", 5.0))
    assert [e["crate"] for e in events.read_events(fd)] == ["early", "late"]
    assert [e["crate"] for e in events.read_events(fd, UID)] == ["early", "late"]


def test_rotation_keeps_one_old_file(
    state: tuple[Path, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    d, fd = state
    monkeypatch.setattr(events, "MAX_BYTES", 300)
    for i in range(40):
        events.append_event(fd, UID, ev(f"c{i:02d}", float(i)))
    cur, old = d / f"events-{UID}.jsonl", d / f"events-{UID}.1.jsonl"
    assert old.exists()
    # Rotation happens before a write once the file reached the limit: neither
    # file grows much past it, and the newest record is in the current file.
    line = len(json.dumps(ev("c00", 0.0), separators=(",", ":"))) + 1
    assert old.stat().st_size < 300 + line
    assert cur.stat().st_size < 300 + line
    assert json.loads(cur.read_text().splitlines()[-1])["crate"] == "c39"
    got = [e["crate"] for e in events.read_events(fd, UID)]
    # The survivors are the most recent records, contiguous and in order.
    assert got == [f"c{i:02d}" for i in range(40 - len(got), 40)]
    assert len(got) >= 300 // line


def test_tolerant_read(state: tuple[Path, int]) -> None:
    d, fd = state
    good = json.dumps(ev("ok", 1.0))
    (d / f"events-{UID}.jsonl").write_bytes(
        b"\n".join(
            [
                good.encode(),
                b"not json",
                b"[1, 2, 3]",
                b"\xff\xfe garbage",
                b'"a string"',
                b"{}",
                json.dumps(ev("ok2", 2.0)).encode(),
                b'{"crate": "torn", "queu',  # a write cut short by a full disk
            ]
        )
    )
    got = events.read_events(fd, UID)
    assert [e.get("crate") for e in got] == [None, "ok", "ok2"]  # {} sorts first (no times)


def test_symlinks_refused(state: tuple[Path, int], tmp_path: Path) -> None:
    d, fd = state
    target = tmp_path / "elsewhere.jsonl"
    target.write_text(json.dumps(ev("planted", 1.0)) + "\n")
    (d / f"events-{UID}.jsonl").symlink_to(target)
    assert events.read_events(fd, UID) == []
    assert events.read_events(fd) == []
    before = target.read_text()
    events.append_event(fd, UID, ev("mine", 2.0))
    assert target.read_text() == before  # never written through


def test_symlink_append_warns(
    state: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d, fd = state
    (d / f"events-{UID}.jsonl").symlink_to(tmp_path / "nowhere")
    events.append_event(fd, UID, ev("x", 1.0))
    err = capsys.readouterr()
    assert err.out == ""
    assert err.err.startswith("ltoguard: warning: cannot write event log")
    assert "symlink" in err.err
    assert err.err.count("\n") == 1
    assert not (tmp_path / "nowhere").exists()


def test_foreign_owner_not_trusted(state: tuple[Path, int]) -> None:
    d, fd = state
    # A file named for another uid but owned by us: only that uid could have written it.
    other = UID + 1
    (d / f"events-{other}.jsonl").write_text(json.dumps(ev("forged", 1.0)) + "\n")
    assert events.read_events(fd, other) == []
    assert events.read_events(fd) == []


def test_unserialisable_record_warns(
    state: tuple[Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    _d, fd = state
    events.append_event(fd, UID, {"bad": object()})
    events.append_event(fd, UID, {"nan": float("nan")})
    assert capsys.readouterr().err.count("ltoguard: warning: cannot write event log") == 2
    assert events.read_events(fd, UID) == []


def test_write_error_warns_not_raises(
    state: tuple[Path, int], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _d, fd = state

    def full(_fd: int, _data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    events.append_event(fd, UID, ev("x", 1.0))
    err = capsys.readouterr().err
    assert err.startswith("ltoguard: warning: cannot write event log")
    assert "No space left on device" in err


@contextlib.contextmanager
def mounted_tmpfs(where: Path, options: str) -> Iterator[None]:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", str(where)], check=False)


def _append_on(d: Path, capsys: pytest.CaptureFixture[str]) -> str:
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        events.append_event(fd, UID, ev("x", 1.0, samples=[[1.0, 1]] * 200))
    finally:
        os.close(fd)
    return capsys.readouterr().err


@pytest.mark.timeout(60)
def test_read_only_dir_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "ro"
    with mounted_tmpfs(d, "ro,size=64k,mode=0700"):
        err = _append_on(d, capsys)
    assert err.startswith("ltoguard: warning: cannot write event log")
    assert "Read-only file system" in err
    assert err.count("\n") == 1


@pytest.mark.timeout(60)
def test_full_disk_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "full"
    with mounted_tmpfs(d, "size=4k,mode=0700"):
        with contextlib.suppress(OSError), open(d / "filler", "wb") as f:
            f.write(b"x" * 65536)
        err = _append_on(d, capsys)
    assert err.startswith("ltoguard: warning: cannot write event log")
    assert "No space left on device" in err


# -- grouping and summaries --------------------------------------------------------


def test_group_builds_by_gap() -> None:
    es = [ev("a", 0, 10), ev("b", 5, 30), ev("c", 95, 99), ev("d", 200, 210)]
    builds = events.group_builds(es)
    assert [[e["crate"] for e in b] for b in builds] == [["a", "b"], ["c"], ["d"]]


def test_group_builds_gap_counts_from_latest_finish() -> None:
    # "b" runs long: "c", queued 100 s after "a" finished, is still 20 s after "b".
    es = [ev("a", 0, 10), ev("b", 1, 90), ev("c", 110, 120)]
    assert len(events.group_builds(es)) == 1
    assert len(events.group_builds(es, gap=10)) == 2


def test_summarize_tolerates_missing_keys() -> None:
    es = [
        ev("a", 0, 10, waited=0.2, reruns=1, outcome="ok"),
        ev("b", 0, 10, outcome="oom", requeues=2),
        {"crate": "c", "queued": 0.0, "admitted": 3.0},
        {"waited": "bogus", "reruns": True},
    ]
    s = events.summarize(es)
    assert s["jobs"] == 4
    assert s["total_wait"] == pytest.approx(3.2)
    assert s["serialised"] == 1
    assert s["oom_reruns"] == 1
    assert s["requeues"] == 2
    assert s["outcomes"] == {"ok": 1, "oom": 1, "unknown": 2}


@pytest.mark.parametrize(
    ("workspace", "cwd", "asked", "expected"),
    [
        ("/w/ws", "/w/ws", "/w/ws", True),
        ("/w/ws", "/w/ws", "/w/ws/", True),
        ("/w/ws/member", "/w/ws", "/w/ws", True),  # recorded with a member's directory
        ("/w/ws", "/w/ws", "/w/ws/member/src", True),  # asked from inside
        ("/w/ws2", "/w/ws2", "/w/ws", False),
        ("/w/other", "/w/other", "/w/ws", False),
        ("", "", "/w/ws", False),
    ],
)
def test_in_workspace(workspace: str, cwd: str, asked: str, expected: bool) -> None:
    assert events.in_workspace({"workspace": workspace, "cwd": cwd}, asked) is expected


BUSY_RUSTC = """#!{python}
import time
end = time.process_time() + 1.0
while time.process_time() < end:
    pass
"""


def test_event_splits_the_guards_cpu_from_the_compiles(tmp_path: Path, procs: Procs) -> None:
    """guard_cpu_s is the guard process's own CPU, compile_cpu_s the compile's: a
    compile that burns a second of CPU shows in the second, not in the first."""
    rustc = tmp_path / "rustc"
    rustc.write_text(BUSY_RUSTC.format(python=sys.executable))
    rustc.chmod(0o755)
    p = procs.start(ltoguard_cmd(rustc, "app07"), clean_env(tmp_path, tmp_path / "state"))
    p.communicate(timeout=60)
    assert p.returncode == 0
    fd = os.open(tmp_path / "state", os.O_RDONLY | os.O_DIRECTORY)
    try:
        [event] = events.read_events(fd)
    finally:
        os.close(fd)
    assert 0.95 <= event["compile_cpu_s"] < 1.5
    assert 0 < event["guard_cpu_s"] < 0.9
