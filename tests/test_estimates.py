from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ltoguard.estimates import (
    DEFAULT_ESTIMATE,
    HISTORY_HEADROOM,
    MAX_KEYS,
    MAX_SAMPLES,
    Basis,
    History,
    group_key,
    job_key,
)
from ltoguard.history import HistoryStore
from ltoguard.sizes import GiB, MiB

REPO = Path(__file__).resolve().parent.parent
WS = "/home/u/proj"
GROUP = group_key(WS, "3", "fat", "2", "x86_64-unknown-linux-gnu")


def key(crate: str, lto: str = "fat") -> str:
    return job_key(crate, WS, "3", lto, "2", "x86_64-unknown-linux-gnu", ["bin"])


def warnings(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout belongs to rustc
    return captured.err.splitlines()


def test_job_key_is_stable_and_distinguishes_settings() -> None:
    assert job_key("a", WS, "3", "fat", "2", "t", ["bin", "cdylib"]) == job_key(
        "a", WS, "3", "fat", "2", "t", ["cdylib", "bin", "bin"]
    )
    variants = {
        job_key("a", WS, "3", "fat", "2", "t", ["bin"]),
        job_key("b", WS, "3", "fat", "2", "t", ["bin"]),
        job_key("a", "/other", "3", "fat", "2", "t", ["bin"]),
        job_key("a", WS, "2", "fat", "2", "t", ["bin"]),
        job_key("a", WS, "3", "thin", "2", "t", ["bin"]),
        job_key("a", WS, "3", "fat", "0", "t", ["bin"]),
        job_key("a", WS, "3", "fat", "2", "u", ["bin"]),
        job_key("a", WS, "3", "fat", "2", "t", ["cdylib"]),
    }
    assert len(variants) == 8


def test_estimate_bases() -> None:
    h = History()
    assert h.estimate(key("app"), GROUP) == (DEFAULT_ESTIMATE, "default")
    assert h.estimate(key("app"), GROUP, default=GiB) == (GiB, "default")
    h.record(key("app"), GROUP, 600 * MiB)
    h.record(key("app"), GROUP, 700 * MiB)
    h.record(key("app"), GROUP, 650 * MiB)
    assert h.estimate(key("app"), GROUP) == (int(700 * MiB * HISTORY_HEADROOM), "history")
    # A new binary of the same workspace and profile: its siblings inform it.
    h.record(key("tool"), GROUP, 900 * MiB)
    assert h.estimate(key("new"), GROUP) == (int(900 * MiB * HISTORY_HEADROOM), "siblings")
    # Another profile is not a sibling.
    other = group_key(WS, "3", "thin", "2", "x86_64-unknown-linux-gnu")
    assert h.estimate(key("new", "thin"), other) == (DEFAULT_ESTIMATE, "default")


def test_record_ignores_non_positive_peaks() -> None:
    h = History()
    h.record(key("app"), GROUP, 0)
    h.record(key("app"), GROUP, -5)
    assert len(h) == 0


def test_bounded_samples_and_keys() -> None:
    h = History()
    for i in range(MAX_SAMPLES + 3):
        h.record(key("app"), GROUP, (i + 1) * MiB)
    assert h.peaks(key("app")) == [(i + 1) * MiB for i in range(3, MAX_SAMPLES + 3)]
    for i in range(MAX_KEYS + 10):
        h.record(key(f"c{i}"), GROUP, MiB)
    assert len(h) == MAX_KEYS
    # The least recently recorded went first.
    assert h.peaks(key("app")) == []
    assert h.peaks(key("c9")) == []
    assert h.peaks(key("c10")) == [MiB]


def test_recording_again_refreshes_recency() -> None:
    h = History()
    h.record(key("old"), GROUP, MiB)
    for i in range(MAX_KEYS - 1):
        h.record(key(f"c{i}"), GROUP, MiB)
    h.record(key("old"), GROUP, 2 * MiB)  # now the most recent
    h.record(key("extra"), GROUP, MiB)
    assert h.peaks(key("old")) == [MiB, 2 * MiB]
    assert h.peaks(key("c0")) == []


def test_save_and_load_roundtrip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "memory-history.json"
    h = History()
    h.record(key("app"), GROUP, 700 * MiB)
    h.record(key("tool"), GROUP, 300 * MiB)
    h.save(str(path))
    loaded = History.load(str(path))
    assert loaded.peaks(key("app")) == [700 * MiB]
    assert loaded.estimate(key("x"), GROUP)[1] == "siblings"
    assert os.stat(path).st_mode & 0o777 == 0o600
    # Only the file itself remains: no temp file left behind.
    assert os.listdir(tmp_path) == ["memory-history.json"]
    assert json.loads(path.read_text())["version"] == 1
    assert warnings(capsys) == []


def record_peak(path: Path, crate_key: str, group: str, peak: int) -> None:
    """Record into the history file ``path`` as a job would, through the store (the
    file's directory standing in as the state directory, no cache directory)."""
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    store = HistoryStore(lambda: (str(path.parent), fd), cache=None, cache_fd=None)
    store.name = path.name
    try:
        store.record(crate_key, group, peak)
    finally:
        os.close(fd)


def test_record_peak_accumulates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.json"
    record_peak(path, key("app"), GROUP, 100 * MiB)
    record_peak(path, key("app"), GROUP, 200 * MiB)
    assert History.load(str(path)).peaks(key("app")) == [100 * MiB, 200 * MiB]
    assert warnings(capsys) == []


def test_record_peak_warns_when_unwritable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    fd = os.open(gone, os.O_RDONLY | os.O_DIRECTORY)
    gone.rmdir()  # a state directory removed mid-build
    try:
        HistoryStore(lambda: (str(gone), fd), cache=None, cache_fd=None).record(
            key("app"), GROUP, MiB
        )
    finally:
        os.close(fd)
    lines = warnings(capsys)
    assert len(lines) == 1
    assert lines[0].startswith(f"ltoguard: warning: cannot write memory history {gone}/")


def test_missing_file_is_silent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert len(History.load(str(tmp_path / "nope.json"))) == 0
    assert warnings(capsys) == []


def test_load_with_dir_fd(tmp_path: Path) -> None:
    h = History()
    h.record(key("app"), GROUP, MiB)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        h.save("h.json", dir_fd=fd)
        assert History.load("h.json", dir_fd=fd).peaks(key("app")) == [MiB]
    finally:
        os.close(fd)
    assert (tmp_path / "h.json").exists()


VALID_ENTRY = {"group": "g", "peaks": [1]}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "Expecting"),
        (b"", "Expecting value"),
        (b"\x00\xff\xfe\x89PNG junk", "codec"),
        (b"[1, 2, 3]", "not a JSON object"),
        (json.dumps({"version": 99, "entries": {}}).encode(), "version 99"),
        (json.dumps({"version": 1, "entries": []}).encode(), "'entries'"),
        (json.dumps({"version": 1, "entries": {"k": 5}}).encode(), "not an object"),
        (
            json.dumps({"version": 1, "entries": {"k": {"group": 1, "peaks": [1]}}}).encode(),
            "group",
        ),
        (
            json.dumps({"version": 1, "entries": {"k": {"group": "g", "peaks": []}}}).encode(),
            "peaks",
        ),
        (
            json.dumps({"version": 1, "entries": {"k": {"group": "g", "peaks": ["1"]}}}).encode(),
            "positive",
        ),
        (
            json.dumps({"version": 1, "entries": {"k": {"group": "g", "peaks": [True]}}}).encode(),
            "positive",
        ),
        (
            json.dumps({"version": 1, "entries": {"k": {"group": "g", "peaks": [1.5]}}}).encode(),
            "positive",
        ),
        (
            json.dumps({"version": 1, "entries": {"k": {"group": "g", "peaks": [-1]}}}).encode(),
            "positive",
        ),
        (b"[" * 100000 + b"]" * 100000, ""),
    ],
)
def test_corrupt_file_warns_once_and_is_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, reason: str
) -> None:
    path = tmp_path / "h.json"
    path.write_bytes(content)
    assert len(History.load(str(path))) == 0
    lines = warnings(capsys)
    assert len(lines) == 1
    assert lines[0].startswith(f"ltoguard: warning: ignoring unreadable memory history {path}: ")
    assert reason in lines[0]
    # The next save replaces the corrupt file with a good one.
    record_peak(path, key("app"), GROUP, MiB)
    assert History.load(str(path)).peaks(key("app")) == [MiB]
    assert warnings(capsys) == []  # the job warned when it first read; its record does not


def test_directory_instead_of_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.json"
    path.mkdir()
    assert len(History.load(str(path))) == 0
    lines = warnings(capsys)
    assert lines == [
        f"ltoguard: warning: ignoring unreadable memory history {path}: not a regular file"
    ]


def test_symlink_is_not_followed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "elsewhere.json"
    h = History()
    h.record(key("app"), GROUP, MiB)
    h.save(str(target))
    link = tmp_path / "h.json"
    link.symlink_to(target)
    assert len(History.load(str(link))) == 0
    assert warnings(capsys) == [
        f"ltoguard: warning: ignoring unreadable memory history {link}: it is a symlink"
    ]
    # Saving replaces the link itself and never writes through it.
    before = target.read_bytes()
    History().save(str(link))
    assert not link.is_symlink()
    assert target.read_bytes() == before


@pytest.mark.timeout(20)
def test_fifo_is_refused_without_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "h.json"
    os.mkfifo(path)
    # No writer: a blocking open() would hang here.
    assert len(History.load(str(path))) == 0
    assert warnings(capsys)[0].endswith("not a regular file")


def test_file_of_another_user_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a file to another uid")
    path = tmp_path / "h.json"
    h = History()
    h.record(key("app"), GROUP, MiB)
    h.save(str(path))
    os.chown(path, 65534, 65534)
    assert len(History.load(str(path))) == 0
    assert warnings(capsys) == [
        f"ltoguard: warning: ignoring unreadable memory history {path}:"
        f" owned by uid 65534, not by you (uid 0)"
    ]


@pytest.mark.timeout(60)
def test_unreadable_file() -> None:
    # Root reads mode-000 files, so read it as an unprivileged user who owns it,
    # from a directory that user can reach (pytest's tmp_path is 0700).
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged uid")
    directory = Path(tempfile.mkdtemp(prefix="ltoguard-test-"))
    try:
        directory.chmod(0o755)
        path = directory / "h.json"
        path.write_text("{}")
        os.chown(path, 65534, 65534)
        path.chmod(0)
        code = (
            "import sys; from ltoguard.estimates import History;"
            f" sys.exit(len(History.load({str(path)!r})))"
        )
        try:
            result = subprocess.run(
                [sys.executable, "-c", code],
                env={**os.environ, "PYTHONPATH": str(REPO)},
                user=65534,
                group=65534,
                capture_output=True,
                text=True,
                timeout=60,
            )
        except PermissionError as exc:
            pytest.skip(f"uid 65534 cannot run {sys.executable}: {exc}")
    finally:
        shutil.rmtree(directory)
    if "ModuleNotFoundError" in result.stderr or "PermissionError" in result.stderr:
        pytest.skip(f"the unprivileged user cannot run the checkout: {result.stderr[-200:]}")
    assert result.returncode == 0
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"ltoguard: warning: ignoring unreadable memory history {path}: Permission denied"
    )


def test_unreadable_file_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The kernel's answer to an unprivileged reader of a mode-000 file, for runs
    # where the real test above cannot switch users.
    path = tmp_path / "h.json"
    path.write_text("{}")
    real_open = os.open

    def denied(file: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied")
        return real_open(file, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", denied)
    assert len(History.load(str(path))) == 0
    assert warnings(capsys) == [
        f"ltoguard: warning: ignoring unreadable memory history {path}: Permission denied"
    ]


def test_read_error_after_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.json"
    path.write_text("{}")

    def eio(*args: object, **kwargs: object) -> object:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fdopen", eio)
    assert len(History.load(str(path))) == 0
    lines = warnings(capsys)
    assert len(lines) == 1
    assert "Input/output error" in lines[0]


def test_failed_save_leaves_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "h.json"
    h = History()
    h.record(key("app"), GROUP, MiB)
    h.save(str(path))
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    h.record(key("app"), GROUP, 2 * MiB)
    with pytest.raises(OSError):
        h.save(str(path))
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["h.json"]


def test_a_message_says_where_an_estimate_came_from_in_words() -> None:
    from ltoguard.jobs import Job, JobRecord

    def said(basis: str) -> str:
        job = Job(argv=[], kind="rustc", name="app", what="crate app", key="k", group="g")
        return JobRecord(job, 1, basis).estimated

    assert said("inputs") == "estimated from inputs"
    assert said(Basis.SIBLINGS_SCALED) == "estimated from siblings, scaled by inputs"
    assert said(Basis.RAISED) == "raised after it outgrew its estimate"  # not "from raised"
    assert said(Basis.CONFIGURED) == "set by its memory setting"
    assert said(Basis.DEFAULT) == "a default: nothing learned yet"
    assert said("something newer") == "estimated from something newer"  # a newer record
