#!/usr/bin/env python3
"""Generate a cargo workspace whose release binaries make fat LTO use real memory.

The workspace has M library crates (`lib00` is the core the others build on)
and N binary crates (`app00`, ...). Each binary depends on `lib00` plus up to
three other libs. Only path dependencies are used: crates.io is not needed.

The code is ordinary, varied Rust that LLVM cannot fold away: derived
structs, data-carrying enums driving match-heavy state machines, a trait
implemented per type, generic containers and functions instantiated at every
type (sorting, HashMap/BTreeMap, closures, iterators, formatting), all reached
from `main` through `std::hint::black_box` seeds. Each binary prints one line,
`appNN checksum 0123456789abcdef`, that is the same on every run.

--size sets how much code one binary's LTO sees (spread over the libs it
uses), so the peak of a binary's rustc stays about the same whatever M is:
small, medium, large, or a number of units (docs/benchmarks.md gives the peak
and time each reached). Binaries build in parallel, so N binaries take about
N/2 times one binary's time at -j2. `--debug` (debug = true) roughly doubles
the bin peaks.

The output is deterministic: the same arguments write the same bytes, and
files whose content is unchanged are not rewritten (so cargo sees no change).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Sequence
from pathlib import Path

# Units of code one binary's LTO sees, by size name (calibrated on measured peaks).
SIZES = {"small": 4, "medium": 115, "large": 240}
# cargo's `debug` values for the release profile: `--debug` alone is `true` (full).
DEBUG_LEVELS = ("0", "1", "2", "true", "false", "none", "limited", "full",
                "line-tables-only", "line-directives-only")  # fmt: skip


def debug_toml(debug: bool | str) -> str | None:
    """The profile's `debug = ...` line for --debug [LEVEL] (None: leave it out)."""
    if debug is False or debug in ("", "false", "0", "none"):
        return None
    value = "true" if debug is True else str(debug)
    return f"debug = {value}" if value in ("0", "1", "2", "true") else f'debug = "{value}"'


def add_debug_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug",
        nargs="?",
        const="true",
        default=False,
        choices=DEBUG_LEVELS,
        metavar="LEVEL",
        help="debug info in the release profile: --debug alone is debug = true; or a"
        " level cargo takes (1, limited, line-tables-only, ...). Give it after the"
        " output folder, or as --debug=LEVEL: a folder right after it is read as a level",
    )


LTO_VALUES = {
    "fat": '"fat"',
    "thin": '"thin"',
    "true": "true",
    "false": "false",
    "off": '"off"',
}
# Libs besides lib00 each binary uses: "several", and the LTO volume is then
# spread over at most this many crates.
OTHER_LIBS_PER_BIN = 3
# Units the binary crate itself defines, on top of what it pulls from libs.
BIN_OWN_UNITS = 2

# Field types: (rust type, constructor from `s: u64`, `i: usize` and a
# constant C, expression folding `self.FIELD` into a u64).
FIELD_KINDS: list[tuple[str, str, str]] = [
    ("u64", "s.wrapping_mul({c}).rotate_left((i % 64) as u32)", "{f}"),
    ("u32", "((s >> (i % 32)) as u32) ^ {c}u32", "{f} as u64"),
    ("i64", "(s as i64).wrapping_sub((i as i64).wrapping_mul({c}))", "{f} as u64"),
    ("u16", "(s as u16).wrapping_add(i as u16).wrapping_mul({c}u16)", "{f} as u64"),
    ("bool", "(s >> (i % 64)) & 1 == 1", "{f} as u64"),
    ("char", "char::from(b'a' + ((s as usize + i) % 26) as u8)", "{f} as u64"),
    (
        "String",
        'format!("{n}-{{:x}}-{{}}", s ^ {c}, i)',
        "{f}.bytes().fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64))",
    ),
    (
        "Vec<u32>",
        "(0..(i % 5 + 1)).map(|k| (s as u32).wrapping_mul(k as u32 + {c})).collect()",
        "{f}.iter().fold(0u64, |a, &x| a.rotate_left(3) ^ x as u64)",
    ),
    (
        "Option<i64>",
        "if (s as usize).wrapping_add(i) % 3 == 0 {{ None }} else {{ Some(i as i64 - {c}) }}",
        "{f}.map_or({c}, |v| v as u64)",
    ),
    (
        "Vec<String>",
        '(0..(i % 3)).map(|k| format!("{{}}:{{:o}}", k, s ^ {c})).collect()',
        "{f}.iter().map(|t| t.len() as u64).fold({c}u64, |a, b| a.wrapping_mul(7).wrapping_add(b))",
    ),
    (
        "(u32, String)",
        '((i as u32) ^ {c}, format!("{{:>8}}", s % {c}))',
        "({f}.0 as u64) ^ ({f}.1.len() as u64)",
    ),
    ("[u8; 4]", "((s as u32) ^ (i as u32) ^ {c}).to_le_bytes()", "u32::from_le_bytes({f}) as u64"),
    (
        "std::collections::BTreeMap<u16, String>",
        '(0..(i % 4) as u16).map(|k| (k ^ {c}u16, format!("{{}}", s >> k))).collect()',
        "{f}.iter().fold(0u64, |a, (k, v)| a.rotate_left(5) ^ (*k as u64) ^ v.len() as u64)",
    ),
]

CORE_LIB = """\
//! Core of the generated workspace: the trait every generated type implements
//! and the generic code the other crates instantiate at their own types.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::Hash;

pub trait Mix {
    fn mix(&self, seed: u64) -> u64;

    fn tag(&self) -> String {
        format!("{:04}", self.mix(0x51) % 10_000)
    }
}

pub fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

pub struct Pool<T> {
    items: Vec<T>,
    index: BTreeMap<u64, usize>,
}

impl<T: Mix + Clone + Ord + Hash + Debug> Pool<T> {
    pub fn new() -> Self {
        Pool { items: Vec::new(), index: BTreeMap::new() }
    }

    pub fn insert(&mut self, item: T, seed: u64) {
        let key = item.mix(seed);
        *self.index.entry(key).or_insert(0) += 1;
        self.items.push(item);
    }

    pub fn checksum(&self, seed: u64) -> u64 {
        let mut counts: HashMap<&T, u32> = HashMap::new();
        for item in &self.items {
            *counts.entry(item).or_insert(0) += 1;
        }
        // HashMap order is random per process: combine commutatively.
        let unordered = counts
            .iter()
            .fold(0u64, |a, (k, v)| a.wrapping_add(k.mix(seed) ^ *v as u64));
        let mut sorted = self.items.clone();
        sorted.sort();
        sorted.dedup();
        let ordered = sorted
            .iter()
            .enumerate()
            .fold(seed, |a, (i, x)| a.rotate_left(5) ^ x.mix(i as u64));
        let text = format!("{:?}", sorted.first());
        let keys = self.index.keys().fold(0u64, |a, k| a.rotate_left(1) ^ k);
        unordered ^ ordered ^ fnv(text.as_bytes()) ^ keys
    }
}

impl<T: Mix + Clone + Ord + Hash + Debug> Default for Pool<T> {
    fn default() -> Self {
        Self::new()
    }
}

pub fn tally<T, K: Ord + Debug, F: Fn(&T) -> K>(items: &[T], key: F) -> u64 {
    let mut counts: BTreeMap<K, usize> = BTreeMap::new();
    for item in items {
        *counts.entry(key(item)).or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(k, n)| fnv(format!("{:?}={}", k, n).as_bytes()))
        .fold(0u64, |a, b| a.rotate_left(9) ^ b)
}

pub fn top_n<T: Mix + Clone>(items: &[T], n: usize, seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort_by_key(|x| x.mix(seed));
    v.truncate(n);
    v
}

pub fn labels<T: Mix>(items: &[T]) -> String {
    items.iter().map(|x| x.tag()).collect::<Vec<_>>().join(",")
}
"""


def _rust_const(rng: random.Random, bits: int) -> str:
    return str(rng.randrange(1, 1 << bits))


def _unit(rng: random.Random, crate: str, u: int, core: str) -> str:
    """One unit: a record type, a state machine and the function running both."""
    rec, state = f"Rec{u}", f"State{u}"
    fields = []
    for k in range(rng.randint(3, 7)):
        kind = FIELD_KINDS[rng.randrange(len(FIELD_KINDS))]
        # u16 and char constants must fit their types; 15 bits fits all.
        fields.append((f"f{k}", kind, _rust_const(rng, 15)))
    decl = "\n".join(f"    pub {f}: {kind[0]}," for f, kind, _ in fields)
    make = "\n".join(
        f"            {f}: {kind[1].format(c=c, n=f'{crate}.{u}')}," for f, kind, c in fields
    )
    mix = "\n".join(
        f"        h = h.rotate_left({rng.randint(1, 63)}) ^ ({kind[2].format(f='self.' + f, c=c)});"
        for f, kind, c in fields
    )

    # Enum variants carry data of three shapes so matches bind and compute.
    nvar = rng.randint(5, 11)
    variants, weights = [], []
    for v in range(nvar):
        # V0 is the start state: keep it a unit variant.
        shape = 0 if v == 0 else rng.randrange(3)
        if shape == 0:
            variants.append(f"V{v}")
            weights.append(f"            {state}::V{v} => {_rust_const(rng, 20)},")
        elif shape == 1:
            variants.append(f"V{v}(u32)")
            weights.append(
                f"            {state}::V{v}(n) => (*n as u64).wrapping_mul({_rust_const(rng, 20)}),"
            )
        else:
            variants.append(f"V{v} {{ x: u64, y: u8 }}")
            weights.append(
                f"            {state}::V{v} {{ x, y }} => "
                f"x.rotate_left(*y as u32 % 64) ^ {_rust_const(rng, 20)},"
            )
    shapes = {v.split("(")[0].split(" ")[0]: v for v in variants}

    def build(target: int) -> str:
        text = shapes[f"V{target}"]
        if "(u32)" in text:
            return f"{state}::V{target}((b as u32).wrapping_mul({_rust_const(rng, 12)}))"
        if "{" in text:
            shift, mask = rng.randint(0, 40), rng.randint(0, 255)
            return f"{state}::V{target} {{ x: (b as u64) << {shift}, y: b ^ {mask} }}"
        return f"{state}::V{target}"

    modulus = rng.randint(3, 9)
    arms = []
    for v in range(nvar):
        pat = f"{state}::V{v}"
        text = shapes[f"V{v}"]
        if "(u32)" in text:
            pat += "(_)"
        elif "{" in text:
            pat += " { .. }"
        inputs = rng.sample(range(modulus), rng.randint(1, min(3, modulus)))
        for n, inp in enumerate(inputs):
            # The first arm moves to the next variant, so every variant is
            # constructed (no dead-code warnings, nothing for LLVM to drop).
            target = (v + 1) % nvar if n == 0 else rng.randrange(nvar)
            arms.append(f"            ({pat}, {inp}) => {build(target)},")
    arms.append(f"            ({state}::V0, _) => {build(rng.randrange(nvar))},")
    arms.append("            (s, _) if b % 2 == 0 => s,")
    arms.append(f"            _ => {build(0)},")

    key_field, _, _ = fields[rng.randrange(len(fields))]
    vlist = ",\n".join(f"    {v}" for v in variants)
    return f"""
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct {rec} {{
{decl}
}}

impl {rec} {{
    pub fn make(s: u64, i: usize) -> Self {{
        {rec} {{
{make}
        }}
    }}
}}

impl {core}::Mix for {rec} {{
    fn mix(&self, seed: u64) -> u64 {{
        let mut h = seed ^ {_rust_const(rng, 60)};
{mix}
        h
    }}
}}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum {state} {{
{vlist},
}}

impl {state} {{
    pub fn step(self, b: u8) -> Self {{
        match (self, b % {modulus}) {{
{chr(10).join(arms)}
        }}
    }}

    pub fn weight(&self) -> u64 {{
        match self {{
{chr(10).join(weights)}
        }}
    }}
}}

pub fn run_{u}(seed: u64) -> u64 {{
    use {core}::Mix;
    let n = {rng.randint(6, 12)} + (seed % {rng.randint(5, 13)}) as usize;
    let items: Vec<{rec}> = (0..n).map(|i| {rec}::make(seed, i)).collect();
    let mut pool = {core}::Pool::new();
    for item in items.iter().cloned() {{
        pool.insert(item, seed);
    }}
    let mut acc = pool.checksum(seed);
    acc ^= {core}::tally(&items, |r| r.{key_field}.clone());
    for r in {core}::top_n(&items, {rng.randint(2, 5)}, seed) {{
        acc = acc.wrapping_add(r.mix(acc));
    }}
    acc ^= {core}::fnv({core}::labels(&items).as_bytes());
    let mut st = {state}::V0;
    for b in format!("{{:?}}", items[n / 2]).bytes() {{
        st = st.step(b);
        acc = acc.rotate_left({rng.randint(1, 63)}) ^ st.weight();
    }}
    acc
}}
"""


def _units_module(crate: str, count: int, core: str) -> str:
    rng = random.Random(f"{crate}/units/{count}")
    head = (
        "// Generated by ltoguard's scripts/gen_workspace.py; do not edit.\n"
        "#![allow(clippy::all)]\n"
    )
    body = "".join(_unit(rng, crate, u, core) for u in range(count))
    calls = "\n".join(
        f"    acc = acc.rotate_left({rng.randint(1, 63)}) ^ run_{u}(seed ^ {_rust_const(rng, 32)});"
        for u in range(count)
    )
    run = f"\npub fn run_all(seed: u64) -> u64 {{\n    let mut acc = seed;\n{calls}\n    acc\n}}\n"
    return head + body + run


def _lib_rs(name: str) -> str:
    return (
        "// Generated by ltoguard's scripts/gen_workspace.py; do not edit.\n"
        "mod units;\n\n"
        "pub use units::*;\n\n"
        "pub fn run(seed: u64) -> u64 {\n"
        f"    units::run_all(seed ^ {sum(name.encode())})\n"
        "}\n"
    )


def _main_rs(name: str, libs: list[str]) -> str:
    calls = "\n".join(
        f"    acc = acc.rotate_left(13) ^ {lib}::run(black_box(seed ^ {i + 1}));"
        for i, lib in enumerate(libs)
    )
    return (
        "// Generated by ltoguard's scripts/gen_workspace.py; do not edit.\n"
        "use std::hint::black_box;\n\n"
        "mod units;\n\n"
        "fn main() {\n"
        # black_box: the seed is opaque, so LTO must keep every path.
        f"    let seed: u64 = black_box(0x9e37_79b9_7f4a_7c15 ^ {sum(name.encode())});\n"
        "    let mut acc = units::run_all(seed);\n"
        f"{calls}\n"
        f'    println!("{name} checksum {{:016x}}", acc);\n'
        "}\n"
    )


def _cargo_toml(name: str, deps: list[str], is_bin: bool) -> str:
    lines = [
        "[package]",
        f'name = "{name}"',
        'version = "0.1.0"',
        'edition = "2021"',
        "publish = false",
        "",
        "[dependencies]",
    ]
    lines += [f'{d} = {{ path = "../../libs/{d}" }}' for d in deps]
    if is_bin:
        lines += ["", "[[bin]]", f'name = "{name}"', 'path = "src/main.rs"']
    return "\n".join(lines) + "\n"


def plan(bins: int, libs: int, units: int) -> tuple[list[str], dict[str, list[str]], int]:
    """Return lib names, each bin's libs, and units per lib."""
    lib_names = [f"lib{k:02d}" for k in range(libs)]
    others = lib_names[1:]
    per_bin = min(len(others), OTHER_LIBS_PER_BIN)
    bin_libs: dict[str, list[str]] = {}
    for b in range(bins):
        chosen = [others[(b * per_bin + j) % len(others)] for j in range(per_bin)] if others else []
        bin_libs[f"app{b:02d}"] = [lib_names[0], *sorted(set(chosen))]
    # Split the binary's LTO volume across the crates it links.
    per_lib = max(1, -(-max(units - BIN_OWN_UNITS, 1) // (per_bin + 1)))
    return lib_names, bin_libs, per_lib


def generate(
    out: Path,
    bins: int = 3,
    libs: int = 4,
    size: str = "small",
    lto: str = "fat",
    codegen_units: int | None = None,
    debug: bool | str = False,
    tests: bool = False,
    examples: bool = False,
) -> list[Path]:
    """Write the workspace under `out`; return every path it consists of."""
    if bins < 1 or libs < 1:
        raise ValueError("need at least one bin and one lib")
    units = SIZES[size] if size in SIZES else int(size)
    if units < 1:
        raise ValueError(f"size must be one of {sorted(SIZES)} or a positive number")
    lib_names, bin_libs, per_lib = plan(bins, libs, units)
    files: dict[str, str] = {}
    core = lib_names[0]

    for name in lib_names:
        deps = [] if name == core else [core]
        files[f"libs/{name}/Cargo.toml"] = _cargo_toml(name, deps, is_bin=False)
        if name == core:
            files[f"libs/{name}/src/lib.rs"] = (
                "// Generated by ltoguard's scripts/gen_workspace.py; do not edit.\n"
                + CORE_LIB
                + "\nmod units;\n\npub use units::*;\n\n"
                + "pub fn run(seed: u64) -> u64 {\n    units::run_all(seed)\n}\n"
            )
            files[f"libs/{name}/src/units.rs"] = _units_module(name, per_lib, "crate")
        else:
            files[f"libs/{name}/src/lib.rs"] = _lib_rs(name)
            files[f"libs/{name}/src/units.rs"] = _units_module(name, per_lib, core)
        if tests:
            files[f"libs/{name}/tests/smoke.rs"] = (
                f"#[test]\nfn run_is_deterministic() {{\n"
                f"    assert_eq!({name}::run(42), {name}::run(42));\n}}\n\n"
                f"#[test]\nfn seed_matters() {{\n"
                f"    assert_ne!({name}::run(1), {name}::run(2));\n}}\n"
            )
        if examples:
            # Example names share target/release/examples/: keep them unique.
            files[f"libs/{name}/examples/{name}_show.rs"] = (
                f'fn main() {{\n    println!("{name} example {{:016x}}", '
                f"{name}::run(std::hint::black_box(7)));\n}}\n"
            )

    for name, deps in bin_libs.items():
        files[f"bins/{name}/Cargo.toml"] = _cargo_toml(name, deps, is_bin=True)
        files[f"bins/{name}/src/main.rs"] = _main_rs(name, deps)
        files[f"bins/{name}/src/units.rs"] = _units_module(name, BIN_OWN_UNITS, core)
        if tests:
            files[f"bins/{name}/tests/cli.rs"] = (
                "use std::process::Command;\n\n"
                "#[test]\nfn prints_checksum() {\n"
                f'    let out = Command::new(env!("CARGO_BIN_EXE_{name}")).output().unwrap();\n'
                "    assert!(out.status.success());\n"
                "    let text = String::from_utf8(out.stdout).unwrap();\n"
                f'    assert!(text.starts_with("{name} checksum "), "{{}}", text);\n'
                "}\n"
            )

    members = [f"libs/{n}" for n in lib_names] + [f"bins/{n}" for n in bin_libs]
    profile = ["[profile.release]", f"lto = {LTO_VALUES[lto]}"]
    if codegen_units is not None:
        profile.append(f"codegen-units = {codegen_units}")
    if (line := debug_toml(debug)) is not None:
        profile.append(line)
    files["Cargo.toml"] = (
        "# Generated by ltoguard's scripts/gen_workspace.py; do not edit.\n"
        f"# bins={bins} libs={libs} size={size} units/lib={per_lib}\n"
        "[workspace]\n"
        'resolver = "2"\n'
        "members = [\n"
        + "".join(f'    "{m}",\n' for m in members)
        + "]\n\n"
        + "\n".join(profile)
        + "\n"
    )
    files[".gitignore"] = "/target\n"

    return write_files(out, files)


def write_files(out: Path, files: dict[str, str]) -> list[Path]:
    """Write a generated workspace's files under ``out``; the paths written."""
    written = []
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode()
        # Rewriting identical bytes would bump mtimes and make cargo rebuild.
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--bins", type=int, default=3, help="binary crates (default 3)")
    parser.add_argument("--libs", type=int, default=4, help="library crates (default 4)")
    parser.add_argument(
        "--size",
        default="small",
        help="small, medium, large or a number of units (default small)",
    )
    parser.add_argument("--lto", choices=sorted(LTO_VALUES), default="fat")
    parser.add_argument("--codegen-units", type=int, default=None)
    add_debug_option(parser)
    parser.add_argument("--tests", action="store_true", help="add integration tests (tests/*.rs)")
    parser.add_argument("--examples", action="store_true", help="add one example per lib")
    args = parser.parse_args(argv)
    if args.size not in SIZES and not args.size.isdigit():
        parser.error(f"--size: expected one of {', '.join(SIZES)} or a number, got {args.size!r}")
    try:
        generate(
            args.out_dir,
            bins=args.bins,
            libs=args.libs,
            size=args.size,
            lto=args.lto,
            codegen_units=args.codegen_units,
            debug=args.debug,
            tests=args.tests,
            examples=args.examples,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(f"generated {args.out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
