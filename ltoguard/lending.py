"""Which waiting jobs lend cargo their jobserver token, and how many tokens are out.

A guarded job that waits hands its token back so cargo keeps its -j jobs busy.
Each token lent lets cargo start one more compile; when that is another
LTO binary it queues too and lends in its turn, and a job admitted without a token
runs one over -j until it takes one back. Unbounded, that chain put every binary of
a 50-bin workspace in flight at once (an ltoguard process each, and the compiles
over -j): under a memory cap the ltoguard processes themselves ran the build out
of memory. So two bounds (the rule: admission.lending):

- only the waiters nearest the head lend (``lend_depth``), and
- at most ``lend_depth`` tokens are out at a time over the whole state directory:
  each lent token is a file ``lent-UID-PID`` there while it is out (one per process
  at most, removed when it comes back; a file whose process is gone does not count).
  A paused job's token (pause.py) is lent under the same bound: pauses come when
  memory is short, and a token lent past the bound went to one more waiting
  ltoguard process rather than a compile (docs/benchmarks.md).

And no waiter lends while a rerun alone after an OOM kill runs: cargo would start
a compile beside it on the token (`a_sibling_waiter_holds_a_token` relies on it),
nor once its cargo runs only guarded jobs, one of them on a lent token
(`only_guarded_jobs`): cargo had nothing else to start; nor does a build script's
compile (`is_build_script`): its dependents would wait for its token to come back.
"""

from __future__ import annotations

import contextlib
import json
import os

from ltoguard import locks, proctree, records
from ltoguard.admission import Lend, is_head, lending, lending_paused
from ltoguard.cgroups import cpus_here
from ltoguard.procstat import CARGO_LEVELS, cargo_run, read_stat
from ltoguard.statedir import read_small_file

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ltoguard.jobserver import Lease

PREFIX = records.LENT_PREFIX


def lend_depth() -> int:
    """How many waiters nearest the head may lend, and how many tokens may be out:
    as many CPUs as this process may use (`cgroups.usable_cpus`), at least 2."""
    return max(2, cpus_here())


def is_build_script(crate: str) -> bool:
    """Is ``crate`` a build script's (cargo names it build_script_ and the file's stem)?"""
    return crate.startswith("build_script_")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # another user's process: alive
    return True


class LentTokens:
    """The tokens ltoguard processes have lent and not taken back, as files
    ``lent-UID-PID`` in the state directory (``dir_fd``; None: not counted). A file
    counts only while its process lives and its owner is the uid its name says (in a
    shared state directory nobody can stop the others lending with a planted file);
    one left by a process of ours that is gone (kill -9) is removed."""

    def __init__(self, dir_fd: int | None, pid: int | None = None) -> None:
        self.dir_fd = dir_fd
        self.uid = os.geteuid()
        self.name = f"{PREFIX}{self.uid}-{os.getpid() if pid is None else pid}"

    def count(self) -> int:
        if self.dir_fd is None:
            return 0
        try:
            names = os.listdir(self.dir_fd)
        except OSError:
            return 0
        return sum(1 for n in names if n.startswith(PREFIX) and self._counts(n))

    def _counts(self, name: str) -> bool:
        claim = records.claimed_by(name)
        if claim is None:
            return False
        uid, pid = claim
        try:
            st = os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except OSError:
            return False
        if st.st_uid != uid:
            return False
        if _alive(pid):
            return True
        if st.st_uid == self.uid:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self.dir_fd)
        return False

    def mark(self, lent: bool) -> None:
        """Lease.on_change: this process's token went out (True) or came back."""
        if self.dir_fd is None:
            return
        if lent:
            flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            os.close(os.open(self.name, flags, 0o600, dir_fd=self.dir_fd))
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.name, dir_fd=self.dir_fd)


def a_sibling_waiter_holds_a_token(dir_fd: int, build: str, ppid: int | None = None) -> bool:
    """Does a waiter of this cargo run hold its jobserver token, not lent? Call it
    with the state directory's mutex held (a waiter lends under it). Of this run:
    the same ``build`` (jobs.cargo_build_id), or outside cargo the same parent
    (``ppid``, default ours); of our uid, its ticket's file ours too.

    A rerun alone that lent its own token need not wait for one then (guard.py):
    cargo runs -j jobs plus the tokens lent, so with one of them parked in a
    waiter no more compiles run beside the rerun than with its own token back, and
    the waiter keeps it (no waiter lends beside a rerun alone: admission.lending).
    A waiter whose ``lent-`` file could not be written (a full disk) looks as if it
    held its token: the rerun then starts with one compile over -j at most."""
    uid, ppid = os.geteuid(), os.getppid() if ppid is None else ppid
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return False
    lent = {n for n in names if n.startswith(PREFIX)}
    for _seq, name in records.tickets(names):
        pid = records.ticket_pid(name)
        if records.ticket_owner(name) != str(uid) or f"{PREFIX}{uid}-{pid}" in lent:
            continue
        try:
            if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if build:
            ours = cargo_run(pid, CARGO_LEVELS + 1) == build  # from the waiter itself
        else:
            st = read_stat(pid)
            ours = st is not None and st[2] == ppid
        if ours and locks.exclusively_held(dir_fd, name):
            return True
    return False


def cargo_children(pid: int) -> set[int] | None:
    """The processes cargo ``pid`` runs (proctree.children); None when /proc does not
    say (a kernel without the children files, or cargo gone)."""
    if not proctree.has_children_files():
        return None
    kids = set(proctree.children(pid))
    return kids if kids or os.path.isdir(f"/proc/{pid}") else None


def only_guarded_jobs(dir_fd: int | None, build: str) -> bool:
    """Does the cargo run ``build`` ("PID-STARTTIME", jobs.cargo_build_id) run only
    guarded jobs of this state directory, one of which has lent its token? Then cargo
    had nothing else ready when it started the last of them on a lent token (it
    starts the units others depend on before a binary, which nothing depends on),
    and nothing running will make anything ready: a token lent now would only start
    one more waiting ltoguard process, holding memory and no CPU.

    A child of cargo counts as a guarded job when it runs our interpreter and has a
    ticket, a run record or a ``lent-`` file of ours (a job done that waits for its
    token back has only the last), made by our uid; a build script's compile, which
    other units wait for, does not count. One that runs our interpreter with none of
    them counts too: a guarded job between its run record and its exit (it may hold
    its own token: cargo takes it back when it exits) or before its ticket, or a
    passed-through call about to exec its compiler; not lending then is undone at
    the next look, a token lent is not. False where it cannot tell: outside cargo,
    without /proc, a state directory that cannot be read."""
    pid = build.partition("-")[0]
    if dir_fd is None or not pid.isdigit():
        return False
    kids = cargo_children(int(pid))
    if not kids:
        return False
    try:
        names = os.listdir(dir_fd)
        ours = os.readlink("/proc/self/exe")
    except OSError:
        return False
    uid = os.geteuid()
    files: dict[int, list[str]] = {}
    for name in names:
        kid = _job_pid(name, uid)
        if kid in kids:
            files.setdefault(kid, []).append(name)
    if not any(n.startswith(PREFIX) for found in files.values() for n in found):
        return False  # no guarded child has lent: cargo may have had more to start
    return all(_guarded_job(dir_fd, files.get(kid, ()), kid, uid, ours) for kid in kids)


def _job_pid(name: str, uid: int) -> int | None:
    """The pid a ticket's, run record's or lent- file's name gives, if it names ``uid``."""
    claim = records.claimed_by(name)
    return claim[1] if claim is not None and claim[0] == uid else None


def _guarded_job(dir_fd: int, names: Sequence[str], kid: int, uid: int, exe: str) -> bool:
    """Is cargo's child ``kid`` a guarded job other units do not wait for? Its files
    (``names``) must be ``uid``'s and it must run ``exe``: a file planted by another
    user, or one left by a process killed whose pid now runs something else, is
    not enough."""
    try:
        if os.readlink(f"/proc/{kid}/exe") != exe:
            return False
        for name in names:
            data, st = read_small_file(dir_fd, name)
            if st.st_uid != uid:
                return False
            fields = json.loads(data) if data else {}
            if is_build_script(str(fields.get("crate", ""))):
                return False
    except (OSError, ValueError, AttributeError, RecursionError):
        return False
    return True


class LendWhileWaiting:
    """The semaphore's gate: a job lends cargo its jobserver token once it waits, the
    head of the queue included, so cargo keeps its -j jobs busy (admission.lending).

    The first admission attempt is made with the token in hand: a job admitted at
    once lends nothing (and cargo starts nothing its admission did not see). Once
    told "no" it lends, if it is among the ``depth`` waiters nearest the head,
    fewer than ``depth`` tokens are out, it compiles no build script (``crate``) and
    no rerun alone runs (``beside_alone``, asked under the mutex only when it
    decides); admitted later, it starts without a token in hand (one job over -j
    for a while) and takes one back in the background while its compile runs
    (attempt.py). Admission never waits for a token, so no memory slot idles while
    ltoguard races cargo for one (a reclaim under a busy cargo takes many seconds)."""

    def __init__(
        self,
        lease: Lease,
        tokens: LentTokens,
        depth: int | None = None,
        beside_alone: Callable[[], bool] | None = None,
        build: str = "",
        crate: str = "",
    ) -> None:
        self.lease = lease
        self.tokens = tokens
        self.depth = lend_depth() if depth is None else depth
        self.beside_alone = beside_alone or (lambda: False)
        self.build = build  # the cargo run (only_guarded_jobs); "": outside cargo
        self.build_script = is_build_script(crate)  # never lends (admission.lending_paused)
        self.tried = False  # the head has made its first admission attempt

    def only_guarded(self) -> bool:
        return only_guarded_jobs(self.tokens.dir_fd, self.build)

    def __call__(self, ahead: int) -> Lend:
        decision = lending(
            ahead=ahead,
            tried=self.tried,
            lent=self.lease.lent,
            depth=self.depth,
            tokens_out=self.tokens.count,  # listed only when the count decides
            beside_alone=self.beside_alone,
            only_guarded=self.only_guarded,
            build_script=self.build_script,
        )
        if decision is Lend.LEND:
            self.lease.lend()
        self.tried = self.tried or is_head(ahead)
        return decision


class LendWhilePaused:
    """The pause's gate: a paused job lends cargo its token if fewer than ``depth``
    are out over the state directory, unless its cargo run ``build`` is down to
    guarded jobs or it compiles a build script (``crate``; admission.lending_paused)."""

    def __init__(
        self,
        lease: Lease,
        tokens: LentTokens,
        depth: int | None = None,
        build: str = "",
        crate: str = "",
    ) -> None:
        self.lease = lease
        self.tokens = tokens
        self.depth = lend_depth() if depth is None else depth
        self.build = build
        self.build_script = is_build_script(crate)

    def __call__(self) -> Lend:
        decision = lending_paused(
            lent=self.lease.lent,
            depth=self.depth,
            tokens_out=self.tokens.count,
            only_guarded=lambda: only_guarded_jobs(self.tokens.dir_fd, self.build),
            build_script=self.build_script,
        )
        if decision is Lend.LEND:
            self.lease.lend()
        return decision
