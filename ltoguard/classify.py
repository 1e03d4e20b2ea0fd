"""Decide whether one rustc invocation is a memory-heavy LTO link (GUARD) or not (PASS).

This module runs for every crate cargo compiles, so it imports nothing beyond
``os`` and does no I/O except reading ``@argfiles``. The parser mirrors rustc's
getopts table closely enough to find the few options that matter; everything
else is skipped with its value so that a value is never mistaken for an option.
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
_LTO_VALUES = {
    "y": "fat",
    "yes": "fat",
    "on": "fat",
    "true": "fat",
    "fat": "fat",
    "thin": "thin",
    "n": "off",
    "no": "off",
    "off": "off",
    "false": "off",
}
_FALSE_WORDS = frozenset(("n", "no", "off", "false"))

# These two --print kinds are produced while linking: rustc still compiles and
# links when they are the only print requests (measured: `--print=native-static-libs`
# on a staticlib with -C lto writes the .a). Any other kind makes rustc print and exit.
_PRINT_DURING_LINK = frozenset(("native-static-libs", "link-args"))

# getopts options of rustc 1.95 that take a value (`rustc --help -v`, plus the
# unstable ones that need -Z unstable-options). An option missing here would
# have its value read as an input or option, so err on listing too many.
_LONG_WITH_VALUE = frozenset(
    (
        "cfg",
        "check-cfg",
        "crate-type",
        "crate-name",
        "edition",
        "emit",
        "print",
        "out-dir",
        "explain",
        "target",
        "allow",
        "warn",
        "force-warn",
        "deny",
        "forbid",
        "cap-lints",
        "codegen",
        "extern",
        "sysroot",
        "error-format",
        "json",
        "color",
        "diagnostic-width",
        "remap-path-prefix",
        "remap-path-scope",
        "env-set",
        "unpretty",
        "extern-location",
    )
)
_SHORT_WITH_VALUE = frozenset("CLloAWDFZ")
_SHORT_FLAGS = frozenset("hgOVv")
_LONG_ALIAS = {
    "allow": "A",
    "warn": "W",
    "deny": "D",
    "forbid": "F",
    "codegen": "C",
    "help": "h",
    "version": "V",
    "verbose": "v",
}

# Cap on an argfile we are willing to read: cargo's are a few MB at most (2.2 MB
# measured with 160k rustflags); this only stops `@/dev/zero`-style accidents.
_ARGFILE_MAX = 64 * 1024 * 1024


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


def _is_program(tok: str) -> bool:
    # `sccache /abs/rustc ...`, `clippy-driver /abs/rustc ...`: cargo stacks
    # wrappers in front of rustc; skip them so their operand is not an input.
    if not tok or tok[0] in "-@" or tok.endswith(".rs"):
        return False
    base = os.path.basename(tok)
    return base in ("clippy-driver", "sccache") or base.endswith("rustc")


def _read_argfile(arg: str) -> list[str] | str:
    """Expand one ``@file`` argument as rustc does; a str result is an error reason."""
    shell = arg.startswith("@shell:")
    path = arg[7:] if shell else arg[1:]
    try:
        # O_NONBLOCK so a FIFO without a writer cannot hang us; only regular
        # files are read, because reading a pipe would steal rustc's arguments.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o170000 != 0o100000:
                return f"argfile {path} is not a regular file; not read"
            if st.st_size > _ARGFILE_MAX:
                return f"argfile {path} is larger than {_ARGFILE_MAX} bytes; not read"
            chunks: list[bytes] = []
            total = 0
            while True:
                b = os.read(fd, 1 << 20)
                if not b:
                    break
                total += len(b)
                if total > _ARGFILE_MAX:
                    return f"argfile {path} is larger than {_ARGFILE_MAX} bytes; not read"
                chunks.append(b)
        finally:
            os.close(fd)
    except OSError as e:
        return f"cannot read argfile {path}: {e.strerror or type(e).__name__}"
    except ValueError as e:  # embedded NUL in the path
        return f"cannot read argfile {path!r}: {e}"
    text = b"".join(chunks).decode("utf-8", "surrogateescape")
    if shell:
        import shlex  # only for -Zshell-argfiles, which cargo never writes

        try:
            return shlex.split(text)
        except ValueError as e:
            return f"cannot parse shell argfile {path}: {e}"
    # cargo writes each argument followed by "\n"; rustc splits on "\n" without
    # trimming, so only the one empty element after the final newline is dropped.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def classify(argv: Sequence[str], mode: str = "lto") -> Decision:
    """Classify ``argv`` (everything after ``ltoguard``: program first, then its args).

    ``mode``: "lto" guards final links that run LTO; "link" guards every final
    link; "off" guards nothing. An unknown mode behaves as "lto", the default,
    so a typo can only ever over-guard. Never raises.
    """
    try:
        return _classify(argv, mode)
    except Exception as e:  # pragma: no cover - a bug here must not break the build
        return Decision(PASS, f"ltoguard cannot parse this command line ({type(e).__name__})")


def _classify(argv: Sequence[str], mode: str) -> Decision:
    if mode == "off":
        return Decision(PASS, "LTOGUARD_MODE=off")
    link_mode = mode == "link"

    args = list(argv[1:])
    start = 0
    while start < len(args) and _is_program(args[start]):
        start += 1
    if start:
        del args[:start]

    # Expand @argfiles for the decision only (the caller forwards argv as is).
    if any(a[:1] == "@" for a in args):
        expanded: list[str] = []
        for a in args:
            if a[:1] == "@":
                got = _read_argfile(a)
                if isinstance(got, str):
                    return Decision(PASS, got)
                expanded.extend(got)
            else:
                expanded.append(a)
        args = expanded

    crate_name: str | None = None
    crate_types: list[str] = []
    emits: list[str] | None = None
    prints: list[str] = []
    lto = ""
    lto_unknown: str | None = None  # the raw value when rustc would reject it
    lpl = False
    is_test = False
    opt_level: str | None = None
    debuginfo: str | None = None
    target: str | None = None
    inputs: list[str] = []
    stop = ""  # non-empty: rustc answers a query and exits without compiling

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
            opts = [(_LONG_ALIAS.get(name, name), value)]
        elif a[:1] == "-" and len(a) > 1:
            # getopts short options: flags may be grouped (`-vV`), and a
            # value-taking letter takes the rest of the token (`-Clto`) or
            # the next token (`-C lto`).
            opts = []
            j = 1
            while j < len(a):
                c = a[j]
                j += 1
                if c in _SHORT_WITH_VALUE:
                    if j < len(a):
                        value = a[j:]
                    elif i < n:
                        value = args[i]
                        i += 1
                    else:
                        value = ""
                    opts.append((c, value))
                    break
                if c not in _SHORT_FLAGS:
                    break  # unknown option: rustc will reject it
                opts.append((c, ""))
        else:
            inputs.append(a)
            continue

        for key, value in opts:
            if key == "C":
                cname, ceq, cval = value.partition("=")
                # rustc looks codegen options up with '-' replaced by '_'
                cname = cname.replace("_", "-")
                if cname == "lto":
                    if not ceq:
                        lto, lto_unknown = "fat", None
                    elif cval in _LTO_VALUES:
                        lto, lto_unknown = _LTO_VALUES[cval], None
                    else:
                        # rustc rejects it today; counting it as on means a new
                        # LTO flavour in a later rustc cannot slip through.
                        lto, lto_unknown = "fat", cval
                elif cname == "linker-plugin-lto":
                    lpl = not (ceq and cval in _FALSE_WORDS)
                elif cname == "opt-level":
                    opt_level = cval
                elif cname == "debuginfo":
                    debuginfo = cval
                elif cname == "help":
                    stop = stop or "help request (-C help)"
            elif key == "crate-type":
                crate_types.extend(value.split(","))
            elif key == "emit":
                if emits is None:
                    emits = []
                emits.extend(e.partition("=")[0] for e in value.split(","))
            elif key == "print":
                prints.append(value.partition("=")[0])
            elif key == "crate-name":
                crate_name = value
            elif key == "target":
                target = value
            elif key == "test":
                is_test = True
            elif key == "O":
                opt_level = "3"
            elif key == "g":
                debuginfo = "2"
            elif key == "h":
                stop = stop or "help request"
            elif key == "V":
                stop = stop or "version query"
            elif key == "explain":
                stop = stop or "--explain request"
            elif key in ("W", "Z") and value == "help":
                stop = stop or f"help request (-{key} help)"

    def decide(action: str, reason: str) -> Decision:
        return Decision(
            action,
            reason,
            crate_name,
            tuple(crate_types),
            lto,
            is_test,
            opt_level,
            debuginfo,
            target,
            lpl,
            inputs[0] if inputs else None,
        )

    if stop:
        return decide(PASS, stop)
    stopping_prints = [p for p in prints if p not in _PRINT_DURING_LINK]
    if stopping_prints:
        if inputs == ["-"] and crate_name == "___":
            return decide(PASS, "cargo's --print probe")
        return decide(PASS, f"--print={stopping_prints[0]} query: rustc prints and exits")
    if not inputs:
        return decide(PASS, "no input file")
    if inputs[0] == "-":
        return decide(PASS, "reads source from stdin")
    if emits is not None and "link" not in emits:
        if "metadata" in emits:
            return decide(PASS, "emits metadata only (cargo check)")
        return decide(PASS, f"--emit={','.join(emits)} without link")

    kinds = ",".join(crate_types) or "bin"
    if is_test:
        # rustc --test ignores --crate-type and builds an executable harness
        what = "test harness"
    elif link_mode:
        final = [t for t in crate_types if t in _FINAL_TYPES] if crate_types else ["bin"]
        if not final:
            return decide(PASS, f"{kinds} crate: no final link")
        what = ",".join(final)
    else:
        if crate_types and not all(t in _FINAL_TYPES for t in crate_types):
            if any(t in _FINAL_TYPES for t in crate_types):
                return decide(PASS, f"{kinds} crate: rustc runs no LTO for mixed crate types")
            if any(t not in ("lib", "rlib") for t in crate_types):
                return decide(PASS, f"{kinds} crate: not linked with LTO")
            if lpl:
                return decide(PASS, f"{kinds} with -C linker-plugin-lto only emits bitcode")
            return decide(PASS, f"{kinds} crate: no final link")
        what = kinds

    if link_mode:
        return decide(GUARD, f"{what} links a final artifact (LTOGUARD_MODE=link)")
    if lto_unknown is not None:
        return decide(GUARD, f"{what} with unrecognised -C lto={lto_unknown}, counted as LTO")
    if lto in ("fat", "thin"):
        return decide(GUARD, f"{what} with -C lto={lto} links a final artifact")
    if lpl and (is_test or any(t != "staticlib" for t in crate_types) or not crate_types):
        # The objects are LLVM bitcode and the linker, a child of this rustc,
        # runs the whole-program LTO whatever -C lto says (measured: `file` on
        # the .rcgu.o gives "LLVM IR bitcode"; the link gets -plugin-opt=...).
        # A staticlib is only archived, so its bitcode is LTO'd by a later link.
        return decide(GUARD, f"{what} with -C linker-plugin-lto: the linker runs LTO")
    if lto == "off":
        return decide(PASS, f"{what} with -C lto=off")
    return decide(PASS, f"{what} without -C lto")
