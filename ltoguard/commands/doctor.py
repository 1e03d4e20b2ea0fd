"""``ltoguard doctor [--json]``: is ltoguard set up to work in this workspace?

One line per check, each ``ok``, ``warn`` or ``FAIL`` with what to do, then a
verdict. Exit 0 when nothing failed, 1 otherwise (``EXIT_FAILED``). Checks:

- wrapper: which wrapper cargo will run, from where (the environment, a
  ``.cargo/config.toml`` up the tree, ``$CARGO_HOME/config.toml``), the way cargo
  picks it;
- wrapper path: does it resolve to an ltoguard that starts (a bare name must be on
  PATH; a moved venv leaves a dangling symlink); sccache as the outer wrapper
  strips cargo's jobserver;
- settings, state dir: what a build would check, with the same messages;
- history: where the memory history is read and written (a warning when the
  cache directory cannot be used and the state directory stands in);
- lto: does the release profile run LTO at all (else nothing is guarded);
- memory: where free memory is measured (host, cgroup v1/v2 with its path) and
  the budget now;
- oom_score_adj, pdeathsig: the kernel features that make an OOM kill land on a
  guarded job and keep an orphan compile from outliving ltoguard.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from ltoguard.cargoconfig import (
    Registered,
    cargo_config_files,
    read_toml_quietly,
    registered_wrappers,
)
from ltoguard.commands.common import EXIT_FAILED, EXIT_OK
from ltoguard.structs import asdict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass
class Check:
    name: str
    status: str  # OK, WARN or FAIL
    message: str
    detail: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------
# checks


def _resolve(reg: Registered, environ: Mapping[str, str]) -> str | None:
    if os.sep not in reg.value:
        return shutil.which(reg.value, path=environ.get("PATH"))
    path = reg.value if os.path.isabs(reg.value) else os.path.join(reg.base, reg.value)
    return path if os.path.exists(path) else None


def _is_ltoguard(path: str) -> tuple[bool, str]:
    try:
        proc = subprocess.run(
            [path, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        return False, f"cannot be started: {exc.strerror}"
    except subprocess.TimeoutExpired:
        return False, "did not answer --version within 30 s"
    first = (proc.stdout or proc.stderr).strip().splitlines()[:1]
    text = first[0] if first else f"exit status {proc.returncode}"
    return proc.returncode == 0 and text.startswith("ltoguard "), text


def check_wrapper(cwd: str, environ: Mapping[str, str]) -> list[Check]:
    regs, problems = registered_wrappers(cwd, environ)
    checks = [Check("cargo config", FAIL, p) for p in problems]
    ours = []
    for reg in regs:
        base = os.path.basename(reg.value)
        if base.startswith("ltoguard"):
            ours.append(reg)
    if not ours:
        where = ", ".join(f"{r.key} = {r.value!r} ({r.origin})" for r in regs) or "none"
        checks.append(
            Check(
                "wrapper",
                FAIL,
                f"cargo runs no ltoguard here (wrappers: {where}); run `ltoguard init` in the"
                " workspace, or set RUSTC_WORKSPACE_WRAPPER to ltoguard's absolute path",
                {"registered": [asdict(r) for r in regs]},
            )
        )
        return checks
    for reg in ours:
        checks.append(
            Check(
                "wrapper",
                OK,
                f"build.{reg.key} = {json.dumps(reg.value)} ({reg.origin})",
                asdict(reg),
            )
        )
        checks.append(_check_path(reg, environ))
    checks.extend(_check_sccache(regs, environ))
    return checks


def _check_path(reg: Registered, environ: Mapping[str, str]) -> Check:
    path = _resolve(reg, environ)
    if path is None:
        if os.sep not in reg.value:
            why = f"the bare name {reg.value!r} is not on PATH"
        elif os.path.islink(reg.value):
            why = f"{reg.value} is a symlink to {os.readlink(reg.value)}, which is gone (a moved or deleted venv?)"
        else:
            why = f"{reg.value} does not exist"
        return Check(
            "wrapper path",
            FAIL,
            f"{why}: cargo will fail with `could not execute process`; use an absolute"
            f" path (`ltoguard init` writes this ltoguard's: {_this_ltoguard()})",
            {"value": reg.value},
        )
    good, said = _is_ltoguard(path)
    if not good:
        return Check(
            "wrapper path",
            FAIL,
            f"{path} is not a working ltoguard ({said}); reinstall (scripts/install.sh) or fix the path",
            {"path": path},
        )
    note = "" if os.sep in reg.value else " (found on PATH: a CI job or IDE may have another PATH)"
    status = OK if os.sep in reg.value else WARN
    return Check(
        "wrapper path", status, f"{path} runs {said}{note}", {"path": path, "version": said}
    )


def _check_sccache(regs: list[Registered], environ: Mapping[str, str]) -> list[Check]:
    outer = next((r for r in regs if r.key == "rustc-wrapper"), None)
    if outer is not None and os.path.basename(outer.value).startswith("sccache"):
        return [
            Check(
                "sccache",
                FAIL,
                "sccache is the outer wrapper (rustc-wrapper): it strips cargo's jobserver, so"
                " ltoguard cannot lend tokens; make ltoguard rustc-wrapper and set"
                ' LTOGUARD_WRAP=sccache (wrap = "sccache")',
            )
        ]
    return []


def check_inner_wrapper(settings: Any, environ: Mapping[str, str]) -> list[Check]:
    """The `wrap` setting, from wherever it is set: every compile runs through it."""
    wrap = settings.wrap if settings is not None else None
    if not wrap:
        return []
    origin = settings.origins.get("wrap", "")
    found = shutil.which(wrap, path=environ.get("PATH")) if os.sep not in wrap else wrap
    name = "sccache" if os.path.basename(wrap).startswith("sccache") else "inner wrapper"
    if found is None or not os.access(found, os.X_OK):
        return [
            Check(
                name,
                FAIL,
                f"wrap = {wrap!r} ({origin}) is not found: every compile would fail with"
                " `cannot run`; install it or fix the setting",
            )
        ]
    return [Check(name, OK, f"ltoguard is outermost and runs rustc through {found} ({origin})")]


def _this_ltoguard() -> str:
    me = sys.argv[0] if sys.argv else ""
    if os.path.basename(me).startswith("ltoguard") and os.path.isabs(me):
        return me
    found = shutil.which("ltoguard")
    return found or os.path.join(os.path.dirname(sys.executable), "ltoguard")


def check_settings(cwd: str, environ: Mapping[str, str]) -> tuple[list[Check], Any]:
    from ltoguard.config import SettingsError, load
    from ltoguard.statedir import StateDirError, default_path, open_state_dir

    try:
        settings = load(environ, cwd)
    except SettingsError as exc:
        return [Check("settings", FAIL, str(exc))], None
    checks = [Check("settings", OK, f"valid (mode {settings.mode}; `ltoguard explain` shows each)")]
    path = settings.dir or default_path()
    fd = None
    try:
        _, fd = open_state_dir(settings.dir)
        checks.append(Check("state dir", OK, path, {"path": path}))
    except StateDirError as exc:
        checks.append(Check("state dir", FAIL, str(exc), {"path": path}))
    try:
        checks.append(check_history(path, fd, environ))
    finally:
        if fd is not None:
            os.close(fd)
    return checks, settings


def check_history(state_path: str, state_fd: int | None, environ: Mapping[str, str]) -> Check:
    from ltoguard.history import HistoryStore

    store = HistoryStore.for_reading(lambda: (state_path, state_fd), environ=environ)
    try:
        where = store.as_dict()
        line = store.describe()
    finally:
        store.close()
    if store.problem is not None:
        return Check(
            "history",
            WARN,
            f"{line}: the state directory stands in, and by default it does not outlive a reboot",
            where,
        )
    return Check("history", OK, line, where)


def _lto_value(value: object) -> str | None:
    if value is True or value in ("fat", "thin", "true"):
        return "thin" if value == "thin" else "fat"
    return None


def check_lto(cwd: str, environ: Mapping[str, str], mode: str) -> Check:
    from ltoguard.manifest import find_workspace_manifest

    if mode != "lto":
        return Check("lto", OK, f"mode {mode}: LTO is not needed for a job to be guarded")
    manifest = find_workspace_manifest(cwd)
    if manifest is None:
        return Check("lto", FAIL, f"no Cargo.toml in {cwd} or above: run doctor in the workspace")
    sources: list[tuple[object, str]] = []
    env_value = environ.get("CARGO_PROFILE_RELEASE_LTO")
    if env_value is not None:
        sources.append((env_value, "environment CARGO_PROFILE_RELEASE_LTO"))
    for path in [*cargo_config_files(cwd, environ), manifest]:
        data, _err = read_toml_quietly(path)
        profile = data.get("profile")
        release = profile.get("release") if isinstance(profile, dict) else None
        if isinstance(release, dict) and "lto" in release:
            sources.append((release["lto"], f"{path} [profile.release]"))
    flags = environ.get("RUSTFLAGS", "") + " " + environ.get("CARGO_ENCODED_RUSTFLAGS", "")
    if "-Clto" in flags.replace(" ", "") and "-Clto=off" not in flags.replace(" ", ""):
        return Check("lto", OK, "RUSTFLAGS pass -C lto: final links are guarded")
    if sources:
        value, origin = sources[0]
        kind = _lto_value(value)
        if kind is not None:
            return Check(
                "lto", OK, f"release builds use {kind} LTO ({origin} lto = {json.dumps(value)})"
            )
        return Check(
            "lto",
            FAIL,
            f"{origin} lto = {json.dumps(value)}: release builds run no LTO, so ltoguard"
            ' guards nothing; set lto = "fat" or "thin", or LTOGUARD_MODE=link to guard every final link',
        )
    return Check(
        "lto",
        FAIL,
        f"[profile.release] in {manifest} sets no lto: release builds run no LTO, so ltoguard"
        ' guards nothing; add `lto = "fat"` (or "thin"), or set LTOGUARD_MODE=link',
    )


def check_memory(settings: Any) -> Check:
    from ltoguard.memory import available_memory
    from ltoguard.sizes import format_size

    mem = available_memory(settings.memory_parsed if settings is not None else None)
    return Check(
        "memory",
        OK,
        f"{format_size(mem.available)} free for guarded jobs now, of {format_size(mem.total)}"
        f"; bound: {mem.source}",
        {"available": mem.available, "total": mem.total, "source": mem.source},
    )


def check_kernel() -> list[Check]:
    checks = []
    try:
        with open("/proc/self/oom_score_adj", "r+") as f:
            current = f.read().strip()
            f.seek(0)
            f.write(current)
        checks.append(
            Check(
                "oom_score_adj",
                OK,
                "settable: a kernel OOM kill picks a guarded job (which reruns)",
            )
        )
    except OSError as exc:
        checks.append(
            Check(
                "oom_score_adj",
                WARN,
                f"not settable ({exc.strerror}): the kernel may kill an ordinary compile instead"
                " of a guarded one",
            )
        )
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        sig = ctypes.c_int(0)
        ok = libc.prctl(2, ctypes.byref(sig), 0, 0, 0) == 0  # PR_GET_PDEATHSIG
        status, text = (
            (OK, "available: a compile dies with ltoguard") if ok else (WARN, "prctl failed")
        )
        checks.append(Check("pdeathsig", status, text))
    else:
        checks.append(
            Check(
                "pdeathsig",
                WARN,
                f"not on {sys.platform}: a compile whose ltoguard is killed keeps running (its slot"
                " stays held until it ends, so no second job starts beside it)",
            )
        )
    return checks


def run_checks(cwd: str, environ: Mapping[str, str]) -> list[Check]:
    checks = check_wrapper(cwd, environ)
    more, settings = check_settings(cwd, environ)
    checks += check_inner_wrapper(settings, environ)
    checks += more
    checks.append(check_lto(cwd, environ, settings.mode if settings is not None else "lto"))
    checks.append(check_memory(settings))
    checks += check_kernel()
    return checks


def render(checks: list[Check], cwd: str) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"ltoguard doctor in {cwd}"]
    for c in checks:
        lines.append(f"  {c.status:<4}  {c.name:<{width}}  {c.message}")
    failed = [c for c in checks if c.status == FAIL]
    warned = [c for c in checks if c.status == WARN]
    if failed:
        names = ", ".join(c.name for c in failed)
        lines.append(
            f"verdict: {len(failed)} problem{'s' if len(failed) != 1 else ''} ({names}): fix before building"
        )
    elif warned:
        lines.append(f"verdict: ready, with {len(warned)} warning{'s' if len(warned) != 1 else ''}")
    else:
        lines.append("verdict: ready: release builds here go through ltoguard")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="ltoguard doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the checks as one JSON object")
    opts = parser.parse_args(sys.argv[1:] if argv is None else list(argv))
    cwd = os.getcwd()
    checks = run_checks(cwd, os.environ)
    failed = any(c.status == FAIL for c in checks)
    if opts.json:
        doc = {"version": 1, "cwd": cwd, "ok": not failed, "checks": [asdict(c) for c in checks]}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render(checks, cwd))
    return EXIT_FAILED if failed else EXIT_OK
