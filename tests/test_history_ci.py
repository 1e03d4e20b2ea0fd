"""What was learned survives CI and compiler updates (issue #11 item 2): peaks are
kept per toolchain, another toolchain's figures are only a raised hint, and a copy
of the history lives in the cargo target directory, which CI caches restore."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ltoguard.estimates import HISTORY_HEADROOM, OTHER_TOOLCHAIN_FACTOR, History
from ltoguard.jobs import target_dir, toolchain_id
from ltoguard.sizes import MiB
from tests.procs import Procs, clean_env, ltoguard_cmd, make_fake_rustc

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
        ([("k", "g", 400 * MiB, "")], A, (int(400 * MiB * 1.1 * 1.5), "history, other toolchain")),
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


def test_the_live_history_wins_over_the_copy() -> None:
    live = history(("k", "g", 500 * MiB, A))
    copy = history(("k", "g", 100 * MiB, A), ("other", "g", 300 * MiB, A))
    merged = live.merged_under(copy, A)
    assert merged.peaks("k") == [500 * MiB] and merged.peaks("other") == [300 * MiB]


def test_the_copy_wins_where_only_it_knows_this_toolchain() -> None:
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


def test_a_cold_state_dir_learns_from_the_target_copy(tmp_path: Path, procs: Procs) -> None:
    """A CI run: the state directory starts empty each time, the target directory
    comes back from the cache. The second run's job knows its peak at once."""
    rustc = make_fake_rustc(tmp_path)
    target = tmp_path / "target"
    deps = target / "release" / "deps"
    deps.mkdir(parents=True)
    (target / "CACHEDIR.TAG").write_text("Signature: 8a477f597d28d172789f06886806bc55\n")
    argv = ltoguard_cmd(
        rustc, "app", ["--crate-type", "bin", "-C", "lto=fat", "--out-dir", str(deps)]
    )

    def run(state: Path) -> dict[str, object]:
        env = clean_env(tmp_path, state, FAKE_SLEEP="0.6")
        p = procs.start(argv, env)
        p.communicate(timeout=60)
        assert p.returncode == 0
        lines = (state / f"events-{os.geteuid()}.jsonl").read_text().splitlines()
        assert len(lines) == 1
        event: dict[str, object] = json.loads(lines[0])
        return event

    first = run(tmp_path / "state-1")
    assert first["estimate_basis"] == "default"
    copy = json.loads((target / "ltoguard-history.json").read_text())
    [entry] = copy["entries"].values()
    assert entry["peaks"][0] > 0 and entry["toolchain"]
    second = run(tmp_path / "state-2")  # a fresh runner: empty state dir
    assert second["estimate_basis"] == "history"


def test_the_copy_is_not_followed_through_a_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    target = tmp_path / "target"
    target.mkdir()
    (target / "ltoguard-history.json").symlink_to(victim)
    fd = os.open(target, os.O_RDONLY)
    try:
        assert len(History.load("ltoguard-history.json", dir_fd=fd, quiet=True)) == 0
        History().save("ltoguard-history.json", dir_fd=fd)  # replaces the link, not its target
    finally:
        os.close(fd)
    assert victim.read_text() == "keep"
