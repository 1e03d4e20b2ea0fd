"""What was learned survives CI, reboots and compiler updates: peaks are kept per
toolchain (another toolchain's figures are only a raised hint), in the per-user
cache directory (history.py), which outlives the state directory and which CI
caches restore; older versions' files are still read. The CI runs re-implement
Swatinem/rust-cache's cleanup of the target directory between two runs."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ltoguard import history as history_module
from ltoguard.estimates import HISTORY_HEADROOM, OTHER_TOOLCHAIN_FACTOR, History
from ltoguard.history import TARGET_HISTORY, HistoryStore, cache_dir, history_file
from ltoguard.jobs import target_dir, toolchain_id
from ltoguard.sizes import MiB
from tests.conftest import Workspace, cargo_env
from tests.procs import Procs, clean_env, ltoguard_cmd, make_fake_rustc, state_leftovers

A, B = "toolchain-a", "toolchain-b"


def history(*rows: tuple[str, str, int, str]) -> History:
    h = History()
    for key, group, peak, toolchain in rows:
        h.record(key, group, peak, toolchain)
    return h


@pytest.mark.parametrize(
    ("rows", "ask", "expected"),
    [
        # Its own peak with this toolchain.
        ([("k", "g", 400 * MiB, A)], A, (int(400 * MiB * HISTORY_HEADROOM), "history")),
        # A sibling measured with this toolchain beats its own peak under another.
        (
            [("k", "g", 400 * MiB, B), ("s", "g", 300 * MiB, A)],
            A,
            (int(300 * MiB * HISTORY_HEADROOM), "siblings"),
        ),
        # Only another toolchain's figure: a hint, raised.
        (
            [("k", "g", 400 * MiB, B)],
            A,
            (
                int(400 * MiB * HISTORY_HEADROOM * OTHER_TOOLCHAIN_FACTOR),
                "history, other toolchain",
            ),
        ),
        (
            [("s", "g", 400 * MiB, B)],
            A,
            (
                int(400 * MiB * HISTORY_HEADROOM * OTHER_TOOLCHAIN_FACTOR),
                "siblings, other toolchain",
            ),
        ),
        # Entries from before toolchains were recorded count as another toolchain's.
        (
            [("k", "g", 400 * MiB, "")],
            A,
            (int(400 * MiB * HISTORY_HEADROOM * 1.5), "history, other toolchain"),
        ),
        # A job that does not know its toolchain (`ltoguard run`) takes everything.
        ([("k", "g", 400 * MiB, B)], "", (int(400 * MiB * HISTORY_HEADROOM), "history")),
        ([], A, (2 << 30, "default")),
    ],
)
def test_estimate_by_toolchain(
    rows: list[tuple[str, str, int, str]], ask: str, expected: tuple[int, str]
) -> None:
    assert history(*rows).estimate("k", "g", toolchain=ask) == expected


def test_a_new_toolchain_starts_the_peaks_afresh() -> None:
    h = history(("k", "g", 400 * MiB, A), ("k", "g", 420 * MiB, A))
    assert h.peaks("k") == [400 * MiB, 420 * MiB]
    h.record("k", "g", 900 * MiB, B)  # the compiler update doubled it
    assert (h.peaks("k"), h.toolchain("k")) == ([900 * MiB], B)


def test_the_file_keeps_the_toolchain_and_reads_old_files(tmp_path: Path) -> None:
    h = history(("k", "g", 400 * MiB, A))
    h.save(str(tmp_path / "h.json"))
    data = json.loads((tmp_path / "h.json").read_text())
    assert data["version"] == 1 and data["entries"]["k"]["toolchain"] == A
    again = History.load(str(tmp_path / "h.json"))
    assert again.estimate("k", "g", toolchain=A)[1] == "history"
    old = {"version": 1, "entries": {"k": {"group": "g", "peaks": [1 << 20]}}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert History.load(str(tmp_path / "old.json")).peaks("k") == [1 << 20]


def test_the_newer_file_wins_over_an_older_one() -> None:
    live = history(("k", "g", 500 * MiB, A))
    copy = history(("k", "g", 100 * MiB, A), ("other", "g", 300 * MiB, A))
    merged = live.merged_under(copy, A)
    assert merged.peaks("k") == [500 * MiB] and merged.peaks("other") == [300 * MiB]


def test_the_older_file_wins_where_only_it_knows_this_toolchain() -> None:
    live = history(("k", "g", 500 * MiB, B))  # this machine still has the old compiler's
    copy = history(("k", "g", 800 * MiB, A))  # CI measured the new one
    assert live.merged_under(copy, A).estimate("k", "g", toolchain=A) == (
        int(800 * MiB * HISTORY_HEADROOM),
        "history",
    )
    assert live.merged_under(copy, B).peaks("k") == [500 * MiB]


def fake_toolchain(root: Path, driver: str) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir()
    (root / "lib" / driver).write_text("")
    rustc = root / "bin" / "rustc"
    rustc.write_text("#!/bin/sh\n")
    return rustc


def test_toolchain_id_follows_the_compiler(tmp_path: Path) -> None:
    rustc = fake_toolchain(tmp_path / "stable", "librustc_driver-aaaa.so")
    first = toolchain_id(["sccache", str(rustc), "--crate-name", "x"])
    assert first and first == toolchain_id([str(rustc), "-C", "lto"])
    # `rustup update`: the driver (named per release) and the rustc binary change.
    (tmp_path / "stable" / "lib" / "librustc_driver-aaaa.so").rename(
        tmp_path / "stable" / "lib" / "librustc_driver-bbbb.so"
    )
    assert toolchain_id([str(rustc)]) not in ("", first)
    assert toolchain_id(["cc", "-o", "x"]) == ""  # not a compile: no toolchain


def test_target_dir_is_the_one_with_cachedir_tag(tmp_path: Path) -> None:
    target = tmp_path / "target"
    deps = target / "x86_64-unknown-linux-gnu" / "release" / "deps"
    deps.mkdir(parents=True)
    (target / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    assert target_dir(["rustc", "--out-dir", str(deps)]) == str(target)
    assert target_dir(["rustc", f"--out-dir={deps}"]) == str(target)
    assert target_dir(["rustc", "--out-dir", str(tmp_path)]) == ""
    assert target_dir(["rustc", "x.rs"]) == ""


# -- Swatinem/rust-cache's cleanup ---------------------------------------------------


def rust_cache_clean(target: Path, keep: Iterable[str] = ()) -> None:
    """What Swatinem/rust-cache's ``cleanTargetDir`` (src/cleanup.ts) does to the target
    directory before it saves it: every file at its top but CACHEDIR.TAG goes; a
    directory holding CACHEDIR.TAG or .rustc_info.json is a nested target directory,
    cleaned the same way; any other directory is a profile directory, where only
    build/, .fingerprint/ and deps/ stay, each holding only the entries of ``keep``
    (the packages that are not workspace members; the "-hash" suffix stripped)."""
    for entry in target.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            if (entry / "CACHEDIR.TAG").exists() or (entry / ".rustc_info.json").exists():
                rust_cache_clean(entry, keep)
            else:
                _clean_profile(entry, set(keep))
        elif entry.name != "CACHEDIR.TAG":
            entry.unlink()


def _clean_profile(profile: Path, keep: set[str]) -> None:
    _rm_except(profile, {"build", ".fingerprint", "deps"})
    _rm_except(profile / "build", keep)
    _rm_except(profile / ".fingerprint", keep)
    names = {n.replace("-", "_") for n in keep}
    _rm_except(profile / "deps", names | {f"lib{n}" for n in names})


def _rm_except(directory: Path, keep: set[str]) -> None:
    if not directory.is_dir():
        return  # rust-cache's opendir throws and its caller catches it
    for entry in directory.iterdir():
        name = entry.name[: entry.name.rindex("-")] if "-" in entry.name else entry.name
        if name in keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def test_rust_cache_clean_keeps_what_rust_cache_keeps(tmp_path: Path) -> None:
    target = tmp_path / "target"
    release = target / "release"
    for d in ("deps", "build/serde-1a2b", "build/app-3c4d", ".fingerprint/serde-1a2b",
              ".fingerprint/app-3c4d", "incremental/app-5e6f", "examples"):  # fmt: skip
        (release / d).mkdir(parents=True)
    for f in ("deps/libserde-1a2b.rlib", "deps/serde-1a2b.d", "deps/app-3c4d", "app", "app.d"):
        (release / f).write_text("")
    for f in ("CACHEDIR.TAG", ".rustc_info.json", TARGET_HISTORY):
        (target / f).write_text("")
    rust_cache_clean(target, keep=["serde"])
    left = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    assert left == [
        "CACHEDIR.TAG",
        "release",
        "release/.fingerprint",
        "release/.fingerprint/serde-1a2b",
        "release/build",
        "release/build/serde-1a2b",
        "release/deps",
        "release/deps/libserde-1a2b.rlib",
        "release/deps/serde-1a2b.d",
    ]


# -- the store: where, load, merge, record ---------------------------------------------


def test_cache_dir_is_xdg_cache_home_else_home() -> None:
    assert cache_dir({"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == "/c/ltoguard"
    # The XDG spec ignores a relative path.
    assert cache_dir({"XDG_CACHE_HOME": "c", "HOME": "/h"}) == "/h/.cache/ltoguard"
    assert cache_dir({"HOME": "/h"}) == "/h/.cache/ltoguard"
    assert cache_dir({"HOME": ""}) is None and cache_dir({}) is None
    assert history_file(1000) == "memory-history-1000.json"  # users may share a directory


class Dirs:
    """A state directory (open), a cache home and a cargo target directory."""

    def __init__(self, tmp: Path) -> None:
        self.state = tmp / "state"
        self.state.mkdir(mode=0o700)
        self.fd = os.open(self.state, os.O_RDONLY | os.O_DIRECTORY)
        self.xdg = tmp / "xdg-cache"
        self.cache = self.xdg / "ltoguard"
        self.target = tmp / "target"
        (self.target / "release" / "deps").mkdir(parents=True)
        (self.target / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
        self.name = history_file(os.geteuid())

    def store(self, **env: str) -> HistoryStore:
        environ = {"XDG_CACHE_HOME": str(self.xdg), **env}
        return HistoryStore.for_job(lambda: (str(self.state), self.fd), str(self.target), environ)

    def peaks(self, directory: Path, key: str = "k") -> list[int]:
        return History.load(str(directory / self.name)).peaks(key)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[Dirs]:
    d = Dirs(tmp_path)
    yield d
    os.close(d.fd)


def test_a_peak_is_kept_in_the_cache_dir_only(
    dirs: Dirs, capsys: pytest.CaptureFixture[str]
) -> None:
    store = dirs.store()
    store.record("k", "g", 500 * MiB, "tc")
    assert dirs.peaks(dirs.cache) == [500 * MiB]
    assert os.stat(dirs.cache).st_mode & 0o777 == 0o700
    assert os.listdir(dirs.state) == []  # nothing that outlives a boot is left there
    assert not (dirs.target / TARGET_HISTORY).exists()  # no second copy to write
    assert store.lookup("k", "g", toolchain="tc")[:2] == (
        int(500 * MiB * HISTORY_HEADROOM),
        "history",
    )
    assert store.read_from() == [str(dirs.cache / dirs.name)]
    assert capsys.readouterr().err == ""


def _record_at_once(dirs: Dirs, key: str, env: dict[str, str], go: Any) -> None:
    store = dirs.store(**env)
    go.wait()
    store.record(key, "g", 100 * MiB, "tc")


@pytest.mark.parametrize("where", ["cache", "state"])
def test_jobs_that_end_together_keep_every_peak(
    dirs: Dirs, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each job loads, records and saves the whole file: eight jobs ending in the same
    instant kept two to four of their eight peaks before the write was locked."""
    monkeypatch.setattr(history_module, "RECORD_LOCK_S", 60.0)  # eight fsyncs on a busy disk
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    env = {} if where == "cache" else {"XDG_CACHE_HOME": ""}
    keys = [f"app{i}" for i in range(8)]
    procs = [ctx.Process(target=_record_at_once, args=(dirs, k, env, go)) for k in keys]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    directory = dirs.cache if where == "cache" else dirs.state
    assert sorted(k for k, _, _ in History.load(str(directory / dirs.name)).items()) == keys


def test_a_stopped_writer_holds_a_record_up_briefly_only(
    dirs: Dirs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job stopped while it holds the history's lock (SIGSTOP, a debugger) must not
    hold up the build's other jobs: they wait RECORD_LOCK_S, then write unlocked."""
    monkeypatch.setattr(history_module, "RECORD_LOCK_S", 0.3)
    dirs.cache.mkdir(parents=True, mode=0o700)
    holder = os.open(dirs.cache, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        dirs.store().record("k", "g", 100 * MiB, "tc")
        waited = time.monotonic() - started
    finally:
        os.close(holder)
    assert 0.3 <= waited < 5
    assert dirs.peaks(dirs.cache) == [100 * MiB]


def test_a_record_lets_the_lock_go(dirs: Dirs) -> None:
    store = dirs.store()
    store.record("k", "g", 100 * MiB, "tc")
    probe = os.open(dirs.cache, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if it were still held
    finally:
        os.close(probe)
    store.close()


def test_older_files_are_read_and_moved_into_the_cache_dir(dirs: Dirs) -> None:
    """An upgrade loses nothing: the state directory's history and the target
    directory's copy (what older versions wrote) count, and the next record
    writes what they hold into the cache directory."""
    state = History()
    state.record("from-state", "g", 300 * MiB, "tc")
    state.record("both", "g", 100 * MiB, "tc")
    state.save(str(dirs.state / dirs.name))
    copy = History()
    copy.record("from-target", "g", 200 * MiB, "tc")
    copy.save(str(dirs.target / TARGET_HISTORY))
    newer = History()
    newer.record("both", "g", 400 * MiB, "tc")
    dirs.cache.mkdir(parents=True, mode=0o700)
    newer.save(str(dirs.cache / dirs.name))

    store = dirs.store()
    assert store.read_from() == [
        str(dirs.cache / dirs.name),
        str(dirs.state / dirs.name),
        str(dirs.target / TARGET_HISTORY),
    ]
    assert "also read from" in store.describe()
    for key, peak in (("from-state", 300), ("from-target", 200), ("both", 400)):
        assert store.lookup(key, "g", toolchain="tc")[:2] == (
            int(peak * MiB * HISTORY_HEADROOM),
            "history",
        )
    store.record("new", "g", 50 * MiB, "tc")
    moved = History.load(str(dirs.cache / dirs.name))
    assert {k for k, _, _ in moved.items()} == {"from-state", "from-target", "both", "new"}
    assert moved.peaks("both") == [400 * MiB]  # the cache directory's is the newer
    assert dirs.peaks(dirs.state, "from-state") == [300 * MiB]  # read, never rewritten


@pytest.mark.parametrize("case", ["home missing", "not a directory", "another user's", "no HOME"])
def test_an_unusable_cache_dir_falls_back_to_the_state_dir_with_one_warning(
    dirs: Dirs, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    env = {"XDG_CACHE_HOME": "", "HOME": str(tmp_path / "no-such-home")}
    where = str(tmp_path / "no-such-home" / ".cache" / "ltoguard")
    if case == "no HOME":
        env, where = {"XDG_CACHE_HOME": "", "HOME": ""}, "$HOME/.cache/ltoguard"
    elif case == "not a directory":
        dirs.xdg.write_text("")
        env, where = {}, str(dirs.cache)
    elif case == "another user's":
        if os.geteuid() != 0:
            pytest.skip("needs root to give the directory away")
        dirs.cache.mkdir(parents=True)
        os.chown(dirs.cache, 65534, 65534)
        env, where = {}, str(dirs.cache)
    store = dirs.store(**env)
    store.record("k", "g", 500 * MiB, "tc")
    store.record("k", "g", 600 * MiB, "tc")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"ltoguard: warning: cannot keep the memory history in {where}: ")
    assert f"keeping it in the state directory {dirs.state} instead" in err[0]
    assert dirs.peaks(dirs.state) == [500 * MiB, 600 * MiB]
    assert store.written() == str(dirs.state / dirs.name)
    assert store.as_dict()["cache_dir_problem"]
    assert not (tmp_path / "no-such-home").exists()  # a home is never made
    dirs.store(**env).record("k", "g", 700 * MiB, "tc")  # the next job of the build
    assert capsys.readouterr().err == ""  # said once, not once per job


def test_a_cache_dir_that_fails_on_write_falls_back(
    dirs: Dirs, capsys: pytest.CaptureFixture[str]
) -> None:
    store = dirs.store()
    shutil.rmtree(dirs.cache)  # e.g. a full or read-only file system by now
    store.record("k", "g", 500 * MiB, "tc")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"keeping it in the state directory {dirs.state}" in err[0]
    assert dirs.peaks(dirs.state) == [500 * MiB]


def test_commands_look_without_making_anything(dirs: Dirs) -> None:
    store = HistoryStore.for_reading(
        lambda: (str(dirs.state), dirs.fd), environ={"XDG_CACHE_HOME": str(dirs.xdg)}
    )
    assert store.problem is None and store.written() == str(dirs.cache / dirs.name)
    assert len(store.load()) == 0
    assert not dirs.xdg.exists()


# -- two CI runs with rust-cache's cleanup between them --------------------------------


def events(state: Path) -> list[dict[str, Any]]:
    path = state / f"events-{os.geteuid()}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_history_survives_rust_cache_and_a_fresh_runner(tmp_path: Path, procs: Procs) -> None:
    """A CI run on a fresh runner: empty state and temp directories, the target
    directory as rust-cache restores it (cleaned before it was saved), and
    ~/.cache/ltoguard as `cache-directories` restores it (the default location:
    XDG_CACHE_HOME unset). The second run's job starts from its history."""
    rustc = make_fake_rustc(tmp_path)
    target = tmp_path / "target"
    deps = target / "release" / "deps"
    argv = ltoguard_cmd(
        rustc, "app", ["--crate-type", "bin", "-C", "lto=fat", "--out-dir", str(deps)]
    )

    def run(n: int) -> dict[str, Any]:
        deps.mkdir(parents=True, exist_ok=True)
        (target / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
        state, tmp = tmp_path / f"state-{n}", tmp_path / f"tmp-{n}"
        tmp.mkdir()
        env = clean_env(tmp_path, state, FAKE_SLEEP="0.6", TMPDIR=str(tmp))
        env.pop("XDG_CACHE_HOME")
        env["HOME"] = str(tmp_path / f"home-{n}")
        os.makedirs(env["HOME"], exist_ok=True)
        p = procs.start(argv, env)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert b"warning" not in err
        [event] = events(state)
        return event

    assert run(1)["estimate_basis"] == "default"
    cached = tmp_path / "home-1" / ".cache" / "ltoguard"
    assert (cached / history_file(os.geteuid())).exists()
    rust_cache_clean(target)
    shutil.copytree(cached, tmp_path / "home-2" / ".cache" / "ltoguard")  # the CI cache
    assert run(2)["estimate_basis"] == "history"


def test_a_read_only_home_costs_one_warning_and_no_slot(tmp_path: Path, procs: Procs) -> None:
    """HOME=/nonexistent, as in CI containers: the build goes on, the state
    directory keeps the history, and nothing stays held."""
    rustc = make_fake_rustc(tmp_path)
    state = tmp_path / "state"
    env = clean_env(tmp_path, state, FAKE_SLEEP="0.3", HOME=str(tmp_path / "nonexistent"))
    env.pop("XDG_CACHE_HOME")
    said = []
    for crate in ("app", "tool"):
        p = procs.start(ltoguard_cmd(rustc, crate), env, cwd=tmp_path)
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0
        said.append(err.decode().splitlines())
    assert len(said[0]) == 1 and said[1] == []  # once per state directory, not per job
    assert str(tmp_path / "nonexistent" / ".cache" / "ltoguard") in said[0][0]
    assert History.load(str(state / history_file(os.geteuid()))).items()
    assert state_leftovers(state) == []
    assert not [n for n in os.listdir(state) if n.startswith(("queue", "ticket", "run-"))]


def test_a_configured_estimate_neither_learns_nor_warns(tmp_path: Path, procs: Procs) -> None:
    state = tmp_path / "state"
    env = clean_env(tmp_path, state, HOME=str(tmp_path / "nonexistent"))
    env.pop("XDG_CACHE_HOME")
    cmd = [sys.executable, "-m", "ltoguard", "run", "--estimate", "100M", "--", "true"]
    p = procs.start(cmd, env, cwd=tmp_path)
    _, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (0, b"")
    assert not (state / history_file(os.geteuid())).exists()


@pytest.mark.cargo
def test_cargo_ci_runs_with_rust_cache_start_from_history(
    generated_workspace: Workspace, tmp_path: Path
) -> None:
    """The same two CI runs through real cargo: run 1 builds the workspace cold;
    rust-cache's cleanup (every member is a workspace package, so only the
    dependency-free skeleton stays) and a fresh runner (state and temp directories)
    follow; the cache directory comes back as the CI cache restores it. Every
    guarded job of run 2 starts from its history."""
    ltoguard = Path(sys.executable).parent / "ltoguard"
    target = tmp_path / "target"

    def run(n: int, cache: Path) -> list[dict[str, Any]]:
        state, tmp = tmp_path / f"state-{n}", tmp_path / f"tmp-{n}"
        tmp.mkdir()
        env = cargo_env(target, clean_env(tmp_path, state, LTOGUARD_SLOTS="2"))
        env.update(
            RUSTC_WORKSPACE_WRAPPER=str(ltoguard), TMPDIR=str(tmp), XDG_CACHE_HOME=str(cache)
        )
        proc = subprocess.run(
            ["cargo", "build", "--release", "-j2"],
            cwd=generated_workspace.root, env=env, stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return events(state)

    first = run(1, tmp_path / "cache-1")
    assert sorted(e["crate"] for e in first) == generated_workspace.bins
    assert all(e["estimate_basis"] != "history" for e in first)
    rust_cache_clean(target)
    assert sorted(p.name for p in target.iterdir()) == ["CACHEDIR.TAG", "release"]
    shutil.copytree(tmp_path / "cache-1", tmp_path / "cache-2")  # saved, then restored
    second = run(2, tmp_path / "cache-2")
    assert sorted(e["crate"] for e in second) == generated_workspace.bins
    assert [e["estimate_basis"] for e in second] == ["history"] * len(second)


# -- doctor, explain and learned say where -------------------------------------------


def test_doctor_explain_and_learned_say_where_history_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ltoguard.commands import doctor, explain, learned

    state, xdg = tmp_path / "state", tmp_path / "xdg"
    monkeypatch.setenv("LTOGUARD_DIR", str(state))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("RUSTC", str(tmp_path / "no-such-rustc"))
    monkeypatch.chdir(tmp_path)
    file = str(xdg / "ltoguard" / history_file(os.geteuid()))
    line = f"read from and written to {file}"

    [check] = [c for c in doctor.run_checks(str(tmp_path), os.environ) if c.name == "history"]
    assert (check.status, check.message) == ("ok", line)
    assert check.detail["written"] == file and check.detail["read"] == [file]

    argv = ["rustc", "--crate-name", "app", "--crate-type", "bin", "-C", "lto=fat", "main.rs"]
    assert explain.main(argv) == 0
    assert f"  history   = {line}\n" in capsys.readouterr().out
    assert explain.main(["--json", *argv]) == 0
    assert json.loads(capsys.readouterr().out)["files"]["history"]["written"] == file

    assert learned.main([]) == 0
    assert f"history: {line}\n" in capsys.readouterr().out
    assert learned.main(["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["history_file"] == file and doc["history"]["read"] == [file]
    assert not xdg.exists()  # looking makes nothing

    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "no-such-home"))
    [check] = [c for c in doctor.run_checks(str(tmp_path), os.environ) if c.name == "history"]
    assert check.status == "warn" and str(state / history_file(os.geteuid())) in check.message
    assert str(tmp_path / "no-such-home" / ".cache" / "ltoguard") in check.message


def test_learned_lists_the_history_after_a_reboot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The state directory is gone (a reboot); what was learned is still listed."""
    from ltoguard.commands import learned

    xdg = tmp_path / "xdg"
    monkeypatch.setenv("LTOGUARD_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    monkeypatch.setenv("RUSTC", str(tmp_path / "no-such-rustc"))
    h = History()
    h.record('["/w","app","3","fat","0","",["bin"]]', "g", 600 * MiB)
    (xdg / "ltoguard").mkdir(parents=True, mode=0o700)
    h.save(str(xdg / "ltoguard" / history_file(os.geteuid())))
    assert learned.main([]) == 0
    out = capsys.readouterr().out
    assert "memory history: 1 jobs" in out and "app" in out
    assert not (tmp_path / "state").exists()
