"""What a guarded run runs, and how it is recognised across builds (its history keys)."""

from __future__ import annotations

import os
import time

from ltoguard.structs import field, struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

    from ltoguard.admission import Admission
    from ltoguard.classify import Decision
    from ltoguard.curves import Curve
    from ltoguard.verdict import CrateOverride


def sha256_hex(data: bytes) -> str:
    """SHA-256 of ``data`` in hex, from the interpreter's own module where it has one:
    hashlib loads OpenSSL's, which every guarded job, a waiting one too, would hold."""
    try:
        from _sha2 import sha256  # type: ignore[import-not-found, unused-ignore]  # 3.12+
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found, no-redef, unused-ignore]
        except ImportError:
            from hashlib import sha256  # type: ignore[no-redef, unused-ignore]
    return str(sha256(data).hexdigest())


def toolchain_id(argv: Sequence[str]) -> str:
    """Which compiler a command runs, so that peaks learned with one are not taken as
    fact for another (a compiler update can double fat-LTO memory): the rustc's real
    path, size and mtime, and its toolchain's librustc_driver (whose name changes with
    every release); "" when no rustc is named (`ltoguard run`, links)."""
    for tok in argv[:4]:  # [inner wrapper] [clippy-driver] rustc ARGS
        if not os.path.basename(tok).endswith("rustc") or not os.path.isabs(tok):
            continue
        real = os.path.realpath(tok)
        try:
            st = os.stat(real)
        except OSError:
            return ""
        lib = os.path.join(os.path.dirname(os.path.dirname(real)), "lib")
        try:
            drivers = sorted(n for n in os.listdir(lib) if n.startswith("librustc_driver"))
        except OSError:
            drivers = []
        ident = f"{real}:{st.st_size}:{st.st_mtime_ns}:{','.join(drivers)}"
        return sha256_hex(ident.encode("utf-8", "surrogateescape"))[:16]
    return ""


def target_dir(argv: Sequence[str]) -> str:
    """The cargo target directory a compile writes into, from its ``--out-dir``
    (``<target>[/<triple>]/<profile>/deps``): the directory holding cargo's
    CACHEDIR.TAG. "" if there is none (not a cargo build)."""
    out = ""
    for i, a in enumerate(argv):
        if a == "--out-dir" and i + 1 < len(argv):
            out = argv[i + 1]
        elif a.startswith("--out-dir="):
            out = a[len("--out-dir=") :]
    d = os.path.abspath(out) if out else ""
    for _ in range(4 if d else 0):
        d = os.path.dirname(d)
        if os.path.isfile(os.path.join(d, "CACHEDIR.TAG")):
            return d
    return ""


@struct
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
    toolchain: str = ""  # toolchain_id(): whose peaks count as this job's own
    target: str = ""  # target_dir(): where older versions kept a history (read to migrate it)
    crate_root: str | None = None  # the .rs file rustc compiles (its folder's size counts)
    opt_level: str = ""
    debuginfo: str = ""

    @property
    def codegen_threads(self) -> bool:
        """Does it run a codegen thread per spare jobserver token it takes? rustc
        does; the command under `ltoguard run` or `ltoguard-link` keeps its jobserver
        (attempt.py runs a rustc on one thread where a spare token's memory could
        cost an OOM kill)."""
        return self.kind == "rustc"


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
        toolchain=toolchain_id(argv),
        target=target_dir(_expanded(argv)),
        crate_root=d.input,
        opt_level=d.opt_level or "",
        debuginfo=d.debuginfo or "",
    )


def job_inputs(job: Job) -> dict[str, int] | None:
    """What a guarded rustc job will read (inputs.Inputs), for its cold estimate."""
    if job.kind != "rustc":
        return None
    from ltoguard.inputs import read_inputs

    got = read_inputs(_expanded(job.argv), job.crate_root)
    return got.as_dict() if got is not None else None


def _expanded(argv: Sequence[str]) -> list[str]:
    if not any(a[:1] == "@" for a in argv):
        return list(argv)
    from ltoguard.argfiles import expand

    got = expand(list(argv))
    return got if isinstance(got, list) else list(argv)


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


def cargo_build_id(start: int | None = None, levels: int | None = None) -> str:
    """The cargo invocation this job runs under, as "PID-STARTTIME", found among our
    ancestors (procstat.CARGO_LEVELS of them); "" outside cargo."""
    from ltoguard.procstat import CARGO_LEVELS, cargo_run

    start = os.getppid() if start is None else start
    return cargo_run(start, CARGO_LEVELS if levels is None else levels)


@struct
class JobRecord:
    """One guarded job as other processes see it, from one set of fields.

    While it waits, `ticket()` is its queue ticket; at admission the semaphore
    writes the same fields plus slot, pid, uid, started and reason as its run
    record (the policy keeps `estimate` current until then, so the record shows
    the figure the job was admitted on); when it ends, `event()` is its line in
    the event log (`ltoguard report`), to which guard.py adds its ``attempts``.
    """

    job: Job
    estimate: int
    basis: str  # where the estimate comes from: an estimates.Basis
    queued: float = field(default_factory=time.time)
    # The directory it ran in: cargo runs a workspace member's rustc at the workspace root.
    workspace: str = field(default_factory=os.getcwd)
    pid: int = field(default_factory=os.getpid)
    admitted: float | None = None  # first admission
    waited: float = 0.0  # seconds queued, over every attempt
    peak: int = 0  # bytes, the largest attempt's
    budget: int | None = None  # memory guarded jobs could use at admission
    available_at_admit: int | None = None
    mem_source: str = ""
    # The memory bound this job decides against (its own LTOGUARD_MEMORY and cgroup:
    # jobs of different builds may differ), as last read; `ltoguard status` shows it.
    limit_total: int | None = None
    limit_source: str = ""
    # What the machine (host and cgroups) really had free at admission, plus what
    # guarded jobs held: unlike `budget`, never an LTOGUARD_MEMORY figure.
    physical: int | None = None
    build: str = field(default_factory=cargo_build_id)  # the cargo run it belongs to
    samples: list[list[float]] = field(default_factory=list)  # [time, bytes] for the report
    inputs: dict[str, int] | None = None  # inputs.Inputs: what the cold estimate read
    paused_s: float = 0.0  # seconds its compile was paused to leave room, over every attempt
    pauses: list[tuple[float, float]] = field(default_factory=list)  # time.time() paused, resumed
    run_from: int = 0  # where the last attempt's samples begin
    curve: Curve | None = None  # its memory over a run, learned with its estimate
    one_thread: bool = False  # an attempt ran on one codegen thread (attempt.py): said once

    def last_run_curve(self) -> Curve | None:
        """The curve of its last attempt, for one that exited 0 (the caller knows):
        that attempt's samples, its pauses cut out (curves.without_pauses). One run
        on one codegen thread counts too: a next run on more threads ends sooner
        (expected longer), and if it rises sooner, it is off its curve (counted at
        its estimate)."""
        from ltoguard import curves

        run = self.samples[self.run_from :]
        if not run:
            return None
        kept = curves.without_pauses(run, self.pauses)
        return curves.from_samples(kept, kept[0][0], kept[-1][0])

    @property
    def estimated(self) -> str:
        """Where the estimate came from, ending a message line: ``estimated from
        inputs``, ``raised after it outgrew its estimate``."""
        from ltoguard.estimates import Basis

        words: dict[str, str] = {  # where "estimated from <basis>" does not read
            Basis.RAISED: "raised after it outgrew its estimate",
            Basis.CONFIGURED: "set by its memory setting",
            Basis.DEFAULT: "a default: nothing learned yet",
        }
        return words.get(self.basis, f"estimated from {self.basis}")

    def held_by(self, refusal: Admission) -> str:
        """Why a refusal holds the job, with what it needs: a message line's reason."""
        if refusal.names_estimate:
            return f"{refusal.text}; {self.estimated}"
        from ltoguard.estimates import describe

        return f"{refusal.text}; needs {describe(self.estimate, self.basis)}"

    def ticket(self) -> dict[str, Any]:
        job = self.job
        return {
            "kind": job.kind,
            "crate": job.name,
            "types": job.types,
            "lto": job.lto,
            "workspace": self.workspace,
            "since": self.queued,
            "pid": self.pid,
            "estimate": self.estimate,
            "estimate_basis": self.basis,
            "key": job.key,
            "group": job.group,
            "limit_total": self.limit_total,
            "limit_source": self.limit_source,
            **({"curve": self.curve.as_json()} if self.curve is not None else {}),
        }

    def event(self, code: int, outcome: str, reruns: int, requeues: int) -> dict[str, Any]:
        fields = self.ticket()
        for key in ("since", "key", "group", "limit_total", "limit_source"):
            del fields[key]
        fields.update(
            v=1,
            queued=self.queued,
            admitted=self.admitted,
            finished=time.time(),
            waited=round(self.waited, 3),
            paused_s=round(self.paused_s, 3),
            peak=self.peak,
            exit=code,
            reruns=reruns,
            requeues=requeues,
            outcome=outcome,
            budget=self.budget,
            available_at_admit=self.available_at_admit,
            samples=self.samples[-120:],
            **(
                {"pauses": [[round(a, 2), round(b, 2)] for a, b in self.pauses[-20:]]}
                if self.pauses
                else {}
            ),
            mem_source=self.mem_source,
            physical=self.physical,
            build=self.build,
        )
        if self.one_thread:
            fields["one_thread"] = True  # an attempt ran on one codegen thread
        # CPU seconds of this guard process itself (its waiting, probes and watch
        # threads) and of the compiles it ran and reaped: what ltoguard costs a build.
        cpu = os.times()
        fields["guard_cpu_s"] = round(cpu.user + cpu.system, 3)
        fields["compile_cpu_s"] = round(cpu.children_user + cpu.children_system, 3)
        if self.inputs is not None:
            fields["inputs"] = self.inputs
            fields["profile"] = {"opt": self.job.opt_level, "debug": self.job.debuginfo}
        return fields
