"""cgroup layout detection and limit/usage/OOM file formats, against fake cgroupfs trees.

The host runs v1 (hybrid), so the v2 controller files are checked here at file level; the real
v1 hierarchy and the v2 core (cgroup.procs, cgroup.kill) are exercised in tests/privileged.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runink.agent import _cgroups


def fake_v2(root: Path, controllers: str = "cpu memory pids") -> Path:
    root.mkdir(exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.procs").write_text("")
    return root


def fake_v1(root: Path, controllers: tuple[str, ...] = _cgroups.V1_CONTROLLERS) -> Path:
    for c in controllers:
        (root / c).mkdir(parents=True)
        (root / c / "cgroup.procs").write_text("")
    return root


def touch(d: Path, *names: str) -> None:
    """A real cgroupfs creates the interface files on mkdir; the fake needs them up front."""
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_text("")


def test_detect_v2(tmp_path: Path) -> None:
    layout = _cgroups.detect(fake_v2(tmp_path))
    assert layout.version == "v2"
    assert layout.unified == tmp_path
    assert layout.v2_controllers == {"cpu", "memory", "pids"}


def test_detect_v1_and_hybrid(tmp_path: Path) -> None:
    fake_v1(tmp_path, ("cpu", "memory", "pids"))
    layout = _cgroups.detect(tmp_path)
    assert layout.version == "v1" and layout.unified is None
    assert set(layout.v1) == {"cpu", "memory", "pids"}
    fake_v2(tmp_path / "unified", "hugetlb")
    hybrid = _cgroups.detect(tmp_path)
    assert hybrid.unified == tmp_path / "unified"
    assert hybrid.v2_controllers == {"hugetlb"}


def test_detect_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="no cgroup hierarchy"):
        _cgroups.detect(tmp_path)


def test_v2_limits_written_in_v2_formats(tmp_path: Path) -> None:
    layout = _cgroups.detect(fake_v2(tmp_path))
    cg = _cgroups.SliceCgroup(layout, "s1")
    d = tmp_path / "runink" / "s1"
    touch(d, "cpu.max", "memory.max", "pids.max", "memory.swap.max", "memory.oom.group")
    touch(tmp_path / "runink", "cgroup.subtree_control")
    cg.create(_cgroups.Limits(cpu_millicores=500, memory_bytes=64 << 20, pids=32))
    assert (d / "cpu.max").read_text() == "50000 100000"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == "0"
    assert (d / "memory.oom.group").read_text() == "1"
    assert (d / "pids.max").read_text() == "32"
    assert (tmp_path / "runink" / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    assert cg.procs_files() == [str(d / "cgroup.procs")]


def test_v2_limits_skip_absent_controllers(tmp_path: Path) -> None:
    layout = _cgroups.detect(fake_v2(tmp_path, "pids"))
    cg = _cgroups.SliceCgroup(layout, "s2")
    touch(tmp_path / "runink" / "s2", "pids.max")
    cg.create(_cgroups.Limits(cpu_millicores=500, memory_bytes=1 << 20, pids=8))
    d = tmp_path / "runink" / "s2"
    assert not (d / "cpu.max").exists() and not (d / "memory.max").exists()
    assert (d / "pids.max").read_text() == "8"


def test_v2_usage_and_oom(tmp_path: Path) -> None:
    layout = _cgroups.detect(fake_v2(tmp_path))
    cg = _cgroups.SliceCgroup(layout, "s3")
    d = tmp_path / "runink" / "s3"
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n")
    (d / "memory.current").write_text("1048576\n")
    (d / "memory.peak").write_text("2097152\n")
    (d / "pids.current").write_text("3\n")
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    u = cg.usage()
    assert u == _cgroups.Usage(2.5, 1 << 20, 2 << 20, 3, 1)


def test_v1_limits_usage_and_oom(tmp_path: Path) -> None:
    layout = _cgroups.detect(fake_v1(tmp_path))
    cg = _cgroups.SliceCgroup(layout, "s4")
    mem = tmp_path / "memory" / "runink" / "s4"
    touch(mem, "memory.limit_in_bytes", "memory.memsw.limit_in_bytes")
    touch(tmp_path / "cpu" / "runink" / "s4", "cpu.cfs_quota_us")
    touch(tmp_path / "pids" / "runink" / "s4", "pids.max")
    cg.create(_cgroups.Limits(cpu_millicores=1500, memory_bytes=1 << 30, pids=100))
    cpu = tmp_path / "cpu" / "runink" / "s4"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "150000"  # of the default 100 ms period
    assert (mem / "memory.limit_in_bytes").read_text() == str(1 << 30)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(1 << 30)
    assert (tmp_path / "pids" / "runink" / "s4" / "pids.max").read_text() == "100"
    (tmp_path / "cpuacct" / "runink" / "s4" / "cpuacct.usage").write_text("3000000000\n")
    (mem / "memory.usage_in_bytes").write_text("4096\n")
    (mem / "memory.max_usage_in_bytes").write_text("8192\n")
    (mem / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    (tmp_path / "pids" / "runink" / "s4" / "pids.current").write_text("5\n")
    assert cg.usage() == _cgroups.Usage(3.0, 4096, 8192, 5, 2)
    assert len(cg.procs_files()) == len(_cgroups.V1_CONTROLLERS)


def test_slice_names_are_checked(tmp_path: Path) -> None:
    layout = _cgroups.detect(fake_v2(tmp_path))
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError, match="bad cgroup name"):
            _cgroups.SliceCgroup(layout, bad)


def test_hybrid_uses_the_v2_leaf_for_cpu_time_and_kill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With cgroup.kill (Linux 5.14+) a hybrid host needs neither freezer nor cpuacct: the v2
    leaf kills and counts CPU time. They stay listed, to sweep what an older agent made there."""
    fake_v1(tmp_path)
    fake_v2(tmp_path / "unified", "")
    monkeypatch.setattr(_cgroups, "_kernel_has_cgroup_kill", lambda: True)
    layout = _cgroups.detect(tmp_path)
    assert set(layout.v1) == {"cpu", "memory", "pids"}
    assert set(layout.unused_v1) == {"cpuacct", "freezer"}
    assert set(_cgroups.detect(tmp_path, all_v1=True).v1) == set(_cgroups.V1_CONTROLLERS)
    cg = _cgroups.SliceCgroup(layout, "s5")
    cg.create(_cgroups.Limits())
    assert cg.v2_dir is not None
    (cg.v2_dir / "cpu.stat").write_text("usage_usec 2500000\nuser_usec 2000000\n")
    assert cg.usage().cpu_seconds == 2.5
    # An old agent's cgroup in a hierarchy no longer used is found, and removed with the rest.
    old = tmp_path / "freezer" / "runink" / "s6"
    old.mkdir(parents=True)
    assert "s6" in _cgroups.list_slices(layout)
    _cgroups.SliceCgroup(layout, "s6").remove()
    assert not old.exists()
    monkeypatch.setattr(_cgroups, "_kernel_has_cgroup_kill", lambda: False)
    assert set(_cgroups.detect(tmp_path).v1) == set(_cgroups.V1_CONTROLLERS)
