from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltoguard.classify import GUARD, PASS, Decision, classify, describe

DATA = Path(__file__).parent / "data" / "cargo_argv"
ARGFILES = DATA / "argfiles"
RUSTC = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc"


def _load_fixtures() -> list[tuple[str, list[str], str]]:
    out = []
    for path in sorted(DATA.glob("*.json")):
        for item in json.loads(path.read_text(encoding="utf-8")):
            argv = [a.replace("{ARGFILES}", str(ARGFILES)) for a in item["argv"]]
            out.append((f"{path.stem}:{item['name']}", argv, item["expect"]))
    return out


FIXTURES = _load_fixtures()


def test_fixtures_cover_what_they_claim() -> None:
    names = {n for n, _, _ in FIXTURES}
    assert len(FIXTURES) > 200
    expects = [e for _, _, e in FIXTURES]
    assert expects.count("GUARD") > 50 and expects.count("PASS") > 100
    for must in (
        "build:build-fat/mybin",
        "build:build-thin/mycdylib",
        "build:build-true/mystatic",
        "test:test-fat/mylib.test",
        "bench:bench-fat/b",
        "check:check-fat/mybin",
        "wrappers:clippy-rw-fat/mybin",
        "wrappers:both-build-fat/mybin#2",
        "rustflags:rf-clto/print-probe",
        "rustflags:rf-lpl-lto/mybin",
        "argfile:argfile/print-probe",
        "argfile:argfile/mybin",
    ):
        assert must in names


@pytest.mark.parametrize(
    ("argv", "expect"), [f[1:] for f in FIXTURES], ids=[f[0] for f in FIXTURES]
)
def test_captured_cargo_argv(argv: list[str], expect: str) -> None:
    d = classify(argv)
    assert d.action == {"GUARD": GUARD, "PASS": PASS}[expect], d.reason
    assert d.reason


@pytest.mark.parametrize(
    ("argv", "expect"), [f[1:] for f in FIXTURES], ids=[f[0] for f in FIXTURES]
)
def test_captured_cargo_argv_mode_off(argv: list[str], expect: str) -> None:
    d = classify(argv, mode="off")
    assert d.action == PASS and d.reason == "LTOGUARD_MODE=off"


def test_captured_print_probes_are_recognised_as_cargos() -> None:
    probes = [argv for name, argv, _ in FIXTURES if "print-probe" in name]
    assert len(probes) >= 10
    for argv in probes:
        assert classify(argv).reason == "cargo's --print probe"
        assert classify(argv, mode="link").reason == "cargo's --print probe"


def _bin(*extra: str, prog: tuple[str, ...] = (RUSTC,)) -> list[str]:
    return [
        *prog,
        "--crate-name",
        "foo",
        "--edition=2021",
        "src/main.rs",
        "--crate-type",
        "bin",
        "--emit=dep-info,link",
        "-C",
        "opt-level=3",
        *extra,
    ]


@pytest.mark.parametrize(
    ("extra", "lto"),
    [
        (["-C", "lto"], "fat"),
        (["-Clto"], "fat"),
        (["-Clto=fat"], "fat"),
        (["-Clto=thin"], "thin"),
        (["-C", "lto=thin"], "thin"),
        (["--codegen", "lto"], "fat"),
        (["--codegen=lto"], "fat"),
        (["--codegen=lto=fat"], "fat"),
        (["--codegen", "lto=thin"], "thin"),
        (["-C", "lto=y"], "fat"),
        (["-C", "lto=yes"], "fat"),
        (["-C", "lto=on"], "fat"),
        (["-C", "lto=true"], "fat"),
        (["-C", "lto", "-Clto=thin"], "thin"),
        (["-C", "lto=off", "-Clto"], "fat"),
        (["-C", "lto=off", "--codegen", "lto=thin"], "thin"),
    ],
)
def test_lto_on_spellings_guard(extra: list[str], lto: str) -> None:
    d = classify(_bin(*extra))
    assert d.action == GUARD, d.reason
    assert d.lto == lto
    assert d.reason == f"bin with -C lto={lto} links a final artifact"


@pytest.mark.parametrize(
    "extra",
    [
        [],
        ["-C", "lto=off"],
        ["-C", "lto=n"],
        ["-C", "lto=no"],
        ["-C", "lto=false"],
        ["-C", "lto", "-C", "lto=off"],
        ["-Clto=thin", "-Clto=no"],
        ["--codegen=lto", "--codegen", "lto=false"],
        ["-C", "embed-bitcode=no"],
        ["-C", "ltoo"],
    ],
)
def test_lto_off_or_absent_passes(extra: list[str]) -> None:
    d = classify(_bin(*extra))
    assert d.action == PASS, d.reason
    assert d.lto in ("off", "")
    assert not d.guarded


def test_unknown_lto_value_counts_as_on() -> None:
    for value in ("FAT", "", "thin-local", "2"):
        d = classify(_bin("-C", f"lto={value}"))
        assert d.action == GUARD, value
        assert "unrecognised -C lto=" in d.reason


@pytest.mark.parametrize(
    ("types", "action"),
    [
        (["--crate-type", "bin"], GUARD),
        (["--crate-type=cdylib"], GUARD),
        (["--crate-type", "staticlib"], GUARD),
        (["--crate-type=bin,cdylib"], GUARD),
        (["--crate-type", "bin", "--crate-type", "staticlib"], GUARD),
        (["--crate-type", "lib"], PASS),
        (["--crate-type=rlib"], PASS),
        (["--crate-type", "dylib"], PASS),
        (["--crate-type", "proc-macro"], PASS),
        (["--crate-type=rlib,cdylib"], PASS),
        (["--crate-type", "cdylib", "--crate-type", "rlib"], PASS),
        ([], GUARD),  # rustc's default crate type is bin
    ],
)
def test_crate_types(types: list[str], action: str) -> None:
    argv = [RUSTC, "--crate-name", "foo", "src/lib.rs", *types, "-C", "lto"]
    d = classify(argv)
    assert d.action == action, d.reason
    flat = tuple(t for tok in types if tok != "--crate-type" for t in tok.split("=")[-1].split(","))
    assert d.crate_types == flat


def test_mixed_crate_types_guarded_only_in_link_mode() -> None:
    argv = [
        RUSTC,
        "src/lib.rs",
        "--crate-type",
        "rlib",
        "--crate-type",
        "cdylib",
        "-C",
        "opt-level=3",
    ]
    assert classify(argv).reason == "rlib,cdylib crate: rustc runs no LTO for mixed crate types"
    d = classify(argv, mode="link")
    assert d.action == GUARD and d.reason == "cdylib links a final artifact (LTOGUARD_MODE=link)"


def test_test_harness() -> None:
    argv = [
        RUSTC,
        "--crate-name",
        "foo",
        "src/lib.rs",
        "--emit=dep-info,link",
        "--test",
        "-C",
        "lto",
    ]
    d = classify(argv)
    assert d.action == GUARD and d.is_test and d.crate_types == ()
    assert d.reason == "test harness with -C lto=fat links a final artifact"
    # rustc --test builds an executable whatever --crate-type says
    assert classify([*argv, "--crate-type", "lib"]).action == GUARD
    assert classify(argv[:-2]).action == PASS


@pytest.mark.parametrize(
    ("emit", "action"),
    [
        (["--emit=dep-info,link"], GUARD),
        (["--emit", "link"], GUARD),
        (["--emit=link=/tmp/out/foo"], GUARD),
        (["--emit", "dep-info", "--emit=link"], GUARD),
        (["--emit=metadata", "--emit=obj,link=x"], GUARD),
        (["--emit=dep-info,metadata"], PASS),
        (["--emit", "metadata"], PASS),
        (["--emit=obj"], PASS),
        (["--emit=asm,llvm-ir", "--emit=mir"], PASS),
        (["--emit=linker"], PASS),
        ([], GUARD),
    ],
)
def test_emit(emit: list[str], action: str) -> None:
    argv = [RUSTC, "src/main.rs", "--crate-type", "bin", *emit, "-C", "lto=thin"]
    d = classify(argv)
    assert d.action == action, d.reason


def test_check_reason() -> None:
    argv = [RUSTC, "src/main.rs", "--crate-type", "bin", "--emit=dep-info,metadata", "-Clto"]
    assert classify(argv).reason == "emits metadata only (cargo check)"
    assert classify(argv, mode="link").action == PASS
    assert classify(argv[:-2] + ["--emit=obj", "-Clto"]).reason == "--emit=obj without link"


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["-vV"], "version query"),
        (["-V"], "version query"),
        (["--version"], "version query"),
        (["-Vv"], "version query"),
        (["-h"], "help request"),
        (["--help"], "help request"),
        (["-C", "help"], "help request (-C help)"),
        (["-Chelp"], "help request (-C help)"),
        (["-W", "help"], "help request (-W help)"),
        (["-Zhelp"], "help request (-Z help)"),
        (["--explain", "E0308"], "--explain request"),
        (["--explain=E0308"], "--explain request"),
        (["--print=cfg"], "--print=cfg query: rustc prints and exits"),
        (["--print", "sysroot"], "--print=sysroot query: rustc prints and exits"),
        (["--print=target-libdir=/tmp/out"], "--print=target-libdir query: rustc prints and exits"),
        (
            ["--print=native-static-libs", "--print=file-names"],
            "--print=file-names query: rustc prints and exits",
        ),
    ],
)
def test_queries_pass_even_on_lto_bins(extra: list[str], reason: str) -> None:
    for mode in ("lto", "link"):
        d = classify(_bin("-C", "lto", *extra), mode=mode)
        assert d.action == PASS
        assert d.reason == reason


@pytest.mark.parametrize(
    "kinds", [["native-static-libs"], ["link-args"], ["link-args", "native-static-libs"]]
)
def test_prints_made_while_linking_do_not_stop_the_link(kinds: list[str]) -> None:
    # measured: rustc --crate-type staticlib -C lto --print=native-static-libs writes the .a
    extra = [f"--print={k}" for k in kinds]
    d = classify([RUSTC, "src/lib.rs", "--crate-type", "staticlib", "-C", "lto", *extra])
    assert d.action == GUARD, d.reason


def test_stdin_and_missing_input() -> None:
    assert (
        classify([RUSTC, "-", "--crate-type", "bin", "-Clto"]).reason == "reads source from stdin"
    )
    assert classify([RUSTC, "--crate-type", "bin", "-Clto"]).reason == "no input file"
    assert classify([RUSTC]).reason == "no input file"
    assert classify([]).action == PASS
    # the cargo probe shape, but as typed by a user: not "cargo's" probe
    d = classify([RUSTC, "-", "--crate-name", "x", "--print=cfg", "-Clto"])
    assert d.reason == "--print=cfg query: rustc prints and exits"


def test_option_values_are_not_reinterpreted() -> None:
    # measured: `rustc -o -vV m.rs` links to a file named "-vV"; getopts takes
    # the next token as the value whatever it looks like.
    assert classify(_bin("-C", "lto", "-o", "-vV")).action == GUARD
    assert classify(_bin("-C", "lto", "--cfg", "--print=cfg")).action == GUARD
    assert classify(_bin("-C", "lto", "--check-cfg", "-V")).action == GUARD
    assert classify(_bin("-C", "lto", "-L", "--help")).action == GUARD
    assert classify(_bin("-C", "lto", "--extern", "-")).action == GUARD
    # -C takes the next token as its value: "--emit=metadata" is a codegen
    # option here, not an emit list.
    assert classify(_bin("-Clto", "-C", "--emit=metadata")).action == GUARD
    d = classify(_bin("-C", "lto", "--crate-name", "-Clto=off"))
    assert d.action == GUARD and d.crate_name == "-Clto=off"


def test_double_dash_ends_options() -> None:
    argv = [RUSTC, "--crate-type", "bin", "-Clto", "--", "--print=cfg"]
    d = classify(argv)
    assert d.action == GUARD and d.input == "--print=cfg"


@pytest.mark.parametrize(
    "prog",
    [
        (RUSTC,),
        ("rustc",),
        ("/usr/bin/clippy-driver", RUSTC),
        ("sccache", RUSTC),
        ("/opt/sccache", "/opt/clippy-driver", RUSTC),
        ("/tmp/log.py", RUSTC),
        ("/usr/local/bin/my-rustc",),
    ],
)
def test_wrapper_programs_are_skipped(prog: tuple[str, ...]) -> None:
    d = classify(_bin("-Clto", prog=prog))
    assert d.action == GUARD
    assert d.input == "src/main.rs"
    probe = [*prog, "-vV"]
    assert classify(probe).reason == "version query"


def test_input_named_like_rustc_is_an_input() -> None:
    d = classify([RUSTC, "rustc.rs", "--crate-type", "bin", "-Clto"])
    assert d.action == GUARD and d.input == "rustc.rs"


@pytest.mark.parametrize(
    ("types", "extra", "action"),
    [
        (["--crate-type", "bin"], ["-C", "linker-plugin-lto"], GUARD),
        (["--crate-type", "cdylib"], ["-Clinker-plugin-lto"], GUARD),
        (["--crate-type", "bin"], ["-C", "linker_plugin_lto"], GUARD),
        (["--crate-type", "bin"], ["-Clinker-plugin-lto=/usr/lib/LLVMgold.so"], GUARD),
        (["--crate-type", "bin"], ["-C", "linker-plugin-lto", "-C", "lto=off"], GUARD),
        (["--test"], ["-Clinker-plugin-lto"], GUARD),
        (["--crate-type", "bin"], ["-C", "linker-plugin-lto=no"], PASS),
        (["--crate-type", "bin"], ["-Clinker-plugin-lto", "-Clinker-plugin-lto=off"], PASS),
        (["--crate-type", "staticlib"], ["-Clinker-plugin-lto"], PASS),
        (["--crate-type", "staticlib"], ["-Clinker-plugin-lto", "-Clto"], GUARD),
        (["--crate-type", "lib"], ["-C", "linker-plugin-lto"], PASS),
        (["--crate-type", "rlib"], ["-C", "linker-plugin-lto", "-Clto"], PASS),
    ],
)
def test_linker_plugin_lto(types: list[str], extra: list[str], action: str) -> None:
    d = classify([RUSTC, "--crate-name", "foo", "src/x.rs", *types, "--emit=link", *extra])
    assert d.action == action, d.reason


def test_linker_plugin_lto_reasons() -> None:
    d = classify(_bin("-Clinker-plugin-lto"))
    assert d.linker_plugin_lto and d.lto == ""
    assert d.reason == "bin with -C linker-plugin-lto: the linker runs LTO"
    d = classify([RUSTC, "src/lib.rs", "--crate-type", "lib", "-C", "linker-plugin-lto"])
    assert d.reason == "lib with -C linker-plugin-lto only emits bitcode"


def test_modes() -> None:
    plain = _bin()
    assert classify(plain, mode="lto").action == PASS
    d = classify(plain, mode="link")
    assert d.action == GUARD and d.reason == "bin links a final artifact (LTOGUARD_MODE=link)"
    lib = [RUSTC, "src/lib.rs", "--crate-type", "lib", "--emit=dep-info,metadata,link"]
    assert classify(lib, mode="link").action == PASS
    assert classify(_bin("-Clto"), mode="off").reason == "LTOGUARD_MODE=off"
    # an unknown mode behaves like the default so a typo can only over-guard
    assert classify(_bin("-Clto"), mode="LTO").action == GUARD
    assert classify(plain, mode="bogus").action == PASS


def test_decision_fields() -> None:
    argv = _bin(
        "-C", "lto=thin", "-g", "--target", "aarch64-unknown-linux-gnu", "-C", "debuginfo=1"
    )
    d = classify(argv)
    assert isinstance(d, Decision) and d.guarded
    assert d.crate_name == "foo"
    assert d.crate_types == ("bin",)
    assert d.lto == "thin" and not d.is_test and not d.linker_plugin_lto
    assert d.opt_level == "3"
    assert d.debuginfo == "1"
    assert d.target == "aarch64-unknown-linux-gnu"
    assert d.input == "src/main.rs"
    d = classify([RUSTC, "x.rs", "-O", "-g", "--target=wasm32-unknown-unknown", "-Copt_level=s"])
    assert (d.opt_level, d.debuginfo, d.target) == ("s", "2", "wasm32-unknown-unknown")
    assert classify([RUSTC, "x.rs", "-gO"]).opt_level == "3"
    r = repr(d)
    assert (
        r.startswith("Decision(")
        and "action='pass'" in r
        and "target='wasm32-unknown-unknown'" in r
    )


def test_describe() -> None:
    assert describe(classify(_bin("-Clto"))) == "crate foo (bin, lto=fat)"
    d = classify([RUSTC, "--crate-name", "t", "tests/it.rs", "--test", "-C", "lto=thin"])
    assert describe(d) == "crate t (test harness, lto=thin)"
    d = classify(
        [RUSTC, "src/lib.rs", "--crate-type=rlib,cdylib", "-Clinker-plugin-lto", "--target", "x"]
    )
    assert describe(d) == "crate lib.rs (rlib,cdylib, linker-plugin-lto, target=x)"
    assert describe(classify([RUSTC, "-vV"])) == "crate <unnamed> (bin)"


# ---- argument files -------------------------------------------------------


def _write(path: Path, args: list[str]) -> str:
    # cargo's format: every argument followed by "\n"
    path.write_bytes("".join(a + "\n" for a in args).encode("utf-8", "surrogateescape"))
    return "@" + str(path)


def test_argfile_expanded(tmp_path: Path) -> None:
    at = _write(tmp_path / "args", _bin("-C", "lto=fat")[1:])
    d = classify([RUSTC, at])
    assert d.action == GUARD and d.crate_name == "foo" and d.lto == "fat"
    # arguments on the command line and in the file combine, in order
    assert classify([RUSTC, at, "-C", "lto=off"]).action == PASS
    at2 = _write(tmp_path / "off", ["-C", "lto=off"])
    assert classify([RUSTC, at2, at]).action == GUARD
    assert classify([RUSTC, at, at2]).action == PASS


def test_argfile_lines_are_not_trimmed(tmp_path: Path) -> None:
    at = _write(
        tmp_path / "a", ["--crate-name", "foo ", "src/main.rs", "--crate-type", "bin ", "-Clto"]
    )
    d = classify([RUSTC, at])
    assert d.crate_name == "foo "
    assert d.crate_types == ("bin ",)
    assert d.action == PASS  # "bin " is not a final crate type; rustc rejects it anyway


def test_argfile_drops_only_one_trailing_empty_line(tmp_path: Path) -> None:
    p = tmp_path / "a"
    p.write_text("--crate-type\nbin\n-Clto\n\n", encoding="utf-8")
    d = classify([RUSTC, "@" + str(p)])
    assert d.input == ""  # the second empty line is an (empty) argument
    p.write_text("--crate-type\nbin\n-Clto\nsrc/main.rs", encoding="utf-8")  # no final newline
    d = classify([RUSTC, "@" + str(p)])
    assert d.input == "src/main.rs" and d.action == GUARD


def test_argfile_not_recursive(tmp_path: Path) -> None:
    inner = _write(tmp_path / "inner", ["--print=cfg"])
    at = _write(tmp_path / "outer", ["--crate-type", "bin", "-Clto", inner])
    d = classify([RUSTC, at])
    # the @inner line is a plain argument (an input named "@..."), never read
    assert d.action == GUARD and d.input == inner
    missing = _write(
        tmp_path / "outer2", ["src/main.rs", "--crate-type", "bin", "-Clto", "@/nonexistent/x"]
    )
    d = classify([RUSTC, missing])
    assert d.action == GUARD and "argfile" not in d.reason


def test_argfile_missing(tmp_path: Path) -> None:
    path = tmp_path / "cargo-argfile.gone"
    d = classify([RUSTC, "@" + str(path)])
    assert d.action == PASS
    assert d.reason == f"cannot read argfile {path}: No such file or directory"
    d = classify([RUSTC, "@"])
    assert d.action == PASS and d.reason.startswith("cannot read argfile")
    d = classify(_bin("-Clto", "@" + str(tmp_path)))
    assert d.action == PASS and d.reason == f"argfile {tmp_path} is not a regular file; not read"
    d = classify([RUSTC, "@bad\x00path"])
    assert d.action == PASS and d.reason.startswith("cannot read argfile")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_argfile_unreadable(tmp_path: Path) -> None:  # pragma: no cover - CI runs as non-root
    at = _write(tmp_path / "a", ["x.rs"])
    os.chmod(at[1:], 0)
    d = classify([RUSTC, at])
    assert d.action == PASS and d.reason.endswith("Permission denied")


@pytest.mark.timeout(10)
def test_argfile_fifo_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    d = classify(_bin("-Clto", "@" + str(fifo)))
    assert d.action == PASS
    assert d.reason == f"argfile {fifo} is not a regular file; not read"


def test_argfile_non_utf8(tmp_path: Path) -> None:
    p = tmp_path / "a"
    p.write_bytes(b"--crate-name\nf\xff\xfeo\nsrc/main.rs\n--crate-type\nbin\n-Clto\n")
    d = classify([RUSTC, "@" + str(p)])
    assert d.action == GUARD
    assert d.crate_name == "f\udcff\udcfeo"


def test_shell_argfile(tmp_path: Path) -> None:
    p = tmp_path / "a"
    p.write_text(
        "--crate-name 'a b' src/main.rs\n  --crate-type bin -C lto=thin\n", encoding="utf-8"
    )
    d = classify([RUSTC, "-Zshell-argfiles", "@shell:" + str(p)])
    assert d.action == GUARD and d.crate_name == "a b" and d.lto == "thin"
    p.write_text("--crate-name 'unbalanced\n", encoding="utf-8")
    d = classify([RUSTC, "@shell:" + str(p)])
    assert d.action == PASS and d.reason.startswith(f"cannot parse shell argfile {p}")


def test_real_cargo_argfile_fixture_format() -> None:
    # captured from an E2BIG run: every argument followed by "\n"
    text = (ARGFILES / "cargo-argfile.mybin").read_text(encoding="utf-8")
    assert text.endswith("\n") and not text.endswith("\n\n")
    d = classify([RUSTC, "@" + str(ARGFILES / "cargo-argfile.mybin")])
    assert d.action == GUARD and d.crate_name == "mybin" and d.lto == "fat"


# ---- robustness and import weight ----------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [""],
        ["", ""],
        [RUSTC, "-"],
        [RUSTC, "--"],
        [RUSTC, "-C"],
        [RUSTC, "--crate-type"],
        [RUSTC, "--emit"],
        [RUSTC, "x.rs", "-C"],
        [RUSTC, "--codegen="],
        [RUSTC, "-\udcff", "\udcfe.rs", "-C", "lto=\udc80"],
        [RUSTC, "-Q", "x.rs", "-Clto"],
        [RUSTC, "=", "-=", "--=", "-C="],
        [RUSTC, *(["-C", "lto"] * 50_000), "x.rs"],
    ],
)
def test_never_raises(argv: list[str]) -> None:
    d = classify(argv)
    assert d.action in (GUARD, PASS) and d.reason
    assert "cannot parse this command line" not in d.reason


@pytest.mark.timeout(60)
def test_import_is_light() -> None:
    root = str(Path(__file__).parent.parent)
    code = (
        f"import sys; sys.path.insert(0, {root!r}); before = set(sys.modules); "
        "import ltoguard.classify; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-c", code],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # __future__ is a few lines of pure Python (for `from __future__ import annotations`).
    assert out and all(m.startswith("ltoguard") or m == "__future__" for m in out), out


# rustc 1.95's value-taking options (`rustc --help -v`, plus unstable ones):
# each must swallow the next token, here a query that would otherwise stop rustc.
@pytest.mark.parametrize(
    "opt",
    [
        "--cfg",
        "--check-cfg",
        "--crate-name",
        "--edition",
        "--out-dir",
        "--target",
        "--allow",
        "--warn",
        "--force-warn",
        "--deny",
        "--forbid",
        "--cap-lints",
        "--extern",
        "--sysroot",
        "--error-format",
        "--json",
        "--color",
        "--diagnostic-width",
        "--remap-path-prefix",
        "--remap-path-scope",
        "--env-set",
        "--unpretty",
        "--extern-location",
        "-L",
        "-l",
        "-o",
        "-A",
        "-W",
        "-D",
        "-F",
        "-Z",
    ],
)
def test_value_taking_options_swallow_their_value(opt: str) -> None:
    d = classify(_bin("-Clto", opt, "--print=cfg"))
    assert d.action == GUARD, d.reason
    d = classify(_bin("-Clto", opt, "-vV"))
    assert d.action == GUARD, d.reason
