"""The cold estimate: what an LTO compile will read, found before
it starts (the rlib closure through each rlib's metadata, its own source), the
prediction drawn from it, and where that prediction stands among the other bases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltoguard import inputs
from ltoguard.estimates import HISTORY_HEADROOM, History
from ltoguard.sizes import MiB

H = {name: f"{i:016x}" for i, name in enumerate(["core", "util", "app", "other", "std"], 1)}


def ar_member(name: bytes, data: bytes) -> bytes:
    header = name.ljust(16) + b"0".ljust(12) + b"0".ljust(6) + b"0".ljust(6) + b"644".ljust(8)
    header += str(len(data)).encode().ljust(10) + b"`\n"
    return header + data + (b"\n" if len(data) % 2 else b"")


def rlib(
    deps: Path,
    crate: str,
    built_against: list[str],
    pad: int = 0,
    rmeta: bool = False,
    built_in: str = "",
    mir: int = 0,
) -> Path:
    """A crate's rlib whose metadata names its dependencies by file suffix, as rustc's does,
    the folder it was built in with its source's path when ``built_in`` is given, and
    ``mir`` bytes more (generic code)."""
    meta = b"rust\0\0\0\x09" + b"".join(b"\x05" + f"-{h}".encode() + b"\x00" for h in built_against)
    if built_in:
        # as rustc writes strings: a length, the bytes, 0xC1; the working folder, then
        # the source file's path below it
        for text in (built_in, f"{built_in}/{crate}/src/lib.rs"):
            meta += bytes([len(text) % 128]) + text.encode() + inputs.STR_END
    meta += b"\x01" * mir
    path = deps / f"lib{crate}-{H[crate]}.rlib"
    body = b"!<arch>\n" + ar_member(b"lib.rmeta/", meta) + ar_member(b"x.rcgu.o/", b"\0" * pad)
    path.write_bytes(body)
    if rmeta:
        path.with_suffix(".rmeta").write_bytes(meta)
        # the copy inside the rlib is then not what is read: make it say nothing
        path.write_bytes(
            b"!<arch>\n" + ar_member(b"lib.rmeta/", b"") + ar_member(b"o/", b"\0" * pad)
        )
    return path


@pytest.fixture
def deps(tmp_path: Path) -> Path:
    d = tmp_path / "target" / "release" / "deps"
    d.mkdir(parents=True)
    return d


def test_the_closure_follows_metadata_to_the_crates_it_was_built_against(deps: Path) -> None:
    core = rlib(deps, "core", [H["std"]], pad=1000)  # std's suffix: not in deps, skipped
    util = rlib(deps, "util", [H["core"]], pad=3000)
    rlib(deps, "other", [], pad=99999)  # in the folder, but nobody links it
    argv = ["rustc", "--crate-name", "app", "src/main.rs", "-L", f"dependency={deps}"]
    argv += ["--extern", f"util={util}"]
    got = inputs.closure(*inputs._options(argv))
    assert set(got) == {str(util), str(core)}
    assert got[str(core)] == (core.stat().st_size, inputs.metadata(str(core))[0], 0)
    assert 0 < got[str(core)][1] < got[str(core)][0]


def test_a_cycle_and_a_repeated_crate_are_counted_once(deps: Path) -> None:
    a = rlib(deps, "core", [H["util"]])
    b = rlib(deps, "util", [H["core"]])
    got = inputs.closure([str(a), str(b), str(a)], [str(deps)])
    assert sorted(got) == sorted([str(a), str(b)])


def test_generic_code_is_the_workspace_crates_metadata_beyond_their_object_code(
    deps: Path,
) -> None:
    ws = "/home/u/ws"
    registry = "/home/u/.cargo/registry/src/core-1.0"
    core = rlib(deps, "core", [], pad=100, built_in=registry, mir=9000)  # not the workspace's
    util = rlib(deps, "util", [H["core"]], pad=1000, built_in=ws, mir=5000)  # mostly generic
    app = rlib(deps, "app", [H["util"]], pad=20000, built_in=ws, mir=5000)  # mostly object code
    other = rlib(deps, "other", [], pad=100, built_in=ws + "-old", mir=5000)  # a sibling folder
    # a registry crate whose build script's output is under the workspace's target folder
    built = rlib(
        deps, "std", [], pad=100, built_in=ws + "/target/release/build/std-1/out", mir=5000
    )
    got = inputs.closure(
        [str(app), str(other), str(built)], [str(deps)], local=ws.encode() + inputs.STR_END
    )
    size, meta, generic = got[str(util)]
    assert generic == meta - (size - meta) and 0 < generic < meta
    assert got[str(app)][2] == 0
    assert got[str(core)][2] == 0 and got[str(other)][2] == 0 and got[str(built)][2] == 0
    assert all(g == 0 for _, _, g in inputs.closure([str(app)], [str(deps)]).values())


def test_read_inputs_counts_the_generic_code_of_crates_built_where_rustc_runs(
    deps: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert inputs.workspace_marker() == str(tmp_path).encode() + b"\xc1"
    core = rlib(deps, "core", [], pad=50, built_in="/usr/share/cargo/registry/core-1.0", mir=900)
    util = rlib(deps, "util", [H["core"]], pad=70, built_in=str(tmp_path), mir=3000)
    got = inputs.read_inputs(["rustc", "--extern", f"util={util}", f"-Ldependency={deps}"], None)
    assert got is not None
    meta = inputs.metadata(str(util))[0]
    assert got.generic == 2 * meta - util.stat().st_size > 0
    assert got.meta == meta + inputs.metadata(str(core))[0]
    assert got.as_dict()["generic"] == got.generic


def test_the_rmeta_beside_the_rlib_is_read_when_cargo_left_one(deps: Path) -> None:
    core = rlib(deps, "core", [])
    util = rlib(deps, "util", [H["core"]], rmeta=True)
    assert set(inputs.closure([str(util)], [str(deps)])) == {str(util), str(core)}


@pytest.mark.parametrize(
    "spelling",
    [
        ["--extern", "util={u}", "-L", "dependency={d}"],
        ["--extern=util={u}", "-Ldependency={d}"],
        ["--extern", "util={u}", "-L", "all={d}"],
    ],
)
def test_extern_and_dependency_folders_in_every_spelling(deps: Path, spelling: list[str]) -> None:
    rlib(deps, "core", [])
    util = rlib(deps, "util", [H["core"]])
    argv = ["rustc"] + [a.format(u=util, d=deps) for a in spelling]
    externs, dirs = inputs._options(argv)
    assert externs == [str(util)] and dirs == [str(deps)]


def test_what_is_not_an_rlib_dependency_is_left_out(deps: Path) -> None:
    argv = ["rustc", "--extern", "proc_macro", "--extern", "derive=/x/libderive-1.so"]
    argv += ["-L", "native=/usr/lib", "-L"]  # a dangling -L at the end too
    assert inputs._options(argv) == ([], [])


def test_source_size_counts_the_crate_roots_folder_without_target(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "m").mkdir(parents=True)
    (src / "main.rs").write_text("x" * 100)
    (src / "m" / "mod.rs").write_text("y" * 50)
    (src / "notes.txt").write_text("z" * 1000)
    (src / "target").mkdir()
    (src / "target" / "gen.rs").write_text("w" * 1000)
    assert inputs.source_size(str(src / "main.rs")) == 150
    assert inputs.source_size(None) == 0
    # lib.rs beside main.rs is its own crate (an rlib, counted as such); the bins
    # under src/bin are crates of their own
    (src / "lib.rs").write_text("l" * 70)
    (src / "bin" / "tool").mkdir(parents=True)
    (src / "bin" / "tool.rs").write_text("t" * 30)
    (src / "bin" / "tool" / "part.rs").write_text("p" * 5)
    (src / "bin" / "other.rs").write_text("o" * 400)
    assert inputs.source_size(str(src / "main.rs")) == 150
    assert inputs.source_size(str(src / "lib.rs")) == 220  # a lib crate: its whole src
    assert inputs.source_size(str(src / "bin" / "tool.rs")) == 35


def test_a_malformed_archive_is_read_no_further(tmp_path: Path) -> None:
    bad = tmp_path / "libx-0000000000000001.rlib"
    bad.write_bytes(b"!<arch>\n" + b"x.o/".ljust(48) + b"-60".ljust(10) + b"`\n" + b"\0" * 80)
    assert inputs.metadata(str(bad)) == (0, b"")
    bad.write_bytes(b"not an archive")
    assert inputs.metadata(str(bad)) == (0, b"")


def test_metadata_sizes_count_past_the_read_budget(deps: Path) -> None:
    util = rlib(deps, "util", [H["core"]], pad=100)
    size, head = inputs.metadata(str(util), limit=4)
    assert len(head) == 4 and size > 4  # the size comes from the archive, not the bytes read


def test_read_inputs_sums_the_closure_and_says_none_when_there_is_nothing(
    deps: Path, tmp_path: Path
) -> None:
    core = rlib(deps, "core", [], pad=500)
    util = rlib(deps, "util", [H["core"]], pad=700)
    main = tmp_path / "main.rs"
    main.write_text("fn main() {}\n")
    argv = ["rustc", str(main), "--extern", f"util={util}", "-L", f"dependency={deps}"]
    got = inputs.read_inputs(argv, str(main))
    meta = inputs.metadata(str(core))[0] + inputs.metadata(str(util))[0]
    assert got == inputs.Inputs(core.stat().st_size + util.stat().st_size, 2, 13, meta)
    assert inputs.read_inputs(["rustc", "-vV"], None) is None
    missing = ["rustc", "--extern", f"util={deps}/libgone-{H['app']}.rlib"]
    assert inputs.read_inputs(missing, None) is None


def test_the_prediction_grows_with_what_is_linked_and_with_debug_info() -> None:
    small = {"deps": 2 * MiB, "crates": 3, "source": 10_000}
    large = {"deps": 20 * MiB, "crates": 30, "source": 10_000}
    assert inputs.predict(small) < inputs.predict(large)
    assert inputs.predict(small, debuginfo="2") > inputs.predict(small)
    assert inputs.predict(small, debuginfo="0") == inputs.predict(small)
    assert inputs.predict({"deps": 0, "crates": 0, "source": 0}) == inputs.BASE


@pytest.mark.parametrize(
    ("debuginfo", "level"),
    [("", 0), ("0", 0), ("none", 0), ("false", 0), ("1", 1), ("limited", 1),
     ("line-tables-only", 1), ("line-directives-only", 1), ("2", 2), ("full", 2),
     ("true", 2), ("some-new-kind", 2)],
)  # fmt: skip
def test_debug_levels_as_rustc_names_them(debuginfo: str, level: int) -> None:
    assert inputs.debug_level(debuginfo) == level
    assert inputs.debug_on(debuginfo) is (level > 0)


def test_debug_info_weighs_the_linked_bitcode_once_and_own_source_twice() -> None:
    """The rlibs' bitcode is built at the profile's debug level and carries its own
    debug info (line tables ~2.1 x its bytes, full info ~4 x): counted once, x 1.5
    with full info; the crate's own source gets its debug info in this compile."""
    code = {"deps": 10 * MiB, "crates": 9, "source": 0, "meta": 0}
    own = {"deps": 0, "crates": 0, "source": 20_000, "meta": 0}
    for part, factors in ((code, (1.0, 1.0, 1.5)), (own, (1.0, 2.0, 2.0))):
        grows = inputs.predict(part) - inputs.BASE
        assert grows > 0
        for debug, level in (("1", 1), ("limited", 1), ("line-tables-only", 1), ("2", 2)):
            got = inputs.predict(part, debuginfo=debug) - inputs.BASE
            assert got == int(grows * factors[level]), (part, debug)


def test_the_line_siblings_scale_doubles_with_debug_info_at_every_level() -> None:
    """Its shape sets the scaled estimates, and the doubled line's fits the real 100-bin
    trace better than the first jobs' line does (docs/benchmarks.md)."""
    both = {"deps": 10 * MiB, "crates": 9, "source": 20_000, "meta": MiB}
    assert inputs.line(both) == inputs.predict(both)  # the same without debug info
    grows = inputs.line(both) - inputs.BASE
    for debug in ("1", "limited", "line-tables-only", "2", "full"):
        assert inputs.line(both, debuginfo=debug) - inputs.BASE == 2 * grows
        assert inputs.predict(both, debuginfo=debug) < inputs.line(both, debuginfo=debug)


def test_the_workspaces_generic_code_is_recorded_not_weighed() -> None:
    # Withheld: as workspace members, most real crates (mostly metadata) would count
    # as generic code and be overrated several times (docs/design.md).
    lib = {"deps": MiB, "crates": 1, "source": 5000, "meta": MiB, "generic": MiB}
    for debug in ("", "2"):
        for f in (inputs.predict, inputs.line):
            assert f(lib, debuginfo=debug) == f({**lib, "generic": 0}, debuginfo=debug)


def pred(d: dict[str, int]) -> int:
    return 100 * MiB + d["deps"] * 10


def test_inputs_beat_the_default_but_history_beats_inputs() -> None:
    mine = {"deps": 30 * MiB, "crates": 9, "source": 0}
    h = History()
    assert h.estimate("k", "g", inputs=mine, predict=pred) == (400 * MiB, "inputs")
    assert h.estimate("k", "g")[1] == "default"
    h.record("k", "g", 300 * MiB, inputs=mine)
    assert h.estimate("k", "g", inputs=mine, predict=pred) == (
        int(300 * MiB * HISTORY_HEADROOM),
        "history",
    )


def test_siblings_scale_the_prediction_instead_of_lending_their_largest_peak() -> None:
    """A small binary beside a big one is not assumed as big."""
    h = History()
    h.record("big", "g", 500 * MiB, inputs={"deps": 40 * MiB, "crates": 20, "source": 0})
    h.record("tiny", "g", 110 * MiB, inputs={"deps": 1 * MiB, "crates": 2, "source": 0})
    small = {"deps": 2 * MiB, "crates": 3, "source": 0}
    est, basis = h.estimate("new", "g", inputs=small, predict=pred)
    assert basis == "siblings, scaled by inputs"
    # the prediction was 500/500 = 1.0 off for big, 110/110 for tiny: the worst ratio
    ratio = max(500 / 500, 110 / 110)
    assert est == int(pred(small) * ratio * HISTORY_HEADROOM)
    assert est < 200 * MiB < 500 * MiB
    # without inputs the old rule holds: the largest sibling, plus headroom
    assert h.estimate("new", "g") == (int(500 * MiB * HISTORY_HEADROOM), "siblings")


def test_scaling_takes_the_median_miss_among_siblings() -> None:
    """One sibling far off (a spike, a slow run) does not raise every estimate of
    the build: the median sibling's miss scales, the upper one of an even count."""
    h = History()
    h.record("a", "g", 1000 * MiB, inputs={"deps": 40 * MiB, "crates": 1, "source": 0})  # 2x
    h.record("b", "g", 250 * MiB, inputs={"deps": 40 * MiB, "crates": 1, "source": 0})  # 0.5x
    small = {"deps": 10 * MiB, "crates": 1, "source": 0}
    est, _ = h.estimate("new", "g", inputs=small, predict=pred)
    assert est == int(pred(small) * 2 * HISTORY_HEADROOM)  # of two, the upper
    h.record("c", "g", 500 * MiB, inputs={"deps": 40 * MiB, "crates": 1, "source": 0})  # 1x
    est, _ = h.estimate("new", "g", inputs=small, predict=pred)
    assert est == int(pred(small) * 1 * HISTORY_HEADROOM)  # 0.5x, 1x, 2x: the median


def test_siblings_scale_the_line_and_the_first_jobs_take_the_prediction() -> None:
    """Two lines: ``predict``'s level for a job with no sibling finished, ``line``'s
    shape for the siblings' misses (inputs.py)."""

    def line(d: dict[str, int]) -> int:
        return 50 * MiB + d["deps"] * 20

    h = History()
    small = {"deps": 2 * MiB, "crates": 3, "source": 0}
    assert h.estimate("new", "g", inputs=small, predict=pred, line=line) == (pred(small), "inputs")
    big = {"deps": 10 * MiB, "crates": 20, "source": 0}
    h.record("big", "g", 500 * MiB, inputs=big)
    est, basis = h.estimate("new", "g", inputs=small, predict=pred, line=line)
    assert basis == "siblings, scaled by inputs"
    assert est == int(line(small) * (500 * MiB / line(big)) * HISTORY_HEADROOM)
    assert est != int(pred(small) * (500 * MiB / pred(big)) * HISTORY_HEADROOM)


def test_every_input_the_prediction_weighs_survives_a_save(tmp_path: Path) -> None:
    """A sibling's recorded inputs must predict what they predicted when it ran, or
    the scaling by how far that prediction was off is wrong by the missing term."""
    path = str(tmp_path / "h.json")
    mine = inputs.Inputs(deps=9 * MiB, crates=3, source=5000, meta=8 * MiB, generic=2 * MiB)
    h = History()
    h.record("k", "g", 300 * MiB, "tc", inputs=mine.as_dict())
    h.save(path)
    again = History.load(path)
    est, basis = again.estimate(
        "n", "g", toolchain="tc", inputs=mine.as_dict(), predict=inputs.predict
    )
    assert basis == "siblings, scaled by inputs"
    assert est == int(300 * MiB * HISTORY_HEADROOM)  # same inputs: the sibling's own peak
    # history written before generic code was recorded reads as none of it
    data = json.loads(Path(path).read_text())
    del data["entries"]["k"]["inputs"]["generic"]
    Path(path).write_text(json.dumps(data))
    old = History.load(path).estimate(
        "n", "g", toolchain="tc", inputs=mine.as_dict(), predict=inputs.predict
    )
    assert old[1] == "siblings, scaled by inputs"


def test_inputs_survive_a_save_and_malformed_ones_are_only_forgotten(tmp_path: Path) -> None:
    path = str(tmp_path / "h.json")
    h = History()
    h.record("k", "g", 300 * MiB, "tc", inputs={"deps": 5, "crates": 1, "source": 2})
    h.save(path)
    again = History.load(path)
    assert again.estimate("n", "g", toolchain="tc", inputs={"deps": 5, "crates": 1, "source": 2},
                          predict=pred)[1] == "siblings, scaled by inputs"  # fmt: skip
    data = json.loads(Path(path).read_text())
    data["entries"]["k"]["inputs"] = {"deps": "many"}
    Path(path).write_text(json.dumps(data))
    broken = History.load(path)
    assert len(broken) == 1
    assert broken.estimate("n", "g", toolchain="tc", inputs={"deps": 5, "crates": 1, "source": 2},
                           predict=pred)[1] == "siblings"  # fmt: skip
