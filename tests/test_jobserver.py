"""The jobserver client: parsing, real pipes and fifos, GNU make, cargo, signals."""

from __future__ import annotations

import array
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ltoguard.jobserver import Jobserver, Lease
from ltoguard.makeflags import parse_makeflags
from ltoguard.process import FORWARDED
from tests.procs import Procs

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "jobserver"
AGENT = str(DATA / "agent.py")


# -- helpers ---------------------------------------------------------------------------


def tokens(fd: int) -> int:
    """Bytes in the pipe, counted without taking them."""
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]


@contextlib.contextmanager
def jobserver_pipe(n: int, *, nonblocking: bool = False) -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        if nonblocking:
            os.set_blocking(r, False)
        os.write(w, b"+" * n)
        yield r, w
    finally:
        for fd in (r, w):
            with contextlib.suppress(OSError):
                os.close(fd)


def env_for(auth: str, var: str = "CARGO_MAKEFLAGS") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CARGO_MAKEFLAGS", "MAKEFLAGS")}
    env.pop("MFLAGS", None)
    env[var] = f"-j --jobserver-fds={auth} --jobserver-auth={auth}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def js_from(auth: str) -> Jobserver | None:
    return Jobserver.from_environ({"MAKEFLAGS": f" -j4 --jobserver-auth={auth}"})


# -- parsing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("-j --jobserver-fds=3,4 --jobserver-auth=3,4", "3,4"),
        ("-j4 --jobserver-auth=fifo:/tmp/x", "fifo:/tmp/x"),
        (" -j8 --jobserver-auth=5,6", "5,6"),
        ("w -j3 --jobserver-auth=5,6 -- VAR=x", "5,6"),
        ("-j --jobserver-auth=3,4 --jobserver-auth=7,8", "7,8"),
        ("--jobserver-auth=7,8 --jobserver-fds=3,4", "3,4"),  # last option, either name
        ("-j --jobserver-fds=3,4", "3,4"),  # make 4.1
        ("-j3 -- X=--jobserver-auth=9,9", None),  # a variable override, not an option
        ("-j3 -- --jobserver-auth=9,9", None),
        ("--jobserver-auth=fifo:/tmp/a\\ b -j2", "fifo:/tmp/a b"),  # make escapes blanks
        ("-j --jobserver-auth=", ""),
        ("kw -j4", None),
        ("", None),
    ],
)
def test_parse_makeflags(value: str, expected: str | None) -> None:
    assert parse_makeflags(value) == expected


def test_cargo_makeflags_wins_over_makeflags() -> None:
    with jobserver_pipe(1) as (r, w), jobserver_pipe(1) as (r2, w2):
        env = {
            "CARGO_MAKEFLAGS": f"-j --jobserver-auth={r},{w}",
            "MAKEFLAGS": f"-j --jobserver-auth={r2},{w2}",
            "MFLAGS": f"-j --jobserver-auth={r2},{w2}",
        }
        js = Jobserver.from_environ(env)
        assert js is not None and js.description == f"fds {r},{w}"
        js.close()
        # The first variable that has a jobserver option wins, not the first present.
        env["CARGO_MAKEFLAGS"] = "-j"
        js = Jobserver.from_environ(env)
        assert js is not None and js.description == f"fds {r2},{w2}"
        js.close()
        del env["CARGO_MAKEFLAGS"], env["MAKEFLAGS"]
        js = Jobserver.from_environ(env)
        assert js is not None and js.description == f"fds {r2},{w2}"
        js.close()


def test_last_option_wins_even_if_invalid() -> None:
    with jobserver_pipe(1) as (r, w):
        js = Jobserver.from_environ(
            {"MAKEFLAGS": f"--jobserver-auth=900,901 --jobserver-auth={r},{w}"}
        )
        assert js is not None
        js.close()
        assert (
            Jobserver.from_environ(
                {"MAKEFLAGS": f"--jobserver-auth={r},{w} --jobserver-auth=900,901"}
            )
            is None
        )
        # Invalid in CARGO_MAKEFLAGS does not fall back to a valid MAKEFLAGS.
        env = {
            "CARGO_MAKEFLAGS": "--jobserver-auth=900,901",
            "MAKEFLAGS": f"--jobserver-auth={r},{w}",
        }
        assert Jobserver.from_environ(env) is None


def test_none_without_jobserver() -> None:
    assert Jobserver.from_environ({}) is None
    assert Jobserver.from_environ({"MAKEFLAGS": "", "CARGO_MAKEFLAGS": "-j4"}) is None


@pytest.mark.parametrize(
    "auth",
    [
        "",
        "3",
        "a,b",
        "-1,-1",
        "+3,4",
        " 3,4",
        "3,",
        ",4",
        "3,4,5",
        "0x3,4",
        "fifo:",
        "jobserver-sem-name",
    ],
)
def test_malformed_auth_is_none(auth: str) -> None:
    assert js_from(auth) is None


def test_invalid_fds_are_none(tmp_path: Path) -> None:
    with jobserver_pipe(1) as (r, w), jobserver_pipe(1) as (r2, w2):
        assert js_from(f"{w},{r}") is None  # ends swapped: wrong access modes
        assert js_from(f"{r},{w2}") is None  # two different pipes
        plain = tmp_path / "plain"
        plain.write_text("")
        fd = os.open(plain, os.O_RDWR)
        try:
            assert js_from(f"{fd},{fd}") is None  # not a pipe
        finally:
            os.close(fd)
        closed_r, closed_w = r2, w2
    assert js_from(f"{closed_r},{closed_w}") is None  # closed
    assert js_from(f"fifo:{tmp_path / 'missing'}") is None
    assert js_from(f"fifo:{plain}") is None


# -- anonymous pipes in process --------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize("nonblocking", [False, True])
def test_pipe_round_trip_keeps_shared_flags(nonblocking: bool) -> None:
    with jobserver_pipe(2, nonblocking=nonblocking) as (r, w):
        before = (fcntl.fcntl(r, fcntl.F_GETFL), fcntl.fcntl(w, fcntl.F_GETFL))
        js = js_from(f"{r},{w}")
        assert js is not None
        lease = Lease(js)
        assert lease.lend() and tokens(r) == 3
        assert os.read(r, 3) == b"+++"  # cargo started jobs with every token
        t0 = time.monotonic()
        assert not lease.reclaim(timeout=0.0)  # empty: returns at once even on a blocking fd
        assert time.monotonic() - t0 < 1
        t0 = time.monotonic()
        assert not lease.reclaim(timeout=0.3) and lease.lent
        assert 0.25 < time.monotonic() - t0 < 5
        assert js.release() and js.release()
        assert lease.reclaim(timeout=5) and not lease.lent
        assert tokens(r) == 1
        js.close()
        # cargo's descriptions are left as they were: still open, same flags.
        assert (fcntl.fcntl(r, fcntl.F_GETFL), fcntl.fcntl(w, fcntl.F_GETFL)) == before
        assert os.get_inheritable(r) == os.get_inheritable(w) is False  # os.pipe() default


@pytest.mark.timeout(30)
@pytest.mark.parametrize("nonblocking", [False, True])
def test_acquire_wakes_when_a_token_arrives(nonblocking: bool) -> None:
    with jobserver_pipe(0, nonblocking=nonblocking) as (r, w):
        js = js_from(f"{r},{w}")
        assert js is not None
        lease = Lease(js)
        assert lease.lend() and os.read(r, 1) == b"+"  # cargo took the lent token
        timer = threading.Timer(0.2, os.write, (w, b"x"))
        timer.start()
        try:
            assert lease.reclaim(timeout=20) and not lease.lent
        finally:
            timer.join()
        assert tokens(r) == 0
        js.close()


@pytest.mark.timeout(30)
def test_should_stop_abandons_the_wait() -> None:
    with jobserver_pipe(0) as (r, w):
        js = js_from(f"{r},{w}")
        assert js is not None
        lease = Lease(js)
        assert lease.lend() and os.read(r, 1) == b"+"  # cargo took the lent token
        deadline = time.monotonic() + 0.3
        assert not lease.reclaim(should_stop=lambda: time.monotonic() > deadline, poll=0.02)
        assert time.monotonic() - deadline < 5
        assert lease.lent  # still owed: the caller decides what to do next
        js.close()


@pytest.mark.timeout(30)
def test_eof_returns_false_quickly() -> None:
    r, w = os.pipe()
    try:
        js = js_from(f"{r},{w}")
        assert js is not None
        lease = Lease(js)
        assert lease.lend() and os.read(r, 1) == b"+"  # cargo took the lent token
        os.close(w)  # every write end gone: the jobserver is dead
        t0 = time.monotonic()
        assert not lease.reclaim()  # no timeout: EOF alone must end the wait
        assert time.monotonic() - t0 < 2
        assert not lease.lent  # no pool is left to owe a token to
        assert js.gone and not js.release() and not Lease(js).lend()
        js.close()
    finally:
        os.close(r)


@pytest.mark.timeout(30)
def test_release_fails_cleanly() -> None:
    with jobserver_pipe(0) as (r, w):
        js = js_from(f"{r},{w}")
        assert js is not None
        os.close(r)
        assert js.read_fd != r  # our own description of the read end
        os.close(js.read_fd)
        assert not js.release()  # EPIPE, no SIGPIPE death
    with jobserver_pipe(0) as (r, w):
        os.set_blocking(w, False)
        js = js_from(f"{r},{w}")
        assert js is not None
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(w, b"+" * 4096)
        t0 = time.monotonic()
        assert not js.release(timeout=0.2)  # full non-blocking pipe: no hang, no spin
        assert time.monotonic() - t0 < 5
        js.close()


def test_fifo_form(tmp_path: Path) -> None:
    path = tmp_path / "jobserver fifo"
    os.mkfifo(path)
    holder = os.open(path, os.O_RDWR)
    try:
        os.write(holder, b"+++")
        js = Jobserver.from_environ(
            {"MAKEFLAGS": f"-j4 --jobserver-auth=fifo:{str(path).replace(' ', chr(92) + ' ')}"}
        )
        assert js is not None
        assert js.description == f"fifo {path}"  # the child opens the fifo by its path
        lease = Lease(js)
        assert lease.lend() and tokens(holder) == 4
        assert lease.reclaim(timeout=5) and tokens(holder) == 3
        assert js.release() and tokens(holder) == 4
        assert os.read(holder, 1) == b"+"
        assert not os.get_inheritable(js.read_fd)
        js.close()
        assert tokens(holder) == 3
    finally:
        os.close(holder)


# -- Lease in process ------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_lease_balances() -> None:
    with jobserver_pipe(1) as (r, w):
        js = js_from(f"{r},{w}")
        assert js is not None
        with Lease(js) as lease:
            assert lease.lend() and lease.lent and tokens(r) == 2
            assert lease.lend() and tokens(r) == 2  # at most one token is lent
            assert lease.reclaim(timeout=5) and not lease.lent
            assert tokens(r) == 1
            assert lease.reclaim()  # nothing lent: nothing read
            assert tokens(r) == 1
        with pytest.raises(RuntimeError), Lease(js) as lease:
            assert lease.lend() and tokens(r) == 2
            raise RuntimeError
        assert tokens(r) == 1 and not lease.lent and not lease.leaked
        js.close()


def test_lease_without_jobserver() -> None:
    with Lease(None) as lease:
        assert not lease.lend() and not lease.lent
        assert lease.reclaim()


@pytest.mark.timeout(30)
def test_lease_exit_gives_up_after_exit_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    with jobserver_pipe(0) as (r, w):
        js = js_from(f"{r},{w}")
        assert js is not None
        lease = Lease(js, exit_timeout=0.3)
        with lease:
            assert lease.lend()
            assert os.read(r, 1)  # "cargo" started a job with the lent token
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 5
        assert lease.leaked and not lease.lent
        err = capsys.readouterr().err
        assert err.startswith("ltoguard: warning: ") and err.count("\n") == 1
        js.close()


# -- real processes --------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_child_keeps_jobserver_only_with_pass_fds() -> None:
    with jobserver_pipe(1) as (r, w):
        env = env_for(f"{r},{w}")
        cmd = [sys.executable, AGENT, "probe"]
        ok = subprocess.run(
            cmd, env=env, pass_fds=(r, w), capture_output=True, text=True, timeout=30
        )
        assert ok.stdout == "ok\n", ok.stderr
        os.set_inheritable(r, True)
        os.set_inheritable(w, True)
        ok = subprocess.run(
            cmd, env=env, close_fds=False, capture_output=True, text=True, timeout=30
        )
        assert ok.stdout == "ok\n", ok.stderr
        # Python's default closes the fds: the child must see no jobserver.
        lost = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
        assert lost.stdout == "none\n", lost.stderr
        assert tokens(r) == 1


@pytest.mark.timeout(60)
@pytest.mark.slow
def test_reclaim_never_blocks_under_contention(procs: Procs) -> None:
    """Many processes lending and taking back on one blocking read end, with the
    non-blocking reclaim a queued head uses: one losing a race for a byte must not
    block in read, and the pool ends as it began."""
    script = (
        "import os, time\n"
        "from ltoguard.jobserver import Jobserver, Lease\n"
        "js = Jobserver.from_environ(os.environ)\n"
        "end = time.monotonic() + 1.0\n"
        "while time.monotonic() < end:\n"
        "    lease = Lease(js)\n"
        "    assert lease.lend()\n"
        "    while not lease.reclaim(timeout=0.0):\n"
        "        assert time.monotonic() < end + 20\n"
    )
    with jobserver_pipe(1) as (r, w):
        env = env_for(f"{r},{w}")
        # No pipes: a failing child's traceback shows in the test's output.
        ps = [
            procs.start(
                [sys.executable, "-c", script], env, pass_fds=(r, w), stdout=None, stderr=None
            )
            for _ in range(6)
        ]
        assert [p.wait(timeout=40) for p in ps] == [0] * 6
        assert tokens(r) == 1
        assert os.get_blocking(r)


def run_make(
    tmp_path: Path, *targets: str, lend: str | None = None
) -> subprocess.CompletedProcess[str]:
    if shutil.which("make") is None:
        pytest.skip("GNU make not installed")
    cmd = [
        "make",
        "-j3",
        "-f",
        str(DATA / "Makefile"),
        f"PY={sys.executable}",
        f"AGENT={AGENT}",
        f"OUT={tmp_path}",
    ]
    if lend is not None:
        cmd.append(f"LEND={lend}")
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "CARGO_MAKEFLAGS", "MFLAGS")
    }
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([*cmd, *targets], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.timeout(150)
def test_balanced_under_gnu_make(tmp_path: Path) -> None:
    done = run_make(tmp_path, "all")
    assert done.returncode == 0, done.stderr
    before, after = (int((tmp_path / n).read_text()) for n in ("before", "after"))
    assert before == after == 2  # -j3: make holds one implicitly, two in the pipe
    # A recipe without "+" sees MAKEFLAGS but not the fds.
    done = run_make(tmp_path, "plain")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "plain").read_text() == "none\n"


@pytest.mark.timeout(150)
def test_make_counter_sees_a_leak(tmp_path: Path) -> None:
    """The control for the test above: lenders that do not reclaim show up."""
    run_make(tmp_path, "all", lend="leak")
    before, after = (int((tmp_path / n).read_text()) for n in ("before", "after"))
    assert after == before + 5


@pytest.mark.timeout(60)
def test_balanced_on_a_fifo_jobserver(tmp_path: Path, procs: Procs) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    holder = os.open(path, os.O_RDWR)
    try:
        os.write(holder, b"+++")
        env = env_for("", "MAKEFLAGS")
        env["MAKEFLAGS"] = f" -j4 --jobserver-auth=fifo:{path}"
        agent = [sys.executable, AGENT, "lend", "4", "0.02"]
        ps = [procs.start(agent, env, stdout=None, stderr=None) for _ in range(4)]
        assert [p.wait(timeout=50) for p in ps] == [0] * 4
        assert tokens(holder) == 3
    finally:
        os.close(holder)


@pytest.mark.cargo
@pytest.mark.timeout(240)
def test_balanced_under_cargo(tmp_path: Path) -> None:
    if shutil.which("cargo") is None:
        pytest.skip("cargo not installed")
    crate = tmp_path / "crate"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "jobs"\nversion = "0.1.0"\nedition = "2021"\n'
    )
    (crate / "src" / "main.rs").write_text("fn main() {}\n")
    wrapper = tmp_path / "wrapper"
    log = tmp_path / "log"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {AGENT} rustc-wrapper {log} "$@"\n')
    wrapper.chmod(0o755)
    env = {
        k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "CARGO_MAKEFLAGS", "MFLAGS")
    }
    env.update(
        RUSTC_WRAPPER=str(wrapper), PYTHONPATH=str(ROOT), CARGO_TARGET_DIR=str(tmp_path / "target")
    )
    env.pop("RUSTC_WORKSPACE_WRAPPER", None)
    done = subprocess.run(
        ["cargo", "build", "-j3", "--offline"],
        cwd=crate,
        env=env,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 1
    (rec,) = records
    assert rec["form"].startswith("fds ") and rec["lent"] and rec["back"]
    assert rec["counts"] == [2, 3, 2]  # -j3, one job: two tokens in the pipe


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("mode", "signum", "code"),
    [
        ("raise", signal.SIGTERM, 128 + signal.SIGTERM),
        ("raise", signal.SIGINT, -signal.SIGINT),  # KeyboardInterrupt re-raises SIGINT
        ("flag", signal.SIGTERM, 0),
        ("flag", signal.SIGINT, 0),
    ],
)
def test_interrupted_lender_gives_the_token_back(
    procs: Procs, mode: str, signum: int, code: int
) -> None:
    with jobserver_pipe(2) as (r, w):
        env = env_for(f"{r},{w}")
        cmd = [sys.executable, AGENT, "wait", mode, "20"]
        proc = procs.start(cmd, env, pass_fds=(r, w), text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "lent\n"
        assert tokens(r) == 3
        proc.send_signal(signum)
        assert proc.wait(timeout=30) == code
        assert "warning" not in proc.stderr.read()  # type: ignore[union-attr]
        assert tokens(r) == 2


@pytest.mark.timeout(60)
def test_killed_lender_leaks_one_token(procs: Procs) -> None:
    """The documented limit, and the control for the test above: SIGKILL runs no
    cleanup, so the lent byte stays in the pool."""
    with jobserver_pipe(2) as (r, w):
        env = env_for(f"{r},{w}")
        cmd = [sys.executable, AGENT, "wait", "raise", "20"]
        proc = procs.start(cmd, env, pass_fds=(r, w), text=True, stderr=None)
        assert proc.stdout is not None and proc.stdout.readline() == "lent\n"
        proc.kill()
        proc.wait(timeout=30)
        assert tokens(r) == 3


@pytest.mark.timeout(60)
def test_interrupted_lender_with_empty_pool_exits_within_exit_timeout(procs: Procs) -> None:
    with jobserver_pipe(0) as (r, w):
        env = env_for(f"{r},{w}")
        cmd = [sys.executable, AGENT, "wait", "raise", "0.5"]
        proc = procs.start(cmd, env, pass_fds=(r, w), text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "lent\n"
        assert os.read(r, 1)  # "cargo" took the lent token for another job
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert time.monotonic() - t0 < 10
        err = proc.stderr.read()  # type: ignore[union-attr]
        assert err.startswith("ltoguard: warning: could not take back the jobserver token")


PR_SET_CHILD_SUBREAPER = 36


@pytest.mark.timeout(60)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl subreaper is Linux only")
def test_lender_whose_parent_died_does_not_wait(procs: Procs) -> None:
    """When cargo itself is gone (Ctrl-C hit the whole group) there is no pool left to
    balance: the exit reclaim must not sit out its whole exit_timeout."""
    libc = ctypes.CDLL(None, use_errno=True)
    # Orphans get reparented to us, so the test can reap the grandchild.
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    pid = 0
    try:
        with jobserver_pipe(0) as (r, w):
            env = env_for(f"{r},{w}")
            middle = (
                "import subprocess, sys\n"
                f"p = subprocess.Popen([sys.executable, {AGENT!r}, 'wait', 'raise', '30'],"
                f" pass_fds=({r}, {w}), stdout=subprocess.PIPE,"
                " stderr=subprocess.DEVNULL, text=True)\n"
                "assert p.stdout.readline() == 'lent\\n'\n"
                "print(p.pid, flush=True)\n"
            )
            proc = procs.start(
                [sys.executable, "-c", middle], env, pass_fds=(r, w), text=True, stderr=None
            )
            assert proc.stdout is not None
            pid = int(proc.stdout.readline())
            assert proc.wait(timeout=30) == 0
            assert os.read(r, 1)  # the pool is empty: a reclaim would wait 30 s
            t0 = time.monotonic()
            os.kill(pid, signal.SIGTERM)
            _, status = os.waitpid(pid, 0)
            pid = 0
            assert time.monotonic() - t0 < 10
            assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGTERM
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.mark.timeout(30)
def test_shared_description_fallback() -> None:
    """Without /proc no private description can be opened: the shared one is polled
    before each read, and its flags are still left alone."""
    with jobserver_pipe(1) as (r, w):
        js = Jobserver(read_fd=r, write_fd=w, private_read_fd=None, inherited=True, description="t")
        assert js.read_fd == r
        lease = Lease(js)
        assert lease.lend() and os.read(r, 2) == b"++"  # cargo took every token
        assert not lease.reclaim(timeout=0.0)
        assert not lease.reclaim(timeout=0.2)
        assert js.release() and lease.reclaim(timeout=5) and not lease.lent
        assert os.get_blocking(r)
        js.close()
        assert tokens(r) == 0 and os.fstat(r)  # inherited fds are not closed


@pytest.mark.timeout(30)
def test_the_lease_tells_when_its_token_goes_out_and_comes_back() -> None:
    """lending.LentTokens counts tokens out over the state dir from these calls."""
    seen: list[bool] = []
    with jobserver_pipe(1) as (r, w):
        js = js_from(f"{r},{w}")
        assert js is not None
        with Lease(js, on_change=seen.append) as lease:
            assert lease.lend()
            assert seen == [True]
            lease.lend()
            assert seen == [True]  # never lent twice
            assert lease.reclaim(timeout=5)
            assert seen == [True, False]
            assert lease.lend()
        # left the block lent: taken back on exit, and told so
        assert seen == [True, False, True, False]


def test_the_small_reclaimer_gives_up_in_time_says_so_and_keeps_the_status(
    tmp_path: Path,
) -> None:
    """reclaimer.py's script, run as it is exec()ed: no token comes back within its
    time, so it warns where it was told to, removes the lent- file and exits with the
    compile's status; a token there is taken at once, silently; a signal ends the
    wait with the compile's status too, not by the signal."""
    from ltoguard.reclaimer import _RECLAIMER

    r, w = os.pipe()
    os.set_blocking(r, False)
    lent = tmp_path / "lent-0-1"
    line = "ltoguard: warning: no token\n"
    try:
        for token, code in ((b"", 5), (b"+", 0)):
            lent.touch()
            if token:
                os.write(w, token)
            args = [str(r), str(code), "0.3", str(os.getpid()), str(lent), line, "2"]
            done = subprocess.run(
                [sys.executable, "-I", "-S", "-c", _RECLAIMER, *args],
                pass_fds=(r,),
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == code
            assert not lent.exists()
            assert done.stderr == ("" if token else line)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)  # the token was taken
        lent.touch()
        args = [str(r), "3", "60", str(os.getpid()), str(lent), line, "2"]
        waiting = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _RECLAIMER, *args],
            pass_fds=(r,),
            stderr=subprocess.PIPE,
            # Held off as exec_reclaimer holds them: one sent before its handlers are
            # in waits for them.
            preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED),
        )
        waiting.send_signal(signal.SIGTERM)
        assert waiting.wait(timeout=10) == 3
        assert not lent.exists()
        assert waiting.stderr is not None and waiting.stderr.read() == b""
    finally:
        os.close(r)
        os.close(w)


def test_the_reclaimer_is_not_started_once_a_signal_came(tmp_path: Path) -> None:
    """exec_reclaimer asks ``stopped`` with the forwarded signals held off, and when a
    signal came it returns (the job waits in itself) with the signal mask as it was."""
    from ltoguard.reclaimer import exec_reclaimer

    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    asked: list[set[int]] = []

    def stopped() -> bool:
        asked.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        return True

    r, w = os.pipe()
    try:
        exec_reclaimer(r, 0, 1.0, os.getppid(), str(tmp_path / "lent-0-1"), stopped)
    finally:
        os.close(r)
        os.close(w)
    assert len(asked) == 1 and set(FORWARDED) <= asked[0]
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before


def test_one_thread_jobserver_is_an_empty_pipe_named_where_make_and_rustc_look() -> None:
    """CARGO_MAKEFLAGS is set whole; in MAKEFLAGS only the jobserver options change
    (make's bare first word of flags stays first, overrides after `--` stay after);
    MFLAGS, unset, stays unset."""
    from ltoguard.makeflags import one_thread_jobserver

    env = {"MAKEFLAGS": "ks -j4 --jobserver-auth=fifo:/tmp/a\\ b -- CFLAGS=-O2"}
    read_fd, write_fd = one_thread_jobserver(env)
    try:
        auth = f"--jobserver-fds={read_fd},{write_fd} --jobserver-auth={read_fd},{write_fd}"
        assert env["CARGO_MAKEFLAGS"] == f"-j1 {auth}"
        assert env["MAKEFLAGS"] == f"ks -j4 {auth} -- CFLAGS=-O2"
        assert "MFLAGS" not in env
        assert parse_makeflags(env["MAKEFLAGS"]) == f"{read_fd},{write_fd}"
        assert stat.S_ISFIFO(os.fstat(read_fd).st_mode)
        os.set_blocking(read_fd, False)
        with pytest.raises(BlockingIOError):
            os.read(read_fd, 1)  # no token in it
    finally:
        os.close(read_fd)
        os.close(write_fd)
