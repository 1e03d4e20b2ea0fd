"""Table tests for the classifier's first step: argv -> options -> Invocation facts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ltoguard.classify import Invocation, getopt, tokenize

DATA = Path(__file__).parent / "data" / "cargo_argv"
ARGFILES = DATA / "argfiles"
RUSTC = "/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/rustc"


def _fixture(ref: str) -> list[str]:
    """The captured argv named ``file:name`` in tests/data/cargo_argv."""
    stem, name = ref.split(":", 1)
    for item in json.loads((DATA / f"{stem}.json").read_text(encoding="utf-8")):
        if item["name"] == name:
            return [a.replace("{ARGFILES}", str(ARGFILES)) for a in item["argv"]]
    raise LookupError(ref)


def facts(inv: Invocation) -> dict[str, Any]:
    """Every field of ``inv`` that differs from a fresh Invocation's, so a table
    row that names a few facts also says that all the others kept their default."""
    blank = Invocation()
    return {
        k: getattr(inv, k) for k in Invocation.__slots__ if getattr(inv, k) != getattr(blank, k)
    }


# ---- getopt: arguments -> options in order, and inputs --------------------

CARGO_PROBE = _fixture("build:build-true/print-probe")


@pytest.mark.parametrize(
    ("args", "opts", "inputs"),
    [
        ([], [], []),
        (["x.rs"], [], ["x.rs"]),
        (["-vV"], [("v", ""), ("V", "")], []),
        (["-gO", "x.rs"], [("g", ""), ("O", "")], ["x.rs"]),
        (["-gClto"], [("g", ""), ("C", "lto")], []),
        (["-gC", "lto"], [("g", ""), ("C", "lto")], []),
        (["-Clto"], [("C", "lto")], []),
        (["-C", "lto=thin"], [("C", "lto=thin")], []),
        (["-C"], [("C", "")], []),
        (["-o", "-vV", "m.rs"], [("o", "-vV")], ["m.rs"]),
        (["-L", "--help"], [("L", "--help")], []),
        (["-Wwarnings"], [("W", "warnings")], []),
        (["-Q", "x.rs"], [], ["x.rs"]),  # unknown letter: the rest of the group is dropped
        (["-vQV"], [("v", "")], []),
        (["--codegen", "lto=thin"], [("C", "lto=thin")], []),
        (["--codegen=lto"], [("C", "lto")], []),
        (["--allow", "dead_code", "--warn=x"], [("A", "dead_code"), ("W", "x")], []),
        (["--version", "--help", "--verbose"], [("V", ""), ("h", ""), ("v", "")], []),
        (["--crate-type", "bin", "--test"], [("crate-type", "bin"), ("test", "")], []),
        (["--print=target-libdir=/x"], [("print", "target-libdir=/x")], []),
        (["--cfg", "--print=cfg"], [("cfg", "--print=cfg")], []),
        (["--crate-name", "-Clto=off"], [("crate-name", "-Clto=off")], []),
        (["--test", "--crate-type"], [("test", "")], []),  # value missing: getopts stops
        (["--unknown", "x.rs"], [("unknown", "")], ["x.rs"]),
        (["--=", "-=", "x.rs"], [("", "")], ["x.rs"]),
        (["-", "--", "--print=cfg", "-vV"], [], ["-", "--print=cfg", "-vV"]),
        (
            CARGO_PROBE[1:],
            [
                ("crate-name", "___"),
                ("print", "file-names"),
                ("crate-type", "bin"),
                ("crate-type", "rlib"),
                ("crate-type", "dylib"),
                ("crate-type", "cdylib"),
                ("crate-type", "staticlib"),
                ("crate-type", "proc-macro"),
                ("print", "sysroot"),
                ("print", "split-debuginfo"),
                ("print", "crate-name"),
                ("print", "cfg"),
                ("W", "warnings"),
            ],
            ["-"],
        ),
    ],
)
def test_getopt(args: list[str], opts: list[tuple[str, str]], inputs: list[str]) -> None:
    assert getopt(args) == (opts, inputs)


# ---- tokenize: argv -> facts ----------------------------------------------

MYBIN = {
    "crate_name": "mybin",
    "crate_types": ["bin"],
    "emits": ["dep-info", "link"],
    "opt_level": "3",
    "lto": "fat",
    "inputs": ["mybin/src/main.rs"],
}


@pytest.mark.parametrize(
    ("ref", "expect"),
    [
        ("build:build-fat/mybin", MYBIN),
        ("wrappers:both-build-fat/mybin#2", MYBIN),
        ("argfile:argfile/mybin", MYBIN),
        ("rustflags:tgt-fat/mybin", {**MYBIN, "target": "x86_64-unknown-linux-gnu"}),
        ("rustflags:rf-lpl-lto/mybin", {**MYBIN, "linker_plugin_lto": True}),
        ("wrappers:clippy-rw-fat/mybin", {**MYBIN, "emits": ["dep-info", "metadata"]}),
        ("check:check-fat/mybin", {**MYBIN, "emits": ["dep-info", "metadata"]}),
        ("build:build-off/mybin", {**MYBIN, "lto": "off"}),
        (
            "test:test-fat/mylib.test",
            {
                "crate_name": "mylib",
                "emits": ["dep-info", "link"],
                "opt_level": "3",
                "lto": "fat",
                "is_test": True,
                "inputs": ["mylib/src/lib.rs"],
            },
        ),
        (
            "build:mixed-fat/mymixed",
            {
                "crate_name": "mymixed",
                "crate_types": ["rlib", "cdylib"],
                "emits": ["dep-info", "link"],
                "opt_level": "3",
                "inputs": ["mymixed/src/lib.rs"],
            },
        ),
        (
            "build:build-true/print-probe",
            {
                "crate_name": "___",
                "crate_types": ["bin", "rlib", "dylib", "cdylib", "staticlib", "proc-macro"],
                "prints": ["file-names", "sysroot", "split-debuginfo", "crate-name", "cfg"],
                "inputs": ["-"],
            },
        ),
        ("build:build-true/vV", {"stop": "version query"}),
    ],
)
def test_tokenize_captured_cargo_argv(ref: str, expect: dict[str, Any]) -> None:
    assert facts(tokenize(_fixture(ref))) == expect


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        ([], {}),
        ([RUSTC], {}),
        (["sccache", RUSTC, "x.rs"], {"inputs": ["x.rs"]}),
        (["/w/clippy-driver", "/opt/my-rustc", "-vV"], {"stop": "version query"}),
        ([RUSTC, "rustc.rs"], {"inputs": ["rustc.rs"]}),
        ([RUSTC, "sccache"], {}),  # a program name right after the program is skipped
        ([RUSTC, "x.rs", "sccache"], {"inputs": ["x.rs", "sccache"]}),
        ([RUSTC, "-C", "lto=FAT"], {"lto": "fat", "lto_unknown": "FAT"}),
        ([RUSTC, "-Clto="], {"lto": "fat", "lto_unknown": ""}),
        ([RUSTC, "-Clto=bogus", "-Clto=off"], {"lto": "off"}),
        ([RUSTC, "-Clto=thin", "-Clto"], {"lto": "fat"}),
        ([RUSTC, "-Clto=y", "--codegen=lto=no"], {"lto": "off"}),
        ([RUSTC, "-Clinker_plugin_lto"], {"linker_plugin_lto": True}),
        ([RUSTC, "-Clinker-plugin-lto=/p/LLVMgold.so"], {"linker_plugin_lto": True}),
        ([RUSTC, "-Clinker-plugin-lto", "-Clinker-plugin-lto=no"], {}),
        ([RUSTC, "-O", "-Copt-level=s"], {"opt_level": "s"}),
        ([RUSTC, "-Copt_level=1", "-O"], {"opt_level": "3"}),
        ([RUSTC, "-g", "-Cdebuginfo=1"], {"debuginfo": "1"}),
        ([RUSTC, "--target=wasm32-unknown-unknown"], {"target": "wasm32-unknown-unknown"}),
        (
            [RUSTC, "--crate-type=rlib,cdylib", "--crate-type", "bin"],
            {"crate_types": ["rlib", "cdylib", "bin"]},
        ),
        ([RUSTC, "--emit=link=/tmp/x,obj", "--emit", "mir"], {"emits": ["link", "obj", "mir"]}),
        ([RUSTC, "--emit="], {"emits": [""]}),
        ([RUSTC, "--print=target-libdir=/x"], {"prints": ["target-libdir"]}),
        ([RUSTC, "--test", "--crate-type", "lib"], {"is_test": True, "crate_types": ["lib"]}),
        ([RUSTC, "-V", "--help"], {"stop": "version query"}),  # the first query is named
        ([RUSTC, "--help", "-V"], {"stop": "help request"}),
        ([RUSTC, "-Chelp", "-V"], {"stop": "help request (-C help)"}),
        ([RUSTC, "-W", "help"], {"stop": "help request (-W help)"}),
        ([RUSTC, "-Zhelp"], {"stop": "help request (-Z help)"}),
        ([RUSTC, "-Ahelp", "-Wwarnings", "--=help"], {}),
        ([RUSTC, "--explain=E0308"], {"stop": "--explain request"}),
        # a query does not end the reading: the facts after it are still gathered
        ([RUSTC, "-vV", "--crate-name", "x"], {"stop": "version query", "crate_name": "x"}),
        ([RUSTC, "--", "-Clto"], {"inputs": ["-Clto"]}),
    ],
)
def test_tokenize(argv: list[str], expect: dict[str, Any]) -> None:
    assert facts(tokenize(argv)) == expect


def test_tokenize_argfiles_in_order(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.write_text("--crate-name\nfoo\n-Clto\n", encoding="utf-8")
    b = tmp_path / "b"
    b.write_text("-Clto=off\n", encoding="utf-8")
    got = facts(tokenize([RUSTC, "x.rs", f"@{a}", "--crate-type", "bin", f"@{b}"]))
    assert got == {"crate_name": "foo", "crate_types": ["bin"], "lto": "off", "inputs": ["x.rs"]}


def test_unreadable_argfile_stops_with_no_other_facts(tmp_path: Path) -> None:
    # an argfile rustc could read but we cannot: the facts we have would be half of them
    gone = tmp_path / "gone"
    got = facts(tokenize([RUSTC, "--crate-name", "foo", "-Clto", f"@{gone}", "x.rs"]))
    assert got == {"stop": f"cannot read argfile {gone}: No such file or directory"}


@pytest.mark.timeout(60)
def test_argfile_reader_is_loaded_only_for_argfiles() -> None:
    # The pass-through path runs for every crate cargo compiles: a plain argv
    # must load no module beyond classify itself.
    root = Path(__file__).parent.parent
    code = (
        f"import sys, json; sys.path.insert(0, {str(root)!r}); before = set(sys.modules); "
        "from ltoguard.classify import classify; "
        "classify(json.loads(sys.argv[1])); mid = set(sys.modules); "
        "classify(json.loads(sys.argv[2])); "
        "print(' '.join(sorted(mid - before)), '|', ' '.join(sorted(set(sys.modules) - mid)))"
    )
    plain = json.dumps(_fixture("build:build-fat/mybin"))
    via_file = json.dumps(_fixture("argfile:argfile/mybin"))
    out = subprocess.run(
        [sys.executable, "-I", "-c", code, plain, via_file],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    first, _, then = out.partition("|")
    assert set(first.split()) <= {"ltoguard", "ltoguard.classify", "__future__"}, first
    assert then.split() == ["ltoguard.argfiles"]
