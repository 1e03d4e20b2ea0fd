"""ltoguard.pressure: memory pressure (PSI) of the host and of cgroup v2 groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from ltoguard import pressure

HOST = "some avg10=1.50 avg60=0.25 avg300=0.00 total=522006\nfull avg10=0.75 avg60=0.10 avg300=0.00 total=359523\n"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (HOST, (1.5, 0.25, 0.75, 0.1)),
        ("some avg10=3.00 avg60=2.00 avg300=1.00 total=1\n", (3.0, 2.0, 0.0, 0.0)),  # no full line
        ("full avg10=1.00 avg60=1.00 avg300=1.00 total=1\n", None),  # no some line
        ("some avg10=x avg60=2.00\n", None),
        ("", None),
    ],
)
def test_parse(text: str, want: tuple[float, float, float, float] | None) -> None:
    got = pressure.parse(text, "here")
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert (got.some10, got.some60, got.full10, got.full60) == want
        assert got.source == "here"


def _fake(tmp_path: Path, *, v2: bool) -> Path:
    (tmp_path / "proc/pressure").mkdir(parents=True)
    (tmp_path / "proc/pressure/memory").write_text(HOST)
    (tmp_path / "proc/self").mkdir(parents=True)
    (tmp_path / "proc/self/cgroup").write_text("0::/user.slice/job\n" if v2 else "4:memory:/job\n")
    mount = "cgroup2 rw" if v2 else "cgroup rw,memory"
    fstype, opts = mount.split()
    point = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/memory"
    (tmp_path / "proc/self/mountinfo").write_text(
        f"30 25 0:26 / {point} rw,nosuid - {fstype} {fstype} {opts}\n"
    )
    job = tmp_path / point.lstrip("/") / ("user.slice/job" if v2 else "job")
    job.mkdir(parents=True)
    if v2:
        (job / "memory.pressure").write_text(
            "some avg10=40.00 avg60=12.00 avg300=1.00 total=9\n"
            "full avg10=20.00 avg60=6.00 avg300=1.00 total=9\n"
        )
    return tmp_path


def test_host_then_each_v2_group(tmp_path: Path) -> None:
    root = str(_fake(tmp_path, v2=True))
    got = pressure.all_pressures(root=root)
    assert [p.source for p in got] == ["host", f"cgroup v2 {root}/sys/fs/cgroup/user.slice/job"]
    assert got[1].some10 == 40.0 and got[1].full60 == 6.0


def test_v1_has_no_group_pressure(tmp_path: Path) -> None:
    got = pressure.all_pressures(root=str(_fake(tmp_path, v2=False)))
    assert [p.source for p in got] == ["host"]


def test_no_psi_at_all(tmp_path: Path) -> None:
    assert pressure.all_pressures(root=str(tmp_path)) == []


def test_this_host_reads_without_error() -> None:
    for p in pressure.all_pressures():
        assert 0.0 <= p.some10 <= 100.0


def test_status_shows_pressure(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ltoguard.commands import status

    state_dir.mkdir(mode=0o700)
    fake = [pressure.Pressure("host", 12.5, 3.0, 4.0, 1.0)]
    monkeypatch.setattr(pressure, "all_pressures", lambda: fake)
    assert status.main(["--json"]) == 0
    import json

    doc = json.loads(capsys.readouterr().out)
    assert doc["pressure"] == [
        {"source": "host", "some10": 12.5, "some60": 3.0, "full10": 4.0, "full60": 1.0}
    ]
    assert status.main([]) == 0
    out = capsys.readouterr().out
    assert "memory pressure (host): some 12.5% / 3.0%, full 4.0% / 1.0% (10 s / 60 s)" in out
