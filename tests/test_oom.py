"""Out-of-memory handling under a real memory cgroup, with a fake rustc that allocates.

- the kernel OOM-kills a guarded job: ltoguard reruns it once, alone, and cargo sees
  its diagnostics once;
- nothing starts beside that rerun;
- it runs out of memory again alone: the real status and a clear message;
- two guarded jobs outgrow the memory: the youngest pauses before the kernel acts;
  memory critical all the same, it stops itself, queues again at the head, and
  reruns when memory allows.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

from ltoguard.estimates import History, group_key, job_key
from scripts.cgroups import MemoryCgroup
from tests.procs import Procs, clean_env, ltoguard_cmd, wait_for

pytestmark = [pytest.mark.cgroup, pytest.mark.timeout(180)]

MiB = 1 << 20

ALLOCATOR = textwrap.dedent(
    """\
    #!{python}
    # Stands in for rustc: prints a diagnostic, then allocates memory step by step.
    import os, sys, time
    env = os.environ
    marker = env["FAKE_MARKER"]
    rerun = os.path.exists(marker)
    open(marker, "a").write("x")
    log = env.get("FAKE_LOG")  # "<marker's name> start" / "... end", in order of time
    if log:
        open(log, "a").write(os.path.basename(marker) + " start\\n")
    if env.get("FAKE_LLVM_OOM") and not rerun:  # LLVM's own out-of-memory abort
        os.write(2, b"LLVM ERROR: out of memory\\n")
        sys.exit(1)
    os.write(2, b'{{"$message_type":"diagnostic","message":"unused variable"}}\\n')
    mb = int(env["FAKE_RERUN_MB"] if rerun else env["FAKE_MB"])
    step = float(env.get("FAKE_STEP_S", "0"))
    size = int(env.get("FAKE_CHUNK_MB", "10"))
    hold = []
    for _ in range(mb // size):
        chunk = bytearray(size << 20)
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        hold.append(chunk)
        time.sleep(step)
    open(env["FAKE_DONE"], "a").write("%s\\n" % ("rerun" if rerun else "first"))
    time.sleep(float(env.get("FAKE_HOLD_S", "0")))
    if log:
        open(log, "a").write(os.path.basename(marker) + " end\\n")
    """
)

unavailable = MemoryCgroup.unavailable()
needs_cgroup = pytest.mark.skipif(bool(unavailable), reason=f"memory cgroup: {unavailable}")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    # Memory decides (two slots, set by hand: under `auto` a runner with one CPU
    # would keep the jobs apart): these tests need jobs side by side.
    return clean_env(
        tmp, tmp / "state", LTOGUARD_SLOTS="2", FAKE_DONE=str(tmp / "done.log"), **extra
    )


def _fake(tmp: Path) -> Path:
    path = tmp / "rustc"
    path.write_text(ALLOCATOR.format(python=sys.executable))
    path.chmod(0o755)
    return path


@needs_cgroup
def test_kernel_oom_kill_is_rerun_alone_and_diagnostics_reach_cargo_once(
    tmp_path: Path, procs: Procs
) -> None:
    rustc = _fake(tmp_path)
    with MemoryCgroup(300 * MiB) as cg:
        env = _env(tmp_path, FAKE_MARKER=str(tmp_path / "m"), FAKE_MB="600", FAKE_RERUN_MB="40")
        p = procs.start(cg.enter_command() + ltoguard_cmd(rustc, "heavy"), env)
        out, err = p.communicate(timeout=120)
        kills = cg.oom_kills()
    text = err.decode()
    assert p.returncode == 0, text
    assert kills == 1  # the kernel really killed the first attempt
    assert text.count('"unused variable"') == 1, text
    assert "ran out of memory" in text and "running it again, alone" in text
    assert (tmp_path / "done.log").read_text().split() == ["rerun"]


def test_nothing_starts_beside_a_rerun_alone(tmp_path: Path, procs: Procs) -> None:
    """A job that would fit beside a rerun after running out of memory (here LLVM's
    abort, on a host with room) waits for it to end: a second failure beside it
    would fail the build as "out of memory even alone"."""
    rustc = _fake(tmp_path)
    log, marker = tmp_path / "order.log", tmp_path / "heavy"
    env = _env(tmp_path, FAKE_LOG=str(log), FAKE_MB="10", FAKE_RERUN_MB="10")
    heavy = procs.start(
        ltoguard_cmd(rustc, "heavy"),
        dict(env, FAKE_MARKER=str(marker), FAKE_LLVM_OOM="1", FAKE_HOLD_S="4"),
    )
    assert wait_for(lambda: _read(marker) == "xx", timeout=60)  # the rerun runs
    small = procs.start(ltoguard_cmd(rustc, "small"), dict(env, FAKE_MARKER=str(tmp_path / "s")))
    _, err_s = small.communicate(timeout=120)
    _, err_h = heavy.communicate(timeout=120)
    assert heavy.returncode == 0, err_h.decode()
    assert "running it again, alone" in err_h.decode()
    assert small.returncode == 0, err_s.decode()
    assert _read(log).splitlines() == [
        "heavy start",
        "heavy start",
        "heavy end",
        "s start",
        "s end",
    ], err_s.decode()


@needs_cgroup
def test_out_of_memory_even_alone_fails_with_real_status(tmp_path: Path, procs: Procs) -> None:
    rustc = _fake(tmp_path)
    with MemoryCgroup(300 * MiB) as cg:
        env = _env(tmp_path, FAKE_MARKER=str(tmp_path / "m"), FAKE_MB="600", FAKE_RERUN_MB="600")
        p = procs.start(cg.enter_command() + ltoguard_cmd(rustc, "hopeless"), env)
        _, err = p.communicate(timeout=120)
        kills = cg.oom_kills()
    text = err.decode()
    assert p.returncode == -9, text
    assert kills == 2
    assert "ran out of memory even when it ran alone" in text
    assert not (tmp_path / "done.log").exists()


@needs_cgroup
def test_youngest_job_pauses_then_stops_itself_before_the_kernel_kills_anything(
    tmp_path: Path, procs: Procs
) -> None:
    """The younger of two guarded jobs outgrows its learned estimate. The older is
    still expected to grow (learned at more than it holds), so the younger pauses
    once free memory no longer covers that growth plus the floor: about 70 MiB
    before the critical floor, which the younger (2 MiB every 0.05 s) takes 1.8 s to
    cross, so a check delayed on a busy machine still pauses it. Then an ordinary
    compile grows until free memory is critical and holds there; the paused younger
    stops itself (its memory freed) and reruns once the older ends. The kernel kills
    nothing. (Pausing on a fast fall near the floor: test_admission, test_simulate.)"""
    rustc = _fake(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    # Learned under another toolchain, so estimated at 1.5 x: the older at 405 MiB
    # (it holds ~335), the younger (wrongly) at 75 MiB; both start together.
    history = History()
    cwd = str(tmp_path)
    for crate, learned in (("older", 270), ("younger", 50)):
        history.record(
            job_key(crate, cwd, "3", "fat", "", "", ["bin"]),
            group_key(cwd, "3", "fat", "", ""),
            learned * MiB,
        )
    history.save(str(state / f"memory-history-{os.geteuid()}.json"))
    ready = tmp_path / "hog-ready"
    with MemoryCgroup(700 * MiB) as cg:
        base = _env(tmp_path, FAKE_RERUN_MB="30")
        older = procs.start(
            cg.enter_command() + ltoguard_cmd(rustc, "older"),
            dict(base, FAKE_MARKER=str(tmp_path / "a"), FAKE_MB="330", FAKE_HOLD_S="20"),
            cwd=cwd,
        )
        assert wait_for(lambda: "first" in _read(tmp_path / "done.log"), timeout=60)
        younger = procs.start(
            cg.enter_command() + ltoguard_cmd(rustc, "younger"),
            dict(
                base,
                FAKE_MARKER=str(tmp_path / "b"),
                FAKE_MB="500",
                FAKE_CHUNK_MB="2",
                FAKE_STEP_S="0.05",
            ),
            cwd=cwd,
        )
        assert wait_for(lambda: _paused(state), timeout=60), "the younger never paused"
        hog = procs.start(
            cg.enter_command() + [sys.executable, "-c", SMALL_HOG, "12", str(ready), "3"],
            clean_env(tmp_path, state),
        )
        _, err_y = younger.communicate(timeout=120)
        _, err_o = older.communicate(timeout=120)
        hog.communicate(timeout=60)
        kills = cg.oom_kills()
    text = err_y.decode()
    assert older.returncode == 0, err_o.decode()
    assert younger.returncode == 0, text
    assert hog.returncode == 0 and ready.exists()
    assert kills == 0, "the kernel OOM killer acted"
    assert "paused crate younger" in text and "stopped this compile" in text, text
    assert text.count('"unused variable"') == 1
    assert _read(tmp_path / "done.log").split() == ["first", "rerun"]


def _paused(state: Path) -> bool:
    for path in state.glob("run-*.json"):
        try:
            if json.loads(path.read_text()).get("paused") is True:
                return True
        except (OSError, ValueError):
            pass
    return False


SMALL_HOG = textwrap.dedent(
    """\
    # An ordinary compile: grows 1 MiB every 0.05 s until the memory ltoguard sees as
    # free is under argv 1 MiB (critical: the paused job stops) or it holds 200 MiB,
    # then holds for argv 3 seconds.
    import sys, time
    from ltoguard.memory import available_memory
    hold = []
    while available_memory().available > int(sys.argv[1]) << 20 and len(hold) < 200:
        chunk = bytearray(1 << 20)
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
        hold.append(chunk)
        time.sleep(0.05)
    open(sys.argv[2], "w").write("ready")
    time.sleep(float(sys.argv[3]))
    """
)


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


HOG = textwrap.dedent(
    """\
    # An ordinary compile (not guarded, oom_score_adj 0): takes MB at once, then holds.
    import os, sys, time
    hold = [bytearray(10 << 20) for _ in range(int(sys.argv[1]) // 10)]
    for chunk in hold:
        for i in range(0, len(chunk), 4096):
            chunk[i] = 1
    open(sys.argv[2], "w").write("ready")
    time.sleep(float(sys.argv[3]))
    """
)


@needs_cgroup
def test_the_kernel_kills_a_young_guarded_job_not_the_larger_ordinary_compile_beside_it(
    tmp_path: Path, procs: Procs
) -> None:
    """In a sweep build under 375 MiB the kernel killed `clap` (217 MiB, an ordinary
    compile) beside a guarded job in its first second, and the build failed: the
    guarded job's raised oom_score_adj must outweigh the gap between them, so the
    kernel picks it (rerun alone) and the ordinary compile lives."""
    rustc = _fake(tmp_path)
    ready = tmp_path / "hog-ready"
    with MemoryCgroup(300 * MiB) as cg:
        hog = procs.start(
            cg.enter_command() + [sys.executable, "-c", HOG, "190", str(ready), "8"],
            clean_env(tmp_path, tmp_path / "state"),
        )
        assert wait_for(ready.exists, timeout=60)
        env = _env(
            tmp_path, FAKE_MARKER=str(tmp_path / "m"), FAKE_MB="200", FAKE_RERUN_MB="20",
            FAKE_STEP_S="0.05",
        )  # fmt: skip
        p = procs.start(cg.enter_command() + ltoguard_cmd(rustc, "young"), env)
        _, err = p.communicate(timeout=120)
        hog.communicate(timeout=60)
        kills = cg.oom_kills()
    text = err.decode()
    assert hog.returncode == 0, f"the ordinary compile was killed ({hog.returncode}): {text}"
    assert p.returncode == 0, text
    assert kills == 1 and "running it again, alone" in text
    assert (tmp_path / "done.log").read_text().split() == ["rerun"]
