"""Queued guarded jobs lend their jobserver token back, and take one back in the
background once they run (balanced before they exit).

The jobserver here is one the test owns (a fifo or a pipe holding a known number of
tokens), so the tokens in it can be counted at any moment: while jobs queue the pool
grows by one per lending waiter; at the end it is back where it started.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ltoguard import records
from ltoguard.admission import Lend, lending, lending_paused
from ltoguard.jobs import cargo_build_id
from ltoguard.lending import (
    LendWhilePaused,
    LendWhileWaiting,
    LentTokens,
    _job_pid,
    a_sibling_waiter_holds_a_token,
    cargo_children,
    lend_depth,
    only_guarded_jobs,
)
from tests.procs import (
    Procs,
    clean_env,
    ltoguard_cmd,
    make_fake_rustc,
    read_log,
    starts,
    tickets,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


class Pool:
    """A fifo jobserver: count tokens by draining without blocking and putting them back."""

    def __init__(self, path: Path, tokens: int) -> None:
        os.mkfifo(path)
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        if tokens:
            os.write(self.fd, b"+" * tokens)

    def count(self) -> int:
        got = b""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    break
                raise
            if not chunk:
                break
            got += chunk
        if got:
            os.write(self.fd, got)
        return len(got)

    def close(self) -> None:
        os.close(self.fd)

    def env(self, tmp: Path, **extra: str) -> dict[str, str]:
        """The environment of a job under `cargo -j4` whose jobserver is this fifo."""
        return _env(tmp, f"-j4 --jobserver-auth=fifo:{self.path}", **extra)


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    """An empty fifo jobserver in tmp_path."""
    p = Pool(tmp_path / "fifo", 0)
    try:
        yield p
    finally:
        p.close()


def _env(tmp: Path, makeflags: str, **extra: str) -> dict[str, str]:
    return clean_env(tmp, tmp / "state", MAKEFLAGS=makeflags, **extra)


def test_waiters_lend_and_reclaim_balanced(tmp_path: Path, procs: Procs, pool: Pool) -> None:
    rustc = make_fake_rustc(tmp_path)
    env = pool.env(tmp_path)
    holder = procs.holder(rustc, env)
    waiters = []
    depth = lend_depth()
    for i in range(depth + 1):
        waiters.append(procs.start(ltoguard_cmd(rustc, f"w{i}"), env))
        assert wait_for(lambda n=i + 1: len(tickets(tmp_path / "state")) == n)
    # The first `depth` waiters lend their token, the head (w0) included (issue
    # #11); the holder, admitted at once, lent nothing; the last keeps its token
    # (a lent one would only let cargo start yet another waiting binary).
    assert wait_for(lambda: pool.count() == depth, timeout=10), pool.count()
    time.sleep(1.0)
    assert pool.count() == depth
    holder.release()
    for p in [holder.proc, *waiters]:
        assert p.wait(timeout=60) == 0
    assert pool.count() == 0


def test_interrupted_lender_gives_its_token_back(tmp_path: Path, procs: Procs, pool: Pool) -> None:
    rustc = make_fake_rustc(tmp_path)
    env = pool.env(tmp_path)
    holder = procs.holder(rustc, env)
    head = procs.start(ltoguard_cmd(rustc, "head"), env)
    assert wait_for(lambda: len(tickets(tmp_path / "state")) == 1)
    assert wait_for(lambda: pool.count() == 1, timeout=10)  # the head lends too
    lender = procs.start(ltoguard_cmd(rustc, "lender"), env)
    assert wait_for(lambda: pool.count() == 2, timeout=10)
    os.kill(lender.pid, signal.SIGTERM)
    assert lender.wait(timeout=10) == -signal.SIGTERM
    assert pool.count() == 1  # it took one back before it died
    holder.release()
    assert holder.wait(timeout=30) == 0 and head.wait(timeout=30) == 0
    assert pool.count() == 0


@pytest.mark.slow
def test_anonymous_pipe_jobserver_reaches_rustc_and_balances(tmp_path: Path, procs: Procs) -> None:
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        rustc = make_fake_rustc(tmp_path)
        env = _env(tmp_path, "")
        del env["MAKEFLAGS"]
        env["CARGO_MAKEFLAGS"] = f"-j --jobserver-fds={r},{w} --jobserver-auth={r},{w}"
        env["FAKE_CHECK_FDS"] = f"{r},{w}"
        holder = procs.holder(rustc, env, pass_fds=(r, w))
        ps = [holder.proc]
        depth = lend_depth()
        for i in range(depth):
            ps.append(procs.start(ltoguard_cmd(rustc, f"w{i}"), env, pass_fds=(r, w)))
            assert wait_for(lambda n=i + 1: len(tickets(tmp_path / "state")) == n)

        def tokens() -> int:
            got = b""
            while True:
                try:
                    chunk = os.read(r, 64)
                except BlockingIOError:
                    break
                got += chunk
            if got:
                os.write(w, got)
            return len(got)

        assert wait_for(lambda: tokens() == depth, timeout=10)  # every waiter lends
        holder.release()
        assert [p.wait(timeout=60) for p in ps] == [0] * (depth + 1)
        assert tokens() == 0
    finally:
        os.close(r)
        os.close(w)
    fds = {e["what"] for e in read_log(tmp_path / "log.jsonl") if e["what"].startswith("fds")}
    assert fds == {f"fds {r},{w}"}  # every rustc saw the jobserver


@pytest.mark.slow
def test_lending_can_be_switched_off(tmp_path: Path, procs: Procs, pool: Pool) -> None:
    rustc = make_fake_rustc(tmp_path)
    env = pool.env(tmp_path, LTOGUARD_LEND="0")
    holder = procs.holder(rustc, env)
    ws = [procs.start(ltoguard_cmd(rustc, f"w{i}"), env) for i in range(2)]
    assert wait_for(lambda: len(tickets(tmp_path / "state")) == 2)
    time.sleep(0.5)
    assert pool.count() == 0
    holder.release()
    assert [p.wait(timeout=60) for p in [holder.proc, *ws]] == [0, 0, 0]


def test_inner_wrapper_runs_both_paths(tmp_path: Path) -> None:
    """LTOGUARD_WRAP=sccache: `sccache /abs/rustc ARGS` for passed and guarded invocations."""
    rustc = make_fake_rustc(tmp_path)
    inner = tmp_path / "sccache"
    log = tmp_path / "inner.log"
    inner.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    inner.chmod(0o755)
    env = _env(tmp_path, "")
    env["LTOGUARD_WRAP"] = str(inner)
    lib = ["--crate-type", "lib", "--emit=dep-info,metadata,link"]
    for extra in (lib, None):
        r = subprocess.run(ltoguard_cmd(rustc, "c", extra), env=env)
        assert r.returncode == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c[0] for c in calls] == [str(rustc), str(rustc)]
    assert "lib" in calls[0] and "lto=fat" in calls[1]
    assert len(starts(tmp_path)) == 2


def test_no_jobserver_is_fine(tmp_path: Path) -> None:
    rustc = make_fake_rustc(tmp_path)
    env = _env(tmp_path, "-j4 --jobserver-auth=99,98")  # fds that are not open: ignored
    r = subprocess.run(ltoguard_cmd(rustc, "c"), env=env, capture_output=True)
    assert r.returncode == 0 and r.stderr == b""


def test_an_admitted_head_takes_its_token_back_before_it_exits(
    tmp_path: Path, procs: Procs, pool: Pool
) -> None:
    """A job admitted at once lends nothing. The head of the queue lends while it
    waits and is admitted without a token in hand; it takes one back while its
    compile runs, and if cargo keeps every token meanwhile, it waits for one after
    the compile, holding no slot, and leaves the pool balanced."""
    rustc = make_fake_rustc(tmp_path)
    env = pool.env(tmp_path)
    holder = procs.holder(rustc, env)
    assert pool.count() == 0  # admitted at once: nothing lent
    head = procs.start(ltoguard_cmd(rustc, "head"), dict(env, FAKE_SLEEP="0.5"))
    # Take the token the head lends the moment it appears, as a busy cargo would.
    stolen = b""
    deadline = time.monotonic() + 10
    while not stolen:
        assert time.monotonic() < deadline, "the waiting head lent nothing"
        try:
            stolen = os.read(pool.fd, 1)
        except BlockingIOError:
            time.sleep(0.005)
    holder.release()
    assert holder.wait(timeout=30) == 0
    log = tmp_path / "log.jsonl"
    # The head's compile ran and ended.
    assert wait_for(lambda: sum(e["what"] == "end" for e in read_log(log)) == 2)
    time.sleep(0.5)
    assert head.poll() is None  # done compiling, still waiting for its token
    assert list((tmp_path / "state").glob("run-*.json")) == []  # its slot is free
    os.write(pool.fd, stolen)  # cargo finishes a job: a token comes back
    assert head.wait(timeout=10) == 0
    assert pool.count() == 0


def _rss_anon_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))


@pytest.mark.parametrize("code", [0, 3])
def test_a_job_done_waits_for_its_token_in_a_bare_interpreter(
    tmp_path: Path, procs: Procs, pool: Pool, code: int
) -> None:
    """Its compile done, a job that lent waits for a token in a bare interpreter
    exec()ed in its place (the same pid, which cargo waits for): cargo often keeps
    every freed token for its next unit until it runs out, and a waiting ltoguard
    holds several MiB. It exits with the compile's status, the pool balanced and
    its lent- file gone."""
    rustc = make_fake_rustc(tmp_path)
    env = pool.env(tmp_path)
    holder = procs.holder(rustc, env)
    head = procs.start(ltoguard_cmd(rustc, "head"), dict(env, FAKE_EXIT=str(code)))
    stolen = _take_lent_token(pool)
    waiting = _rss_anon_kib(head.pid)
    holder.release()
    assert holder.wait(timeout=30) == 0
    log = tmp_path / "log.jsonl"
    assert wait_for(lambda: sum(e["what"] == "end" for e in read_log(log)) == 2)
    assert wait_for(lambda: b"-S" in Path(f"/proc/{head.pid}/cmdline").read_bytes().split(b"\0"))
    assert head.poll() is None  # still waiting for its token
    assert list((tmp_path / "state").glob(f"lent-*-{head.pid}")) != []  # counted as out
    assert _rss_anon_kib(head.pid) < waiting - 2048  # it holds less than a waiter
    os.write(pool.fd, stolen)
    assert head.wait(timeout=10) == code
    assert pool.count() == 0
    assert list((tmp_path / "state").glob("lent-*")) == []


class _FakeLease:
    def __init__(self) -> None:
        self.lent = False
        self.lends = 0

    def lend(self) -> bool:
        self.lent, self.lends = True, self.lends + 1
        return True


@pytest.mark.parametrize(
    ("calls", "lends"),
    [
        ([0], 0),  # admitted at once: its first attempt is made with the token
        ([0, 0], 1),  # told "no" once: it lends at the next look
        ([1], 1),  # one ahead: within the depth
        ([2], 0),  # too deep: keeps its token
        ([3, 2, 1], 1),  # moving up: lends once near enough, and only once
        ([2, 0, 0], 1),  # reaching the head
    ],
)
def test_only_waiters_near_the_head_lend(calls: list[int], lends: int) -> None:
    lease = _FakeLease()
    gate = LendWhileWaiting(lease, LentTokens(None), depth=2)  # type: ignore[arg-type]
    decisions = [gate(ahead) for ahead in calls]
    assert lease.lends == lends == decisions.count(Lend.LEND)


def test_no_more_tokens_go_out_than_the_depth_over_the_state_dir(tmp_path: Path) -> None:
    """Issue #11: unbounded lending put every bin of a 50-bin workspace in flight."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        mine, other = LentTokens(fd), LentTokens(fd, pid=os.getppid())
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        LentTokens(fd, pid=dead.pid).mark(True)  # a process gone counts no more
        (tmp_path / "lent-notapid").touch()
        # a name that says another uid than the file's owner is planted: not counted
        other_uid = os.geteuid() + 1
        (tmp_path / f"lent-{other_uid}-{os.getppid()}").touch()
        assert mine.count() == 0
        assert not (tmp_path / f"lent-{os.geteuid()}-{dead.pid}").exists()  # ours, stale
        other.mark(True)
        assert mine.count() == 1
        LentTokens(fd, pid=1).mark(True)
        assert mine.count() == 2
        lease = _FakeLease()
        gate = LendWhileWaiting(lease, mine, depth=2)  # type: ignore[arg-type]
        gate(1)
        assert lease.lends == 0  # two tokens are out already: the depth
        other.mark(False)
        other.mark(False)  # twice is harmless
        gate(1)
        assert lease.lends == 1
    finally:
        os.close(fd)


def test_a_pause_lends_under_the_same_bound_over_the_state_dir(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        tokens = LentTokens(fd)
        LentTokens(fd, pid=os.getppid()).mark(True)
        LentTokens(fd, pid=1).mark(True)
        lease = _FakeLease()
        gate = LendWhilePaused(lease, tokens, depth=2)  # type: ignore[arg-type]
        assert gate() is Lend.TOKENS_OUT and lease.lends == 0
        LentTokens(fd, pid=1).mark(False)
        assert gate() is Lend.LEND and lease.lends == 1
        assert gate() is Lend.LENT and lease.lends == 1  # never twice
    finally:
        os.close(fd)


def _take_lent_token(pool: Pool) -> bytes:
    """Read the next token a waiter lends, the moment it appears, as a busy cargo
    spends it on its next unit."""
    deadline = time.monotonic() + 10
    while True:
        try:
            got = os.read(pool.fd, 1)
        except BlockingIOError:
            got = b""
        if got:
            return got
        assert time.monotonic() < deadline, "no waiter lent its token"
        time.sleep(0.005)


def _heavy_after_its_oom(tmp_path: Path, procs: Procs, pool: Pool, **extra: str) -> Any:
    """A guarded job, "heavy", that queued behind a holder and lent its token, which
    cargo (the test) spent at once; then admitted, it ran out of memory (LLVM's
    abort), and its rerun alone is admitted. Returns (heavy, the token taken, its
    log lines so far as a callable)."""
    rustc = make_fake_rustc(tmp_path)
    env = pool.env(tmp_path)
    holder = procs.holder(rustc, env)
    heavy = procs.start(
        ltoguard_cmd(rustc, "heavy"),
        dict(env, FAKE_NAME="heavy", FAKE_LLVM_OOM_ONCE=str(tmp_path / "oom"), **extra),
    )
    taken = _take_lent_token(pool)
    holder.release()
    assert holder.wait(timeout=30) == 0

    def heavys() -> list[str]:
        return [e["what"] for e in read_log(tmp_path / "log.jsonl") if e["name"] == "heavy"]

    assert wait_for(lambda: heavys() == ["start", "llvm oom"], timeout=30)
    return heavy, taken, heavys


def test_a_rerun_alone_takes_its_token_back_before_it_starts(
    tmp_path: Path, procs: Procs, pool: Pool
) -> None:
    """No compile runs beside a rerun alone on the token it lent: it waits for one."""
    heavy, taken, heavys = _heavy_after_its_oom(tmp_path, procs, pool)
    time.sleep(1.0)
    assert heavys() == ["start", "llvm oom"]  # waiting for its token
    os.write(pool.fd, taken)  # a compile of cargo's ends: its token comes back
    assert wait_for(lambda: heavys()[2:3] == ["start"], timeout=10)
    assert pool.count() == 0  # the rerun took it
    _, err = heavy.communicate(timeout=30)
    assert heavy.returncode == 0 and b"running it again, alone" in err, err.decode()
    assert pool.count() == 0


def test_a_rerun_alone_runs_on_a_jobserver_of_its_own_with_no_spare_token(
    tmp_path: Path, procs: Procs, pool: Pool
) -> None:
    """rustc runs one LLVM worker per spare token it takes, each holding a module in
    memory: the rerun after an OOM kill gets none of cargo's spare tokens (a jobserver
    of its own, empty), and cargo's stay in cargo's pool. An ordinary guarded job
    still sees cargo's jobserver."""
    heavy, taken, heavys = _heavy_after_its_oom(tmp_path, procs, pool, FAKE_JOBSERVER="1")
    os.write(pool.fd, taken + b"++")  # its token back, and two of cargo's spare ones
    _, err = heavy.communicate(timeout=30)
    assert heavy.returncode == 0 and b"alone, on one codegen thread" in err, err.decode()
    seen = heavys()[3]
    assert seen.startswith("jobserver ") and seen.endswith(" tokens 0"), heavys()
    assert "fifo:" not in seen  # not cargo's
    assert pool.count() == 2
    cfg = tmp_path / "xdg-config" / "ltoguard"
    cfg.mkdir(parents=True)
    cfg.joinpath("config.toml").write_text('[crates.plain]\nmemory = "40M"\n')  # far from any bound
    env = pool.env(tmp_path, FAKE_NAME="plain", FAKE_JOBSERVER="1")
    plain = procs.start(ltoguard_cmd(make_fake_rustc(tmp_path), "plain"), env)
    assert plain.wait(timeout=30) == 0
    plains = [e["what"] for e in read_log(tmp_path / "log.jsonl") if e["name"] == "plain"]
    assert f"jobserver fifo:{pool.path} tokens 2" in plains, plains


def test_a_job_whose_estimate_fills_the_memory_runs_on_one_codegen_thread(
    tmp_path: Path, procs: Procs, pool: Pool
) -> None:
    """A job whose estimate, grown by what a spare token adds, fills the memory guarded
    jobs may use (a 150 MiB estimate, a 100 MiB budget; it starts as the first job):
    on a jobserver of its own with no token, saying so; one that fits sees cargo's."""
    rustc = make_fake_rustc(tmp_path)
    cfg = tmp_path / "xdg-config" / "ltoguard"
    cfg.mkdir(parents=True)
    cfg.joinpath("config.toml").write_text(
        '[crates.big]\nmemory = "150M"\n[crates.small]\nmemory = "40M"\n'
    )
    os.write(pool.fd, b"++")  # two of cargo's spare tokens
    seen = {}
    for name in ("big", "small"):
        env = pool.env(tmp_path, LTOGUARD_MEMORY="100M", FAKE_NAME=name, FAKE_JOBSERVER="1")
        p = procs.start(ltoguard_cmd(rustc, name), env)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
        said = [e["what"] for e in read_log(tmp_path / "log.jsonl") if e["name"] == name]
        seen[name] = (said[1], err.decode())
    assert seen["big"][0].endswith(" tokens 0") and "fifo:" not in seen["big"][0], seen
    line = "needs ~150 MiB, ~165 MiB with a spare codegen thread, of the 100 MiB guarded jobs"
    assert line + " may use: on one codegen thread" in seen["big"][1], seen
    assert seen["small"][0] == f"jobserver fifo:{pool.path} tokens 2", seen
    assert "codegen thread" not in seen["small"][1], seen
    assert pool.count() == 2
    log = tmp_path / "state" / f"events-{os.geteuid()}.jsonl"
    one_thread = {e["crate"]: e.get("one_thread") for e in map(json.loads, log.open())}
    assert one_thread == {"big": True, "small": None}  # a one-thread peak says so


def test_a_command_s_rerun_alone_keeps_cargo_s_jobserver(
    tmp_path: Path, procs: Procs, pool: Pool
) -> None:
    """One codegen thread is rustc's: a command under `ltoguard run` (a make, a linker)
    reruns after LLVM's out-of-memory abort on the jobserver it was given."""
    rustc = make_fake_rustc(tmp_path)
    os.write(pool.fd, b"++")
    env = pool.env(
        tmp_path, FAKE_NAME="cmd", FAKE_JOBSERVER="1", FAKE_LLVM_OOM_ONCE=str(tmp_path / "oom")
    )
    p = procs.start([sys.executable, "-m", "ltoguard", "run", "--", str(rustc)], env)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0 and b"running it again, alone" in err, err.decode()
    assert b"codegen thread" not in err, err.decode()
    said = [e["what"] for e in read_log(tmp_path / "log.jsonl") if e["name"] == "cmd"]
    assert said[:3] == ["start", "llvm oom", "start"], said
    assert said[3] == f"jobserver fifo:{pool.path} tokens 2", said
    assert pool.count() == 2


@pytest.mark.parametrize(
    ("estimate", "budget", "basis", "one_thread"),
    [
        (150, 100, "history", True),
        (91, 100, "siblings", True),
        (90, 100, "history", False),
        (50, 100, "history", False),
        (95, None, "history", False),
        (95, 0, "history", False),  # LTOGUARD_MEMORY=-SIZE took it all: nothing to say
        (150, 100, "default", False),  # nothing known: a guess
    ],
)
def test_one_codegen_thread_where_the_estimate_and_a_spare_token_fill_the_budget(
    tmp_path: Path, estimate: int, budget: int | None, basis: str, one_thread: bool
) -> None:
    """A spare token added ~9% to a multi-unit compile's peak: a job whose estimate
    +10% reaches what guarded jobs may use (MiB here) runs on one codegen thread."""
    from ltoguard.attempt import Attempt
    from ltoguard.jobs import Job, JobRecord
    from ltoguard.semaphore import Semaphore
    from ltoguard.statedir import open_state_dir

    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    job = Job(["true"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    record = JobRecord(job, estimate << 20, basis)
    record.budget = None if budget is None else budget << 20
    try:
        assert Attempt(record, Semaphore(path, dir_fd), None, None)._near_the_bound() is (
            one_thread
        )
    finally:
        os.close(dir_fd)


def test_one_codegen_thread_is_said_once_per_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job stopped and queued again runs on one thread again, without saying so a
    second time; the first attempt said it."""
    from ltoguard.attempt import Attempt
    from ltoguard.jobs import Job, JobRecord
    from ltoguard.semaphore import Semaphore
    from ltoguard.statedir import open_state_dir

    path, dir_fd = open_state_dir(str(tmp_path / "s"))
    job = Job(["true"], kind="rustc", name="w", what="crate w (bin)", key="k", group="g")
    record = JobRecord(job, 150 << 20, "history")
    record.budget = 100 << 20
    try:
        attempt = Attempt(record, Semaphore(path, dir_fd), None, None)
        assert attempt._near_the_bound()
        assert capsys.readouterr().err.count("on one codegen thread") == 1
        record.one_thread = True  # what _spawn notes when it runs it so
        assert attempt._near_the_bound()
        assert capsys.readouterr().err == ""
    finally:
        os.close(dir_fd)


def test_a_waiter_beside_a_rerun_alone_keeps_its_token_and_the_rerun_starts(
    tmp_path: Path, procs: Procs, pool: Pool
) -> None:
    """cargo spends a token on another LTO binary while the rerun waits for one. That
    waiter does not lend it (a compile on it would run beside the rerun), so it
    holds a token no compile runs on: the rerun starts then, not after
    RECLAIM_BEFORE_ALONE (30 s). The pool is balanced at the end."""
    heavy, taken, heavys = _heavy_after_its_oom(tmp_path, procs, pool, FAKE_SLEEP="2")
    time.sleep(0.5)
    assert heavys() == ["start", "llvm oom"]
    env = pool.env(tmp_path, FAKE_NAME="waiter")
    waiter = procs.start(ltoguard_cmd(make_fake_rustc(tmp_path), "waiter"), env)
    queued = time.monotonic()
    assert wait_for(lambda: heavys()[2:3] == ["start"], timeout=20)
    assert time.monotonic() - queued < 10, "the rerun waited for a token nobody gives back"
    lent_file = tmp_path / "state" / f"lent-{os.geteuid()}-{waiter.pid}"
    while heavys()[3:4] != ["end"]:
        assert not lent_file.exists(), "the waiter lent its token beside the rerun"
        assert waiter.poll() is None and pool.count() == 0
        time.sleep(0.05)
    os.write(pool.fd, taken)  # cargo's units end: the token heavy lent comes back
    _, err = heavy.communicate(timeout=30)
    assert heavy.returncode == 0, err.decode()
    assert waiter.wait(timeout=30) == 0  # after the rerun
    assert starts(tmp_path) == ["holder", "heavy", "heavy", "waiter"]
    assert pool.count() == 0


def test_a_rerun_alone_does_not_wait_for_a_token_no_compile_can_give_back(
    tmp_path: Path, procs: Procs, pool: Pool
) -> None:
    """As at a real build's end: cargo spent every token the waiters lent on another
    LTO binary, and the last of them holds its token (`depth` are out), so nothing
    gives a token back before the rerun ends. It starts at once, not after
    RECLAIM_BEFORE_ALONE (30 s), and the pool is balanced at the end."""
    rustc = make_fake_rustc(tmp_path)
    env = pool.env(tmp_path)
    state, log = tmp_path / "state", tmp_path / "log.jsonl"
    holder = procs.holder(rustc, env)
    heavy = procs.start(
        ltoguard_cmd(rustc, "heavy"),
        dict(env, FAKE_NAME="heavy", FAKE_LLVM_OOM_ONCE=str(tmp_path / "oom")),
    )
    taken = _take_lent_token(pool)
    waiters = []
    for i in range(lend_depth()):
        waiters.append(procs.start(ltoguard_cmd(rustc, f"w{i}"), dict(env, FAKE_NAME=f"w{i}")))
        assert wait_for(lambda n=i + 2: len(tickets(state)) == n)
        if i < lend_depth() - 1:
            taken += _take_lent_token(pool)
    time.sleep(0.5)
    assert pool.count() == 0  # the last waiter keeps its token: `depth` are out
    holder.release()

    def heavys() -> list[dict[str, Any]]:
        return [e for e in read_log(log) if e["name"] == "heavy"]

    assert wait_for(lambda: len(heavys()) == 4, timeout=40)
    oom, rerun = heavys()[1:3]
    assert [oom["what"], rerun["what"]] == ["llvm oom", "start"]
    assert rerun["t"] - oom["t"] < 10, "the rerun waited for a token nobody could give back"
    os.write(pool.fd, taken)  # cargo's units end: the tokens come back
    _, err = heavy.communicate(timeout=60)
    assert heavy.returncode == 0 and b"running it again, alone" in err, err.decode()
    for p in [holder.proc, *waiters]:
        assert p.wait(timeout=60) == 0
    # No waiter took the rerun's place as its first attempt ended (it queued again first).
    assert starts(tmp_path)[:3] == ["holder", "heavy", "heavy"]
    assert pool.count() == 0


def test_a_waiter_holding_its_token_is_counted_only_in_its_own_build(tmp_path: Path) -> None:
    """By its cargo run (jobs.cargo_build_id), or outside cargo by its parent; its
    ticket locked (it waits), its name and file ours, and no token lent."""
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    cargo = tmp_path / "cargo"  # a process named cargo: the waiter's own build id
    shutil.copy(shutil.which("sleep") or "/bin/sleep", cargo)
    sibling = subprocess.Popen([str(cargo), "30"])  # a child of ours, as rustcs are cargo's
    lock = None
    try:
        uid, me = os.geteuid(), os.getpid()
        build = cargo_build_id(sibling.pid, 1)
        assert build.startswith(f"{sibling.pid}-")
        name = f"q-{7:020d}-{uid}-{sibling.pid}.json"
        assert not a_sibling_waiter_holds_a_token(fd, "", ppid=me)  # no ticket yet
        (tmp_path / name).write_text("{}")
        assert not a_sibling_waiter_holds_a_token(fd, "", ppid=me)  # nobody waits on it
        lock = os.open(tmp_path / name, os.O_RDONLY)
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert a_sibling_waiter_holds_a_token(fd, "", ppid=me)
        assert not a_sibling_waiter_holds_a_token(fd, "", ppid=os.getppid())  # another's
        assert a_sibling_waiter_holds_a_token(fd, build)
        assert not a_sibling_waiter_holds_a_token(fd, f"{sibling.pid}-1")  # a reused pid
        LentTokens(fd, pid=sibling.pid).mark(True)
        assert not a_sibling_waiter_holds_a_token(fd, build)  # it lent its token
        assert not a_sibling_waiter_holds_a_token(fd, "", ppid=me)
        LentTokens(fd, pid=sibling.pid).mark(False)
        os.chown(tmp_path / name, uid + 1, -1)  # planted by another user
        assert not a_sibling_waiter_holds_a_token(fd, build)
    finally:
        if lock is not None:
            os.close(lock)
        sibling.kill()
        sibling.wait()
        os.close(fd)


def test_no_waiter_lends_beside_a_rerun_alone() -> None:
    def asked() -> bool:
        raise AssertionError("asked when it decides nothing")

    def near(lent: bool, tokens_out: int, beside_alone: bool | Callable[[], bool]) -> Lend:
        return lending(
            ahead=1,
            tried=True,
            depth=2,
            lent=lent,
            tokens_out=tokens_out,
            beside_alone=beside_alone,
        )

    assert near(False, 0, True) is Lend.BESIDE_ALONE
    assert near(False, 0, lambda: False) is Lend.LEND
    assert near(False, 2, asked) is Lend.TOKENS_OUT
    assert near(True, 0, asked) is Lend.LENT
    far = lending(ahead=2, tried=True, depth=2, lent=False, tokens_out=0, beside_alone=asked)
    assert far is Lend.TOO_FAR


def test_lending_stops_once_cargo_runs_only_guarded_jobs() -> None:
    """Asked last, and only when it decides: after the bound, before beside_alone."""
    asked: list[str] = []

    def only_guarded() -> bool:
        asked.append("only")
        return True

    common = dict(ahead=1, tried=True, lent=False, depth=2, only_guarded=only_guarded)
    assert lending(tokens_out=2, **common) is Lend.TOKENS_OUT  # type: ignore[arg-type]
    assert asked == []
    assert lending(tokens_out=1, **common) is Lend.ONLY_GUARDED  # type: ignore[arg-type]
    assert lending(tokens_out=1, **dict(common, only_guarded=False)) is Lend.LEND  # type: ignore[arg-type]
    lease = _FakeLease()
    gate = LendWhilePaused(lease, LentTokens(None), depth=2)  # type: ignore[arg-type]
    assert gate() is Lend.LEND  # outside cargo (no build): as before


@pytest.mark.parametrize("paused", [False, True])
def test_a_build_scripts_compile_never_lends(paused: bool) -> None:
    """Its dependents wait for its exit, and a job that lent waits at its exit for a
    token back, which cargo gives out only once it has nothing left to start."""
    for crate, lends in (("build_script_build", 0), ("build_script_main", 0), ("app", 1)):
        lease = _FakeLease()
        tokens = LentTokens(None)
        if paused:
            decisions = [LendWhilePaused(lease, tokens, depth=2, crate=crate)()]  # type: ignore[arg-type]
        else:
            gate = LendWhileWaiting(lease, tokens, depth=2, crate=crate)  # type: ignore[arg-type]
            decisions = [gate(ahead) for ahead in (0, 0, 1, 0)]
        assert lease.lends == lends, crate
        if not lends:
            assert Lend.BUILD_SCRIPT in decisions and Lend.LEND not in decisions
    kept = lending(ahead=0, tried=True, lent=False, depth=2, tokens_out=0, build_script=True)
    assert kept is Lend.BUILD_SCRIPT
    assert lending_paused(lent=True, depth=2, tokens_out=0, build_script=True) is Lend.LENT


def test_only_guarded_jobs_reads_cargos_children_and_the_state_dir(tmp_path: Path) -> None:
    """A stand-in cargo with three children running our interpreter (one started from
    a thread: cargo starts compiles from its job threads) and one that is not: each
    counts as a guarded job by a ticket, run record or lent- file of ours, and one of
    them must have lent its token."""
    wait = "import sys; sys.stdin.read()"
    cargo = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, threading\n"
            f"cmd = [sys.executable, '-c', {wait!r}]\n"
            "kids = [subprocess.Popen(cmd, stdin=subprocess.PIPE) for _ in range(2)]\n"
            "t = threading.Thread(target=lambda: kids.append(subprocess.Popen(cmd, stdin=subprocess.PIPE)))\n"
            "t.start(); t.join()\n"
            "kids.append(subprocess.Popen(['sleep', '60']))\n"
            "print(*[k.pid for k in kids], flush=True)\n"
            "sys.stdin.readline()\n"
            "kids[-1].kill(); kids[-1].wait()\n"
            "print('gone', flush=True)\n"
            "sys.stdin.read()\n"
            "for k in kids[:-1]: k.communicate('')",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert cargo.stdout is not None
        a, b, c, other = (int(p) for p in cargo.stdout.readline().split())
        assert cargo_children(cargo.pid) == {a, b, c, other}
        build, uid = f"{cargo.pid}-123", os.geteuid()
        (tmp_path / f"q-1-{uid}-{a}.json").write_text('{"crate": "app00"}')
        (tmp_path / f"run-{uid}-{b}.json").write_text('{"crate": "app01"}')
        (tmp_path / f"lent-{uid}-{c}").touch()  # done, waiting for its token back
        (tmp_path / f"q-2-{uid}-{other}.json").write_text("{}")  # a pid reused by sleep
        assert only_guarded_jobs(fd, build) is False  # sleep is no guarded job
        assert cargo.stdin is not None
        cargo.stdin.write("kill it\n")
        cargo.stdin.flush()
        assert cargo.stdout.readline() == "gone\n"
        assert cargo_children(cargo.pid) == {a, b, c}
        assert only_guarded_jobs(fd, build) is True
        assert only_guarded_jobs(fd, "") is False  # outside cargo
        assert only_guarded_jobs(None, build) is False
        (tmp_path / f"lent-{uid}-{c}").unlink()
        (tmp_path / f"run-{uid}-{c}.json").write_text('{"crate": "app02"}')
        assert only_guarded_jobs(fd, build) is False  # none has lent
        (tmp_path / f"lent-{uid}-{a}").touch()
        assert only_guarded_jobs(fd, build) is True
        # A build script's compile, running or waiting for its token back: other
        # units wait for it.
        (tmp_path / f"run-{uid}-{b}.json").write_text('{"crate": "build_script_build"}')
        assert only_guarded_jobs(fd, build) is False
        (tmp_path / f"run-{uid}-{b}.json").unlink()
        (tmp_path / f"lent-{uid}-{b}").write_text('{"crate": "build_script_build"}')
        assert only_guarded_jobs(fd, build) is False
        (tmp_path / f"lent-{uid}-{b}").unlink()
        # Our interpreter with no file: a job between its run record and its exit, or
        # before its ticket; not lending then is undone at the next look.
        assert only_guarded_jobs(fd, build) is True
        (tmp_path / f"run-{uid + 1}-{b}.json").write_text("{}")  # names another uid
        assert only_guarded_jobs(fd, build) is True  # not read as b's
        (tmp_path / f"run-{uid}-{b}.json").write_text('{"crate": "app01"}')
        if uid == 0:  # a file that names us but another user made (a shared directory)
            os.chown(tmp_path / f"run-{uid}-{b}.json", 12345, -1)
            assert only_guarded_jobs(fd, build) is False
    finally:
        os.close(fd)
        cargo.communicate("", timeout=30)
    assert cargo_children(cargo.pid) is None  # gone


@pytest.mark.parametrize(
    ("name", "claim"),
    [
        ("q-12-1000-345.json", (1000, 345)),
        ("run-1000-345.json", (1000, 345)),
        ("lent-1000-345", (1000, 345)),
        ("q-12-1000.json", None),  # a field short
        ("run-1000-345-6.json", None),  # one too many
        ("run-1000-345.json.tmp", None),
        ("lent-1000-x", None),
        ("lent-1000-345.json", None),
        ("mutex.lock", None),
        ("events-1000.jsonl", None),
        ("run-1000-0.json", None),  # no process is 0
        # Digits int() refuses, planted by another user in a shared directory:
        ("q-1-\u00b2-5.json", None),
        ("run-\u00b2-5.json", None),
        ("lent-1000-\u00b2", None),
        ("run-\u0661\u0660-345.json", None),
    ],
)
def test_the_state_files_names_claim_an_owner_and_a_process(name: str, claim: object) -> None:
    """One reading for the queue, the run records and the lent tokens."""
    assert records.claimed_by(name) == claim
    assert _job_pid(name, 1000) == (claim[1] if isinstance(claim, tuple) else None)
    assert _job_pid(name, 1001) is None
    assert records.tickets([name]) == ([(12, name)] if name.startswith("q-") and claim else [])
