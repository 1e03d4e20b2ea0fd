"""A job that only waits stays small: dozens of waiting ltoguard processes of a
many-binary build share one memory cap with the compiles. What it imports is most
of what it holds, and filelock and psutil are large, so neither is loaded before a
job is admitted."""

from __future__ import annotations

from pathlib import Path

from tests.procs import Procs, clean_env, ltoguard_cmd, make_fake_rustc, read_log


def _imports_while_waiting(tmp_path: Path) -> list[str]:
    rustc = make_fake_rustc(tmp_path)
    env = clean_env(tmp_path, tmp_path / "state", LTOGUARD_MEMORY="200M")
    env.pop("LTOGUARD_SLOTS", None)  # auto: memory decides, the way a waiter polls
    with Procs() as procs:
        holder = procs.holder(rustc, env, timeout=30)
        waiter = procs.start(ltoguard_cmd(rustc, "waiter"), dict(env, PYTHONPROFILEIMPORTTIME="1"))
        assert waiter.stderr is not None
        modules = []
        while True:
            line = waiter.stderr.readline().decode()
            assert line, "the waiter ended without saying it waits"
            if "waits" in line:
                break
            if line.startswith("import time:") and "|" in line:
                modules.append(line.rsplit("|", 1)[1].strip())
        holder.release()
        assert waiter.wait(timeout=60) == 0
        return modules


def _ltoguards(modules: list[str]) -> list[str]:
    """The modules loaded from ltoguard's first on: `python -m` loads runpy first,
    which on Python 3.9 loads typing itself (the installed launcher runs a script)."""
    return modules[modules.index("ltoguard") :]


def test_a_waiting_job_imports_neither_filelock_nor_psutil(tmp_path: Path) -> None:
    modules = _imports_while_waiting(tmp_path)
    assert "ltoguard.semaphore" in modules  # it did go through the guarded path
    assert "filelock" not in modules
    assert "psutil" not in modules
    # Nor what only a running compile needs (spawning it, sampler and relay
    # threads), typing, or hashlib's OpenSSL (docs/benchmarks.md, "What a waiting
    # job holds").
    for heavy in ("subprocess", "threading", "typing", "hashlib", "_hashlib", "dataclasses"):
        assert heavy not in _ltoguards(modules), heavy


def test_an_admitted_job_imports_neither_filelock_nor_psutil(tmp_path: Path) -> None:
    """Running under its slot: the slot lock is a plain flock and the sampler reads
    /proc, so neither is paid for by each LTO job (pausing and killing read /proc too);
    with LTOGUARD_DIR set, tempfile is not needed, and decimal is not loaded up front."""
    rustc = make_fake_rustc(tmp_path)
    cmd = ltoguard_cmd(rustc, "alone")
    cmd[1:1] = ["-X", "importtime"]  # ltoguard's imports only, not the fake rustc's
    with Procs() as procs:
        job = procs.start(cmd, clean_env(tmp_path, tmp_path / "state"))
        _, err = job.communicate(timeout=60)
    assert job.returncode == 0
    log = tmp_path / "log.jsonl"
    assert [e["what"] for e in read_log(log)][:1] == ["start"]  # the compile ran
    modules = [
        line.rsplit("|", 1)[1].strip()
        for line in err.decode().splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "ltoguard.attempt" in modules  # it went through an attempt under a slot
    assert "filelock" not in modules
    assert "psutil" not in modules
    assert "tempfile" not in modules
    assert "decimal" not in modules
    assert "typing" not in _ltoguards(modules)
    assert "_hashlib" not in modules
    assert "dataclasses" not in modules  # ltoguard/structs.py: inspect, ast, dis, tokenize
