"""What a guarded run runs, and how it is recognised across builds (its history keys)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

    from ltoguard.classify import Decision
    from ltoguard.config import CrateOverride


@dataclass
class Job:
    """One command to run under the gate."""

    argv: list[str]
    kind: str  # "rustc", "run" or "link"
    name: str  # the crate (or command) name, for messages and history
    what: str  # one line for humans: "crate foo (bin, lto=fat)"
    key: str  # history key of this job
    group: str  # history key of its siblings (workspace + profile)
    types: list[str] = field(default_factory=list)
    lto: str = ""
    estimate: int | None = None  # configured (per-crate override); None = learn


def job_from_decision(argv: Sequence[str], d: Decision, override: CrateOverride | None) -> Job:
    from ltoguard.classify import describe
    from ltoguard.estimates import group_key, job_key

    workspace = os.getcwd()
    name = d.crate_name or "?"
    types = list(d.crate_types) or (["test"] if d.is_test else ["bin"])
    profile = (d.opt_level or "", d.lto, d.debuginfo or "", d.target or "")
    return Job(
        list(argv),
        kind="rustc",
        name=name,
        what=describe(d),
        types=types,
        lto=d.lto,
        key=job_key(name, workspace, *profile, types),
        group=group_key(workspace, *profile),
        estimate=override.memory if override is not None else None,
    )


def command_job(cmd: Sequence[str], kind: str, name: str | None, estimate: int | None) -> Job:
    """A job for `ltoguard run` / `ltoguard-link`: learned per command name and directory."""
    from ltoguard.estimates import group_key, job_key

    name = name or os.path.basename(cmd[0])
    cwd = os.getcwd()
    return Job(
        list(cmd),
        kind=kind,
        name=name,
        what=f"{kind} {name}",
        types=[kind],
        key=job_key(name, cwd, "", kind, "", "", [kind]),
        group=group_key(cwd, "", kind, "", ""),
        estimate=estimate,
    )
