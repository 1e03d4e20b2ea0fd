"""Table tests for the classifier's second step: Invocation facts -> GUARD/PASS and its reason."""

from __future__ import annotations

from typing import Any

import pytest

from ltoguard.classify import GUARD, PASS, Invocation, judge


def inv(**facts: Any) -> Invocation:
    """An Invocation with ``facts`` set and every other field at its default."""
    out = Invocation()
    for name, value in facts.items():
        assert name in Invocation.__slots__, name
        setattr(out, name, value)
    return out


SRC = {"inputs": ["src/main.rs"]}
BIN = {**SRC, "crate_types": ["bin"]}
FAT_BIN = {**BIN, "lto": "fat"}
LPL = {"linker_plugin_lto": True}
PROBE = {"inputs": ["-"], "crate_name": "___", "prints": ["file-names", "cfg"]}

# (facts, mode, action, reason); mode "lto" is the default, "LTO" an unknown one.
RULES: list[tuple[dict[str, Any], str, str, str]] = [
    # rustc compiles or links nothing, whatever the crate
    (FAT_BIN, "off", PASS, "LTOGUARD_MODE=off"),
    ({**FAT_BIN, "stop": "version query"}, "lto", PASS, "version query"),
    (
        {**FAT_BIN, "stop": "cannot read argfile /x: Permission denied"},
        "link",
        PASS,
        "cannot read argfile /x: Permission denied",
    ),
    ({**FAT_BIN, **PROBE}, "lto", PASS, "cargo's --print probe"),
    ({**FAT_BIN, **PROBE}, "link", PASS, "cargo's --print probe"),
    ({**PROBE, "crate_name": "x"}, "lto", PASS, "--print=file-names query: rustc prints and exits"),
    (
        {**FAT_BIN, "prints": ["native-static-libs", "sysroot"]},
        "lto",
        PASS,
        "--print=sysroot query: rustc prints and exits",
    ),
    ({**FAT_BIN, "inputs": []}, "lto", PASS, "no input file"),
    ({**FAT_BIN, "inputs": ["-", "x.rs"]}, "link", PASS, "reads source from stdin"),
    (
        {**FAT_BIN, "emits": ["dep-info", "metadata"]},
        "lto",
        PASS,
        "emits metadata only (cargo check)",
    ),
    ({**FAT_BIN, "emits": ["metadata"]}, "link", PASS, "emits metadata only (cargo check)"),
    ({**FAT_BIN, "emits": ["asm", "obj"]}, "lto", PASS, "--emit=asm,obj without link"),
    ({**FAT_BIN, "emits": [""]}, "lto", PASS, "--emit= without link"),
    # what is linked, by crate type
    (
        {**FAT_BIN, "emits": ["dep-info", "link"]},
        "lto",
        GUARD,
        "bin with -C lto=fat links a final artifact",
    ),
    (
        {**FAT_BIN, "prints": ["native-static-libs", "link-args"]},
        "lto",
        GUARD,
        "bin with -C lto=fat links a final artifact",
    ),
    ({**SRC, "lto": "thin"}, "lto", GUARD, "bin with -C lto=thin links a final artifact"),
    (
        {**SRC, "lto": "fat", "crate_types": ["bin", "cdylib"]},
        "lto",
        GUARD,
        "bin,cdylib with -C lto=fat links a final artifact",
    ),
    (
        {**SRC, "lto": "fat", "crate_types": ["staticlib"]},
        "LTO",
        GUARD,
        "staticlib with -C lto=fat links a final artifact",
    ),
    (
        {**SRC, "lto": "fat", "crate_types": ["rlib", "cdylib"]},
        "lto",
        PASS,
        "rlib,cdylib crate: rustc runs no LTO for mixed crate types",
    ),
    (
        {**SRC, "crate_types": ["rlib", "cdylib"]},
        "link",
        GUARD,
        "cdylib links a final artifact (LTOGUARD_MODE=link)",
    ),
    (
        {**SRC, "lto": "fat", "crate_types": ["dylib"]},
        "lto",
        PASS,
        "dylib crate: not linked with LTO",
    ),
    (
        {**SRC, "crate_types": ["lib", "proc-macro"]},
        "lto",
        PASS,
        "lib,proc-macro crate: not linked with LTO",
    ),
    (
        {**SRC, **LPL, "crate_types": ["lib"]},
        "lto",
        PASS,
        "lib with -C linker-plugin-lto only emits bitcode",
    ),
    ({**SRC, "lto": "fat", "crate_types": ["rlib"]}, "lto", PASS, "rlib crate: no final link"),
    ({**SRC, "crate_types": ["dylib", "lib"]}, "link", PASS, "dylib,lib crate: no final link"),
    ({**SRC}, "link", GUARD, "bin links a final artifact (LTOGUARD_MODE=link)"),
    ({**BIN, "lto": "off"}, "link", GUARD, "bin links a final artifact (LTOGUARD_MODE=link)"),
    # rustc --test builds an executable harness whatever --crate-type says
    (
        {**SRC, "lto": "thin", "is_test": True, "crate_types": ["lib"]},
        "lto",
        GUARD,
        "test harness with -C lto=thin links a final artifact",
    ),
    (
        {**SRC, "is_test": True, "crate_types": ["proc-macro"]},
        "link",
        GUARD,
        "test harness links a final artifact (LTOGUARD_MODE=link)",
    ),
    ({**SRC, "is_test": True}, "lto", PASS, "test harness without -C lto"),
    # the LTO flags
    (
        {**FAT_BIN, "lto_unknown": "FAT"},
        "lto",
        GUARD,
        "bin with unrecognised -C lto=FAT, counted as LTO",
    ),
    ({**BIN, **LPL}, "lto", GUARD, "bin with -C linker-plugin-lto: the linker runs LTO"),
    (
        {**BIN, **LPL, "lto": "off"},
        "lto",
        GUARD,
        "bin with -C linker-plugin-lto: the linker runs LTO",
    ),
    ({**SRC, **LPL}, "lto", GUARD, "bin with -C linker-plugin-lto: the linker runs LTO"),
    (
        {**SRC, **LPL, "is_test": True},
        "lto",
        GUARD,
        "test harness with -C linker-plugin-lto: the linker runs LTO",
    ),
    (
        {**SRC, **LPL, "crate_types": ["staticlib", "bin"]},
        "lto",
        GUARD,
        "staticlib,bin with -C linker-plugin-lto: the linker runs LTO",
    ),
    ({**SRC, **LPL, "crate_types": ["staticlib"]}, "lto", PASS, "staticlib without -C lto"),
    (
        {**SRC, **LPL, "crate_types": ["staticlib"], "lto": "off"},
        "lto",
        PASS,
        "staticlib with -C lto=off",
    ),
    (
        {**SRC, **LPL, "crate_types": ["staticlib"], "lto": "thin"},
        "lto",
        GUARD,
        "staticlib with -C lto=thin links a final artifact",
    ),
    ({**BIN, "lto": "off"}, "lto", PASS, "bin with -C lto=off"),
    ({**BIN, "lto": "off"}, "bogus", PASS, "bin with -C lto=off"),
    (BIN, "lto", PASS, "bin without -C lto"),
]


@pytest.mark.parametrize(("facts", "mode", "action", "reason"), RULES)
def test_rules(facts: dict[str, Any], mode: str, action: str, reason: str) -> None:
    d = judge(inv(**facts), mode)
    assert (d.action, d.reason) == (action, reason)


def test_decision_carries_the_facts() -> None:
    facts = {
        "crate_name": "foo",
        "crate_types": ["bin", "cdylib"],
        "lto": "thin",
        "is_test": False,
        "opt_level": "s",
        "debuginfo": "1",
        "target": "aarch64-unknown-linux-gnu",
        "linker_plugin_lto": True,
        "inputs": ["src/main.rs", "extra.rs"],
        "emits": ["link"],
    }
    d = judge(inv(**facts), "lto")
    assert d.guarded
    assert (d.crate_name, d.crate_types, d.lto, d.is_test) == (
        "foo",
        ("bin", "cdylib"),
        "thin",
        False,
    )
    assert (d.opt_level, d.debuginfo, d.target) == ("s", "1", "aarch64-unknown-linux-gnu")
    assert d.linker_plugin_lto and d.input == "src/main.rs"
    # off still reports what it was shown (classify shows it nothing: it reads no argv)
    d = judge(inv(**facts), "off")
    assert not d.guarded and d.crate_name == "foo" and d.crate_types == ("bin", "cdylib")
    assert judge(Invocation(), "lto").input is None


def test_judge_does_not_change_the_invocation() -> None:
    # the rules only read: the table's rows share their lists
    i = inv(**FAT_BIN, emits=["link"], prints=["link-args"])
    before = repr([getattr(i, k) for k in Invocation.__slots__])
    for mode in ("lto", "link", "off"):
        judge(i, mode)
    assert repr([getattr(i, k) for k in Invocation.__slots__]) == before
