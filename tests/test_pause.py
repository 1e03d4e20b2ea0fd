"""A guarded compile paused to leave room for an older one.

Real ltoguard processes (tests/pause_driver.py: the CLI, with the pause decisions'
inputs read from a control file each test rewrites) in front of the fake rustc: the
compile's tree is really stopped and continued, a signal ends a paused job at once,
memory that gets critical all the same kills and requeues it, the jobserver token is
lent while it is paused, and the paused time shows in `status --json` and the event.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from ltoguard import curves
from ltoguard.admission import Running
from ltoguard.events import read_events
from ltoguard.history import history_file
from ltoguard.pause import PauseWatch, Reading, Reclaimer
from ltoguard.sizes import GiB, MiB
from ltoguard.structs import replace
from tests.procs import Procs, clean_env, ltoguard_cmd, make_fake_rustc, pid_alive, read_log
from tests.procs import wait_for as _wait_for
from tests.test_lending import Pool

pytestmark = pytest.mark.timeout(120)

DRIVER = Path(__file__).with_name("pause_driver.py")
# An older job still expected to grow by 1 GiB; 24 GiB total: floor 256 MiB.
RUN = {
    "older": True,
    "older_estimate": GiB,
    "me_estimate": 100 * MiB,
    "available": 100 * GiB,
    "total": 24 * GiB,
}
PAUSE = dict(RUN, available=GiB)  # 1.1 GiB still to come would leave less than the floor
CRITICAL = dict(RUN, available=100 * MiB)  # below the floor now
ALONE = dict(RUN, older=False)  # the older job finished


def wait_for(pred: Any, timeout: float = 10.0) -> bool:
    return _wait_for(pred, timeout=timeout)


def control(tmp: Path, doc: dict[str, Any]) -> None:
    part = tmp / "ctl.part"
    part.write_text(json.dumps(doc))
    os.replace(part, tmp / "ctl.json")


def state(pid: int) -> str:
    """The process's state letter in /proc/PID/stat ('T': stopped); '' once gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return ""


def start(procs: Procs, tmp: Path, crate: str = "app07", **extra: str) -> subprocess.Popen[str]:
    rustc = make_fake_rustc(tmp)
    control(tmp, RUN)
    env = clean_env(tmp, tmp / "state", PAUSE_CTL=str(tmp / "ctl.json"), **extra)
    cmd = [sys.executable, str(DRIVER), *ltoguard_cmd(rustc, crate)[3:]]
    return procs.start(cmd, env, text=True, cwd=tmp)


def compiler(tmp: Path, n: int = 1) -> int:
    """The pid of the fake rustc's n-th start."""
    log = tmp / "log.jsonl"
    assert wait_for(lambda: sum(e["what"] == "start" for e in read_log(log)) >= n)
    return int([e for e in read_log(log) if e["what"] == "start"][n - 1]["pid"])


def events(tmp: Path) -> list[dict[str, Any]]:
    fd = os.open(tmp / "state", os.O_RDONLY | os.O_DIRECTORY)
    try:
        return read_events(fd)
    finally:
        os.close(fd)


def status_json(tmp: Path) -> dict[str, Any]:
    env = clean_env(tmp, tmp / "state")
    out = subprocess.run(
        [sys.executable, "-m", "ltoguard", "status", "--json"],
        env=env, cwd=tmp, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def _checks(procs: Procs, tmp: Path, ctl: dict[str, Any]) -> int:
    """How many times a 2-second compile under ``ctl`` is checked while it runs."""
    log = tmp / "checks.txt"
    proc = start(procs, tmp, FAKE_SLEEP="2", PAUSE_CHECKS=str(log))
    control(tmp, ctl)
    assert proc.wait(timeout=60) == 0
    return len(log.read_text().splitlines())


def test_the_oldest_job_is_checked_at_the_slow_rate(tmp_path: Path, procs: Procs) -> None:
    """In its first seconds a compile is checked every Limits.fast_watch, but only while
    an older job holds a slot: no check pauses or stops the oldest, and the younger
    ones, checked often, pause or stop first. Alone it is the oldest."""
    (tmp_path / "alone").mkdir()
    (tmp_path / "younger").mkdir()
    alone = _checks(procs, tmp_path / "alone", ALONE)
    younger = _checks(procs, tmp_path / "younger", RUN)
    # 2 s at 0.25 s is 8 checks (plus the looks at admission); at 0.05 s, 40.
    assert alone <= 16, alone
    assert younger >= 20, younger


def test_paused_tree_is_stopped_resumed_and_shown(tmp_path: Path, procs: Procs) -> None:
    # An inner wrapper that runs rustc as its child: the compile is a tree of two.
    wrap = tmp_path / "wrap"
    wrap.write_text(
        f"#!{sys.executable}\nimport subprocess, sys\nsys.exit(subprocess.call(sys.argv[1:]))\n"
    )
    wrap.chmod(0o755)
    release = tmp_path / "release"
    p = start(procs, tmp_path, LTOGUARD_WRAP=str(wrap), FAKE_UNTIL=str(release))
    rustc = compiler(tmp_path)
    tree = [psutil.Process(rustc).ppid(), rustc]
    assert psutil.Process(tree[0]).ppid() == p.pid  # ltoguard > wrap > rustc
    assert all(state(pid) in "RS" for pid in tree)
    control(tmp_path, PAUSE)
    assert wait_for(lambda: all(state(pid) == "T" for pid in tree)), [state(x) for x in tree]
    time.sleep(0.6)  # it stays paused: the projection has not changed
    assert all(state(pid) == "T" for pid in tree)
    [run] = status_json(tmp_path)["running"]
    assert run["paused"] is True and run["paused_s"] >= 0.5
    control(tmp_path, RUN)  # room again (after the minimum pause)
    assert wait_for(lambda: all(state(pid) in "RS" for pid in tree))
    [run] = status_json(tmp_path)["running"]
    assert run["paused"] is False and run["paused_s"] >= 0.5
    release.touch()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    lines = err.splitlines()
    assert any(
        line.startswith("ltoguard: paused crate app07 (bin, lto=fat) to leave room for 1 older")
        and "expected to grow by ~1.1 GiB, 1 GiB free" in line
        for line in lines
    ), err
    assert any(line.startswith("ltoguard: resumed crate app07") for line in lines), err
    [event] = events(tmp_path)
    assert event["outcome"] == "ok" and event["requeues"] == 0
    assert event["paused_s"] >= 0.5


def learned_curve(tmp: Path) -> curves.Curve | None:
    """The one job's curve in the history the run left."""
    saved = json.loads((tmp / "xdg-cache" / "ltoguard" / history_file(os.geteuid())).read_text())
    [entry] = saved["entries"].values()
    return curves.parse(entry.get("curve"))


def paused_after_a_second(procs: Procs, tmp: Path) -> tuple[subprocess.Popen[str], int, Path]:
    """A compile that runs until the returned file exists, paused once it has run a
    second (long enough to leave a curve): ltoguard, the compiler's pid, the file."""
    release = tmp / "release"
    p = start(procs, tmp, FAKE_UNTIL=str(release))
    rustc = compiler(tmp)
    time.sleep(1.0)
    control(tmp, PAUSE)
    assert wait_for(lambda: state(rustc) == "T")
    return p, rustc, release


def test_a_paused_run_learns_its_curve_with_the_pause_cut_out(tmp_path: Path, procs: Procs) -> None:
    """A run paused to leave room still tells how its memory goes: its curve is its
    samples with the pause cut out, so the next build pairs it along its curve
    (before, a paused run left no curve and the next ran it at its peak all along)."""
    p, rustc, release = paused_after_a_second(procs, tmp_path)
    time.sleep(3.0)
    control(tmp_path, RUN)
    assert wait_for(lambda: state(rustc) in "RS")
    time.sleep(1.0)
    release.touch()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    [event] = events(tmp_path)
    assert event["paused_s"] >= 2.5
    [[paused, resumed]] = event["pauses"]  # when, for the replays
    assert event["admitted"] < paused and resumed - paused == pytest.approx(
        event["paused_s"], abs=0.1
    )
    curve = learned_curve(tmp_path)
    assert curve is not None
    ran = event["finished"] - event["admitted"] - event["paused_s"]
    assert ran - 0.5 < curve.seconds < ran + 0.5, (curve.seconds, ran)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_paused_job_promptly(
    tmp_path: Path, procs: Procs, sig: signal.Signals
) -> None:
    p = start(procs, tmp_path, FAKE_SLEEP="60")
    rustc = compiler(tmp_path)
    control(tmp_path, PAUSE)
    assert wait_for(lambda: state(rustc) == "T")
    t0 = time.monotonic()
    os.kill(p.pid, sig)
    p.communicate(timeout=30)
    assert p.returncode == -sig  # died by the compiler's signal, as ever
    assert time.monotonic() - t0 < 3.0
    assert not pid_alive(rustc)
    [event] = events(tmp_path)
    assert event["exit"] == -sig and event["paused_s"] > 0


def test_critical_memory_kills_a_paused_job_and_requeues_it(tmp_path: Path, procs: Procs) -> None:
    release = tmp_path / "release"
    p = start(procs, tmp_path, FAKE_UNTIL=str(release))
    first = compiler(tmp_path)
    control(tmp_path, PAUSE)
    assert wait_for(lambda: state(first) == "T")
    release.touch()  # a stopped compile does not see it
    time.sleep(0.3)
    assert pid_alive(first) and state(first) == "T"
    control(tmp_path, CRITICAL)
    assert wait_for(lambda: not pid_alive(first))
    control(tmp_path, ALONE)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert "free memory is critical; stopped this compile" in err
    assert compiler(tmp_path, 2) != first  # it ran again, from the start
    [event] = events(tmp_path)
    assert event["outcome"] == "ok" and event["requeues"] >= 1 and event["paused_s"] > 0


def test_a_job_stopped_and_run_again_learns_the_curve_of_its_last_run(
    tmp_path: Path, procs: Procs
) -> None:
    """The run stopped for memory is cut short; the one after it ran whole, and its
    curve (its own samples, from its start) is what the next build pairs it on."""
    p, first, release = paused_after_a_second(procs, tmp_path)
    control(tmp_path, CRITICAL)
    assert wait_for(lambda: not pid_alive(first))
    control(tmp_path, ALONE)
    compiler(tmp_path, 2)
    time.sleep(2.0)
    release.touch()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    [event] = events(tmp_path)
    assert event["requeues"] == 1 and len(event["attempts"]) == 2
    _, started, ended, *_ = event["attempts"][-1]
    curve = learned_curve(tmp_path)
    assert curve is not None
    assert ended - started - 0.5 < curve.seconds < ended - started + 0.5, (curve, started, ended)


def start_lending(procs: Procs, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    """A compile under a fifo jobserver that runs until the returned file exists."""
    release = tmp / "release"
    makeflags = f"-j4 --jobserver-auth=fifo:{tmp / 'fifo'}"
    return start(procs, tmp, MAKEFLAGS=makeflags, FAKE_UNTIL=str(release)), release


def resume_balanced(tmp: Path, rustc: int, pool: Pool) -> None:
    """Resumed at once (no older job runs), the token it lent taken back meanwhile."""
    control(tmp, ALONE)
    assert wait_for(lambda: state(rustc) in "RS")
    assert wait_for(lambda: pool.count() == 0), pool.count()


def finish_balanced(p: subprocess.Popen[str], release: Path, pool: Pool) -> str:
    """The compile let go: the build ends well with no token out. Its stderr."""
    release.touch()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert pool.count() == 0
    return err


def test_the_token_is_lent_while_paused_and_balanced(tmp_path: Path, procs: Procs) -> None:
    pool = Pool(tmp_path / "fifo", 0)
    try:
        p, release = start_lending(procs, tmp_path)
        rustc = compiler(tmp_path)
        assert pool.count() == 0  # admitted at once: it kept its token
        for _ in range(2):  # paused twice: lent once each time, never twice
            control(tmp_path, PAUSE)
            assert wait_for(lambda: state(rustc) == "T")
            assert wait_for(lambda: pool.count() == 1), pool.count()
            time.sleep(0.3)
            assert pool.count() == 1
            resume_balanced(tmp_path, rustc, pool)
        assert "could not take back" not in finish_balanced(p, release, pool)
    finally:
        pool.close()


def test_a_paused_job_keeps_its_token_while_the_depth_is_out(tmp_path: Path, procs: Procs) -> None:
    """Past the bound, a token lent on a pause went to one more waiting ltoguard
    process, not a compile: under a cap, pauses piled up waiters (lending.py)."""
    pool = Pool(tmp_path / "fifo", 0)
    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, sorted(cpus)[:2])  # ltoguard inherits it: a depth of 2
        p, release = start_lending(procs, tmp_path)
        os.sched_setaffinity(0, cpus)
        rustc = compiler(tmp_path)
        # Others have lent the depth's worth: live processes of ours, marked as lenders.
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
        planted = []
        for _ in range(2):
            other = procs.start(sleeper, dict(os.environ))
            planted.append(tmp_path / "state" / f"lent-{os.geteuid()}-{other.pid}")
            planted[-1].touch()
        control(tmp_path, PAUSE)
        assert wait_for(lambda: state(rustc) == "T")
        time.sleep(0.5)
        assert pool.count() == 0  # kept: the depth's worth is out
        planted[0].unlink()  # one came back: still paused, it lends now
        assert wait_for(lambda: pool.count() == 1), pool.count()
        assert state(rustc) == "T"
        resume_balanced(tmp_path, rustc, pool)
        finish_balanced(p, release, pool)
    finally:
        os.sched_setaffinity(0, cpus)
        pool.close()


def test_a_job_never_paused_says_so(tmp_path: Path, procs: Procs) -> None:
    p = start(procs, tmp_path, FAKE_SLEEP="0.6")
    p.communicate(timeout=30)
    assert p.returncode == 0
    [event] = events(tmp_path)
    assert event["paused_s"] == 0.0


# -- the watch itself, in this process, over a sleeping child ----------------------


def _reading(available: int, older: bool = True) -> Reading:
    me = Running(pid=2, estimate=100 * MiB, current=0, started=20.0)
    others = [Running(pid=1, estimate=GiB, current=0, started=10.0)] if older else []
    return Reading(me, others, available, 24 * GiB)


class _Fakes:
    def __init__(self) -> None:
        self.reading: Reading | None = _reading(100 * GiB)
        self.published: list[dict[str, Any]] = []
        self.now = 0.0


def _watch(
    procs: Procs, fakes: _Fakes, quiet: Callable[[], bool] | None = None
) -> tuple[PauseWatch, int]:
    child = procs.start(["sleep", "60"], dict(os.environ)).pid
    watch = PauseWatch(
        child,
        "crate x",
        read=lambda: fakes.reading,
        publish=fakes.published.append,
        lend=None,
        reclaimer=Reclaimer(None),
        clock=lambda: fakes.now,
        **({} if quiet is None else {"quiet": quiet}),
    )
    return watch, child


def test_watch_pauses_resumes_and_counts_paused_time(procs: Procs) -> None:
    fakes = _Fakes()
    watch, child = _watch(procs, fakes)
    assert watch.step() is False and not watch.paused and fakes.published == []
    fakes.reading = _reading(GiB)
    assert watch.step() is False and watch.paused
    assert wait_for(lambda: state(child) == "T")
    assert fakes.published[-1]["paused"] is True and fakes.published[-1]["paused_since"]
    fakes.now = 0.5
    fakes.reading = _reading(100 * GiB)
    watch.step()  # room, but paused for less than Limits.min_pause: stays
    assert watch.paused and state(child) == "T"
    fakes.now = 3.0
    watch.step()
    assert not watch.paused and wait_for(lambda: state(child) in "RS")
    assert fakes.published[-1] == {"paused": False, "paused_since": None, "paused_s": 3.0}
    fakes.reading = _reading(GiB)
    watch.step()
    fakes.now = 4.0
    fakes.reading = None  # cannot tell: not left paused blind
    watch.step()
    assert not watch.paused and wait_for(lambda: state(child) in "RS")
    assert watch.finish() == 4.0
    # When it was stopped and continued, by the wall clock, for the curve it learns.
    assert [b >= a for a, b in watch.pauses] == [True, True]


def test_watch_settles_only_while_it_runs_with_no_older_holder(procs: Procs) -> None:
    fakes = _Fakes()
    watch, _ = _watch(procs, fakes)
    assert not watch.settled  # not checked yet
    watch.step()
    assert not watch.settled  # an older job runs
    fakes.reading = _reading(100 * GiB, older=False)
    watch.step()
    assert watch.settled
    older_paused = replace(_reading(100 * GiB).others[0], paused=True)
    fakes.reading = Reading(_reading(0).me, [older_paused], 100 * GiB, 24 * GiB)
    watch.step()
    assert not watch.settled  # a paused older job counts: this one could be the victim
    fakes.reading = _reading(GiB)
    watch.step()
    assert watch.paused and not watch.settled
    fakes.now = 5.0
    fakes.reading = _reading(100 * GiB, older=False)
    watch.step()  # the older job ended: resumed, and now the oldest
    assert not watch.paused and watch.settled
    fakes.reading = None
    watch.step()
    assert not watch.settled  # cannot tell


def test_watch_continues_at_once_on_a_signal_and_never_pauses_again(procs: Procs) -> None:
    fakes = _Fakes()
    watch, child = _watch(procs, fakes)
    fakes.reading = _reading(GiB)
    watch.step()
    assert wait_for(lambda: state(child) == "T")
    watch.on_signal()  # what the Forwarder calls from its handler
    assert wait_for(lambda: state(child) in "RS")
    assert watch.step() is False and not watch.paused  # accounted, quietly
    fakes.reading = _reading(100 * MiB)  # critical: still no kill, no pause
    assert watch.step() is False and not watch.paused and pid_alive(child)


def test_watch_kills_a_paused_compile_when_memory_is_critical(procs: Procs) -> None:
    fakes = _Fakes()
    watch, child = _watch(procs, fakes)
    fakes.reading = _reading(GiB)
    watch.step()
    assert wait_for(lambda: state(child) == "T")
    fakes.now = 2.0
    fakes.reading = _reading(100 * MiB)
    assert watch.step() is True
    assert wait_for(lambda: not pid_alive(child))
    assert not watch.paused and watch.finish() == 2.0


def _grown(available: int) -> Reading:
    """Both jobs at their estimates already: only free memory itself decides."""
    me = Running(pid=2, estimate=100 * MiB, current=100 * MiB, started=20.0)
    older = Running(pid=1, estimate=GiB, current=GiB, started=10.0)
    return Reading(me, [older], available, 24 * GiB)


def test_watch_pauses_early_when_free_memory_falls_fast(procs: Procs) -> None:
    # 400 MiB free is above the 256 MiB floor: a first look keeps the compile running.
    fakes = _Fakes()
    fakes.reading = _grown(400 * MiB)
    watch, _ = _watch(procs, fakes)
    assert watch.step() is False and not watch.paused
    # Seen falling by 600 MiB since the last check, the same 400 MiB pauses it: the
    # next check could find nothing left. Not stopped: memory is not critical yet.
    fakes = _Fakes()
    watch, child = _watch(procs, fakes)
    fakes.reading = _grown(GiB)
    assert watch.step() is False and not watch.paused
    fakes.reading = _grown(400 * MiB)
    assert watch.step() is False and watch.paused
    assert wait_for(lambda: state(child) == "T")
    # Alone, memory is not read, and the fall is forgotten.
    fakes.now = 5.0
    fakes.reading = Reading(_grown(0).me, [], 0, 0)
    watch.step()
    assert not watch.paused
    fakes.reading = _grown(400 * MiB)
    assert watch.step() is False and not watch.paused


def _rising(available: int, current: int) -> Reading:
    """A young job rising towards its 1 GiB estimate beside an older one at its own."""
    me = Running(pid=2, estimate=GiB, current=current, started=20.0)
    older = Running(pid=1, estimate=GiB, current=GiB, started=10.0)
    return Reading(me, [older], available, 24 * GiB)  # critical floor 256 MiB


@pytest.mark.parametrize(
    ("quiet", "room", "rest_rose", "pauses"),
    [
        (True, 300, 0, False),  # the fall is the job's own foreseen rise: not counted again
        (False, 300, 0, True),  # a compile beside could rise as fast: the whole fall counts
        (True, 300, 30, False),  # the rest of the build rose 30 MiB: under the floor
        (True, 600, 320, True),  # it rose 320 MiB, more than the 280 MiB room left
    ],
)
def test_watch_counts_a_jobs_own_rise_once_while_nothing_compiles_beside(
    procs: Procs, quiet: bool, room: int, rest_rose: int, pauses: bool
) -> None:
    """The job rises 400 MiB between two checks, within its estimate, and the rest of
    the build ``rest_rose`` MiB. Free memory less what the jobs are still expected
    to grow is ``room`` MiB at the first check, that less ``rest_rose`` at the
    second: above the 256 MiB floor each time, so only the fall counted decides."""
    asked: list[bool] = []

    def ask() -> bool:
        asked.append(quiet)
        return quiet

    fakes = _Fakes()
    fakes.reading = _rising((room + 924) * MiB, 100 * MiB)
    watch, child = _watch(procs, fakes, quiet=ask)
    assert watch.step() is False and not watch.paused
    fakes.now = 1.0  # a regular check's interval later
    fakes.reading = _rising((room + 524 - rest_rose) * MiB, 500 * MiB)
    assert watch.step() is False
    assert watch.paused is pauses
    assert asked == [quiet]  # read once: at the first check nothing had fallen yet
    if pauses:
        assert wait_for(lambda: state(child) == "T")


def test_watch_reads_the_process_list_only_when_it_changes_the_fall(procs: Procs) -> None:
    """The older job holds its estimate and this one does not rise: the whole fall is
    unforeseen, and whether compiles run beside changes nothing."""
    asked: list[bool] = []

    def ask() -> bool:
        asked.append(True)
        return True

    fakes = _Fakes()
    fakes.reading = _grown(GiB)
    watch, _ = _watch(procs, fakes, quiet=ask)
    watch.step()
    fakes.reading = _grown(400 * MiB)
    watch.step()
    assert watch.paused and asked == []
