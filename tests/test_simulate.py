"""scripts/simulate.py: replaying recorded LTO phases through ltoguard's own rules."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest

from ltoguard.admission import Limits
from ltoguard.sizes import MiB
from scripts import simulate

TRACES = Path(__file__).resolve().parent / "data" / "traces"
REAL = TRACES / "real-100-bins-600MiB.jsonl"
HELD_OUT = sorted((TRACES.parent / "heldout").glob("*.jsonl"))
DEBIAN_HELD_OUT = [p for p in HELD_OUT if not p.name.startswith(("sweepG-", "sweepH-"))]
# A cold generic build whose first two jobs started together on estimates 6 x low:
# the kernel OOM-killed the younger after 26 s, and ltoguard reran it alone.
KILLED = TRACES.parent / "heldout" / "sweepH-generic-1176MiB.jsonl"


def event(name: str, queued: float, run: float, peak_mib: int, **extra: Any) -> dict[str, Any]:
    """A job that ran ``run`` seconds from ``queued``, growing to its peak within 1 s and
    holding it, recorded under a 1000 MiB cap with 100 MiB held by the rest."""
    peak = peak_mib * MiB
    row: dict[str, Any] = {
        "crate": name,
        "queued": queued,
        "admitted": queued,
        "finished": queued + run,
        "peak": peak,
        "estimate": int(peak * 1.1),
        "budget": 900 * MiB,
        "samples": [[queued, 0], [queued + 1.0, peak], [queued + run - 0.1, peak]],
        "outcome": "ok",
    }
    row.update(extra)
    return row


def write(tmp_path: Path, rows: list[dict[str, Any]], name: str = "t-1000MiB.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def replay(tmp_path: Path, rows: list[dict[str, Any]], cap_mib: int, **kw: Any) -> simulate.Result:
    jobs = simulate.load_trace(write(tmp_path, rows))
    return simulate.simulate(jobs, cap_mib * MiB, **kw)


def test_two_jobs_that_fit_run_as_a_pair(tmp_path: Path) -> None:
    res = replay(tmp_path, [event("a", 0, 10, 200), event("b", 0, 10, 200)], 1000)
    assert res.pairs == 1
    assert res.wall == pytest.approx(10, abs=0.3)
    assert res.overlap_s > 9
    assert (res.kills, res.stops, res.refused) == (0, 0, 0)


def test_no_more_jobs_run_than_cpus(tmp_path: Path) -> None:
    """Three 10-s jobs queued at once with room for all three: on two CPUs the third
    waits for a CPU (admission's CPU rule) and the phase ends at 20 s, where the
    three sharing two CPUs would all have ended at 15 s. That is the rule's cost
    when nothing else wants the CPU; under cargo -j2 a third guarded compile gets
    a token only from a waiter, which waits for memory."""
    rows = [event(n, 0, 10, 100) for n in "abc"]
    two = replay(tmp_path, rows, 1000, cpus=2)
    assert two.wall == pytest.approx(20, abs=0.5)
    assert two.head_waits["c"] == pytest.approx(10, abs=0.5)
    three = replay(tmp_path, rows, 1000, cpus=3)
    assert three.wall == pytest.approx(10, abs=0.3)
    assert three.head_waits["c"] == 0


def test_two_jobs_that_do_not_fit_run_one_after_the_other(tmp_path: Path) -> None:
    res = replay(tmp_path, [event("a", 0, 10, 300), event("b", 0, 10, 300)], 550)
    assert res.pairs == 0
    assert res.wall == pytest.approx(20, abs=0.5)
    assert res.refused == 1 and res.refused_fit == 0
    assert res.kills == 0


def test_a_refused_pair_that_would_have_fit_is_counted(tmp_path: Path) -> None:
    # 2 x 200 MiB in 500 MiB of room fits, but estimates padded to 440 MiB each do not.
    rows = [event("a", 0, 10, 200, estimate=440 * MiB), event("b", 0, 10, 200, estimate=440 * MiB)]
    res = replay(tmp_path, rows, 600)
    assert res.pairs == 0
    assert (res.refused, res.refused_fit) == (1, 1)
    # The same trace with exact estimates pairs them.
    rows = [event("a", 0, 10, 200), event("b", 0, 10, 200)]
    assert replay(tmp_path, rows, 600, estimates="peak").pairs == 1


def test_an_underestimated_pair_pauses_or_stops_and_is_never_oom_killed(tmp_path: Path) -> None:
    # Both estimated at 100 MiB, each grows to 300 MiB within its first second; 500 MiB of room.
    rows = [event(n, 0, 10, 300, estimate=100 * MiB) for n in ("a", "b")]
    res = replay(tmp_path, rows, 600)
    assert res.pairs == 1
    assert res.pauses + res.stops >= 1
    assert res.kills == 0
    assert res.wall > 15  # they ended up one after the other


def test_a_compile_growing_faster_than_the_floor_per_check_is_never_oom_killed(
    tmp_path: Path,
) -> None:
    """Past its estimate and its first seconds, the younger of two grows 150 MiB/s:
    37.5 MiB per regular check (0.25 s), more than the floor under 600 MiB (15
    MiB). Near the floor it is checked sooner, and pauses."""
    grow = [[0.0, 0], [3.0, 30 * MiB]]
    grow += [[3.0 + i * 0.25, int((30 + 37.5 * i) * MiB)] for i in range(1, 13)]
    younger = event("b", 0, 10, 500, estimate=50 * MiB)
    younger["samples"] = [*grow, [9.9, 500 * MiB]]
    older = event("a", 0, 15, 330, estimate=50 * MiB)
    res = replay(tmp_path, [older, younger], 600)
    assert res.kills == 0
    assert res.pauses >= 1


def test_arrivals_are_kept(tmp_path: Path) -> None:
    res = replay(tmp_path, [event("a", 0, 5, 100), event("b", 20, 5, 100)], 1000)
    assert res.pairs == 0 and res.refused == 0
    assert res.wall == pytest.approx(25, abs=0.3)


def test_load_trace_takes_the_cap_from_the_name_and_the_peak_from_the_event(tmp_path: Path) -> None:
    row = event("a", 5, 10, 200)
    row["peak"] = 260 * MiB  # the samples missed the last spike
    row["samples"].append([16.0, 0])  # after it finished: dropped
    jobs = simulate.load_trace(write(tmp_path, [row]))
    (job,) = jobs
    assert job.queued == 0 and job.admitted == 0  # times start at the first queueing
    assert job.baseline == 100 * MiB
    assert max(m for _, m in job.profile) == 260 * MiB
    assert job.memory_at(0.5) == pytest.approx(100 * MiB, rel=0.01)


def test_bad_traces_name_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "t-1000MiB.jsonl"
    path.write_text(json.dumps(event("a", 0, 1, 10)) + "\n{not json\n")
    with pytest.raises(simulate.TraceError, match=r"t-1000MiB.jsonl:2: not JSON"):
        simulate.load_trace(path)
    path.write_text(json.dumps({"crate": "a", "queued": 0}) + "\n")
    with pytest.raises(simulate.TraceError, match=r":1: field 'admitted' is missing"):
        simulate.load_trace(path)
    nocap = tmp_path / "t.jsonl"
    nocap.write_text(json.dumps(event("a", 0, 1, 10)) + "\n")
    with pytest.raises(simulate.TraceError, match="--trace-cap"):
        simulate.load_trace(nocap)
    assert simulate.main([str(nocap)]) == 2


def test_the_real_trace_replays_as_it_ran() -> None:
    """Replayed with the estimates it had, at its own cap, the recorded build comes back:
    its LTO phase (791 s) within 10%, no pair, no kill."""
    jobs = simulate.load_trace(REAL)
    assert len(jobs) == 100
    res = simulate.simulate(jobs, 600 * MiB, limits=RECORDED_WITH, backfill=False)
    assert res.wall == pytest.approx(791.2, rel=0.10)
    assert res.pairs == 0 and res.kills == 0
    # Most of the pairs it refused would have fit: the finding a better policy must use.
    assert res.refused_fit > res.refused / 2


def test_cli_prints_one_row_per_cap(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate.main([str(REAL), "--cap", "600M,900M", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["cap_mib"] for r in rows] == [600, 900]
    assert rows[1]["pairs"] > rows[0]["pairs"]


def test_a_job_cargo_started_when_another_ended_starts_when_it_ends_in_the_replay(
    tmp_path: Path,
) -> None:
    # Recorded one at a time: b queued 0.1 s after a ended. Replayed with room for two,
    # a and c pair up, so b's trigger (a's end) comes sooner and b with it.
    rows = [event("a", 0, 10, 200), event("c", 0.05, 10, 200), event("b", 10.1, 10, 200)]
    rows[1]["admitted"] = 10.0  # c waited behind a in the recording
    rows[1]["finished"] = 20.0
    rows[1]["samples"] = [[10.0, 0], [11.0, 200 * MiB], [19.9, 200 * MiB]]
    jobs = simulate.load_trace(write(tmp_path, rows))
    assert [(j.name, j.trigger[0]) for j in jobs] == [("a", "at"), ("c", "at"), ("b", "fin")]
    linked = simulate.simulate(jobs, 1000 * MiB)
    recorded = simulate.simulate(jobs, 1000 * MiB, arrivals="recorded")
    assert linked.wall == pytest.approx(20.1, abs=0.3)  # a+c together, then b
    assert recorded.wall == pytest.approx(20.1, abs=0.3)
    # With only one CPU the pair shares it: no faster than one after the other.
    one_cpu = simulate.simulate(jobs, 1000 * MiB, cpus=1)
    assert one_cpu.wall > 29


def test_the_trace_as_recorded(capsys: pytest.CaptureFixture[str]) -> None:
    row = simulate.as_recorded(simulate.load_trace(REAL), 600 * MiB)
    assert row["wall_s"] == pytest.approx(791.2, abs=0.1)
    assert row["pairs"] == 0 and row["two_running_frac"] < 0.001
    assert simulate.main([str(REAL), "--recorded"]) == 0
    out = capsys.readouterr().out
    assert "as recorded" in out


# The LTO phase of real builds of one workspace at three caps (one run each).
MANY = {430: 96.7, 520: 96.0, 700: 84.4}
# The policy those builds ran with (the critical floor was then at most 1/10 of the
# cap; their estimates, recorded, carried the old 10% headroom).
RECORDED_WITH = Limits(
    critical_floor_divisor=10, watch=0.25, fast_watch=0.25
)  # no curves, no backfill


@pytest.mark.parametrize("recorded_at", sorted(MANY))
@pytest.mark.parametrize("cap", sorted(MANY))
def test_a_replay_predicts_real_builds_at_other_caps(recorded_at: int, cap: int) -> None:
    """A trace recorded at one cap, replayed at another, predicts the real build's LTO
    phase at that cap within 10% (the simulator's validation)."""
    jobs = simulate.load_trace(TRACES / f"gen-many-50-bins-{recorded_at}MiB.jsonl")
    assert simulate.as_recorded(jobs, recorded_at * MiB)["wall_s"] == pytest.approx(
        MANY[recorded_at], abs=0.1
    )
    res = simulate.simulate(jobs, cap * MiB, limits=RECORDED_WITH, backfill=False)
    assert res.wall == pytest.approx(MANY[cap], rel=0.10)
    assert res.kills == 0


def test_a_job_that_does_not_fit_even_alone_fails_instead_of_looping(tmp_path: Path) -> None:
    # 700 MiB of peak in 500 MiB of room: killed, rerun alone, killed again: it fails.
    rows = [event("a", 0, 10, 100), event("big", 0.1, 10, 700)]
    res = replay(tmp_path, rows, 600)
    assert res.failed == 1 and res.kills == 2
    assert res.wall < 40


@pytest.mark.parametrize(
    ("name", "cap"), [("gen-generic-4-bins-debug", 1200), ("real-6-bins", 600)]
)
def test_more_kinds_replay_as_they_ran(name: str, cap: int) -> None:
    """Traces of other workspace kinds replay at their own cap within 10% of the
    recorded LTO phase, with no kill (none happened)."""
    jobs = simulate.load_trace(TRACES / f"{name}-{cap}MiB.jsonl")
    recorded = simulate.as_recorded(jobs, cap * MiB)["wall_s"]
    res = simulate.simulate(jobs, cap * MiB, limits=RECORDED_WITH, backfill=False)
    assert res.wall == pytest.approx(recorded, rel=0.10)
    assert res.kills == 0 and res.failed == 0


def test_a_cold_replay_learns_each_peak_as_its_job_ends(tmp_path: Path) -> None:
    """--estimates cold runs ltoguard's estimator: the first job has only its inputs'
    prediction, a later one its sibling's measured ratio applied to its own inputs."""
    inputs = {"deps": 40 << 20, "meta": 20 << 20, "source": 4096, "crates": 10}
    rows = [
        event("a", 0, 5, 300, inputs=inputs),
        event("b", 6, 5, 300, inputs=inputs),
    ]
    jobs = simulate.load_trace(write(tmp_path, rows))
    est = simulate.Estimator("cold", jobs, 1000 * MiB, headroom=1.0)
    from ltoguard.inputs import predict

    assert est.of(jobs[1]) == predict(inputs)  # nothing learned yet
    assert est.learn(jobs[0])
    assert est.of(jobs[1]) == pytest.approx(300 * MiB, rel=0.01)  # same inputs, same peak
    warm = simulate.Estimator("warm", jobs, 1000 * MiB, headroom=1.1)
    assert warm.of(jobs[0]) == int(300 * MiB * 1.1) and not warm.learn(jobs[0])
    with pytest.raises(ValueError, match="estimates"):
        simulate.simulate(jobs, 1000 * MiB, estimates="guess")


def test_with_debug_info_a_cold_replay_scales_the_doubled_line(tmp_path: Path) -> None:
    """As guard.py does: a first job's estimate weighs the linked bitcode once
    (inputs.predict), a later one scales the line doubled for debug info (inputs.line)."""
    from ltoguard import inputs as model

    small = {"deps": 10 << 20, "meta": 5 << 20, "source": 4096, "crates": 3}
    large = {"deps": 60 << 20, "meta": 20 << 20, "source": 8192, "crates": 12}
    profile = {"opt": "3", "debug": "1"}
    rows = [
        event("a", 0, 5, 300, inputs=small, profile=profile),
        event("b", 6, 5, 300, inputs=large, profile=profile),
    ]
    jobs = simulate.load_trace(write(tmp_path, rows))
    est = simulate.Estimator("cold", jobs, 1000 * MiB, headroom=1.0)
    assert est.of(jobs[1]) == model.predict(large, debuginfo="1")
    assert est.learn(jobs[0])
    ratio = 300 * MiB / model.line(small, debuginfo="1")
    assert est.of(jobs[1]) == int(model.line(large, debuginfo="1") * ratio)
    ratio = 300 * MiB / model.predict(small, debuginfo="1")
    assert est.of(jobs[1]) != int(model.predict(large, debuginfo="1") * ratio)


@pytest.mark.parametrize("estimates", ["cold", "warm"])
def test_the_policy_pairs_the_real_trace_where_the_old_one_ran_a_flock(estimates: str) -> None:
    """The 100-bin trace at its 600 MiB: the old policy (10% headroom, floor 1/10 of the
    cap, no curves) replays as a flock; the current one runs two jobs at once for half
    the LTO phase or more, 0.7 x as long, with no kill and no compile stopped."""
    jobs = simulate.load_trace(REAL)
    old = simulate.simulate(
        jobs,
        600 * MiB,
        estimates=estimates,
        limits=RECORDED_WITH,
        headroom=1.1,
        use_curves=False,
        backfill=False,
    )
    new = simulate.simulate(jobs, 600 * MiB, estimates=estimates)
    assert old.overlap_s / old.wall < 0.01
    assert new.overlap_s / new.wall >= 0.5 and new.pairs >= 50
    assert new.wall < 0.7 * old.wall
    assert (new.kills, new.stops, new.failed) == (0, 0, 0)
    # Without the learned curves, pairs are fewer and the phase longer.
    flat = simulate.simulate(jobs, 600 * MiB, estimates=estimates, use_curves=False)
    assert flat.overlap_s / flat.wall < 0.35 and flat.wall > new.wall * 1.2


def test_a_build_whose_jobs_were_stopped_replays_their_last_runs() -> None:
    """A job stopped or rerun before it finished: its run is its last attempt (the
    ones before, and its waits between, are the replay's to decide), not the span
    from its first admission, which made this build replay at 186 s."""
    path = TRACES.parent / "heldout" / "sweepG-generic-872MiB.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sum(len(r["attempts"]) > 1 for r in rows) == 3  # 5 stops, 1 rerun
    jobs = simulate.load_trace(path)
    last = rows[3]["attempts"][-1]  # app01: stopped twice, rerun alone once
    assert jobs[3].run_s == pytest.approx(last[2] - last[1] - last[3], abs=0.01)
    recorded = simulate.as_recorded(jobs, 872 * MiB)["wall_s"]
    assert simulate.simulate(jobs, 872 * MiB).wall == pytest.approx(recorded, rel=0.10)


def test_a_paused_jobs_profile_has_its_pauses_cut_out_where_they_were() -> None:
    """Ran 0-2 s, paused 2-6 s, ran 6-10 s: its profile is 6 s long, the rise after the
    pause at 3 s of run (as ltoguard learns its curve); an older log, which lists no
    pauses, spreads the 4 s evenly over the run."""
    row = event("a", 0.0, 10.0, 500, paused_s=4.0)
    row["samples"] = [[0.0, 0], [1.0, 100 * MiB], [3.0, 100 * MiB], [5.0, 100 * MiB],
                      [7.0, 500 * MiB], [9.9, 500 * MiB]]  # fmt: skip
    cut = simulate.job_from_event(dict(row, pauses=[[2.0, 6.0]]), 1000 * MiB, "t")
    assert cut.run_s == pytest.approx(6.0)
    assert (3.0, 500 * MiB) in cut.profile and cut.memory_at(2.5) < 500 * MiB
    even = simulate.job_from_event(row, 1000 * MiB, "t")
    assert (4.2, 500 * MiB) in [(round(t, 2), m) for t, m in even.profile]
    # Malformed, or not all of them (the event keeps the last 20): as if none.
    for bad in ([[6.0, 2.0]], [[2.0]], [["x", 6.0]], "2-6", [[2.0, 4.0]]):
        assert simulate.job_from_event(dict(row, pauses=bad), 1000 * MiB, "t") == even


def test_the_held_out_builds_replay_as_they_ran() -> None:
    """The 27 cold builds (three sweeps, and clap's examples at two caps), which the
    policy was not tuned on, each replayed at its own cap with the estimates it ran on: the simulator's LTO phase
    is the recorded one's, within 10% for most and 20% for every one (the policy
    changed a little between the sweeps, and a replay's memory beside the jobs is
    the trace's, not what the kernel reclaimed). The pause's floor as they ran:
    counting the jobs' own rise in it (``rise_once=False``)."""
    assert len(DEBIAN_HELD_OUT) == 27
    errors = []
    for path in DEBIAN_HELD_OUT:
        jobs = simulate.load_trace(path)
        cap = simulate.cap_from_name(path)
        assert cap is not None, path
        recorded = simulate.as_recorded(jobs, cap)["wall_s"]
        res = simulate.simulate(jobs, cap, rise_once=False)
        assert res.kills == 0 and res.failed == 0, path.name
        errors.append(abs(res.wall / recorded - 1))
    assert max(errors) < 0.20
    assert sum(e <= 0.10 for e in errors) >= 20


@pytest.mark.parametrize("estimates", ["cold", "warm"])
def test_the_shipped_policy_kills_nothing_in_a_build_it_was_not_tuned_on(estimates: str) -> None:
    """ltoguard's own estimates, learned as each replay goes (cold) or from a first
    build (warm), at each held-out build's cap (sweepH's but warm: its cold build has
    the OOM kill below): no compile is OOM-killed, and, in
    the builds over Debian's crates, no more than 1% of the compile time is lost to
    stops. (Not in the generic kind's cold build at 872 MiB: its bins are predicted
    4-7 x low, and a stop loses 12.5% there; docs/benchmarks.md.)"""
    lost = cpu = 0.0
    for path in HELD_OUT:
        if path == KILLED and estimates == "cold":
            continue  # the shipped policy's known kill (below)
        jobs = simulate.load_trace(path)
        cap = simulate.cap_from_name(path)
        assert cap is not None, path
        res = simulate.simulate(jobs, cap, estimates=estimates)
        assert res.kills == 0 and res.failed == 0, path.name
        if path in DEBIAN_HELD_OUT:
            lost, cpu = lost + res.cpu_lost, cpu + res.cpu
    assert lost <= 0.01 * cpu


def test_a_build_whose_compile_the_kernel_killed_replays_the_kill() -> None:
    """The generic kind's cold build at 1176 MiB (2026-12-05): `app03` and `app02`
    started side by side on cold estimates of 122 MiB, grew to 550-750 MiB together,
    and the kernel killed `app02` at 565 MiB when `app03` rose by ~200 MiB within a
    check; `app02` ran again alone. Replayed with the estimates recorded (`app02`'s is
    the one it was raised to for its rerun, 706 MiB, which still fits beside `app03`'s
    122), the kill is there and the LTO phase within 10% of the real one: the
    simulator shows this failure of the shipped policy rather than hiding it (a
    reserve for such jobs' growth was tried and cost more than it saved,
    docs/benchmarks.md). A rule that avoids the kill is for its cold replay to show."""
    jobs = simulate.load_trace(KILLED)
    assert simulate.cap_from_name(KILLED) == 1176 * MiB
    recorded = simulate.as_recorded(jobs, 1176 * MiB)["wall_s"]
    res = simulate.simulate(jobs, 1176 * MiB)
    assert (res.kills, res.failed) == (1, 0)
    assert res.wall == pytest.approx(recorded, rel=0.10)


def test_cargos_order_drawn_again_moves_the_jobs_not_their_places(tmp_path: Path) -> None:
    rows = [
        event("a", 0, 10, 200, budget=900 * MiB, inputs={"objects": 1}),
        event("b", 0.05, 2, 300, budget=800 * MiB, inputs={"objects": 2}),
        event("c", 2.1, 30, 400, budget=700 * MiB, inputs={"objects": 3}),
    ]
    jobs = simulate.load_trace(write(tmp_path, rows))
    before = copy.deepcopy(jobs)
    assert [(j.name, j.trigger) for j in jobs] == [
        ("a", ("at", -1)),
        ("b", ("at", -1)),
        ("c", ("fin", 1)),
    ]

    class Swap(random.Random):
        def shuffle(self, x: Any, *_: Any) -> None:
            x[:] = [1, 0, 2]  # b first, then a, then c

    drawn = simulate.reordered(jobs, Swap())
    assert [j.name for j in drawn] == ["b", "a", "c"]
    own = {j.name: j for j in jobs}
    for place, job in zip(jobs, drawn):
        # The place keeps its arrival and what the rest of the build held then ...
        assert (job.queued, job.admitted, job.finished, job.lag) == (
            place.queued, place.admitted, place.finished, place.lag,
        )  # fmt: skip
        assert job.baseline == place.baseline
        # ... the job its own run.
        mine = own[job.name]
        assert (job.run_s, job.peak, job.profile, job.estimate, job.inputs) == (
            mine.run_s, mine.peak, mine.profile, mine.estimate, mine.inputs,
        )  # fmt: skip
    # c came on the first token an end gave back (b's, recorded): the first end still.
    assert drawn[2].trigger == ("end", 0)
    assert jobs == before  # the trace's own jobs are untouched
    # Replayed: b (2 s) ends first wherever it stands, and c starts then.
    res = simulate.simulate(drawn, 1000 * MiB, estimates="peak")
    assert res.wall == pytest.approx(2.1 + 30, abs=0.3)
    seen = {tuple(j.name for j in simulate.reordered(jobs, random.Random(s))) for s in range(20)}
    assert len(seen) > 1


def test_cli_replays_cargos_orders_drawn_again(capsys: pytest.CaptureFixture[str]) -> None:
    trace = str(TRACES.parent / "heldout" / "sweepA-real-656MiB.jsonl")
    args = [trace, "--estimates", "warm", "--orders", "6", "--seed", "3", "--json"]
    assert simulate.main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["order"] for r in rows] == list(range(7))
    assert len({r["wall_s"] for r in rows}) > 1  # 4 bins of different lengths: the order counts
    assert simulate.main(args) == 0  # seeded: the same draws again
    assert [json.loads(line) for line in capsys.readouterr().out.splitlines()] == rows
    assert simulate.main([trace, "--orders", "3"]) == 0
    out = capsys.readouterr().out
    assert "sweepA-real-656MiB.jsonl @ 656 MiB: own order" in out
    with pytest.raises(SystemExit) as exc:
        simulate.main([trace, "--orders", "-1"])
    assert exc.value.code == 2
    assert "--orders: a count, 0 or more" in capsys.readouterr().err
