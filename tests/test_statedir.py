"""The state directory refuses what another user could tamper with, and never follows symlinks."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from ltoguard.admission import slot_cap
from ltoguard.semaphore import Semaphore
from ltoguard.statedir import StateDirError, open_shared_file, open_state_dir, write_private_file

NOBODY = 65534


def test_created_private(tmp_path: Path) -> None:
    path, fd = open_state_dir(str(tmp_path / "s"))
    os.close(fd)
    st = os.lstat(path)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.geteuid()


def test_default_under_xdg_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path, fd = open_state_dir(None)
    os.close(fd)
    assert path == str(tmp_path / "ltoguard")


def test_default_under_tmp_without_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    path, fd = open_state_dir(None)
    os.close(fd)
    assert path == str(tmp_path / f"ltoguard-{os.geteuid()}")


def test_symlink_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(StateDirError, match="symlink"):
        open_state_dir(str(link))


def test_world_writable_without_sticky_refused(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir()
    d.chmod(0o777)
    with pytest.raises(StateDirError, match="sticky"):
        open_state_dir(str(d))


def test_sticky_shared_directory_accepted(tmp_path: Path) -> None:
    d = tmp_path / "shared"
    d.mkdir()
    d.chmod(0o1777)
    path, fd = open_state_dir(str(d))
    try:
        assert path == str(d)
        assert os.path.samestat(os.fstat(fd), os.stat(d))
        # Used as the administrator left it: not narrowed to 0700.
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o1777
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a directory to another user")
def test_other_users_directory_refused(tmp_path: Path) -> None:
    d = tmp_path / "theirs"
    d.mkdir(mode=0o700)
    os.chown(d, NOBODY, NOBODY)
    with pytest.raises(StateDirError, match="belongs to uid"):
        open_state_dir(str(d))


def test_missing_parent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StateDirError, match="parent directory does not exist"):
        open_state_dir(str(tmp_path / "no" / "such"))


def test_not_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StateDirError, match="not a directory"):
        open_state_dir(str(f))


def test_lock_and_record_files_never_follow_symlinks(tmp_path: Path) -> None:
    path, fd = open_state_dir(str(tmp_path / "s"))
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(victim, os.path.join(path, "slot-0.lock"))
    os.symlink(victim, os.path.join(path, f"run-{os.geteuid()}-{os.getpid()}.json"))
    with pytest.raises(StateDirError, match="slot-0.lock .* symlink"):
        open_shared_file(fd, "slot-0.lock")
    # A record is written through a temp file + rename: the symlink is replaced, not followed.
    write_private_file(fd, f"run-{os.geteuid()}-{os.getpid()}.json", b"{}")
    assert victim.read_text() == "precious"
    os.close(fd)


def test_forged_record_is_ignored(tmp_path: Path) -> None:
    path, fd = open_state_dir(str(tmp_path / "s"))
    sem = Semaphore(path, fd)
    slot = sem.acquire({"crate": "real"}, lambda snap: slot_cap(snap.running, 1))
    try:
        # Claims to be uid NOBODY's record but is owned by us: must not be believed.
        forged = f"run-{NOBODY}-{os.getpid()}.json"
        Path(path, forged).write_text(
            json.dumps({"pid": os.getpid(), "slot": 0, "started": 9e99, "crate": "forged"})
        )
        with sem.mutex():
            holders = sem.snapshot().holders
        assert [h.record["crate"] for h in holders if h.record] == ["real"]
    finally:
        sem.release(slot)
        os.close(fd)


def test_in_process_acquire_release_counts(tmp_path: Path) -> None:
    path, fd = open_state_dir(str(tmp_path / "s"))
    sem = Semaphore(path, fd)
    a = sem.acquire({"crate": "a"}, lambda snap: slot_cap(snap.running, 2))
    b = sem.acquire({"crate": "b"}, lambda snap: slot_cap(snap.running, 2))
    assert {a.index, b.index} == {0, 1}
    with sem.mutex():
        assert sem.snapshot().running == 2
    sem.release(a)
    with sem.mutex():
        snap = sem.snapshot()
    assert snap.running == 1 and snap.free_slots == [0]
    sem.release(b)
    # lock files stay (never unlinked); records go
    names = sorted(os.listdir(path))
    assert "slot-0.lock" in names and "slot-1.lock" in names
    assert not [n for n in names if n.startswith(("run-", "q-"))]
    os.close(fd)
