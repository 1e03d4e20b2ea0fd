"""Decide whether one rustc invocation is a memory-heavy LTO link (GUARD) or not (PASS).

``classify(argv)`` is ``judge(tokenize(argv))``: ``tokenize`` reads the command
line into an :class:`Invocation` (the facts), ``judge`` holds the GUARD/PASS rules.
This module runs for every crate cargo compiles, so it imports nothing beyond
``os`` (``@argfiles`` are read by :mod:`ltoguard.argfiles`). The parser mirrors
rustc's getopts table closely enough to find the few options that matter; every
other option is skipped with its value, so a value is never mistaken for an option.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

GUARD = "guard"
PASS = "pass"

MODES = ("lto", "link", "off")

# rustc refuses -C lto unless every crate type is one of these ("lto can only be
# run for executables, cdylibs and static library outputs"), and cargo only
# passes -C lto for such units: mixed ["rlib", "cdylib"] gets no -C lto at all.
_FINAL_TYPES = frozenset(("bin", "cdylib", "staticlib"))

# rustc's parse_lto: a bare `-C lto` is fat; the bool spellings come from
# parse_opt_bool; matching is case-sensitive.
_FALSE_WORDS = frozenset(("n", "no", "off", "false"))
_LTO_VALUES = {**dict.fromkeys(("y", "yes", "on", "true", "fat"), "fat"), "thin": "thin"}
_LTO_VALUES.update(dict.fromkeys(_FALSE_WORDS, "off"))

# These two --print kinds are produced while linking: rustc still compiles and
# links when they are the only print requests (measured: `--print=native-static-libs`
# on a staticlib with -C lto writes the .a). Any other kind makes rustc print and exit.
_PRINT_DURING_LINK = frozenset(("native-static-libs", "link-args"))

# getopts options of rustc 1.95 that take a value (`rustc --help -v`, plus the
# unstable ones that need -Z unstable-options). An option missing here would
# have its value read as an input or option, so err on listing too many.
_LONG_WITH_VALUE = frozenset(
    (  # noqa: SIM905 - 28 names read better as words than as 28 lines
        "cfg check-cfg crate-type crate-name edition emit print out-dir explain target"
        " allow warn force-warn deny forbid cap-lints codegen extern sysroot error-format"
        " json color diagnostic-width remap-path-prefix remap-path-scope env-set unpretty"
        " extern-location"
    ).split()
)
_SHORT_WITH_VALUE = frozenset("CLloAWDFZ")
_SHORT_FLAGS = frozenset("hgOVv")
_LONG_ALIAS = {"allow": "A", "warn": "W", "deny": "D", "forbid": "F", "codegen": "C"}
_LONG_ALIAS.update(help="h", version="V", verbose="v")
# Options after which rustc answers and exits without compiling, whatever their value.
_QUERIES = {"h": "help request", "V": "version query", "explain": "--explain request"}


class Decision:
    """The classifier's verdict on one invocation, with the facts it was based on."""

    __slots__ = (
        "action",
        "reason",
        "crate_name",
        "crate_types",
        "lto",
        "is_test",
        "opt_level",
        "debuginfo",
        "target",
        "linker_plugin_lto",
        "input",
    )

    def __init__(
        self,
        action: str,
        reason: str,
        crate_name: str | None = None,
        crate_types: tuple[str, ...] = (),
        lto: str = "",
        is_test: bool = False,
        opt_level: str | None = None,
        debuginfo: str | None = None,
        target: str | None = None,
        linker_plugin_lto: bool = False,
        input: str | None = None,
    ) -> None:
        self.action = action
        self.reason = reason
        self.crate_name = crate_name
        self.crate_types = crate_types
        self.lto = lto
        self.is_test = is_test
        self.opt_level = opt_level
        self.debuginfo = debuginfo
        self.target = target
        self.linker_plugin_lto = linker_plugin_lto
        self.input = input

    @property
    def guarded(self) -> bool:
        return self.action == GUARD

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"Decision({fields})"


class Invocation:
    """What one rustc command line asks for, as :func:`tokenize` found it. ``emits``
    is None without ``--emit`` (rustc then links); ``lto`` is "fat", "thin", "off"
    or "" (absent), ``lto_unknown`` a value rustc would reject; a non-empty ``stop``
    says why rustc compiles nothing (a query) or the argv could not be read."""

    __slots__ = (
        "crate_name",
        "crate_types",
        "emits",
        "prints",
        "lto",
        "lto_unknown",
        "linker_plugin_lto",
        "is_test",
        "opt_level",
        "debuginfo",
        "target",
        "inputs",
        "stop",
    )

    def __init__(self) -> None:
        self.crate_name: str | None = None
        self.crate_types: list[str] = []
        self.emits: list[str] | None = None
        self.prints: list[str] = []
        self.lto = ""
        self.lto_unknown: str | None = None
        self.linker_plugin_lto = False
        self.is_test = False
        self.opt_level: str | None = None
        self.debuginfo: str | None = None
        self.target: str | None = None
        self.inputs: list[str] = []
        self.stop = ""


def describe(d: Decision) -> str:
    """One line for humans, e.g. ``crate foo (bin, lto=fat)``."""
    name = d.crate_name
    if name is None and d.input:
        name = os.path.basename(d.input)
    if d.is_test:
        kinds = "test harness"
    elif d.crate_types:
        kinds = ",".join(d.crate_types)
    else:
        kinds = "bin"
    parts = [kinds]
    if d.lto:
        parts.append(f"lto={d.lto}")
    if d.linker_plugin_lto:
        parts.append("linker-plugin-lto")
    if d.target:
        parts.append(f"target={d.target}")
    return f"crate {name or '<unnamed>'} ({', '.join(parts)})"


def classify(argv: Sequence[str], mode: str = "lto") -> Decision:
    """Classify ``argv`` (everything after ``ltoguard``: program first, then its args).

    ``mode``: "lto" guards final links that run LTO; "link" guards every final link;
    "off" guards nothing and reads nothing. An unknown mode behaves as "lto", the
    default, so a typo can only ever over-guard. Never raises.
    """
    try:
        return judge(Invocation() if mode == "off" else tokenize(argv), mode)
    except Exception as e:  # pragma: no cover - a bug here must not break the build
        return Decision(PASS, f"ltoguard cannot parse this command line ({type(e).__name__})")


def tokenize(argv: Sequence[str]) -> Invocation:
    """Read ``argv`` (program first) as rustc would: wrapper programs skipped,
    ``@argfiles`` expanded, options applied in order."""
    inv = Invocation()
    i = 1
    while i < len(argv) and _is_program(argv[i]):
        i += 1
    args = argv[i:]
    if any(a[:1] == "@" for a in args):
        from ltoguard import argfiles  # only for cargo's E2BIG fallback

        # Expanded for the decision only: the caller forwards argv as is.
        got = argfiles.expand(args)
        if isinstance(got, str):
            inv.stop = got
            return inv
        args = got
    opts, inv.inputs = getopt(args)
    _gather(inv, opts)
    return inv


def _is_program(tok: str) -> bool:
    # `sccache /abs/rustc ...`, `clippy-driver /abs/rustc ...`: cargo stacks
    # wrappers in front of rustc; skip them so their operand is not an input.
    if not tok or tok[0] in "-@" or tok.endswith(".rs"):
        return False
    base = os.path.basename(tok)
    return base in ("clippy-driver", "sccache") or base.endswith("rustc")


def getopt(args: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """rustc's arguments (no program, argfiles expanded) split as getopts does:
    the options in order as (key, value), a long alias under its short key
    ("--codegen" as "C"), "" as a flag's value; and the inputs."""
    opts: list[tuple[str, str]] = []
    inputs: list[str] = []
    n = len(args)
    i = 0
    while i < n:
        a = args[i]
        i += 1
        if a == "--":
            inputs.extend(args[i:])
            break
        if a[:2] == "--":
            name, eq, value = a[2:].partition("=")
            if name in _LONG_WITH_VALUE and not eq:
                if i >= n:
                    break  # rustc: "Argument to option 'x' missing"
                value = args[i]
                i += 1
            opts.append((_LONG_ALIAS.get(name, name), value))
        elif a[:1] == "-" and len(a) > 1:
            # Short options: flags may be grouped (`-vV`); a value-taking letter takes
            # the rest of the token (`-Clto`) or the next token, whatever it is (`-C lto`).
            for j in range(1, len(a)):
                c = a[j]
                if c in _SHORT_WITH_VALUE:
                    if j + 1 < len(a):
                        opts.append((c, a[j + 1 :]))
                    elif i < n:
                        opts.append((c, args[i]))
                        i += 1
                    else:
                        opts.append((c, ""))
                    break
                if c not in _SHORT_FLAGS:
                    break  # unknown option: rustc will reject it
                opts.append((c, ""))
        else:
            inputs.append(a)
    return opts, inputs


def _gather(inv: Invocation, opts: list[tuple[str, str]]) -> None:
    """Apply ``opts`` to ``inv`` in order; options that do not matter are skipped."""
    for key, value in opts:
        if key == "C":
            _codegen(inv, value)
        elif key == "crate-type":
            inv.crate_types.extend(value.split(","))
        elif key == "emit":
            if inv.emits is None:
                inv.emits = []
            inv.emits.extend(e.partition("=")[0] for e in value.split(","))
        elif key == "print":
            inv.prints.append(value.partition("=")[0])
        elif key == "crate-name":
            inv.crate_name = value
        elif key == "target":
            inv.target = value
        elif key == "test":
            inv.is_test = True
        elif key == "O":
            inv.opt_level = "3"
        elif key == "g":
            inv.debuginfo = "2"
        elif inv.stop:
            pass  # the first query is the one named
        elif key in _QUERIES:
            inv.stop = _QUERIES[key]
        elif key in ("W", "Z") and value == "help":
            inv.stop = f"help request (-{key} help)"


def _codegen(inv: Invocation, value: str) -> None:
    """Apply one ``-C name[=value]`` to ``inv``."""
    name, eq, val = value.partition("=")
    # rustc looks codegen options up with '-' replaced by '_'
    name = name.replace("_", "-")
    if name == "lto":
        # An unknown value is rejected by rustc today; counting it as on means a
        # new LTO flavour in a later rustc cannot slip through.
        inv.lto = _LTO_VALUES.get(val, "fat") if eq else "fat"
        inv.lto_unknown = val if eq and val not in _LTO_VALUES else None
    elif name == "linker-plugin-lto":
        inv.linker_plugin_lto = not (eq and val in _FALSE_WORDS)
    elif name == "opt-level":
        inv.opt_level = val
    elif name == "debuginfo":
        inv.debuginfo = val
    elif name == "help" and not inv.stop:
        inv.stop = "help request (-C help)"


def judge(inv: Invocation, mode: str) -> Decision:
    """The GUARD/PASS verdict on ``inv`` in ``mode`` (as for :func:`classify`),
    with its reason and ``inv``'s facts."""
    action, reason = _rule(inv, mode)
    return Decision(
        action,
        reason,
        inv.crate_name,
        tuple(inv.crate_types),
        inv.lto,
        inv.is_test,
        inv.opt_level,
        inv.debuginfo,
        inv.target,
        inv.linker_plugin_lto,
        inv.inputs[0] if inv.inputs else None,
    )


def _rule(inv: Invocation, mode: str) -> tuple[str, str]:
    if mode == "off":
        return PASS, "LTOGUARD_MODE=off"
    why = _no_compile_or_link(inv)
    if why:
        return PASS, why
    link_mode = mode == "link"
    what, why = _what_is_linked(inv, link_mode)
    if why:
        return PASS, why
    if link_mode:
        return GUARD, f"{what} links a final artifact (LTOGUARD_MODE=link)"
    if inv.lto_unknown is not None:
        return GUARD, f"{what} with unrecognised -C lto={inv.lto_unknown}, counted as LTO"
    if inv.lto in ("fat", "thin"):
        return GUARD, f"{what} with -C lto={inv.lto} links a final artifact"
    types = inv.crate_types
    if inv.linker_plugin_lto and (inv.is_test or not types or any(t != "staticlib" for t in types)):
        # The objects are LLVM bitcode and the linker, a child of this rustc,
        # runs the whole-program LTO whatever -C lto says (measured: `file` on
        # the .rcgu.o gives "LLVM IR bitcode"; the link gets -plugin-opt=...).
        # A staticlib is only archived, so its bitcode is LTO'd by a later link.
        return GUARD, f"{what} with -C linker-plugin-lto: the linker runs LTO"
    if inv.lto == "off":
        return PASS, f"{what} with -C lto=off"
    return PASS, f"{what} without -C lto"


def _no_compile_or_link(inv: Invocation) -> str:
    """Why rustc will link nothing whatever the crate types, or ""."""
    if inv.stop:
        return inv.stop
    queries = [p for p in inv.prints if p not in _PRINT_DURING_LINK]
    if queries:
        if inv.inputs == ["-"] and inv.crate_name == "___":
            return "cargo's --print probe"
        return f"--print={queries[0]} query: rustc prints and exits"
    if not inv.inputs:
        return "no input file"
    if inv.inputs[0] == "-":
        return "reads source from stdin"
    if inv.emits is not None and "link" not in inv.emits:
        if "metadata" in inv.emits:
            return "emits metadata only (cargo check)"
        return f"--emit={','.join(inv.emits)} without link"
    return ""


def _what_is_linked(inv: Invocation, link_mode: bool) -> tuple[str, str]:
    """(what is linked, "") for a link that may be guarded, else ("", why not);
    outside link mode every crate type must be final, as rustc runs LTO only then."""
    if inv.is_test:
        # rustc --test ignores --crate-type and builds an executable harness
        return "test harness", ""
    types = inv.crate_types
    kinds = ",".join(types) or "bin"
    if link_mode:
        final = [t for t in types if t in _FINAL_TYPES] if types else ["bin"]
        if not final:
            return "", f"{kinds} crate: no final link"
        return ",".join(final), ""
    if not types or all(t in _FINAL_TYPES for t in types):
        return kinds, ""
    if any(t in _FINAL_TYPES for t in types):
        return "", f"{kinds} crate: rustc runs no LTO for mixed crate types"
    if any(t not in ("lib", "rlib") for t in types):
        return "", f"{kinds} crate: not linked with LTO"
    if inv.linker_plugin_lto:
        return "", f"{kinds} with -C linker-plugin-lto only emits bitcode"
    return "", f"{kinds} crate: no final link"
