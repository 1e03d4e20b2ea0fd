"""End to end with real cargo and rustc.

A generated workspace (3 fat-LTO binaries over 4 libraries, path dependencies
only) is built with `cargo build --release -j2` through ltoguard as
RUSTC_WORKSPACE_WRAPPER with LTOGUARD_SLOTS=1. RUSTC points at a logging shim
that runs the real rustc as its child and records when each compile ran and
whether ltoguard held a slot for it (its parent is then the ltoguard process:
a passed-through call exec()s, so the shim's parent is cargo). From those
timestamps: guarded compiles never overlapped, ordinary ones did.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import HAVE_CARGO, cargo_env
from tests.procs import Procs, clean_env

pytestmark = [pytest.mark.cargo, pytest.mark.timeout(600)]

BINS = 3
LIBS = 4
LTOGUARD = Path(sys.executable).parent / "ltoguard"

# Runs the real rustc as a child (fork+exec keeps every fd: cargo's jobserver
# reaches rustc) and appends one JSON line per call. Only stderr is ours to use.
SHIM = r"""
import json, os, sys, time
args = sys.argv[1:]
real = os.environ["E2E_REAL_RUSTC"]
crate = None
for i, a in enumerate(args[:-1]):
    if a == "--crate-name":
        crate = args[i + 1]
try:
    with open("/proc/%d/cmdline" % os.getppid(), "rb") as f:
        parent = f.read().replace(b"\0", b" ").decode(errors="replace")
except OSError:
    parent = ""
guarded = "ltoguard" in parent
start = time.time()
pid = os.fork()
if pid == 0:
    try:
        os.execv(real, [real, *args])
    finally:
        os._exit(127)
_, status = os.waitpid(pid, 0)
end = time.time()
rec = {"crate": crate, "start": start, "end": end, "guarded": guarded,
       "print": any(a.startswith("--print") for a in args), "status": status}
fd = os.open(os.environ["E2E_RUSTC_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (json.dumps(rec) + "\n").encode())
os.close(fd)
code = os.waitstatus_to_exitcode(status)
if code < 0:
    os.kill(os.getpid(), -code)
sys.exit(code)
"""


def real_rustc() -> str:
    """The toolchain's rustc itself, not rustup's proxy (one process per compile)."""
    sysroot = subprocess.run(
        ["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True
    ).stdout.strip()
    path = Path(sysroot) / "bin" / "rustc"
    assert path.exists(), path
    return str(path)


def overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(a["start"] < b["end"] and b["start"] < a["end"])


def shimmed(tmp: Path, **extra: str) -> tuple[dict[str, str], Path]:
    """cargo's environment for a build through ltoguard with the logging shim as
    RUSTC (state in tmp/state, target in tmp/target, ``extra`` on top), and the
    shim's log."""
    shim = tmp / "rustc-shim"
    shim.write_text(f"#!{sys.executable}\n{SHIM}")
    shim.chmod(0o755)
    log = tmp / "rustc.jsonl"
    env = cargo_env(tmp / "target", clean_env(tmp, tmp / "state", **extra))
    env.update(
        RUSTC=str(shim),
        RUSTC_WORKSPACE_WRAPPER=str(LTOGUARD),
        E2E_REAL_RUSTC=real_rustc(),
        E2E_RUSTC_LOG=str(log),
    )
    return env, log


@dataclass
class Build:
    """The guarded cargo build every test here inspects."""

    rc: int
    stderr: str
    calls: list[dict[str, Any]]  # the shim's log, one record per rustc call
    target: Path
    state: Path


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory, gen_workspace: ModuleType) -> Build:
    if not HAVE_CARGO:
        pytest.skip("cargo/rustc not on PATH")
    assert LTOGUARD.exists(), f"ltoguard console script not installed at {LTOGUARD}"
    tmp = tmp_path_factory.mktemp("e2e-cargo")
    root = tmp / "ws"
    gen_workspace.generate(root, bins=BINS, libs=LIBS, size="small", lto="fat")
    state, target = tmp / "state", tmp / "target"
    env, log = shimmed(tmp, LTOGUARD_SLOTS="1")
    with Procs() as procs:
        proc = procs.start(
            ["cargo", "build", "--release", "-j2"],
            env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        _, err = proc.communicate(timeout=540)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return Build(rc=proc.returncode, stderr=err, calls=calls, target=target, state=state)


def test_build_succeeds_and_bins_run(build: Build) -> None:
    # Also proves cargo's `--print` probe and `-vV` went through untouched: cargo
    # stops at once if their stdout differs by a byte.
    assert build.rc == 0, build.stderr[-3000:]
    assert any(c["print"] for c in build.calls), "cargo's --print probe not seen"
    for i in range(BINS):
        name = f"app{i:02d}"
        run = subprocess.run(
            [str(build.target / "release" / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith(f"{name} checksum "), run.stdout


def test_only_bins_guarded_and_never_overlapping(build: Build) -> None:
    assert build.rc == 0, build.stderr[-3000:]
    bins = {f"app{i:02d}" for i in range(BINS)}
    guarded = [c for c in build.calls if c["guarded"]]
    assert sorted(c["crate"] for c in guarded) == sorted(bins)
    # Every bin compile was guarded (a bin compiled twice would show here too).
    assert all(c["guarded"] for c in build.calls if c["crate"] in bins)
    for i, a in enumerate(guarded):
        for b in guarded[i + 1 :]:
            assert not overlaps(a, b), f"{a['crate']} and {b['crate']} ran at once"


def test_ordinary_compiles_kept_parallel(build: Build) -> None:
    assert build.rc == 0, build.stderr[-3000:]
    libs = [c for c in build.calls if (c["crate"] or "").startswith("lib") and not c["guarded"]]
    assert len(libs) == LIBS, libs
    pairs = [
        (a["crate"], b["crate"])
        for i, a in enumerate(libs)
        for b in libs[i + 1 :]
        if overlaps(a, b)
    ]
    assert pairs, "no two library compiles ran at once: pass-through lost cargo's parallelism"


def test_event_log_lists_exactly_the_bins(build: Build) -> None:
    assert build.rc == 0, build.stderr[-3000:]
    uid = os.geteuid()
    path = build.state / f"events-{uid}.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert sorted(e["crate"] for e in events) == [f"app{i:02d}" for i in range(BINS)]
    assert all(e["outcome"] == "ok" and e["exit"] == 0 for e in events), events
    # With one slot, the second and third bins waited for the first.
    assert sum(1 for e in events if e["waited"] > 0.5) >= 1


def test_each_bin_is_estimated_from_what_it_links_before_anything_is_learned(
    build: Build,
) -> None:
    """Issue #11 item 1: the cold estimate reads the rlib closure (the libs it names
    and the ones they were built against) from the real rustc command line."""
    assert build.rc == 0, build.stderr[-3000:]
    path = build.state / f"events-{os.geteuid()}.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rlibs = sorted((build.target / "release" / "deps").glob("liblib*.rlib"))
    assert len(rlibs) == LIBS
    for e in events:
        # every generated bin links lib00 and the other libs, directly or not
        assert e["inputs"]["crates"] == LIBS, e
        assert e["inputs"]["deps"] == sum(p.stat().st_size for p in rlibs), e
        assert e["inputs"]["source"] > 0
        assert e["estimate_basis"] in ("inputs", "siblings, scaled by inputs"), e
    assert "inputs" in {e["estimate_basis"] for e in events}


def test_with_line_tables_the_first_estimate_weighs_the_linked_bitcode_once(
    tmp_path: Path, gen_workspace: ModuleType, procs: Procs
) -> None:
    """The rlibs a bin links are built with the profile's line tables, which their
    bitcode carries: the first estimate weighs those bytes once (inputs.predict), not
    doubled as the line the siblings' misses scale (inputs.line); the bin admitted after
    one finished is that line, scaled."""
    if not HAVE_CARGO:
        pytest.skip("cargo/rustc not on PATH")
    from ltoguard import inputs
    from ltoguard.estimates import HISTORY_HEADROOM

    root = tmp_path / "ws"
    gen_workspace.generate(root, bins=2, libs=2, size="small", lto="fat", debug="line-tables-only")
    env, _ = shimmed(tmp_path, LTOGUARD_SLOTS="1")
    proc = procs.start(
        ["cargo", "build", "--release", "-j2"], env, cwd=root, stdin=subprocess.DEVNULL, text=True
    )
    _, err = proc.communicate(timeout=540)
    assert proc.returncode == 0, err[-3000:]
    path = tmp_path / "state" / f"events-{os.geteuid()}.jsonl"
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    first, second = sorted(events, key=lambda e: e["admitted"])
    debug = first["profile"]["debug"]
    assert debug == "line-tables-only", first["profile"]
    assert first["estimate_basis"] == "inputs", first
    assert first["estimate"] == inputs.predict(first["inputs"], debuginfo=debug)
    assert first["estimate"] < inputs.line(first["inputs"], debuginfo=debug)
    assert second["estimate_basis"] == "siblings, scaled by inputs", second
    # The history keeps the event's peak and inputs: the figure is exact, and the two
    # bins' own sources differ, so scaling by the first line would give another one.
    for f in (inputs.line, inputs.predict):
        ratio = first["peak"] / max(1, f(first["inputs"], debuginfo=debug))
        scaled = int(f(second["inputs"], debuginfo=debug) * ratio * HISTORY_HEADROOM)
        assert (second["estimate"] == scaled) is (f is inputs.line), (f, scaled, second)


def test_no_more_lto_jobs_run_than_cpus(
    tmp_path: Path, gen_workspace: ModuleType, procs: Procs
) -> None:
    """No slot cap, memory to spare, `cargo build -j2` on one CPU: the two bins' LTO
    compiles run one after the other, and the second says why it waited (one more
    compile would take no CPU of its own, only slow the one running)."""
    if not HAVE_CARGO:
        pytest.skip("cargo/rustc not on PATH")
    assert LTOGUARD.exists(), f"ltoguard console script not installed at {LTOGUARD}"
    root = tmp_path / "ws"
    gen_workspace.generate(root, bins=2, libs=1, size="small", lto="fat")
    env, log = shimmed(tmp_path, LTOGUARD_SLOTS="auto")
    cpus = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, sorted(cpus)[:1])  # cargo and ltoguard inherit it
        proc = procs.start(
            ["cargo", "build", "--release", "-j2"],
            env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    finally:
        os.sched_setaffinity(0, cpus)
    _, err = proc.communicate(timeout=540)
    assert proc.returncode == 0, err[-3000:]
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    guarded = [c for c in calls if c["guarded"]]
    assert sorted(c["crate"] for c in guarded) == ["app00", "app01"]
    assert not overlaps(*guarded), "two LTO compiles ran at once on one CPU"
    assert "1 job running on 1 CPU: one more would only slow them" in err, err[-3000:]


def most_waiting_at_once(state: Path) -> int:
    """The most guarded jobs that waited for a slot at once, from the event log's
    attempts ([queued, admitted, ...] each)."""
    from ltoguard import events

    fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        log = events.read_events(fd)
    finally:
        os.close(fd)
    spans = [a[:2] for e in log for a in e.get("attempts", []) if len(a) >= 2]
    marks = sorted([(q, 1) for q, _ in spans] + [(s, -1) for _, s in spans])
    most = now = 0
    for _, step in marks:
        now += step
        most = max(most, now)
    return most


def reclaimers_seen(proc: subprocess.Popen[str], state: Path, timeout: float) -> set[int]:
    """Wait for ``proc`` (its stderr a file), looking every 50 ms for processes that
    run ltoguard's small reclaimer (reclaimer.py) for the state directory ``state``."""
    import time

    from ltoguard.reclaimer import _RECLAIMER

    marker = _RECLAIMER.encode()[:40]
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        assert time.monotonic() < deadline, "cargo build took too long"
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                if marker in cmdline and os.fsencode(state) in cmdline:  # its lent- file
                    seen.add(int(pid))
            except OSError:
                pass
        time.sleep(0.05)
    return seen


def test_once_cargo_runs_only_guarded_jobs_no_token_is_lent_for_another_waiter(
    tmp_path: Path, gen_workspace: ModuleType, procs: Procs
) -> None:
    """Six bins, one slot, -j2: the first waiter lends its token (cargo might have
    ordinary crates to start on it) and cargo spends it on another bin. That one
    keeps its token: cargo had nothing else to start, and a token lent would only
    start a third waiting ltoguard process, holding memory (before, up to the
    bound of lent tokens: three waiters). The job that lent, its compile done, owes
    cargo a token that cargo keeps for its next bin: it waits for it in a bare
    interpreter, not in a whole ltoguard process."""
    if not HAVE_CARGO:
        pytest.skip("cargo/rustc not on PATH")
    root = tmp_path / "ws"
    gen_workspace.generate(root, bins=6, libs=1, size="small", lto="fat")
    env, log = shimmed(tmp_path, LTOGUARD_SLOTS="1")
    with open(tmp_path / "stderr", "w+") as err:
        proc = procs.start(
            ["cargo", "build", "--release", "-j2"],
            env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        reclaimers = reclaimers_seen(proc, tmp_path / "state", timeout=540)
        err.seek(0)
        assert proc.returncode == 0, err.read()[-3000:]
    guarded = [c for c in json.loads(f"[{','.join(log.read_text().splitlines())}]") if c["guarded"]]
    assert len(guarded) == 6
    assert most_waiting_at_once(tmp_path / "state") == 2
    assert reclaimers, "no job waited for its token in the small reclaimer"
    assert list((tmp_path / "state").glob("lent-*")) == []
