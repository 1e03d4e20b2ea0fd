"""A rerun alone after running out of memory, with a real rustc: it runs fewer LLVM
workers than the same compile given cargo's spare tokens.

rustc starts one LLVM worker thread per jobserver token it takes beyond the one its
process stands for, and each worker holds a module in memory (a fat-LTO bin of the
sweep's generic workspace peaked at 875-908 MiB with cargo's spare -j2 token and at
800-836 MiB without one: docs/benchmarks.md). Here a jobserver holds three spare
tokens; a guarded fat-LTO compile of a crate with 16 codegen units runs once as an
ordinary guarded job, and once as a rerun after LLVM's out-of-memory abort (the
first attempt is a script that prints LLVM's message; the rerun is the real rustc).
The threads of each rustc are counted while it runs; the tokens are all back after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from tests.procs import Procs, clean_env, wait_for

pytestmark = [pytest.mark.cargo, pytest.mark.slow, pytest.mark.timeout(300)]

SPARE = 3
MODULES = 16

# Stands in for rustc: the first run (the marker absent) aborts as LLVM does when out
# of memory; a later one, or any run without FIRST_OOM, is the real rustc.
FRONT = textwrap.dedent(
    """\
    #!{python}
    import os, sys
    marker = os.environ.get("FIRST_OOM")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os.write(2, b"LLVM ERROR: out of memory\\n")
        sys.exit(1)
    os.execv({rustc!r}, [{rustc!r}] + sys.argv[1:])
    """
)


def _crate(path: Path) -> None:
    """A binary of MODULES modules whose code LLVM optimizes for a few seconds."""
    mods = []
    for m in range(MODULES):
        fns = "".join(
            f"#[inline(never)] pub fn f{i}(v: &mut Vec<u64>, k: u64) -> u64 {{"
            f" let mut s = k; for (j, x) in v.iter_mut().enumerate() {{"
            f" *x = x.wrapping_mul({i + 3}).rotate_left((j % {i + 5}) as u32) ^ s;"
            f" s = s.wrapping_add(*x / {i + 7}); }}"
            f" v.sort_unstable_by(|a, b| (a ^ {i}).cmp(&(b ^ {i}))); s }}\n"
            for i in range(3)
        )
        mods.append(f"pub mod m{m} {{\n{fns}pub fn all(v: &mut Vec<u64>) -> u64 {{"
                    " f0(v, 0) + f1(v, 1) + f2(v, 2) }\n}\n")  # fmt: skip
    calls = " + ".join(f"m{m}::all(&mut v)" for m in range(MODULES))
    path.write_text(
        "".join(mods) + "fn main() { let mut v: Vec<u64> = (0..100).collect();"
        f' println!("{{}}", {calls}); }}\n'
    )


def _most_threads(proc: subprocess.Popen[bytes]) -> int:
    """The most threads any process under ``proc`` (ltoguard) had while it ran: its
    rustc (the script stands in for it by exec, keeping its pid)."""
    most = 0
    parent = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for child in parent.children(recursive=True):
                most = max(most, child.num_threads())
        except psutil.Error:
            pass
        time.sleep(0.005)
    return most


@pytest.mark.skipif(shutil.which("rustc") is None, reason="rustc not on PATH")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the jobserver here is a pipe")
def test_a_rerun_alone_runs_fewer_llvm_workers_than_with_cargos_spare_tokens(
    tmp_path: Path, procs: Procs
) -> None:
    rustc = shutil.which("rustc")
    front = tmp_path / "rustc"
    front.write_text(FRONT.format(python=sys.executable, rustc=rustc))
    front.chmod(0o755)
    _crate(tmp_path / "main.rs")
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"+" * SPARE)
    makeflags = f"-j{SPARE + 1} --jobserver-fds={read_fd},{write_fd}"
    makeflags += f" --jobserver-auth={read_fd},{write_fd}"
    cfg = tmp_path / "xdg-config" / "ltoguard"
    cfg.mkdir(parents=True)
    # Far from any bound, so the ordinary compile's own estimate never asks for one thread.
    cfg.joinpath("config.toml").write_text('[crates.plain]\nmemory = "50M"\n')

    def compile_(crate: str, **extra: str) -> tuple[int, str]:
        env = clean_env(tmp_path, tmp_path / "state", CARGO_MAKEFLAGS=makeflags, **extra)
        cmd = [sys.executable, "-m", "ltoguard", str(front), "--crate-name", crate]
        cmd += ["--edition=2021", str(tmp_path / "main.rs"), "--crate-type", "bin"]
        cmd += ["-C", "opt-level=3", "-C", "codegen-units=16", "-C", "lto=fat"]
        cmd += ["--out-dir", str(tmp_path / crate)]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, pass_fds=(read_fd, write_fd))
        procs.procs.append(proc)
        most = _most_threads(proc)
        err = proc.communicate(timeout=240)[1].decode()
        assert proc.returncode == 0, err
        return most, err

    try:
        plain, _ = compile_("plain")
        rerun, err = compile_("rerun", FIRST_OOM=str(tmp_path / "oom"))
        assert "running it again, alone, on one codegen thread" in err, err
        # cargo's spare tokens: as many workers more as it took (some, at least two).
        assert plain >= rerun + 2, (plain, rerun)
        assert wait_for(lambda: _tokens(read_fd, write_fd) == SPARE, timeout=5)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def _tokens(read_fd: int, write_fd: int) -> int:
    fd = os.open(f"/proc/self/fd/{read_fd}", os.O_RDONLY | os.O_NONBLOCK)
    try:
        got = os.read(fd, 64)
    except BlockingIOError:
        got = b""
    finally:
        os.close(fd)
    os.write(write_fd, got)
    return len(got)
