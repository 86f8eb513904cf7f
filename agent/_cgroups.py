"""Per-slice cgroups for the Runi Agent, on cgroup v1 (one hierarchy per controller) or v2.

The layout is detected once at agent start (`detect`). Every slice gets one cgroup named after it
under a ``runink`` parent: ``<root>/<ctrl>/runink/<slice>`` for each v1 controller, or
``<root>/runink/<slice>`` on v2. On a v1 *hybrid* host (a cgroup2 mount at ``<root>/unified``
holding no controllers) the slice also gets a v2 leaf there, so that ``cgroup.kill`` gives an
atomic kill of the whole tree; its ``cpu.stat`` also counts the slice's CPU time, so there the
``freezer`` and ``cpuacct`` hierarchies are not used (each hierarchy is a mkdir, a move and an
rmdir per slice, and the kernel's deferred work after each rmdir slowed the next launch). This module never forks: the fork server (agent/_forkserver.py)
puts a slice into its cgroup before the slice execs, following a `Plan` (the directories, and the
limit files to write). Its parked zygotes already sit in cgroups of their own under the same
parents, named with a ``_z`` prefix (no slice id starts with ``_``): a launch from a zygote only
writes the limits, because moving a task between cgroups waits for an RCU grace period once the
machine has made no such move for a few tens of milliseconds (3.7-8 ms here, measured).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Version = Literal["v1", "v2"]

#: v1 controllers a slice joins. ``cpuacct`` is listed on its own because hosts mount it either
#: beside ``cpu`` (``cpu,cpuacct``) or alone; `detect` keeps only the ones that are mounted.
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "freezer")
V2_CONTROLLERS = ("cpu", "memory", "pids")
CFS_PERIOD_US = 100_000
PARENT = "runink"


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits for one slice; ``None`` means unlimited."""

    cpu_millicores: int | None = None
    memory_bytes: int | None = None
    pids: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """A point-in-time reading of a slice cgroup (zeros for what the host does not expose)."""

    cpu_seconds: float
    memory_bytes: int
    memory_peak_bytes: int
    pids: int
    oom_kills: int


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the cgroup hierarchies are mounted on this host.

    ``v1`` maps each mounted v1 controller to its hierarchy root; ``unified`` is the cgroup2 root
    (the whole tree on v2, ``<root>/unified`` on a hybrid v1 host, ``None`` when absent);
    ``v2_controllers`` are the controllers that cgroup2 root offers.
    """

    version: Version
    root: Path
    v1: dict[str, Path] = field(default_factory=dict)
    unified: Path | None = None
    v2_controllers: frozenset[str] = frozenset()
    unused_v1: dict[str, Path] = field(default_factory=dict)
    """v1 hierarchies mounted but not used (hybrid: `detect`); swept for cgroups an older agent
    may have made there."""


def _kernel_has_cgroup_kill() -> bool:
    """cgroup.kill (and the v2 core's cpu.stat on every cgroup) came with Linux 5.14."""
    m = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return m is not None and (int(m[1]), int(m[2])) >= (5, 14)


def detect(root: str | os.PathLike[str] = "/sys/fs/cgroup", *, all_v1: bool = False) -> Layout:
    """Detect v1/v2/hybrid from the files under *root* (a temp dir in file-level tests).

    On a hybrid host whose kernel has ``cgroup.kill`` the v2 leaf replaces the ``freezer`` (kill)
    and ``cpuacct`` (CPU time) hierarchies, unless *all_v1*."""
    base = Path(root)
    if (base / "cgroup.controllers").exists():
        ctrls = frozenset((base / "cgroup.controllers").read_text().split())
        return Layout("v2", base, {}, base, ctrls)
    v1 = {c: base / c for c in V1_CONTROLLERS if (base / c / "cgroup.procs").exists()}
    if not v1:
        raise RuntimeError(f"no cgroup hierarchy found under {base}")
    unified = base / "unified"
    if (unified / "cgroup.controllers").exists():
        ctrls = frozenset((unified / "cgroup.controllers").read_text().split())
        unused: dict[str, Path] = {}
        if not all_v1 and _kernel_has_cgroup_kill():
            unused = {c: p for c, p in v1.items() if c in ("freezer", "cpuacct")}
            v1 = {c: p for c, p in v1.items() if c not in unused}
        return Layout("v1", base, v1, unified, ctrls, unused)
    return Layout("v1", base, v1, None, frozenset())


@dataclass(frozen=True, slots=True)
class Plan:
    """How the fork server puts one slice into its cgroup: everything but the pid.

    ``bases`` are the parent directories, one per hierarchy (`bases`); the slice's directory is
    ``<base>/<name>`` in each. ``writes`` are (index into bases, file, value, required) in order;
    an optional write that fails (a file this kernel lacks) is skipped. ``v2`` is the index of
    the cgroup2 base (joined with CLONE_INTO_CGROUP where the kernel allows), or -1.
    """

    bases: tuple[str, ...]
    name: str
    writes: tuple[tuple[int, str, str, bool], ...] = ()
    v2: int = -1

    def to_wire(self) -> dict[str, object]:
        return {
            "bases": list(self.bases),
            "name": self.name,
            "writes": [list(w) for w in self.writes],
            "v2": self.v2,
        }


ZYGOTE_PREFIX = "_z"
"""Cgroups of parked zygotes start with this; slice ids (DNS labels) never do."""


def bases(layout: Layout, parent: str = PARENT) -> list[Path]:
    """The parent cgroup of every hierarchy, in `SliceCgroup.dirs` order (v1, then cgroup2)."""
    out = [p / parent for p in layout.v1.values()]
    if layout.unified is not None:
        out.append(layout.unified / parent)
    return out


def ensure_parent(layout: Layout, parent: str = PARENT) -> None:
    """Make the parent cgroups (and, on v2, delegate cpu/memory/pids to the slices below)."""
    for b in bases(layout, parent):
        b.mkdir(exist_ok=True)
    if layout.version == "v2":
        _enable_v2_controllers(layout, layout.unified / parent if layout.unified else layout.root)


def limit_writes(layout: Layout, limits: Limits) -> tuple[tuple[int, str, str, bool], ...]:
    """The files to write for *limits*: (index into `bases`, file, value, required)."""
    out: list[tuple[int, str, str, bool]] = []
    quota = (
        None
        if limits.cpu_millicores is None
        else max(1000, limits.cpu_millicores * CFS_PERIOD_US // 1000)
    )
    if layout.version == "v1":
        index = {c: i for i, c in enumerate(layout.v1)}
        # A new cgroup's cfs period is the default CFS_PERIOD_US whatever its parent's: the
        # quota alone sets the share (each write is on the launch path of a zygote).
        if "cpu" in index and quota is not None:
            out.append((index["cpu"], "cpu.cfs_quota_us", str(quota), True))
        if "memory" in index and limits.memory_bytes is not None:
            mem, value = index["memory"], str(limits.memory_bytes)
            out.append((mem, "memory.limit_in_bytes", value, True))
            # Swap off for the slice: memsw (memory+swap) equal to the memory limit, where
            # the kernel accounts swap at all.
            out.append((mem, "memory.memsw.limit_in_bytes", value, False))
        if "pids" in index and limits.pids is not None:
            out.append((index["pids"], "pids.max", str(limits.pids), True))
        return tuple(out)
    ctrls = layout.v2_controllers
    if "cpu" in ctrls and quota is not None:
        out.append((0, "cpu.max", f"{quota} {CFS_PERIOD_US}", True))
    if "memory" in ctrls and limits.memory_bytes is not None:
        out.append((0, "memory.max", str(limits.memory_bytes), True))
        out.append((0, "memory.swap.max", "0", False))
        # One OOM kill takes the whole slice down, as a unit.
        out.append((0, "memory.oom.group", "1", False))
    if "pids" in ctrls and limits.pids is not None:
        out.append((0, "pids.max", str(limits.pids), True))
    return tuple(out)


def plan(layout: Layout, name: str, limits: Limits, parent: str = PARENT) -> Plan:
    """The `Plan` of a slice cgroup *name* with *limits*."""
    bs = bases(layout, parent)
    v2 = len(bs) - 1 if layout.unified is not None else -1
    return Plan(tuple(map(str, bs)), name, limit_writes(layout, limits), v2)


def apply_writes(dirs: list[Path], writes: tuple[tuple[int, str, str, bool], ...]) -> None:
    """Write limits (`limit_writes`) into a slice's *dirs*; the fork server does the same."""
    for i, file, value, required in writes:
        try:
            _write(dirs[i] / file, value)
        except OSError as e:
            if required:
                raise OSError(e.errno, f"cgroup {dirs[i] / file} = {value}: {e.strerror}") from e


def _write(path: Path, value: str) -> None:
    # One write(2) per value: cgroup files parse each write as a whole.
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_int(path: Path, default: int = 0) -> int:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return default
    return default if text in ("", "max") else int(text)


def _read_kv(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    out: dict[str, int] = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def _enable_v2_controllers(layout: Layout, parent: Path) -> None:
    """Enable cpu/memory/pids for the slices below *parent* (v2 delegates top-down)."""
    assert layout.unified is not None
    wanted = [c for c in V2_CONTROLLERS if c in layout.v2_controllers]
    if not wanted:
        return
    for d in (layout.unified, parent):
        with contextlib.suppress(FileNotFoundError):
            _write(d / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))


class SliceCgroup:
    """The cgroup(s) of one slice: create with limits, join (via the launcher), read, kill, remove."""

    def __init__(self, layout: Layout, name: str, parent: str = PARENT) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"bad cgroup name {name!r}")
        self.layout = layout
        self.name = name
        self.parent = parent

    # -- paths ---------------------------------------------------------------------------------
    @property
    def v1_dirs(self) -> dict[str, Path]:
        return {c: p / self.parent / self.name for c, p in self.layout.v1.items()}

    @property
    def v2_dir(self) -> Path | None:
        """The slice's cgroup2 directory: the whole cgroup on v2, the kill/procs leaf on hybrid."""
        if self.layout.unified is None:
            return None
        return self.layout.unified / self.parent / self.name

    def dirs(self) -> list[Path]:
        """The slice's directory in every hierarchy, in `bases` (and so `Plan`) order."""
        return [b / self.name for b in bases(self.layout, self.parent)]

    def procs_files(self) -> list[str]:
        """Every ``cgroup.procs`` of the slice (the fork server joins them per its `Plan`)."""
        return [str(d / "cgroup.procs") for d in self.dirs()]

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs())

    # -- lifecycle -----------------------------------------------------------------------------
    def create(self, limits: Limits) -> None:
        """Make the directories and write *limits*; idempotent (an existing cgroup is reused).

        The agent lets the fork server do this (`plan`); this is for tools and tests."""
        ensure_parent(self.layout, self.parent)
        dirs = self.dirs()
        for d in dirs:
            d.mkdir(exist_ok=True)
        apply_writes(dirs, limit_writes(self.layout, limits))

    # -- reading -------------------------------------------------------------------------------
    def pids(self) -> set[int]:
        """Every pid in the slice, across all hierarchies (they normally agree)."""
        out: set[int] = set()
        for d in self.dirs():
            with contextlib.suppress(FileNotFoundError):
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        return out

    def usage(self) -> Usage:
        if self.layout.version == "v1":
            dirs = self.v1_dirs
            if "cpuacct" in dirs:
                cpu_ns = _read_int(dirs["cpuacct"] / "cpuacct.usage")
            elif self.v2_dir is not None:  # hybrid: the v2 core counts CPU time in every cgroup
                cpu_ns = _read_kv(self.v2_dir / "cpu.stat").get("usage_usec", 0) * 1000
            else:
                cpu_ns = 0
            mem = dirs.get("memory")
            pids = dirs.get("pids")
            return Usage(
                cpu_seconds=cpu_ns / 1e9,
                memory_bytes=_read_int(mem / "memory.usage_in_bytes") if mem else 0,
                memory_peak_bytes=_read_int(mem / "memory.max_usage_in_bytes") if mem else 0,
                pids=_read_int(pids / "pids.current") if pids else len(self.pids()),
                oom_kills=self.oom_kills(),
            )
        d = self.v2_dir
        assert d is not None
        cpu = _read_kv(d / "cpu.stat").get("usage_usec", 0)
        return Usage(
            cpu_seconds=cpu / 1e6,
            memory_bytes=_read_int(d / "memory.current"),
            memory_peak_bytes=_read_int(d / "memory.peak"),
            pids=_read_int(d / "pids.current", len(self.pids())),
            oom_kills=self.oom_kills(),
        )

    def oom_kills(self) -> int:
        """OOM kills inside the slice so far (read it before `remove`)."""
        if self.layout.version == "v1":
            mem = self.v1_dirs.get("memory")
            return _read_kv(mem / "memory.oom_control").get("oom_kill", 0) if mem else 0
        d = self.v2_dir
        assert d is not None
        return _read_kv(d / "memory.events").get("oom_kill", 0)

    def memory_failcnt(self) -> int:
        mem = self.v1_dirs.get("memory")
        return _read_int(mem / "memory.failcnt") if mem else 0

    # -- killing and removal -------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL every process of the slice, including ones forking meanwhile.

        A cgroup that is already gone has nothing left to kill: that is success, not an error.
        """
        try:
            self._kill()
        except FileNotFoundError:
            return

    def _kill(self) -> None:
        v2 = self.v2_dir
        if v2 is not None and (v2 / "cgroup.kill").exists():
            _write(v2 / "cgroup.kill", "1")
            return
        freezer = self.v1_dirs.get("freezer")
        if freezer is None:
            self._kill_loop()
            return
        # v1: freeze so that nothing forks between reading cgroup.procs and the kills.
        _write(freezer / "freezer.state", "FROZEN")
        deadline = time.monotonic() + 1.0
        while (freezer / "freezer.state").read_text().strip() != "FROZEN":
            if time.monotonic() > deadline:
                break
            time.sleep(0.001)
        try:
            self._kill_loop()
        finally:
            _write(freezer / "freezer.state", "THAWED")

    def _kill_loop(self) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 5.0) -> None:
        """Kill what is left and remove every directory; raises if it still cannot go."""
        deadline = time.monotonic() + timeout
        if self.pids():
            self.kill()
        for d in [b / self.name for b in _all_bases(self.layout, self.parent)]:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    # EBUSY: killed tasks have not finished exiting yet.
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        raise
                    if self.pids():
                        self.kill()
                    time.sleep(0.005)


def _all_bases(layout: Layout, parent: str) -> list[Path]:
    return bases(layout, parent) + [p / parent for p in layout.unused_v1.values()]


def remove_parent(layout: Layout, parent: str = PARENT) -> None:
    """Remove the agent's parent cgroups once they hold no slice (rmdir of an empty cgroup)."""
    for b in _all_bases(layout, parent):
        with contextlib.suppress(OSError):  # absent, or still holding a slice: keep it
            b.rmdir()


def list_slices(layout: Layout, parent: str = PARENT) -> set[str]:
    """Names of the slice cgroups present under the runink parent (for recovery sweeps)."""
    names: set[str] = set()
    for b in _all_bases(layout, parent):
        if b.is_dir():
            names.update(e.name for e in os.scandir(b) if e.is_dir())
    return names
