"""`ltoguard status` against a state dir held by real processes; `ltoguard learned`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ltoguard import events
from ltoguard.commands import learned, status, status_render
from ltoguard.estimates import HISTORY_HEADROOM, OTHER_TOOLCHAIN_FACTOR, History, group_key, job_key
from ltoguard.jobs import toolchain_id
from ltoguard.semaphore import Semaphore
from ltoguard.statedir import open_state_dir
from tests.conftest import REPO
from tests.procs import Procs, clean_env, wait_for

pytestmark = pytest.mark.timeout(120)

# Holds or waits for a slot (limit 1) as ltoguard's guarded path does, until
# its stdin closes. Prints "admitted" once it holds the slot.
CLIENT = textwrap.dedent(
    """\
    import json, os, sys, time
    from ltoguard.admission import slot_cap
    from ltoguard.semaphore import Semaphore
    from ltoguard.statedir import open_state_dir
    path, fd = open_state_dir(sys.argv[1])
    sem = Semaphore(path, fd)
    info = json.loads(sys.argv[2])
    info.update(since=time.time(), pid=os.getpid())  # as guard.py's ticket info
    slot = sem.acquire(info, lambda snap: slot_cap(snap.running, 1))
    print("admitted", flush=True)
    sys.stdin.read()
    sem.release(slot)
    """
)


def start_client(procs: Procs, state: Path, info: dict[str, Any]) -> subprocess.Popen[str]:
    return procs.start(
        [sys.executable, "-c", CLIENT, str(state), json.dumps(info)],
        env=clean_env(state.parent, state, PYTHONPATH=str(REPO)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # a client's traceback shows in the test's output
        text=True,
    )


def queue_len(state: Path) -> int:
    path, fd = open_state_dir(str(state))
    try:
        return len(Semaphore(path, fd).queue())
    finally:
        os.close(fd)


@dataclass
class Busy:
    holder: subprocess.Popen[str]
    a: subprocess.Popen[str]
    b: subprocess.Popen[str]
    state: Path


@pytest.fixture
def busy(state_dir: Path, procs: Procs) -> Iterator[Busy]:
    """One holder and two waiters (A then B), all real processes."""
    holder = start_client(
        procs,
        state_dir,
        {
            "crate": "holder_bin",
            "kind": "rustc",
            "estimate": 700 << 20,
            "estimate_basis": "history",
            # The bound its own build decides against (not this shell's settings).
            "limit_total": 1 << 30,
            "limit_source": "LTOGUARD_MEMORY=1G budget",
        },
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "admitted"
    a = start_client(procs, state_dir, {"crate": "waiter_a", "kind": "rustc", "estimate": 2 << 30})
    assert wait_for(lambda: queue_len(state_dir) == 1, timeout=30)
    b = start_client(procs, state_dir, {"crate": "waiter_b", "kind": "link"})
    assert wait_for(lambda: queue_len(state_dir) == 2, timeout=30)
    yield Busy(holder=holder, a=a, b=b, state=state_dir)
    for p in (holder, a, b):
        if p.stdin:
            p.stdin.close()


def test_no_state_dir(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main([]) == 0
    out = capsys.readouterr()
    assert out.out == f"no guarded compile has run yet (state dir {state_dir})\n"
    assert not state_dir.exists()  # status must not create it
    assert status.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1 and doc["exists"] is False
    assert doc["running"] == [] and doc["waiting"] == [] and doc["memory"] is None
    assert not state_dir.exists()


def test_no_state_dir_learned(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert learned.main([]) == 0
    assert "no guarded compile has run yet" in capsys.readouterr().out
    assert not state_dir.exists()


def test_bad_setting_is_an_error(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir.mkdir(mode=0o700)
    monkeypatch.setenv("LTOGUARD_MEMORY", "lots")
    assert status.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ltoguard: error: ") and "LTOGUARD_MEMORY" in err


def test_json_with_holder_and_waiters(busy: Busy, capsys: pytest.CaptureFixture[str]) -> None:
    state = busy.state
    assert status.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1
    assert doc["exists"] is True
    assert doc["state_dir"] == str(state)
    assert set(doc["limit"]) == {"slots", "memory", "origins"}
    assert doc["limit"]["slots"] is None and doc["limit"]["origins"]["slots"] == "default"
    mem = doc["memory"]
    assert mem["available"] > 0 and mem["total"] >= mem["available"]
    assert isinstance(mem["source"], str) and mem["source"]
    assert any(c["source"] == mem["source"] for c in mem["constraints"])

    [run] = doc["running"]
    assert set(run) == {
        "slot", "crate", "kind", "pid", "child", "workspace", "started", "age",
        "rss", "paused", "paused_s", "estimate", "estimate_basis", "budget", "budget_source",
    }  # fmt: skip
    assert (run["paused"], run["paused_s"]) == (False, 0.0)
    assert run["crate"] == "holder_bin"
    assert (run["budget"], run["budget_source"]) == (1 << 30, "LTOGUARD_MEMORY=1G budget")
    assert run["pid"] == busy.holder.pid
    assert run["rss"] > 1 << 20  # a live Python process
    assert run["estimate"] == 700 << 20 and run["estimate_basis"] == "history"
    assert 0 <= run["age"] < 120

    assert [w["crate"] for w in doc["waiting"]] == ["waiter_a", "waiter_b"]
    assert [w["position"] for w in doc["waiting"]] == [1, 2]
    assert [w["pid"] for w in doc["waiting"]] == [busy.a.pid, busy.b.pid]
    assert set(doc["waiting"][0]) == {
        "position", "crate", "kind", "pid", "workspace", "since", "waiting",
        "estimate", "estimate_basis", "budget", "budget_source",
    }  # fmt: skip
    assert doc["waiting"][0]["budget"] is None  # its ticket names none
    assert doc["waiting"][0]["estimate"] == 2 << 30
    assert doc["waiting"][1]["estimate"] is None
    assert doc["waiting"][0]["waiting"] >= doc["waiting"][1]["waiting"] >= 0


def test_a_requeued_job_is_listed_once_among_the_waiters(state_dir: Path) -> None:
    """Stopped to free memory, a job queues again before it frees its slot: for that
    moment it holds both, and status shows it once, where it is going."""
    from ltoguard.admission import slot_cap
    from ltoguard.commands.common import View

    path, fd = open_state_dir(str(state_dir))
    try:
        sem = Semaphore(path, fd)
        info = {"crate": "app07", "kind": "rustc", "pid": os.getpid(), "since": time.time()}
        slot = sem.acquire(info, lambda snap: slot_cap(snap.running, 2))
        view = View(slots=None, memory=None, dir=path)
        doc = status.collect(view, fd)
        assert [r["crate"] for r in doc["running"]] == ["app07"] and doc["waiting"] == []
        ticket = sem.requeue(info, lambda snap: slot_cap(snap.running, 2), 1)
        doc = status.collect(view, fd)
        assert doc["running"] == []
        assert [(w["crate"], w["position"]) for w in doc["waiting"]] == [("app07", 1)]
        sem.drop_ticket(ticket)
        sem.release(slot)
    finally:
        os.close(fd)


def test_text_with_holder_and_waiters(busy: Busy, capsys: pytest.CaptureFixture[str]) -> None:
    assert status.main([]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"ltoguard status (state dir {busy.state})"
    # The budget the holder's own build decides against, not this shell's (auto).
    assert lines[1] == (
        "memory budgets the jobs decide against (their records): "
        "1 GiB (LTOGUARD_MEMORY=1G budget) [1 job]; 2 jobs without a record of it"
    )
    assert lines[2].startswith("available memory: ") and "; bound: " in lines[2]
    assert "running (1):" in lines
    assert "waiting (2, next first):" in lines
    holder_row = next(x for x in lines if "holder_bin" in x)
    assert str(busy.holder.pid) in holder_row and "~700 MiB (history)" in holder_row
    assert " running " in holder_row and "STATE" in lines[lines.index("running (1):") + 1]
    assert "1 GiB (LTOGUARD_MEMORY=1G budget)" in holder_row
    ia = next(i for i, x in enumerate(lines) if "waiter_a" in x)
    ib = next(i for i, x in enumerate(lines) if "waiter_b" in x)
    assert ia < ib
    assert lines[ia].split()[0] == "1" and lines[ib].split()[0] == "2"


def test_status_leaves_the_queue_moving(busy: Busy) -> None:
    """status takes the mutex only for a snapshot: after it, the waiters still get in, in order."""
    assert status.main(["--json"]) == 0
    holder, a, b = busy.holder, busy.a, busy.b
    assert holder.stdin and a.stdin and a.stdout and b.stdin and b.stdout
    holder.stdin.close()
    assert a.stdout.readline().strip() == "admitted"
    assert wait_for(lambda: queue_len(busy.state) == 1, timeout=30)
    a.stdin.close()
    assert b.stdout.readline().strip() == "admitted"
    b.stdin.close()
    for p in (holder, a, b):
        assert p.wait(timeout=30) == 0


def test_watch_redraws_until_ctrl_c(state_dir: Path, procs: Procs) -> None:
    """On a terminal the screen is redrawn in place."""
    import pty

    state_dir.mkdir(mode=0o700)
    master, slave = pty.openpty()
    p = procs.start(
        [sys.executable, "-m", "ltoguard", "status", "--watch", "0.1"],
        clean_env(state_dir.parent, state_dir, PYTHONPATH=str(REPO)),
        stdout=slave,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while seen.count(status.CLEAR.encode()) < 3:
            assert time.monotonic() < deadline, seen
            chunk = os.read(master, 4096)
            assert chunk, "status --watch exited early"
            seen += chunk
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=20) == 0
    finally:
        os.close(master)
    assert p.stderr is not None
    assert b"Traceback" not in p.stderr.read() + seen
    assert b"running: none" in seen and b"Ctrl-C" in seen


def test_watch_into_a_pipe_sends_no_control_codes(state_dir: Path, procs: Procs) -> None:
    state_dir.mkdir(mode=0o700)
    p = procs.start(
        [sys.executable, "-m", "ltoguard", "status", "--watch", "0.1"],
        env=clean_env(state_dir.parent, state_dir, PYTHONPATH=str(REPO)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdout is not None and p.stderr is not None
    seen = b""
    deadline = time.monotonic() + 30
    while len(FRAME.findall(seen.decode())) < 3:
        assert time.monotonic() < deadline, seen
        chunk = os.read(p.stdout.fileno(), 4096)
        assert chunk, "status --watch exited early"
        seen += chunk
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=20) == 0
    assert b"\x1b" not in seen  # one snapshot after another, as a log wants them
    assert b"running: none" in seen


FRAME = re.compile(r"^--- \d\d:\d\d:\d\d\n", re.M)


def test_watch_waits_for_state_dir(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            state_dir.mkdir(mode=0o700)  # the first guarded compile starts
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    assert status.main(["--watch", "2.5"]) == 0
    out = capsys.readouterr().out
    frames = FRAME.split(out)[1:]  # capsys is no terminal: frames, not redraws
    assert len(frames) == 2 and calls == [2.5, 2.5]
    assert frames[0].startswith("no guarded compile has run yet")
    assert frames[1].startswith("ltoguard status")


def test_watch_json_is_one_object_per_line(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir.mkdir(mode=0o700)
    calls = []

    def fake_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", fake_sleep)
    assert status.main(["--json", "--watch"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and calls == [1.0, 1.0]
    assert all(json.loads(x)["version"] == 1 for x in lines)


@pytest.mark.parametrize("bad", ["0", "-1", "soon"])
def test_watch_rejects_bad_interval(state_dir: Path, bad: str) -> None:
    with pytest.raises(SystemExit) as exc:
        status.main(["--watch", bad])
    assert exc.value.code == 2


# -- learned ---------------------------------------------------------------------------


def test_learned_from_synthetic_history(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUSTC", str(state_dir / "no-such-rustc"))  # toolchain unknown
    state_dir.mkdir(mode=0o700)
    ws = "/w/demo"
    h = History()
    k1 = job_key("app_one", ws, "3", "fat", "0", "x86_64-unknown-linux-gnu", ["bin"])
    k2 = job_key("app_two", ws, "3", "fat", "2", "x86_64-unknown-linux-gnu", ["bin"])
    g1 = group_key(ws, "3", "fat", "0", "x86_64-unknown-linux-gnu")
    g2 = group_key(ws, "3", "fat", "2", "x86_64-unknown-linux-gnu")
    for peak in (600 << 20, 650 << 20):
        h.record(k1, g1, peak)
    h.record(k2, g2, 1 << 30)
    h.save(str(state_dir / f"memory-history-{os.geteuid()}.json"))
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i, (crate, reruns) in enumerate([("app_one", 0), ("app_two", 1)]):
            events.append_event(
                fd,
                os.geteuid(),
                {"crate": crate, "queued": 100.0 + i, "admitted": 102.0 + i,
                 "finished": 110.0 + i, "waited": 2.0, "reruns": reruns, "outcome": "ok"},
            )  # fmt: skip
    finally:
        os.close(fd)

    assert learned.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["version"] == 1
    # Planted where older versions kept it: read, under the cache directory's file.
    old = str(state_dir / f"memory-history-{os.geteuid()}.json")
    assert doc["history"]["read"] == [doc["history_file"], old]
    assert doc["history_file"].startswith(os.environ["XDG_CACHE_HOME"])
    by_crate = {j["crate"]: j for j in doc["jobs"]}
    assert [j["crate"] for j in doc["jobs"]] == ["app_two", "app_one"]  # most recent first
    one = by_crate["app_one"]
    assert one["workspace"] == ws and one["lto"] == "fat" and one["debuginfo"] == "0"
    assert one["types"] == ["bin"]
    assert one["peaks"] == [600 << 20, 650 << 20]
    assert (
        one["estimate"] == int((650 << 20) * HISTORY_HEADROOM)
        and one["estimate_basis"] == "history"
    )
    summary = doc["events"]["all"]
    assert summary["jobs"] == 2 and summary["oom_reruns"] == 1
    assert summary["total_wait"] == pytest.approx(4.0)
    assert doc["events"]["last_build"]["jobs"] == 2

    assert learned.main([]) == 0
    out = capsys.readouterr().out
    assert "memory history: 2 jobs" in out
    row = next(x for x in out.splitlines() if "app_one" in x)
    assert "600 MiB 650 MiB" in row and "lto=fat" in row and "(history)" in row
    assert "event log: 2 jobs (2 ok), total wait 4.0s, 2 serialised, 1 OOM reruns" in out
    assert "toolchain: unknown (rustc did not run here)" in out
    assert doc["toolchain"] == {"rustc": None, "id": None}
    assert one["this_toolchain"] is None


def _fake_toolchain(root: Path, driver: str) -> Path:
    """A sysroot whose bin/rustc answers `--print sysroot` as rustup's proxy would
    lead to, with its librustc_driver (its name is part of the toolchain id)."""
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "lib" / f"librustc_driver-{driver}.so").write_bytes(b"")
    rustc = root / "bin" / "rustc"
    rustc.write_text(f"#!/bin/sh\necho {root}\n")
    rustc.chmod(0o755)
    return rustc


def test_learned_estimates_for_the_toolchain_rustc_resolves_to_here(
    state_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """After a compiler update the old peaks are a hint, as the guard will take them."""
    old = _fake_toolchain(tmp_path / "old", "0123abcd")
    new = _fake_toolchain(tmp_path / "new", "4567ef01")
    ws = "/w/demo"
    g = group_key(ws, "3", "fat", "0", "x86_64-unknown-linux-gnu")
    k_old = job_key("app_old", ws, "3", "fat", "0", "x86_64-unknown-linux-gnu", ["bin"])
    # Another profile: a sibling measured with the new toolchain would be preferred.
    g2 = group_key(ws, "3", "fat", "2", "x86_64-unknown-linux-gnu")
    k_new = job_key("app_new", ws, "3", "fat", "2", "x86_64-unknown-linux-gnu", ["bin"])
    h = History()
    h.record(k_old, g, 600 << 20, toolchain=toolchain_id([str(old)]))
    h.record(k_new, g2, 400 << 20, toolchain=toolchain_id([str(new)]))
    state_dir.mkdir(mode=0o700)
    h.save(str(state_dir / f"memory-history-{os.geteuid()}.json"))

    monkeypatch.setenv("RUSTC", str(new))
    assert learned.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["toolchain"] == {"rustc": str(new), "id": toolchain_id([str(new)])}
    by_crate = {j["crate"]: j for j in doc["jobs"]}
    assert by_crate["app_new"]["this_toolchain"] is True
    assert by_crate["app_new"]["estimate_basis"] == "history"
    assert by_crate["app_old"]["this_toolchain"] is False
    assert by_crate["app_old"]["estimate_basis"] == "history, other toolchain"
    assert by_crate["app_old"]["estimate"] == int(
        (600 << 20) * HISTORY_HEADROOM * OTHER_TOOLCHAIN_FACTOR
    )

    assert learned.main([]) == 0
    out = capsys.readouterr().out
    assert f"toolchain: {new}; 1 of 2 jobs were measured with another one" in out
    row = next(x for x in out.splitlines() if "app_old" in x)
    assert "(history, other toolchain)" in row

    monkeypatch.setenv("RUSTC", str(old))  # back on the old compiler: its own again
    assert learned.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {j["crate"]: j["estimate_basis"] for j in doc["jobs"]}["app_old"] == "history"


def test_learned_empty_state_dir(state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state_dir.mkdir(mode=0o700)
    assert learned.main([]) == 0
    out = capsys.readouterr().out
    assert "memory history: empty" in out and "event log: empty" in out


def test_a_paused_job_shows_its_state_and_time() -> None:
    now = 1000.0
    rec = {"crate": "app07", "paused": True, "paused_s": 2.0, "paused_since": now - 10.5}
    run = status._running(0, rec, now)
    assert (run["paused"], run["paused_s"]) == (True, 12.5)  # 2 s before, 10.5 s now
    [row] = [x for x in status_render._running_lines([run]) if "app07" in x]
    assert "paused 12s" in row and "running" not in row
    resumed = status._running(0, dict(rec, paused=False, paused_since=None), now)
    assert (resumed["paused"], resumed["paused_s"]) == (False, 2.0)
    assert status._running(0, {"paused": "yes", "paused_s": "x"}, now)["paused"] is False


def _doc(running: list[dict[str, Any]], waiting: list[dict[str, Any]]) -> dict[str, Any]:
    mem = {"available": 300 << 20, "total": 400 << 20, "source": "host", "constraints": []}
    limit = {"slots": None, "memory": None, "origins": {"slots": None, "memory": None}}
    return {
        "exists": True,
        "state_dir": "/run/state",
        "limit": limit,
        "memory": mem,
        "running": running,
        "waiting": waiting,
    }


def _job(crate: str, budget: int | None, source: str | None) -> dict[str, Any]:
    rec = {"crate": crate, "estimate": 700 << 20, "estimate_basis": "history", "pid": 4242}
    if budget is not None:
        rec.update(limit_total=budget, limit_source=source, started=990.0, child=4243)
    return rec


def test_header_tells_the_budget_the_running_jobs_decide_against() -> None:
    src = "LTOGUARD_MEMORY=400M budget"
    run = [status._running(i, _job(f"app{i}", 400 << 20, src), 1000.0) for i in range(2)]
    lines = status_render.render(_doc(run, [])).splitlines()
    assert lines[1] == (
        "memory budget: 400 MiB (LTOGUARD_MEMORY=400M budget), what every job decides"
        " against (its record)"
    )
    other = status._running(2, _job("app2", 8 << 30, "cgroup v2 /sys/fs/cgroup (limit 8 GiB)"), 1e3)
    lines = status_render.render(_doc([*run, other], [])).splitlines()
    assert lines[1] == (
        "memory budgets the jobs decide against (their records): "
        "400 MiB (LTOGUARD_MEMORY=400M budget) [2 jobs]; "
        "8 GiB (cgroup v2 /sys/fs/cgroup (limit 8 GiB)) [1 job]"
    )


def test_header_falls_back_to_this_shell_only_when_no_job_runs() -> None:
    lines = status_render.render(_doc([], [])).splitlines()
    assert lines[1] == (
        "limit: auto (memory and CPUs decide); memory budget: auto (available memory)"
        " (this shell's settings: no job runs)"
    )


@pytest.mark.parametrize("width", [80, 120, 200])
def test_tables_fit_the_terminal_without_cutting_a_value(width: int) -> None:
    long_source = "cgroup v1 /sys/fs/cgroup/memory/process_api/714cc795bce8c649b2636e1f3911c111"
    src = f"{long_source} (limit 400 MiB)"
    run = [status._running(i, _job(f"some_crate_{i}", 400 << 20, src), 1000.0) for i in range(2)]
    wait = [status._waiting(1, {**_job("waiter", 400 << 20, src), "since": 995.0}, 1000.0)]
    lines = status_render.render(_doc(run, wait), width).splitlines()
    start = lines.index("running (2):")
    tables = lines[start:]
    assert all(len(x) <= width for x in tables), (width, tables)
    budget = "400 MiB (" + src + ")"
    for row in (x for x in tables if "some_crate_" in x or "waiter" in x):
        # A budget is shown whole, or as its figure alone, or its column is gone.
        rest = row.split("400 MiB", 1)[1] if "400 MiB" in row else ""
        assert not rest or rest.startswith(" (" + src + ")") or "(" not in rest, row
        assert "..." not in row and "~700 MiB (hist" not in row.replace("(history)", ""), row
    text = "\n".join(tables)
    if width == 200:
        assert budget in text  # the whole value, brackets closed
    if width == 80:
        assert "some_crate_0" in text and "waiter" in text
    # Every column but the ones that give way is still there.
    assert "CRATE" in tables[1] and "STATE" in tables[1] and "MEMORY" in tables[1]
    # Without a terminal (a pipe) nothing gives way.
    assert budget in status_render.render(_doc(run, wait))
