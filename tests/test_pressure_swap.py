"""Memory pressure as a brake and free swap as room: the pure rules (each threshold
pinned from both sides), the swap and PSI readers over fake trees, the policy and
the pause watch with fake PSI files, and a real guarded job paused by pressure."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from ltoguard.admission import (
    DEFAULT_PRESSURE,
    KEEP,
    KILL,
    PAUSE,
    RESUME,
    Admission,
    Level,
    PressureLimits,
    Running,
    Why,
    braking,
    fit_with_swap,
    pause_step,
    pressure_figure,
    pressure_held,
    pressure_hold,
    pressure_level,
    pressure_step,
    swap_counted,
    with_swap,
)
from ltoguard.memory import available_swap, host_swap_free
from ltoguard.pause import PauseWatch, Reading, Reclaimer
from ltoguard.policy import head_of
from ltoguard.pressure import Brake, psi_path
from ltoguard.sizes import GiB, MiB
from tests.procs import Procs
from tests.test_memory import v1_files, v1_system, v2_files, v2_system
from tests.test_pause import RUN, compiler, control, start, state, wait_for
from tests.test_policy import ONE, make, snap

L = DEFAULT_PRESSURE
LOW, MID, HIGH, NONE = Level.LOW, Level.MID, Level.HIGH, Level.NONE


def psi(some10: float, full10: float) -> str:
    return (
        f"some avg10={some10:.2f} avg60=0.00 avg300=0.00 total=1\n"
        f"full avg10={full10:.2f} avg60=0.00 avg300=0.00 total=1\n"
    )


# -- the pure rules ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("some10", "full10", "want"),
    [
        (None, None, NONE),
        (0.0, 0.0, LOW),
        (L.low_some - 0.1, L.low_full - 0.1, LOW),
        (L.low_some, 0.0, MID),  # some at its low threshold: no longer low
        (0.0, L.low_full, MID),  # full at its low threshold
        (L.high_some - 0.1, L.high_full - 0.1, MID),
        (L.high_some, 0.0, HIGH),  # some alone reaches high
        (0.0, L.high_full, HIGH),  # full alone reaches high
    ],
)
def test_pressure_level_thresholds(some10: float | None, full10: float | None, want: Level) -> None:
    assert pressure_level(some10, full10) is want


@pytest.mark.parametrize(
    ("some10", "full10", "want"),
    [
        # The defaults ltoguard runs with, pinned: full 5% / some 40% high,
        # full 1% / some 10% low.
        (0.0, 4.99, MID),
        (0.0, 5.0, HIGH),
        (39.99, 0.0, MID),
        (40.0, 0.0, HIGH),
        (9.99, 0.99, LOW),
        (10.0, 0.0, MID),
        (0.0, 1.0, MID),
    ],
)
def test_default_thresholds(some10: float, full10: float, want: Level) -> None:
    assert pressure_level(some10, full10) is want


@pytest.mark.parametrize(
    ("was", "recent", "want"),
    [
        (False, [], False),
        (False, [HIGH], False),  # one reading is a spike, not sustained
        (False, [MID, HIGH], False),
        (False, [HIGH, HIGH], True),
        (False, [LOW, HIGH, HIGH], True),
        (True, [HIGH, MID], True),  # hysteresis: MID keeps it holding
        (True, [MID, LOW], False),  # LOW lets go
        (True, [HIGH, NONE], False),  # PSI gone: the rules do nothing
        (False, [HIGH, NONE], False),
    ],
)
def test_braking_is_sustained_and_has_hysteresis(
    was: bool, recent: list[Level], want: bool
) -> None:
    assert braking(was, recent) is want


def test_braking_sustained_count_is_a_limit() -> None:
    three = PressureLimits(sustained=3)
    assert braking(False, [HIGH, HIGH], three) is False
    assert braking(False, [HIGH, HIGH, HIGH], three) is True


def test_pressure_figure_names_the_one_nearer_its_threshold() -> None:
    assert pressure_figure(10.0, 3.0) == (3.0, "full")  # 3/5 of full beats 10/40 of some
    assert pressure_figure(38.0, 1.0) == (38.0, "some")


def test_pressure_hold_says_why_and_holds_only_while_braking() -> None:
    assert pressure_hold(brake=False, some10=90.0, full10=90.0, running=1) is None
    hold = pressure_hold(brake=True, some10=30.0, full10=23.0, running=1)
    assert hold is not None and not hold.ok and hold.why is Why.PRESSURE
    assert hold.text == "memory pressure 23% (full avg10): waiting for it to fall"


@pytest.mark.parametrize(
    ("swap_free", "total", "want"),
    [
        (0, GiB, 0),
        (GiB, 0, 0),
        (400 * MiB, 4 * GiB, 200 * MiB),  # half the free swap
        (4 * GiB, GiB, GiB),  # at most the bound's size
    ],
)
def test_swap_counted_share_and_overflow_cap(swap_free: int, total: int, want: int) -> None:
    assert swap_counted(swap_free, total) == want


def test_swap_counted_limits_are_limits() -> None:
    assert swap_counted(GiB, 8 * GiB, PressureLimits(swap_share=0.25)) == 256 * MiB
    assert swap_counted(8 * GiB, GiB, PressureLimits(swap_overflow_share=0.75)) == 768 * MiB


RUN_ONE = [Running(pid=1, estimate=600 * MiB, current=600 * MiB, started=1.0)]


@pytest.mark.parametrize(
    ("available", "swap", "ok", "why"),
    [
        (800 * MiB, 0, True, Why.FITS),  # RAM alone: swap not needed
        (500 * MiB, 0, False, Why.NO_ROOM),
        (500 * MiB, 200 * MiB, True, Why.FITS_SWAP),  # 500 + 200 >= 600 + 100
        (500 * MiB, 199 * MiB, False, Why.NO_ROOM),
    ],
)
def test_fit_with_swap(available: int, swap: int, ok: bool, why: Why) -> None:
    d = fit_with_swap(
        estimate=600 * MiB, running=RUN_ONE, available=available, margin=100 * MiB, swap=swap
    )
    assert (d.ok, d.why) == (ok, why)
    if why is Why.FITS_SWAP:
        assert "counting 200 MiB of free swap (memory pressure low)" in d.text


def test_with_swap_asks_again_only_a_no_for_room() -> None:
    """The policy asks `fit` once and gives its "no" to with_swap: a yes, or a no
    for anything but room (no figures to add swap to), is left as it is."""
    no = Admission(False, Why.NO_ROOM, 600 * MiB, 500 * MiB, 0, 100 * MiB, 1)
    assert with_swap(no, 200 * MiB).why is Why.FITS_SWAP
    assert with_swap(no, 199 * MiB) is no
    held = Admission(False, Why.PRESSURE, pressure=30.0)
    assert with_swap(held, GiB) is held
    fits = Admission(True, Why.FITS, 600 * MiB, 800 * MiB, 0, 100 * MiB, 1)
    assert with_swap(fits, GiB) is fits


OLD = Running(pid=1, estimate=GiB, current=GiB, started=1.0)
YOUNG = Running(pid=2, estimate=GiB, current=500 * MiB, started=2.0)


def step(me: Running, others: list[Running], **kw: Any) -> str:
    args: dict[str, Any] = dict(available=20 * GiB, total=24 * GiB, paused=False)
    args.update(kw)
    return str(pressure_step(me=me, others=others, **args))


def test_pressure_step_without_brake_or_swap_is_pause_step() -> None:
    for available in (100 * MiB, GiB, 20 * GiB):
        for paused in (False, True):
            for me, others in ((YOUNG, [OLD]), (OLD, [YOUNG])):
                kw: dict[str, Any] = dict(available=available, total=24 * GiB, paused=paused)
                want = pause_step(me=me, others=others, paused_for=5.0, **kw)
                assert pressure_step(me=me, others=others, paused_for=5.0, **kw) == want


def test_brake_pauses_only_the_youngest_of_several() -> None:
    assert step(YOUNG, [OLD], brake=True) == PAUSE
    assert step(OLD, [YOUNG], brake=True) == KEEP  # the oldest never pauses
    assert step(YOUNG, [], brake=True) == KEEP  # alone: pausing frees memory for nobody
    assert step(YOUNG, [OLD], brake=False) == KEEP
    # Of three, one pauses at a time: with the youngest paused, the middle one runs on.
    middle = Running(pid=3, estimate=GiB, current=GiB, started=1.5)
    youngest_paused = Running(pid=2, estimate=GiB, current=500 * MiB, started=2.0, paused=True)
    assert step(middle, [OLD, YOUNG], brake=True) == KEEP  # a younger one runs: it goes
    assert step(middle, [OLD, youngest_paused], brake=True) == KEEP


def test_brake_keeps_a_paused_job_paused_until_it_lets_go() -> None:
    assert step(YOUNG, [OLD], brake=True, paused=True, paused_for=60.0) == KEEP
    assert step(YOUNG, [OLD], brake=False, paused=True, paused_for=60.0) == RESUME
    assert step(OLD, [YOUNG], brake=True, paused=True) == RESUME  # the oldest always runs


def test_brake_still_kills_the_youngest_when_memory_is_critical() -> None:
    assert step(YOUNG, [OLD], brake=True, available=100 * MiB) == KILL
    # ...unless swap leaves room before the OOM killer.
    assert step(YOUNG, [OLD], brake=True, available=100 * MiB, swap=GiB) == PAUSE


def test_swap_counts_as_room_for_a_running_pair() -> None:
    # 600 MiB free, 500 MiB still to grow: below floor + growth without swap, not with.
    assert step(YOUNG, [OLD], available=600 * MiB) == PAUSE
    assert step(YOUNG, [OLD], available=600 * MiB, swap=GiB) == KEEP


# -- the readers -------------------------------------------------------------------


def meminfo(tmp: Path, swap_free_kib: int) -> str:
    path = tmp / "proc/meminfo"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"MemTotal: 1000 kB\nSwapTotal: 9999 kB\nSwapFree: {swap_free_kib} kB\n")
    return str(path)


def test_host_swap_free(tmp_path: Path) -> None:
    assert host_swap_free(meminfo(tmp_path, 2048)) == 2 * MiB
    assert host_swap_free(str(tmp_path / "missing")) == 0


def test_v1_memsw_allowance_bounds_swap(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    files = v1_files(GiB, 900 * MiB)
    # RAM 1 GiB + swap 512 MiB; 124 MiB in swap now (memsw 1024 MiB - RAM 900 MiB).
    files["memory.memsw.limit_in_bytes"] = GiB + 512 * MiB
    files["memory.memsw.usage_in_bytes"] = GiB
    fake.files("/sys/fs/cgroup/memory/build/job", **files)
    root = fake.write()
    meminfo(tmp_path, 4 * 1024 * 1024)  # 4 GiB free on the host
    assert available_swap(root=root) == 388 * MiB
    meminfo(tmp_path, 300 * 1024)  # the host's swap is tighter
    assert available_swap(root=root) == 300 * 1024 * 1024


def test_v1_without_memsw_limit_is_the_hosts_swap(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    files = v1_files(GiB, 900 * MiB)
    files["memory.memsw.limit_in_bytes"] = 9223372036854771712
    files["memory.memsw.usage_in_bytes"] = GiB
    fake.files("/sys/fs/cgroup/memory/build/job", **files)
    root = fake.write()
    meminfo(tmp_path, 1024 * 1024)
    assert available_swap(root=root) == GiB


def test_v2_swap_max_bounds_swap(tmp_path: Path) -> None:
    fake = v2_system(tmp_path)
    files = v2_files(GiB, 900 * MiB)
    files["memory.swap.max"] = 256 * MiB
    files["memory.swap.current"] = 56 * MiB
    fake.files("/sys/fs/cgroup/user.slice/job", **files)
    root = fake.write()
    meminfo(tmp_path, 4 * 1024 * 1024)
    assert available_swap(root=root) == 200 * MiB
    (tmp_path / "sys/fs/cgroup/user.slice/job/memory.swap.max").write_text("max\n")
    assert available_swap(root=root) == 4 * GiB


def test_no_swap_or_a_budget_counts_none(tmp_path: Path) -> None:
    root = v1_system(tmp_path).write()
    meminfo(tmp_path, 0)
    assert available_swap(root=root) == 0
    meminfo(tmp_path, 1024 * 1024)
    assert available_swap(root=root) == GiB
    assert available_swap("-200M", root=root) == GiB  # "keep 200M free" still counts swap
    assert available_swap("2G", root=root) == 0  # a budget is not stretched by swap


def test_psi_path_prefers_the_v2_group_then_the_host(tmp_path: Path) -> None:
    fake = v2_system(tmp_path)
    job = fake.files("/sys/fs/cgroup/user.slice/job", **v2_files(GiB, 0))
    root = fake.write()
    assert psi_path(root=root) is None  # no PSI anywhere
    host = tmp_path / "proc/pressure/memory"
    host.parent.mkdir(parents=True)
    host.write_text(psi(1, 0))
    assert psi_path(root=root) == str(host)
    (job / "memory.pressure").write_text(psi(2, 1))
    assert psi_path(root=root) == str(job / "memory.pressure")


def test_brake_reads_its_file_with_hysteresis(tmp_path: Path) -> None:
    f = tmp_path / "memory"
    brake = Brake(str(f))
    assert brake.read() is NONE and not brake.on  # no file: nothing
    f.write_text(psi(50, 23))
    assert brake.read() is HIGH and not brake.on
    assert brake.read() is HIGH and brake.on
    assert brake.text() == "memory pressure 23% (full avg10)"
    f.write_text(psi(15, 2))
    assert brake.read() is MID and brake.on
    f.write_text(psi(5, 0.5))
    assert brake.read() is LOW and not brake.on
    assert Brake(None).read() is NONE
    f.write_text(psi(50, 23))
    brake.read()
    brake.forget()  # a reading from before is not one of the two in a row
    assert brake.read() is HIGH and not brake.on


# -- the policy, with fake PSI files -----------------------------------------------


def policy_with(tmp_path: Path, text: str, *, available: int, swap: int = 0) -> Any:
    f = tmp_path / "psi"
    f.write_text(text)
    swaps: list[int] = []

    def read_swap(setting: object = None) -> int:
        swaps.append(swap)
        return swap

    now = [0.0]
    pol, record, memory = make(GiB, available=available, total=4 * GiB, clock=lambda: now[0])
    pol.brake = Brake(str(f))
    pol.read_swap = read_swap
    return pol, f, swaps, now


def test_policy_holds_admission_under_sustained_pressure(tmp_path: Path) -> None:
    pol, f, _, now = policy_with(tmp_path, psi(50, 23), available=100 * GiB)
    s = snap(ONE)
    first = pol(s)
    assert first.ok and first.why is Why.FITS  # one reading is not sustained
    pol._last_no = None
    now[0] = 1.0
    d = pol(s)
    assert not d.ok and d.why is Why.PRESSURE
    assert d.text == "memory pressure 23% (full avg10): waiting for it to fall"
    f.write_text(psi(15, 2))  # between the thresholds: still held
    now[0] = 2.0
    assert pol(s).why is Why.PRESSURE
    f.write_text(psi(1, 0))
    now[0] = 3.0
    assert pol(s).ok


def test_under_pressure_a_job_memory_refuses_as_well_is_told_both(tmp_path: Path) -> None:
    """The pressure holds it, and it would wait without the pressure too: the line
    cargo keeps says what it needs beside the pressure, and the decision stays the
    pressure's, so its ticket keeps waiters from passing it (head_of: not refused
    for memory)."""
    pol, f, swaps, now = policy_with(tmp_path, psi(50, 23), available=1800 * MiB)
    s = snap(ONE)
    assert pol(s).why is Why.NO_ROOM  # one reading is not sustained; RAM says no
    pol._last_no = None
    now[0] = 1.0
    d = pol(s)
    assert pol.brake is not None and pol.brake.on
    assert not d.ok and d.why is Why.PRESSURE
    assert d.text.startswith("needs ~1 GiB, 1.8 GiB free; 1 job running")
    assert d.text.endswith("; memory pressure 23% (full avg10) as well")
    assert d.names_estimate  # the started line does not repeat the estimate
    fields = {"estimate": GiB, "refused": d.why.value}  # as show_refusal writes it
    head = head_of([("q-00000000000000000001-1000-5.json", fields)], s)
    assert head is not None and not head.refused
    assert swaps == []  # high pressure: swap is neither counted nor read


def test_pressure_held_carries_memorys_figures_only_when_memory_refuses_too() -> None:
    hold = Admission(False, Why.PRESSURE, running=1, pressure=23.0, pressure_kind="full")
    fits = Admission(True, Why.FITS, estimate=GiB, available=3 * GiB, running=1)
    assert pressure_held(hold, fits) is hold
    short = Admission(
        False, Why.NO_ROOM, estimate=GiB, available=GiB, reserved=GiB, margin=MiB, running=1
    )
    d = pressure_held(hold, short)
    assert (d.ok, d.why, d.pressure) == (False, Why.PRESSURE, 23.0)
    assert (d.estimate, d.available, d.reserved, d.margin) == (GiB, GiB, GiB, MiB)
    assert d.text == (
        "needs ~1 GiB, 1 GiB free; 1 job running, expected to grow by 1 GiB; keeping 1 MiB"
        " spare; memory pressure 23% (full avg10) as well"
    )


def test_under_pressure_a_job_swap_would_make_room_for_is_told_the_pressure(
    tmp_path: Path,
) -> None:
    """Between the thresholds the brake still holds, but free swap counts: the job
    would start without the pressure, so the pressure alone is its reason."""
    pol, f, swaps, now = policy_with(tmp_path, psi(50, 23), available=1800 * MiB, swap=2 * GiB)
    s = snap(ONE)
    for t in (0.0, 1.0):  # two high readings in a row put the brake on
        pol._last_no = None
        now[0] = t
        pol(s)
    f.write_text(psi(15, 2))  # MID: the brake stays on, swap counts again
    pol._last_no = None
    now[0] = 2.0
    d = pol(s)
    assert pol.brake is not None and pol.brake.on and swaps
    assert not d.ok and d.why is Why.PRESSURE
    assert d.text == "memory pressure 2% (full avg10): waiting for it to fall"
    assert not d.names_estimate


def test_policy_never_holds_the_first_job(tmp_path: Path) -> None:
    pol, _, _, now = policy_with(tmp_path, psi(90, 90), available=GiB)
    for t in range(3):
        now[0] = float(t)
        d = pol(snap())
        assert d.ok and d.why is Why.FIRST


def test_policy_counts_swap_unless_pressure_is_high(tmp_path: Path) -> None:
    # 1 GiB head, 1 GiB still to grow beside it, 1.8 GiB free: no room in RAM alone.
    pol, f, swaps, now = policy_with(tmp_path, psi(1, 0), available=1800 * MiB, swap=2 * GiB)
    d = pol(snap(ONE))
    # Half of 2 GiB free swap, and at most the 4 GiB bound: 1 GiB counts.
    assert d.ok and d.why is Why.FITS_SWAP and d.swap == GiB and swaps
    # MID (light swapping): still counted.
    pol2, _, swaps2, _ = policy_with(tmp_path, psi(15, 2), available=1800 * MiB, swap=2 * GiB)
    assert pol2(snap(ONE)).why is Why.FITS_SWAP and swaps2
    # HIGH, even once (the brake is not on yet): swap is neither counted nor read.
    pol3, _, swaps3, _ = policy_with(tmp_path, psi(50, 23), available=1800 * MiB, swap=2 * GiB)
    d = pol3(snap(ONE))
    assert not d.ok and d.why is Why.NO_ROOM and swaps3 == []


def test_policy_without_psi_does_nothing_new(tmp_path: Path) -> None:
    pol, _, swaps, _ = policy_with(tmp_path, "", available=1800 * MiB, swap=2 * GiB)
    pol.brake = Brake(None)
    d = pol(snap(ONE))
    assert not d.ok and d.why is Why.NO_ROOM and swaps == []


# -- the watch, with a sleeping child and with the real CLI in front of fake rustc ---


def test_watch_pauses_the_youngest_on_pressure_and_resumes_when_it_falls(procs: Procs) -> None:
    child = procs.start(["sleep", "60"], dict(os.environ)).pid
    me = Running(pid=child, estimate=100 * MiB, current=0, started=20.0)
    older = Running(pid=1, estimate=GiB, current=0, started=10.0)
    reading = [
        Reading(
            me,
            [older],
            100 * GiB,
            24 * GiB,
            brake=True,
            pressure="memory pressure 23% (full avg10)",
        )
    ]
    now = [0.0]
    published: list[dict[str, Any]] = []
    watch = PauseWatch(
        child,
        "crate x",
        read=lambda: reading[0],
        publish=published.append,
        lend=None,
        reclaimer=Reclaimer(None),
        clock=lambda: now[0],
    )
    assert watch.step() is False and watch.paused
    assert wait_for(lambda: state(child) == "T")
    now[0] = 5.0
    watch.step()  # still braking: stays paused whatever the free memory
    assert watch.paused
    reading[0] = Reading(me, [older], 100 * GiB, 24 * GiB)
    watch.step()
    assert not watch.paused and wait_for(lambda: state(child) in "RS")
    assert watch.finish() == 5.0


@pytest.mark.timeout(120)
def test_a_guarded_job_pauses_on_pressure_and_resumes(tmp_path: Path, procs: Procs) -> None:
    f = tmp_path / "psi"
    f.write_text(psi(1, 0))
    release = tmp_path / "release"
    p = start(procs, tmp_path, FAKE_UNTIL=str(release), PAUSE_PSI=str(f))
    rustc = compiler(tmp_path)
    time.sleep(0.6)
    assert state(rustc) in "RS"  # pressure low, room plenty: runs
    f.write_text(psi(60, 23))
    assert wait_for(lambda: state(rustc) == "T")
    f.write_text(psi(1, 0))
    control(tmp_path, RUN)
    assert wait_for(lambda: state(rustc) in "RS")
    release.touch()
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    assert (
        "ltoguard: paused crate app07 (bin, lto=fat): memory pressure 23% (full avg10);"
        " resuming when it falls" in err
    ), err
    assert "ltoguard: resumed crate app07" in err, err


# -- a real cgroup with a swap allowance -------------------------------------------


def test_a_real_cgroup_swap_allowance_is_read(procs: Procs) -> None:
    from ltoguard.cgroups import cgroup_swap_room
    from scripts.cgroups import MemoryCgroup

    why = MemoryCgroup.unavailable()
    if why:
        pytest.skip(f"no memory cgroup here: {why}")
    if host_swap_free() <= 0:
        pytest.skip("no swap on this host (SwapFree 0): a swap allowance cannot be shown")
    why = MemoryCgroup.swap_unavailable()
    if why:
        pytest.skip(why)
    with MemoryCgroup(512 * MiB, swap=256 * MiB) as cg:
        pid = procs.start([*cg.enter_command(), "sleep", "60"], dict(os.environ)).pid
        assert wait_for(lambda: str(pid) in (cg.path / "cgroup.procs").read_text())
        rooms = cgroup_swap_room(pid=pid)
        assert rooms and rooms[0][1].endswith(str(cg.path)) and rooms[0][0] == 256 * MiB


# -- memcap and the demo -----------------------------------------------------------


def test_memcap_parses_a_cap_with_swap() -> None:
    from scripts.memcap import parse_cap

    assert parse_cap("600M") == (600 * MiB, None)
    assert parse_cap("1000M+1.5G") == (1000 * MiB, 1536 * MiB)
    assert parse_cap("1G+0") == (GiB, 0)


def test_memcap_with_swap_runs_or_says_why_in_one_line() -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parent.parent / "scripts" / "memcap.py"
    check = subprocess.run(
        [sys.executable, str(script), "--check-swap"], capture_output=True, text=True, timeout=60
    )
    run = subprocess.run(
        [sys.executable, str(script), "64M+32M", "--", "true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if check.returncode == 0:
        assert run.returncode == 0, run.stderr
        assert "OOM kills under a 64 MiB + 32 MiB swap cap" in run.stderr
    else:
        assert check.stderr.startswith("memcap: no cap with swap here: ")
        assert len(check.stderr.strip().splitlines()) == 1
        assert run.returncode == 125
        assert run.stderr.startswith("memcap: error: no cap with swap here: ")


def test_demo_rejects_an_unknown_argument() -> None:
    import subprocess

    demo = Path(__file__).resolve().parent.parent / "scripts" / "demo.sh"
    out = subprocess.run(["bash", str(demo), "--bogus"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "usage: demo.sh [--swap SIZE]" in out.stderr
