from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltoguard.classify import GUARD, PASS, classify

RUSTC = "/usr/local/bin/rustc"
INTERNAL_ERROR = "cannot parse this command line"

# Arbitrary tokens: any text including lone surrogates (how Python hands us
# non-UTF-8 argv bytes), plus tokens that exercise the parser's branches.
_any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=12)
_surrogate_escaped = st.binary(max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape"))
_interesting = st.sampled_from(
    [
        "",
        "-",
        "--",
        "-C",
        "-Clto",
        "lto",
        "lto=thin",
        "lto=off",
        "-vV",
        "-V",
        "--test",
        "--crate-type",
        "--crate-type=bin",
        "bin",
        "lib",
        "--emit",
        "--emit=link",
        "--emit=metadata",
        "--print",
        "--print=cfg",
        "--print=native-static-libs",
        "--codegen",
        "--codegen=lto",
        "-Clinker-plugin-lto",
        "src/main.rs",
        "-o",
        "-gO",
        "-Zhelp",
        "@",
        "@/nonexistent/argfile",
        "@shell:/nonexistent",
        "rustc",
        "clippy-driver",
        "\x00",
    ]
)
_token = st.one_of(_any_text, _surrogate_escaped, _interesting)
_argv = st.lists(_token, max_size=40)
_mode = st.sampled_from(["lto", "link", "off", "", "LTO"])


@given(_argv, _mode)
@settings(max_examples=1500)
def test_never_raises(argv: list[str], mode: str) -> None:
    d = classify(argv, mode)
    assert d.action in (GUARD, PASS)
    assert isinstance(d.reason, str) and d.reason
    assert INTERNAL_ERROR not in d.reason
    assert d.lto in ("fat", "thin", "off", "")
    assert isinstance(d.crate_types, tuple)
    assert d.guarded == (d.action == GUARD)


# Generating thousands of tokens is slow in hypothesis: repeat a short list instead.
@given(st.lists(_token, min_size=1, max_size=30), st.integers(100, 2000))
@settings(max_examples=50)
def test_never_raises_on_long_argv(chunk: list[str], times: int) -> None:
    d = classify([RUSTC, *(chunk * times)])
    assert d.action in (GUARD, PASS) and INTERNAL_ERROR not in d.reason


@given(_argv)
def test_mode_off_always_passes(argv: list[str]) -> None:
    d = classify(argv, "off")
    assert d.action == PASS and d.reason == "LTOGUARD_MODE=off"


# Well-formed command lines: a shuffled list of complete option groups, so
# that inserting another group anywhere cannot turn it into an option's value.
_GROUPS = [
    ["--crate-name", "foo"],
    ["--edition=2021"],
    ["--crate-type", "bin"],
    ["--crate-type=cdylib"],
    ["--crate-type", "staticlib"],
    ["--crate-type", "lib"],
    ["--crate-type=rlib,cdylib"],
    ["--crate-type", "proc-macro"],
    ["--test"],
    ["--emit=dep-info,link"],
    ["--emit", "link=/tmp/out"],
    ["--emit=dep-info,metadata"],
    ["--emit", "obj"],
    ["-C", "lto"],
    ["-Clto=thin"],
    ["--codegen=lto=fat"],
    ["-C", "lto=off"],
    ["-Clto=no"],
    ["-C", "opt-level=3"],
    ["-O"],
    ["-g"],
    ["-C", "embed-bitcode=no"],
    ["-C", "linker-plugin-lto"],
    ["--target", "x86_64-unknown-linux-gnu"],
    ["--cfg", 'feature="x"'],
    ["--check-cfg", "cfg(docsrs,test)"],
    ["-L", "dependency=/tmp/deps"],
    ["--extern", "mylib=/tmp/deps/libmylib.rlib"],
    ["--out-dir", "/tmp/out"],
    ["-o", "/tmp/out/foo"],
    ["--error-format=json"],
    ["--json", "diagnostic-rendered-ansi,artifacts"],
    ["-Wwarnings"],
    ["-A", "dead_code"],
]
_group_lists = st.lists(st.sampled_from(_GROUPS), max_size=14)
_QUERIES = [
    ["--print=cfg"],
    ["--print", "sysroot"],
    ["--print=file-names"],
    ["--print=target-libdir"],
    ["-vV"],
    ["-V"],
    ["--version"],
    ["--help"],
    ["-h"],
    ["--explain", "E0308"],
    ["-C", "help"],
]


def _flat(groups: list[list[str]]) -> list[str]:
    return [tok for g in groups for tok in g]


@st.composite
def _command_lines(draw: st.DrawFn) -> list[list[str]]:
    groups = draw(_group_lists)
    pos = draw(st.integers(0, len(groups)))
    return [*groups[:pos], ["src/main.rs"], *groups[pos:]]


@given(_command_lines(), st.sampled_from(_QUERIES), st.data(), _mode)
def test_queries_always_pass(
    groups: list[list[str]], query: list[str], data: st.DataObject, mode: str
) -> None:
    pos = data.draw(st.integers(0, len(groups)))
    argv = [RUSTC, *_flat([*groups[:pos], query, *groups[pos:]])]
    assert classify(argv, mode).action == PASS


@given(_command_lines())
def test_appending_lto_off_passes_unless_linker_plugin_lto(groups: list[list[str]]) -> None:
    argv = [RUSTC, *_flat(groups), "-C", "lto=off"]
    d = classify(argv)
    assert d.lto == "off"
    assert d.action == PASS or d.linker_plugin_lto


@given(_command_lines())
def test_appending_lto_on_guards_final_links(groups: list[list[str]]) -> None:
    argv = [RUSTC, *_flat(groups), "-Clto=thin"]
    d = classify(argv)
    final = d.is_test or all(t in ("bin", "cdylib", "staticlib") for t in d.crate_types)
    emit_groups = [g for g in groups if g[0].startswith("--emit")]
    links = not emit_groups or any("link" in tok for g in emit_groups for tok in g)
    assert d.guarded == (final and links), d.reason


@given(_command_lines())
def test_link_mode_guards_a_superset_of_lto_mode(groups: list[list[str]]) -> None:
    argv = [RUSTC, *_flat(groups)]
    if classify(argv, "lto").guarded:
        assert classify(argv, "link").guarded


@given(_command_lines(), _mode)
def test_metadata_only_never_guards(groups: list[list[str]], mode: str) -> None:
    kept = [g for g in groups if not g[0].startswith("--emit")]
    argv = [RUSTC, *_flat(kept), "--emit=dep-info,metadata"]
    assert classify(argv, mode).action == PASS


@given(
    _command_lines(),
    st.sampled_from([[], ["sccache"], ["/x/clippy-driver"], ["/tmp/w", "sccache"]]),
)
def test_wrapper_programs_do_not_change_the_decision(
    groups: list[list[str]], prog: list[str]
) -> None:
    args = _flat(groups)
    a = classify([RUSTC, *args])
    b = classify([*prog, RUSTC, *args]) if prog else classify(["rustc", *args])
    assert (a.action, a.reason, a.crate_types, a.lto) == (b.action, b.reason, b.crate_types, b.lto)


@pytest.fixture(scope="module")
def argfile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("argfiles")


@given(groups=_command_lines(), split=st.integers(0, 5))
@settings(max_examples=200)
def test_argfile_gives_the_same_decision(
    argfile_dir: Path, groups: list[list[str]], split: int
) -> None:
    args = _flat(groups)
    split = min(split, len(args))
    path = str(argfile_dir / "args")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(a + "\n" for a in args[split:]))
    direct = classify([RUSTC, *args])
    via_file = classify([RUSTC, *args[:split], "@" + path])
    assert (direct.action, direct.reason, direct.crate_name, direct.crate_types, direct.lto) == (
        via_file.action,
        via_file.reason,
        via_file.crate_name,
        via_file.crate_types,
        via_file.lto,
    )
