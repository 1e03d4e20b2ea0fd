from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltoguard import proctree
from ltoguard.cgroups import (
    V1_NAMES,
    V2_NAMES,
    cgroup_constraints,
    cgroup_oom_kills,
    host_oom_kills,
    usable_cpus,
    working_set,
)
from ltoguard.memory import HostMemory, available_memory
from ltoguard.proctree import PeakSampler, descendants, job_memory, start_time
from ltoguard.sizes import GiB, KiB, MiB, TiB, format_size, parse_size
from scripts.cgroups import MemoryCgroup, oom_kills_in, own_v1_memory_dir, own_v2_dir, v2_parent
from tests.conftest import needs_children_files
from tests.procs import Procs

REPO = Path(__file__).resolve().parent.parent
HOST = HostMemory(available=20 * GiB, total=24 * GiB)
V1_UNLIMITED = 9223372036854771712


# --------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12G", 12 * GiB),
        ("12g", 12 * GiB),
        ("1500M", 1500 * MiB),
        ("512MiB", 512 * MiB),
        ("512mib", 512 * MiB),
        ("2.5GB", int(2.5 * GiB)),
        ("2.5 GiB", int(2.5 * GiB)),
        ("1073741824", GiB),
        ("1073741824B", GiB),
        ("64K", 64 * KiB),
        ("64kb", 64 * KiB),
        ("1T", TiB),
        (".5G", GiB // 2),
        ("1.", 1),
        (" 3G ", 3 * GiB),
        ("-3G", -3 * GiB),
        ("- 3G", -3 * GiB),
        ("+3G", 3 * GiB),
        ("-1500M", -1500 * MiB),
    ],
)
def test_parse_size_accepts(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "G",
        "abc",
        "12X",
        "12GiBs",
        "12 G B",
        "1e9",
        "0x10",
        "--3G",
        "3-G",
        "0",
        "0G",
        "-0",
        "0.0001",
    ],
)
def test_parse_size_rejects_and_names_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    message = str(info.value)
    assert repr(text) in message
    for example in ("12G", "1500M", "512MiB", "-3G"):
        assert example in message


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1536, "1.5 KiB"),
        (700 * MiB, "700 MiB"),
        (1000 * MiB, "1000 MiB"),
        (int(1.5 * GiB), "1.5 GiB"),
        (2 * GiB, "2 GiB"),
        (int(12.25 * GiB), "12.2 GiB"),
        (3 * TiB, "3 TiB"),
        (-3 * GiB, "-3 GiB"),
    ],
)
def test_format_size(n: int, expected: str) -> None:
    assert format_size(n) == expected


# --------------------------------------------------------------------------- fake cgroup trees


class FakeSystem:
    """A root directory holding proc/self/{cgroup,mountinfo} and cgroup files under sys/."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "proc" / "self").mkdir(parents=True)
        self.mounts: list[str] = []
        self.cgroups: list[str] = []

    def mount(self, fstype: str, mountpoint: str, superopts: str, mount_root: str = "/") -> None:
        n = len(self.mounts) + 30
        escaped = mountpoint.replace(" ", "\\040")
        self.mounts.append(
            f"{n} 23 0:{n} {mount_root} {escaped} rw,relatime - {fstype} {fstype} {superopts}"
        )
        (self.root / mountpoint.lstrip("/")).mkdir(parents=True, exist_ok=True)

    def member(self, line: str) -> None:
        self.cgroups.append(line)

    def files(self, directory: str, **files: object) -> Path:
        d = self.root / directory.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            (d / name.replace("__", ".")).write_text(f"{value}\n")
        return d

    def write(self) -> str:
        mountinfo = [
            "22 1 0:20 / / rw - overlay overlay rw",
            "23 22 0:21 / /sys rw - sysfs sysfs rw",
            *self.mounts,
        ]
        (self.root / "proc/self/mountinfo").write_text("\n".join(mountinfo) + "\n")
        (self.root / "proc/self/cgroup").write_text("\n".join(self.cgroups) + "\n")
        return str(self.root)


def v1_system(tmp_path: Path, path: str = "/build/job") -> FakeSystem:
    fake = FakeSystem(tmp_path)
    fake.mount("cgroup", "/sys/fs/cgroup/memory", "rw,memory")
    fake.mount("cgroup", "/sys/fs/cgroup/cpu", "rw,cpu")
    fake.mount("cgroup2", "/sys/fs/cgroup/unified", "rw")
    fake.member("5:cpu:/")
    fake.member(f"4:memory:{path}")
    fake.member("0::/")
    return fake


def v1_files(limit: int, usage: int, inactive: int = 0) -> dict[str, object]:
    stat = f"cache 0\ninactive_file {inactive}\ntotal_inactive_file {inactive}"
    return {
        "memory__limit_in_bytes": limit,
        "memory__usage_in_bytes": usage,
        "memory__stat": stat,
    }


def v2_system(tmp_path: Path, path: str = "/user.slice/job") -> FakeSystem:
    fake = FakeSystem(tmp_path)
    fake.mount("cgroup2", "/sys/fs/cgroup", "rw,nsdelegate")
    fake.member(f"0::{path}")
    return fake


def v2_files(limit: int | str, usage: int, inactive: int = 0, **extra: object) -> dict[str, object]:
    return {
        "memory__max": limit,
        "memory__current": usage,
        "memory__stat": f"anon {usage}\ninactive_file {inactive}\nactive_file 0",
        **extra,
    }


def test_no_cgroup_files_means_host(tmp_path: Path) -> None:
    snap = available_memory(root=str(tmp_path), host=HOST)
    assert (snap.available, snap.total, snap.source) == (20 * GiB, 24 * GiB, "host (MemAvailable)")


def test_v1_limit_minus_working_set(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/memory", **v1_files(V1_UNLIMITED, 5 * GiB))
    fake.files("/sys/fs/cgroup/memory/build", **v1_files(V1_UNLIMITED, 3 * GiB))
    job = fake.files(
        "/sys/fs/cgroup/memory/build/job", **v1_files(1000 * MiB, 700 * MiB, 200 * MiB)
    )
    snap = available_memory(root=fake.write(), host=HOST)
    # Page cache on the inactive list is reclaimable: 700 - 200 = 500 MiB held.
    assert snap.available == 500 * MiB
    assert snap.total == 1000 * MiB
    assert snap.source == f"cgroup v1 {job} (limit 1000 MiB)"
    assert len(snap.constraints) == 2  # host + the one limited group


def test_v1_parent_tighter_than_child(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/memory", **v1_files(V1_UNLIMITED, 5 * GiB))
    build = fake.files("/sys/fs/cgroup/memory/build", **v1_files(2 * GiB, 1800 * MiB))
    fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(4 * GiB, 100 * MiB))
    snap = available_memory(root=fake.write(), host=HOST)
    assert snap.available == 248 * MiB
    assert snap.total == 2 * GiB
    assert str(build) in snap.source
    assert [c.available for c in cgroup_constraints(root=str(tmp_path))] == [
        4 * GiB - 100 * MiB,
        248 * MiB,
    ]


def test_v1_unlimited_everywhere_means_host(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/memory", **v1_files(V1_UNLIMITED, 5 * GiB))
    fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(V1_UNLIMITED, GiB))
    # 64 KiB pages give another "unlimited" figure.
    fake.files("/sys/fs/cgroup/memory/build", **v1_files(9223372036854710272, GiB))
    snap = available_memory(root=fake.write(), host=HOST)
    assert snap.source == "host (MemAvailable)"
    assert snap.available == HOST.available


def test_host_tighter_than_cgroup(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(64 * GiB, GiB))
    snap = available_memory(root=fake.write(), host=HostMemory(3 * GiB, 24 * GiB))
    assert (snap.available, snap.source) == (3 * GiB, "host (MemAvailable)")


def test_usage_above_limit_is_zero_not_negative(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(GiB, GiB + 4096))
    assert available_memory(root=fake.write(), host=HOST).available == 0


@pytest.mark.parametrize("broken", ["directory", "garbage", "empty", "missing"])
def test_unreadable_cgroup_files_are_ignored(tmp_path: Path, broken: str) -> None:
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/memory/build", **v1_files(3 * GiB, GiB))
    job = fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(GiB, 100 * MiB))
    limit = job / "memory.limit_in_bytes"
    limit.unlink()
    if broken == "directory":
        limit.mkdir()
    elif broken == "garbage":
        limit.write_bytes(b"\xff\xfe not a number")
    elif broken == "empty":
        limit.write_text("")
    snap = available_memory(root=fake.write(), host=HOST)
    # The broken level is skipped; the parent's bound still applies.
    assert snap.available == 2 * GiB
    assert "/build (limit 3 GiB)" in snap.source


def test_unreadable_stat_counts_no_reclaimable_cache(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    job = fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(GiB, 600 * MiB, 300 * MiB))
    (job / "memory.stat").unlink()
    assert available_memory(root=fake.write(), host=HOST).available == 424 * MiB


def test_v1_container_mount_root_maps_to_mountpoint(tmp_path: Path) -> None:
    # Docker with v1: the mount shows /docker/ID at the mount point.
    fake = FakeSystem(tmp_path)
    fake.mount("cgroup", "/sys/fs/cgroup/memory", "rw,memory", mount_root="/docker/abc")
    fake.member("4:memory:/docker/abc")
    fake.files("/sys/fs/cgroup/memory", **v1_files(1000 * MiB, 300 * MiB))
    snap = available_memory(root=fake.write(), host=HOST)
    assert snap.available == 700 * MiB
    assert snap.source == f"cgroup v1 {tmp_path}/sys/fs/cgroup/memory (limit 1000 MiB)"


def test_mountpoint_with_escaped_space(tmp_path: Path) -> None:
    fake = FakeSystem(tmp_path)
    fake.mount("cgroup", "/sys/fs/cgroup/mem ory", "rw,memory")
    fake.member("4:memory:/a")
    fake.files("/sys/fs/cgroup/mem ory/a", **v1_files(GiB, 0))
    assert available_memory(root=fake.write(), host=HOST).available == GiB


def test_v2_nested_with_max(tmp_path: Path) -> None:
    fake = v2_system(tmp_path)
    fake.files("/sys/fs/cgroup", **{"cgroup__controllers": "cpu memory"})
    fake.files("/sys/fs/cgroup/user.slice", **v2_files(3 * GiB, 2 * GiB, inactive=512 * MiB))
    fake.files("/sys/fs/cgroup/user.slice/job", **v2_files("max", GiB))
    snap = available_memory(root=fake.write(), host=HOST)
    assert snap.available == 3 * GiB - (2 * GiB - 512 * MiB)
    assert snap.total == 3 * GiB
    assert snap.source == f"cgroup v2 {tmp_path}/sys/fs/cgroup/user.slice (limit 3 GiB)"


def test_a_v2_cpu_quota_caps_the_cpus_rounded_up_and_the_tightest_counts(tmp_path: Path) -> None:
    """cpu.max "QUOTA PERIOD" of the group or an ancestor, as cargo's default -j
    counts it (Rust's available_parallelism); "max" or a malformed file is no quota,
    and the affinity bounds it all the same."""
    fake = v2_system(tmp_path)
    fake.files("/sys/fs/cgroup/user.slice", cpu__max="250000 100000")
    fake.files("/sys/fs/cgroup/user.slice/job", cpu__max="max 100000")
    root = fake.write()
    assert usable_cpus(root=root, affinity=16) == 3
    assert usable_cpus(root=root, affinity=2) == 2
    fake.files("/sys/fs/cgroup/user.slice/job", cpu__max="50000 100000")
    assert usable_cpus(root=root, affinity=16) == 1
    fake.files("/sys/fs/cgroup/user.slice", cpu__max="lots")
    fake.files("/sys/fs/cgroup/user.slice/job", cpu__max="max 100000")
    assert usable_cpus(root=root, affinity=16) == 16
    # A v1 host: its cpu controller's quota is not read; the affinity decides.
    v1 = v1_system(tmp_path / "v1")
    v1.files("/sys/fs/cgroup/cpu", cpu__cfs_quota_us=100000, cpu__cfs_period_us=100000)
    assert usable_cpus(root=v1.write(), affinity=4) == 4


def test_v2_memory_high_bounds_too(tmp_path: Path) -> None:
    fake = v2_system(tmp_path)
    fake.files("/sys/fs/cgroup/user.slice/job", **v2_files(4 * GiB, GiB, memory__high=2 * GiB))
    snap = available_memory(root=fake.write(), host=HOST)
    assert snap.available == GiB
    assert "memory.high 2 GiB" in snap.source


def test_v2_all_max_means_host(tmp_path: Path) -> None:
    fake = v2_system(tmp_path)
    fake.files("/sys/fs/cgroup/user.slice/job", **v2_files("max", GiB, memory__high="max"))
    assert available_memory(root=fake.write(), host=HOST).source == "host (MemAvailable)"


def test_hybrid_v1_memory_with_empty_unified(tmp_path: Path) -> None:
    # This machine's layout: v1 memory controller, v2 mounted without it.
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/unified", **{"cgroup__procs": "1"})
    fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(800 * MiB, 300 * MiB))
    snap = available_memory(root=fake.write(), host=HOST)
    assert snap.available == 500 * MiB
    assert snap.source.startswith("cgroup v1 ")


def test_dotdot_cgroup_path_is_not_followed(tmp_path: Path) -> None:
    fake = v2_system(tmp_path, path="/../../etc")
    fake.files("/etc", **v2_files(GiB, 0))
    assert available_memory(root=fake.write(), host=HOST).source == "host (MemAvailable)"


# --------------------------------------------------------------------------- settings


def test_auto_and_empty_settings_detect(tmp_path: Path) -> None:
    for setting in (None, "", "auto", "AUTO", " auto "):
        assert available_memory(setting, root=str(tmp_path), host=HOST).available == 20 * GiB


def test_negative_setting_keeps_memory_free(tmp_path: Path) -> None:
    snap = available_memory("-3G", root=str(tmp_path), host=HOST)
    assert snap.available == 17 * GiB
    assert snap.source == "host (MemAvailable) minus 3 GiB kept free (LTOGUARD_MEMORY=-3G)"
    assert available_memory("-30G", root=str(tmp_path), host=HOST).available == 0


def test_explicit_budget_caps_the_sum_of_guarded_jobs(tmp_path: Path) -> None:
    snap = available_memory("8G", guarded_usage=3 * GiB, root=str(tmp_path), host=HOST)
    assert (snap.available, snap.total) == (5 * GiB, 8 * GiB)
    assert snap.source.startswith("LTOGUARD_MEMORY=8G budget")
    assert (
        available_memory("8G", guarded_usage=9 * GiB, root=str(tmp_path), host=HOST).available == 0
    )


def test_explicit_budget_still_bounded_by_real_memory(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    fake.files("/sys/fs/cgroup/memory/build/job", **v1_files(GiB, 0))
    snap = available_memory("12G", root=fake.write(), host=HOST)
    assert snap.available == GiB
    assert snap.source.startswith("cgroup v1 ")


@pytest.mark.parametrize("setting", ["lots", "12X", "0"])
def test_bad_setting_names_the_variable(tmp_path: Path, setting: str) -> None:
    with pytest.raises(ValueError, match=r"LTOGUARD_MEMORY=.*accepted: 12G"):
        available_memory(setting, root=str(tmp_path), host=HOST)


def test_real_host_snapshot_is_sane() -> None:
    snap = available_memory()
    assert 0 < snap.available <= snap.total
    assert snap.source


# --------------------------------------------------------------------------- OOM counters


def test_oom_kills_v1_and_v2(tmp_path: Path) -> None:
    fake = v1_system(tmp_path / "v1")
    fake.files(
        "/sys/fs/cgroup/memory/build/job",
        **{"memory__oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3"},
    )
    assert cgroup_oom_kills(root=fake.write()) == 3

    fake2 = v2_system(tmp_path / "v2")
    fake2.files(
        "/sys/fs/cgroup/user.slice/job",
        **{"memory__events": "low 0\nhigh 2\nmax 9\noom 2\noom_kill 1\noom_group_kill 0"},
    )
    assert cgroup_oom_kills(root=fake2.write()) == 1


def test_private_cgroup_namespace_limit_is_at_the_mount_top(tmp_path: Path) -> None:
    """In a container with its own cgroup namespace the group reads ``0::/`` and its
    limit is the cgroup2 mount's own memory.max."""
    fake = v2_system(tmp_path, path="/")
    fake.files("/sys/fs/cgroup", **v2_files(1000 * MiB, 300 * MiB, cgroup__type="domain"))
    snap = available_memory(root=fake.write(), host=HOST)
    assert (snap.available, snap.total) == (700 * MiB, 1000 * MiB)
    assert snap.source == f"cgroup v2 {tmp_path}/sys/fs/cgroup (limit 1000 MiB)"


def _v2_group(fake: FakeSystem, path: str, controllers: str, subtree: str, procs: str) -> None:
    files: dict[str, object] = {
        "cgroup__controllers": controllers,
        "cgroup__subtree_control": subtree,
        "cgroup__procs": procs,
    }
    if path != "/sys/fs/cgroup":
        files["cgroup__type"] = "domain"  # every group but the real root has one
    fake.files(path, **files)


def test_v2_test_group_goes_under_the_nearest_enabled_ancestor(tmp_path: Path) -> None:
    fake = v2_system(tmp_path, path="/user.slice/session.scope")
    _v2_group(fake, "/sys/fs/cgroup", "cpu memory", "cpu memory", "1")
    _v2_group(fake, "/sys/fs/cgroup/user.slice", "cpu memory", "memory", "")
    _v2_group(fake, "/sys/fs/cgroup/user.slice/session.scope", "memory", "", "42")
    root = fake.write()
    assert v2_parent(root) == (tmp_path / "sys/fs/cgroup/user.slice", False, "")


def test_v2_real_root_may_enable_memory_despite_its_processes(tmp_path: Path) -> None:
    fake = v2_system(tmp_path, path="/")
    _v2_group(fake, "/sys/fs/cgroup", "cpu memory", "cpu", "1\n42")
    assert v2_parent(fake.write()) == (tmp_path / "sys/fs/cgroup", True, "")


def test_v2_namespace_root_with_processes_says_why(tmp_path: Path) -> None:
    fake = v2_system(tmp_path, path="/")
    _v2_group(fake, "/sys/fs/cgroup", "cpu memory", "", "1")
    fake.files("/sys/fs/cgroup", cgroup__type="domain")  # a namespace's root is no real root
    parent, _, why = v2_parent(fake.write())
    assert parent is None
    assert "holds processes, so cannot enable memory for a child" in why


def test_v2_without_memory_controller_says_so(tmp_path: Path) -> None:
    fake = v2_system(tmp_path, path="/job")
    _v2_group(fake, "/sys/fs/cgroup", "cpu", "cpu", "1")
    _v2_group(fake, "/sys/fs/cgroup/job", "cpu", "", "42")
    parent, _, why = v2_parent(fake.write())
    assert parent is None
    assert why == f"no cgroup v2 memory controller on this host (at {tmp_path}/sys/fs/cgroup)"


def test_test_group_reads_v2_files_under_v1_names(tmp_path: Path) -> None:
    """What the real-cgroup tests read of a v2 group: kills from memory.events, usage
    from memory.current, the peak from memory.peak, memory.stat under v1's names."""
    cg = MemoryCgroup.__new__(MemoryCgroup)
    cg.path, cg.version, cg.limit = tmp_path, 2, GiB
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    (tmp_path / "memory.current").write_text(f"{300 * MiB}\n")
    (tmp_path / "memory.stat").write_text(
        f"anon {200 * MiB}\nfile {90 * MiB}\nfile_mapped {10 * MiB}\ninactive_file 7\n"
    )
    assert cg.oom_kills() == 2
    assert cg.usage() == cg.max_usage() == 300 * MiB  # no memory.peak before Linux 5.19
    (tmp_path / "memory.peak").write_text(f"{400 * MiB}\n")
    assert cg.max_usage() == 400 * MiB
    assert cg.stat()["total_inactive_file"] == 7 and cg.stat()["total_cache"] == 90 * MiB
    assert cg.charged() == 210 * MiB


def test_oom_kills_unknown(tmp_path: Path) -> None:
    fake = v2_system(tmp_path)
    fake.files("/sys/fs/cgroup/user.slice/job", **{"memory__events": "oom 0"})
    assert cgroup_oom_kills(root=fake.write()) is None
    assert host_oom_kills(root=str(tmp_path)) is None
    (tmp_path / "proc/vmstat").write_text("nr_free_pages 1\noom_kill 7\n")
    assert host_oom_kills(root=str(tmp_path)) == 7


def test_real_oom_counters_readable() -> None:
    """Where the kernel keeps the counters they are read as numbers, not lost as None:
    /proc/vmstat (Linux >= 4.13) and, on this kind of machine, our own v1 memory group."""
    vmstat = Path("/proc/vmstat")
    if not vmstat.exists() or "\noom_kill " not in vmstat.read_text():
        pytest.skip("this kernel does not count OOM kills in /proc/vmstat")
    count = host_oom_kills()
    assert isinstance(count, int) and count >= 0
    group, _why = own_v1_memory_dir()
    if group is not None and (group / "memory.oom_control").exists():
        assert cgroup_oom_kills() == oom_kills_in(group)
        return
    group, _top, _why = own_v2_dir()
    if group is not None and (group / "memory.events").exists():
        assert cgroup_oom_kills() == oom_kills_in(group)


# --------------------------------------------------------------------------- process trees

ALLOC = """
import sys, time
n = int(sys.argv[1])
time.sleep(float(sys.argv[2]))
b = bytearray(b"x") * n   # touched, so resident
print("allocated", flush=True)
time.sleep(float(sys.argv[3]))
del b
time.sleep(0.2)
"""


def test_job_memory_of_gone_process_is_zero() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert job_memory(proc.pid) == 0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("way", ["proc", "psutil"], indirect=True)
def test_job_memory_counts_descendants(way: str) -> None:
    own = job_memory(os.getpid())
    assert own > 10 * MiB
    with Procs() as procs:
        child = procs.start(
            [sys.executable, "-c", ALLOC, str(150 * MiB), "0", "30"], text=True, stderr=None
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "allocated\n"
        total = job_memory(os.getpid())
        assert total >= own + 150 * MiB


@pytest.mark.timeout(60)
@pytest.mark.slow
@pytest.mark.parametrize("way", ["proc", "psutil"], indirect=True)
def test_peak_sampler_catches_a_real_allocation(way: str) -> None:
    with Procs() as procs:
        child = procs.start(
            [sys.executable, "-c", ALLOC, str(200 * MiB), "0.3", "0.5"], stdout=None, stderr=None
        )
        sampler = PeakSampler(child.pid, interval=0.05).start()
        assert sampler.sampling
        child.wait()
        # Once the child is gone the thread ends by itself, before anyone stops it.
        deadline = time.monotonic() + 10
        while sampler.sampling and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sampler.sampling
        peak = sampler.stop()
    assert 200 * MiB <= peak <= 300 * MiB, format_size(peak)
    assert sampler.samples >= 3


GRANDCHILD = (
    "import subprocess, sys, time; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
    "print(p.pid, flush=True); time.sleep(30)"
)


@pytest.mark.timeout(60)
@needs_children_files
def test_descendants_lists_the_tree_as_psutil_does() -> None:
    import psutil

    with Procs() as procs:
        child = procs.start([sys.executable, "-c", GRANDCHILD], text=True, stderr=None)
        assert child.stdout is not None
        grandchild = int(child.stdout.readline())
        mine = descendants(os.getpid())
        assert child.pid in mine and grandchild in mine
        theirs = {c.pid for c in psutil.Process().children(recursive=True)}
        assert set(mine) == theirs
        assert descendants(child.pid) == [grandchild]


def test_start_time_is_the_kernels_even_for_an_awkward_name() -> None:
    import psutil

    # A name with spaces and ')' shifts the fields of /proc/PID/stat for a naive split.
    code = "open('/proc/self/comm', 'w').write('a) b ) (c 9'); print(1, flush=True); input()"
    with Procs() as procs:
        child = procs.start(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, text=True, stderr=None
        )
        assert child.stdout is not None and child.stdout.readline() == "1\n"
        assert psutil.Process(child.pid).name() == "a) b ) (c 9"
        ticks = start_time(child.pid)
        assert ticks is not None
        since_boot = ticks / os.sysconf("SC_CLK_TCK")
        created = psutil.Process(child.pid).create_time()
        assert abs(psutil.boot_time() + since_boot - created) < 0.05
    assert start_time(child.pid) is None  # reaped: the pid names no process now


@needs_children_files
def test_sampler_stops_once_the_pid_names_another_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = proctree.start_time
    calls = 0

    def reused_after_three(pid: int) -> float | None:
        nonlocal calls
        calls += 1
        found = real(pid)
        # start() reads it once; the thread, once a sample: the 4th sample finds
        # another process under the pid.
        return found if calls <= 4 or found is None else found + 1

    monkeypatch.setattr(proctree, "start_time", reused_after_three)
    with Procs() as procs:
        child = procs.start(
            [sys.executable, "-c", "import time; time.sleep(30)"], stdout=None, stderr=None
        )
        sampler = PeakSampler(child.pid, interval=0.02).start()
        deadline = time.monotonic() + 10
        while sampler.sampling and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not sampler.sampling  # ended by itself, the process still running
        assert child.poll() is None
        assert sampler.samples == 3


@needs_children_files
def test_peak_sampler_on_linux_never_imports_psutil() -> None:
    code = (
        "import subprocess, sys\n"
        "from ltoguard.proctree import PeakSampler\n"
        f"p = subprocess.Popen([sys.executable, '-c', {ALLOC!r}, str(64 << 20), '0', '0.5'],"
        " stdout=subprocess.DEVNULL)\n"
        "s = PeakSampler(p.pid, interval=0.05).start()\n"
        "p.wait()\n"
        "print(s.stop() >= 64 << 20, s.samples >= 3, 'psutil' in sys.modules)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert got.stdout.split() == ["True", "True", "False"], got.stderr


@pytest.mark.timeout(60)
@pytest.mark.slow
@pytest.mark.parametrize("way", ["proc", "psutil"], indirect=True)
def test_peak_sampler_sums_grandchildren(way: str) -> None:
    # A small parent whose grandchild allocates, like rustc spawning cc/ld.
    parent = (
        "import subprocess, sys; "
        f"subprocess.run([sys.executable, '-c', {ALLOC!r}, str({160 * MiB}), '0', '1.0'])"
    )
    with Procs() as procs:
        child = procs.start([sys.executable, "-c", parent], stdout=None, stderr=None)
        sampler = PeakSampler(child.pid, interval=0.05, rescan=0.2).start()
        child.wait()
        sampler.stop()
    assert sampler.peak >= 160 * MiB, format_size(sampler.peak)
    assert sampler.peak <= 300 * MiB, format_size(sampler.peak)


@pytest.mark.timeout(60)
@pytest.mark.slow
@pytest.mark.parametrize("way", ["proc", "psutil"], indirect=True)
def test_peak_sampler_cpu_cost_is_small(way: str) -> None:
    with Procs() as procs:
        child = procs.start(
            [sys.executable, "-c", "import time; time.sleep(3)"], stdout=None, stderr=None
        )
        start_cpu = time.process_time()
        with PeakSampler(child.pid, interval=0.1) as sampler:
            time.sleep(2)
        used = time.process_time() - start_cpu
    assert sampler.samples >= 10
    # Generous bound: the measured cost is ~0.1% of a core at 10 samples/s.
    assert used < 0.2, used


# --------------------------------------------------------------------------- real cgroup


CHILD = """
import json, os, sys
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write(str(os.getpid()))
from ltoguard.memory import available_memory
first = available_memory()
b = bytearray(b"x") * (100 << 20)
second = available_memory()
print(json.dumps([first.available, first.total, first.source, second.available]))
"""

OOM_CHILD = """
import os, sys
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write(str(os.getpid()))
b = bytearray(b"x") * (400 << 20)
"""


@pytest.mark.cgroup
@pytest.mark.timeout(120)
def test_real_cgroup_limit_is_seen_inside() -> None:
    why = MemoryCgroup.unavailable()
    if why:
        pytest.skip(why)
    limit = 300 * MiB
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with MemoryCgroup(limit) as cg:
        group = cg.path
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(group)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        available, total, source, after = json.loads(out)
        assert available <= limit
        assert total == limit
        assert source == f"cgroup v{cg.version} {group} (limit 300 MiB)"
        # 100 MiB allocated inside the group must show up as used.
        assert after <= available - 90 * MiB

        # The OOM killer acts inside the group, and the counter sees it.
        with Procs() as procs:  # reaped before the group is removed
            sleeper = procs.start(
                [
                    sys.executable,
                    "-c",
                    f"import os; open({str(group / 'cgroup.procs')!r}, 'w').write(str(os.getpid()));"
                    " print('in', flush=True); import time; time.sleep(60)",
                ],
                text=True,
                stderr=None,
            )
            assert sleeper.stdout is not None
            assert sleeper.stdout.readline() == "in\n"
            before = cgroup_oom_kills(pid=sleeper.pid)
            assert before is not None
            hog = subprocess.run([sys.executable, "-c", OOM_CHILD, str(group)], timeout=60, env=env)
            assert hog.returncode == -signal.SIGKILL
            assert cgroup_oom_kills(pid=sleeper.pid) == before + 1
    assert not group.exists()


V2_ONLY = v2_parent()[2]  # empty where a v2 test group can be made

# Joins the group, then reports the bound ltoguard finds: (available, total, source).
BOUND_CHILD = """
import json, os, sys
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write(str(os.getpid()))
from ltoguard.memory import available_memory
m = available_memory()
print(json.dumps([m.available, m.total, m.source]))
"""


@pytest.mark.cgroup
@pytest.mark.timeout(120)
def test_real_v2_memory_high_below_max_is_the_bound() -> None:
    """memory.high below memory.max: the kernel throttles past it, so ltoguard must
    take the tighter of the two."""
    if V2_ONLY:
        pytest.skip(f"cgroup v2 only: {V2_ONLY}")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with MemoryCgroup(400 * MiB) as cg:
        assert cg.version == 2
        (cg.path / "memory.high").write_text(str(200 * MiB))
        out = subprocess.run(
            [sys.executable, "-c", BOUND_CHILD, str(cg.path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        available, total, source = json.loads(out)
    assert total == 200 * MiB
    assert 0 < available <= 200 * MiB
    assert source == f"cgroup v2 {cg.path} (memory.high 200 MiB)"


# Runs in a fresh cgroup and mount namespace with cgroup2 mounted again: our group is /.
NS_CHILD = """
import json
from ltoguard.memory import available_memory
m = available_memory()
print(json.dumps([open("/proc/self/cgroup").read(), m.total, m.source]))
"""


@pytest.mark.cgroup
@pytest.mark.timeout(120)
def test_real_private_cgroup_namespace_finds_the_limit_at_its_root() -> None:
    """As in a container with a private cgroup namespace: /proc/self/cgroup reads
    ``0::/`` and the limit is /sys/fs/cgroup/memory.max of a fresh cgroup2 mount."""
    if V2_ONLY:
        pytest.skip(f"cgroup v2 only: {V2_ONLY}")
    if shutil.which("unshare") is None:
        pytest.skip("no unshare(1) on this host")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    inner = 'mount -t cgroup2 none /sys/fs/cgroup && exec "$@"'
    with MemoryCgroup(300 * MiB) as cg:
        cmd = cg.enter_command() + ["unshare", "--cgroup", "--mount", "sh", "-c", inner, "sh"]
        proc = subprocess.run(
            [*cmd, sys.executable, "-c", NS_CHILD],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 0, proc.stderr
    cgroup, total, source = json.loads(proc.stdout)
    assert cgroup == "0::/\n"
    assert total == 300 * MiB
    assert source == "cgroup v2 /sys/fs/cgroup (limit 300 MiB)"


def test_v2check_stops_running_nothing_where_memory_is_not_on_v2() -> None:
    """scripts/v2check.sh is for a v2 host: elsewhere it says why and runs no test."""
    if not V2_ONLY.startswith("no cgroup v2 memory controller") and V2_ONLY != (
        "no cgroup v2 hierarchy mounted"
    ):
        pytest.skip(f"the memory controller is on cgroup v2 here: {V2_ONLY or 'usable'}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("V2CHECK_")}
    proc = subprocess.run(
        ["bash", str(REPO / "scripts/v2check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "v2check: not a v2 host: " in proc.stderr
    assert "nothing was run" in proc.stderr
    assert "kernel: " in proc.stdout and "set-up" not in proc.stdout


@pytest.mark.parametrize(
    ("stat", "working"),
    [
        # The old measure: only the inactive list is reclaimable.
        ({"cache": 0, "inactive_file": 200}, 800),
        # Active page cache nobody maps (rlibs just written and read) is reclaimable too.
        ({"cache": 600, "inactive_file": 100, "mapped_file": 0}, 400),
        # The compiler's mapped library pages stay counted (once, however many map them).
        ({"cache": 600, "inactive_file": 100, "mapped_file": 150}, 550),
        # shmem is not freed by reclaim; dirty pages are (once the flusher writes them back).
        ({"cache": 600, "mapped_file": 100, "shmem": 100, "dirty": 50, "writeback": 50}, 600),
        ({"cache": 600, "dirty": 600}, 400),
        ({"cache": 600, "unevictable": 600}, 1000),
        # Never below zero, never less than the inactive list frees.
        ({"cache": 5000}, 0),
        ({"cache": 300, "mapped_file": 300, "inactive_file": 250}, 750),
    ],
)
def test_working_set_counts_unmapped_page_cache_as_free(stat: dict[str, int], working: int) -> None:
    assert working_set(1000, stat, V1_NAMES) == working
    renamed = {"dirty": "file_dirty", "writeback": "file_writeback"}
    renamed.update(zip(V1_NAMES, V2_NAMES))
    v2 = {renamed.get(k, k): v for k, v in stat.items()}
    assert working_set(1000, v2, V2_NAMES) == working


def test_v1_reads_the_hierarchical_counters(tmp_path: Path) -> None:
    fake = v1_system(tmp_path)
    stat = (
        "cache 0\nmapped_file 0\ninactive_file 0\n"
        f"total_cache {500 * MiB}\ntotal_mapped_file {100 * MiB}\ntotal_inactive_file 0"
    )
    fake.files(
        "/sys/fs/cgroup/memory/build/job",
        memory__limit_in_bytes=1000 * MiB,
        memory__usage_in_bytes=800 * MiB,
        memory__stat=stat,
    )
    snap = available_memory(root=fake.write(), host=HOST)
    # 800 used - (500 cache - 100 mapped) reclaimable = 400 held, 600 free.
    assert snap.available == 600 * MiB


# Joins the group, fills page cache with a file it reads twice (the active list),
# written back to disk or left dirty, prints what ltoguard and the old measures count
# as free, then allocates that much.
CACHE_CHILD = r"""
import json, os, sys
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write(str(os.getpid()))
from ltoguard.memory import available_memory
path, dirty = sys.argv[2], sys.argv[6] == "dirty"
with open(path, "wb") as f:
    for _ in range(200):
        f.write(b"c" * (1 << 20))
    f.flush()
    if not dirty:
        os.fsync(f.fileno())
for _ in range(2):
    with open(path, "rb") as f:
        while f.read(1 << 20):
            pass
g = sys.argv[1]
usage_file, prefix = sys.argv[4:6]  # v1 or v2 names
usage = int(open(os.path.join(g, usage_file)).read())
stat = {k[len(prefix) :]: int(v) for k, v in (l.split() for l in open(os.path.join(g, "memory.stat"))) if k.startswith(prefix)}
v1 = "cache" in stat
cache, held = (stat["cache"], stat["dirty"] + stat["writeback"]) if v1 else (stat["file"], stat["file_dirty"] + stat["file_writeback"])
limit = int(sys.argv[3])
only_inactive = limit - (usage - stat["inactive_file"])
clean_only = limit - (usage - max(stat["inactive_file"], cache - held))
now = available_memory().available
print(json.dumps([now, only_inactive, clean_only, held]), flush=True)
b = bytearray(b"x") * (now - (40 << 20))
swapped = [l for l in open("/proc/self/status") if l.startswith("VmSwap:")]
print("allocated", int(swapped[0].split()[1]) << 10 if swapped else 0, flush=True)
"""


@pytest.mark.cgroup
@pytest.mark.timeout(120)
@pytest.mark.parametrize("pages", ["written", "dirty"])
def test_the_kernel_agrees_that_unmapped_page_cache_is_free(tmp_path: Path, pages: str) -> None:
    """Checked against the kernel's own verdict. With 200 MiB of
    active page cache in a 400 MiB group, the free memory ltoguard counts can really
    be allocated (the kernel reclaims the cache, nobody is OOM-killed), where the old
    measure would have counted most of the cache as used. Left dirty (as the rlibs
    cargo just wrote are), the kernel writes the pages back and reclaims them just
    the same, where a measure that held dirty pages counted them as used."""
    why = MemoryCgroup.unavailable()
    if why:
        pytest.skip(why)
    limit = 400 * MiB
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:  # no swap allowed, where it can be refused: swapping the allocation out would
        # pass without the cache being reclaimed
        cg = MemoryCgroup(limit, swap=0)
    except RuntimeError:
        cg = MemoryCgroup(limit)
    with cg:
        before = cg.oom_kills()
        names = ["memory.usage_in_bytes", "total_"] if cg.version == 1 else ["memory.current", ""]
        proc = subprocess.run(
            [sys.executable, "-c", CACHE_CHILD, str(cg.path), str(tmp_path / "f"), str(limit)]
            + names
            + [pages],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 0, proc.stderr
        first, second = proc.stdout.splitlines()
        now, only_inactive, clean_only, held = json.loads(first)
        assert second.split()[0] == "allocated"
        assert cg.oom_kills() == before
        if int(second.split()[1]):
            pytest.skip("the kernel swapped the allocation out: whether it reclaims cannot be told")
        assert now > only_inactive + 100 * MiB, (now, only_inactive)  # most of the cache free
        assert now > 250 * MiB
        if pages == "dirty":
            if held < 64 * MiB:
                # cgroup v2 limits a group's dirty pages and writes them back early
                pytest.skip(f"only {held >> 20} MiB of the file stayed dirty in this group")
            assert now > clean_only + held // 2, (now, clean_only, held)


def test_host_memory_reads_meminfo_as_psutil_does(tmp_path: Path) -> None:
    import psutil

    from ltoguard.memory import host_memory

    mine, theirs = host_memory(), psutil.virtual_memory()
    assert mine.total == theirs.total
    assert abs(mine.available - theirs.available) < 64 * MiB  # read a moment apart
    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:  1000 kB\nMemFree:  10 kB\nMemAvailable:   500 kB\n")
    assert host_memory(str(fake)) == HostMemory(500 * 1024, 1000 * 1024, "MemAvailable")
    fake.write_text("MemTotal:  1000 kB\n")  # an old kernel: psutil estimates it
    old = host_memory(str(fake))
    assert (old.total, old.source) == (theirs.total, "psutil")
