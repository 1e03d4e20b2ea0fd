"""What the compiler says and how it ends reach cargo unchanged: stdout
and stderr byte-exact under load, every exit status, death by each common signal,
and argv (spaces, quotes, newlines, empty strings, non-UTF-8) forwarded intact on
both the guarded and the pass-through path.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from tests.procs import LTO_BIN, Procs, clean_env, make_fake_rustc

# slow: hundreds of guarded runs (all 256 exit statuses alone take ~40 s here).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def no_core() -> None:
    # The fake compilers die by SIGSEGV/SIGABRT/...: no core files in the tree.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def guarded(rustc: Path, crate: str = "c", extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "ltoguard", str(rustc), "--crate-name", crate, "src/main.rs"] + (
        extra if extra is not None else LTO_BIN
    )


# -- stdout and stderr under load ---------------------------------------------------

NOISY_RUSTC = textwrap.dedent(
    """\
    #!{python}
    import os, random, sys
    rng = random.Random(int(os.environ["SEED"]))
    size = int(os.environ["SIZE"])
    out, err = rng.randbytes(size), rng.randbytes(size)
    i = j = 0
    # Interleaved writes of random sizes on both streams, as rustc's diagnostics are.
    while i < size or j < size:
        if i < size:
            n = rng.randint(1, 70000)
            os.write(1, out[i : i + n]); i += n
        if j < size:
            n = rng.randint(1, 70000)
            os.write(2, err[j : j + n]); j += n
    """
)


def expected_digests(seed: int, size: int) -> tuple[str, str]:
    import random

    rng = random.Random(seed)
    out, err = rng.randbytes(size), rng.randbytes(size)
    return hashlib.sha256(out).hexdigest(), hashlib.sha256(err).hexdigest()


def test_stdout_and_stderr_byte_exact_under_load(tmp_path: Path, procs: Procs) -> None:
    """20 guarded runs at once (4 slots), each writing 1 MiB of random bytes to each
    stream through pipes. Protection: stdout is inherited untouched and stderr is
    relayed verbatim (ltoguard may add at most its one waiting line before it)."""
    rustc = tmp_path / "rustc"
    rustc.write_text(NOISY_RUSTC.format(python=sys.executable))
    rustc.chmod(0o755)
    env = clean_env(tmp_path, tmp_path / "state", LTOGUARD_SLOTS="4", SIZE=str(1 << 20))
    ps = [procs.start(guarded(rustc, f"n{i}"), dict(env, SEED=str(i))) for i in range(20)]
    results: dict[int, tuple[bytes, bytes]] = {}

    def drain(i: int) -> None:
        results[i] = ps[i].communicate(timeout=150)

    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(ps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, p in enumerate(ps):
        out, err = results[i]
        assert p.returncode == 0, err[-300:]
        if err.startswith(b"ltoguard: "):
            line, _, err = err.partition(b"\n")
            assert b" waits " in line, line
        want_out, want_err = expected_digests(i, 1 << 20)
        assert (len(out), hashlib.sha256(out).hexdigest()) == (1 << 20, want_out), i
        assert (len(err), hashlib.sha256(err).hexdigest()) == (1 << 20, want_err), i


# -- exit statuses and signals ------------------------------------------------------


def test_every_exit_status_is_passed_through(tmp_path: Path, procs: Procs) -> None:
    """Exit statuses 0..255 on the guarded path. Protection: process.exit_like returns
    the child's status unchanged (a wrapper that maps failures to 1, or truncates, fails)."""
    rustc = tmp_path / "rustc"
    rustc.write_text('#!/bin/sh\nexit "$FAKE_EXIT"\n')
    rustc.chmod(0o755)
    env = clean_env(tmp_path, tmp_path / "state", LTOGUARD_SLOTS="16")
    got: dict[int, int | None] = {}
    batch = 16
    for first in range(0, 256, batch):
        ps = {
            code: procs.start(
                guarded(rustc, f"e{code}"),
                dict(env, FAKE_EXIT=str(code)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for code in range(first, first + batch)
        }
        for code, p in ps.items():
            got[code] = p.wait(timeout=60)
    wrong = {code: rc for code, rc in got.items() if rc != code}
    assert wrong == {}


SIGNALS = [
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGILL,
    signal.SIGABRT,
    signal.SIGFPE,
    signal.SIGKILL,
    signal.SIGSEGV,
    signal.SIGPIPE,
    signal.SIGTERM,
]


@pytest.mark.parametrize("path", ["guarded", "pass-through"])
def test_death_by_each_common_signal_is_reproduced(tmp_path: Path, procs: Procs, path: str) -> None:
    """A compiler killed by signal S ends ltoguard by S too (cargo prints
    `signal: S`). Protection: process.exit_like restores the default action,
    unblocks S and kills itself; exec on the pass-through path."""
    rustc = make_fake_rustc(tmp_path)
    env = clean_env(tmp_path, tmp_path / "state", LTOGUARD_SLOTS="16")
    extra = LTO_BIN if path == "guarded" else ["--crate-type", "lib"]
    ps = {
        sig: procs.start(
            guarded(rustc, f"s{int(sig)}", extra),
            dict(env, FAKE_SIGNAL=str(int(sig))),
            preexec_fn=no_core,
            cwd=str(tmp_path),
        )
        for sig in SIGNALS
    }
    got = {signal.Signals(sig).name: p.wait(timeout=60) for sig, p in ps.items()}
    assert got == {signal.Signals(sig).name: -int(sig) for sig in SIGNALS}
    for p in ps.values():
        out, err = p.communicate(timeout=10)
        assert out == b""
        assert all(line.startswith(b"ltoguard: ") for line in err.splitlines()), err


# -- argv -------------------------------------------------------------------------

ARGV_RUSTC = textwrap.dedent(
    """\
    #!{python}
    import json, os, sys
    rec = {{"pid": os.getpid(), "ppid": os.getppid(),
            "argv": [os.fsencode(a).hex() for a in sys.argv[1:]]}}
    with open(os.environ["ARGV_OUT"], "w") as f:
        json.dump(rec, f)
    """
)

ODD_ARGS: list[str | bytes] = [
    "with space",
    "  leading and trailing  ",
    "'single'",
    '"double"',
    "new\nline",
    "\n",
    "",
    "tab\there",
    "back\\slash\\",
    "$HOME `id` $(id) ; | & > <",
    "*",
    "--cfg",
    'feature="a b"',
    "ünïcödé ✓",
    b"\xff\xfe\x80 not utf-8",
    b"\xc3",
    "=",
]


@pytest.mark.parametrize("path", ["guarded", "pass-through"])
def test_argv_forwarded_intact(tmp_path: Path, procs: Procs, path: str) -> None:
    """Protection: argv[1:] goes to the compiler as is (no re-quoting, no
    decoding losses: surrogateescape round-trips non-UTF-8 bytes)."""
    rustc = tmp_path / "rustc"
    rustc.write_text(ARGV_RUSTC.format(python=sys.executable))
    rustc.chmod(0o755)
    out = tmp_path / "argv.json"
    env = clean_env(tmp_path, tmp_path / "state", ARGV_OUT=str(out))
    flags = LTO_BIN if path == "guarded" else ["--crate-type", "lib"]
    args: list[str | bytes] = [
        "--crate-name",
        "c",
        "src/main.rs",
        *flags[:2],
        *ODD_ARGS,
        *flags[2:],
    ]
    p = procs.start([sys.executable, "-m", "ltoguard", str(rustc), *args], env)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rec = json.loads(out.read_text())
    got = [bytes.fromhex(a) for a in rec["argv"]]
    assert got == [a if isinstance(a, bytes) else os.fsencode(a) for a in args]
    if path == "guarded":
        assert rec["ppid"] == p.pid  # ran as ltoguard's child, under a slot
    else:
        assert rec["pid"] == p.pid  # exec'd in place


def test_argfile_is_read_for_the_decision_and_forwarded_unexpanded(
    tmp_path: Path, procs: Procs
) -> None:
    """cargo's `@argfile` (one argument per line, verbatim) decides guarded or not,
    but the compiler receives the `@path` argument itself."""
    rustc = tmp_path / "rustc"
    rustc.write_text(ARGV_RUSTC.format(python=sys.executable))
    rustc.chmod(0o755)
    argfile = tmp_path / "cargo-argfile.x y"
    argfile.write_text("--crate-type\nbin\n-C\nlto=fat\n with spaces \n\n'q'\n")
    out = tmp_path / "argv.json"
    env = clean_env(tmp_path, tmp_path / "state", ARGV_OUT=str(out))
    args = ["--crate-name", "c", "src/main.rs", f"@{argfile}"]
    p = procs.start([sys.executable, "-m", "ltoguard", str(rustc), *args], env)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    rec = json.loads(out.read_text())
    assert [bytes.fromhex(a).decode() for a in rec["argv"]] == args
    assert rec["ppid"] == p.pid  # guarded: the argfile's -C lto=fat counted
    assert argfile.read_text().endswith("'q'\n")
