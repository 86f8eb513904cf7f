"""SliceRuntime: what the agent daemon calls to run, watch, stop and recover slices on this node.

It ties the pieces together: a per-slice cgroup (agent/_cgroups.py), a launch through the fork
server (agent/_launcher.py), dataset paths and the herd's shared GID (agent/_datasets.py), the
work dir and (for ``python:`` steps) the runink package bind-mounted into the slice at fixed
paths, log pumps into per-slice files on disk (``<state>/<id>/logs``, agent/_logs.py), and a
scratch dir per slice on tmpfs (``<scratch>/<id>``: state.json, work dir, log FIFOs, exit status)
from which `recover` re-attaches to slices that outlived an agent crash, or reports them lost
and cleans them up. Every filesystem and cgroup call of a slice runs in a worker thread, so the
event loop the agent shares with the API server and the Barn never waits for a disk. Slice life::

    start() --launch--> running --step exits--------> Outcome(reason=Completed|Error|Signaled|OOMKilled)
                          |--stop(grace): SIGTERM, grace, cgroup kill --> Outcome(reason=Stopped)
                          `--timeout: as stop ---------------------------> Outcome(reason=DeadlineExceeded)

Every task (log pumps, exit watchers, timeouts) is owned by the runtime's TaskGroup: use it as
``async with SliceRuntime(...) as rt``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from runink.agent import _cgroups, _datasets, _fluent, _launcher, _logs, _metrics, _netpool

Reason = Literal[
    "Completed",
    "Error",
    "Signaled",
    "OOMKilled",
    "DeadlineExceeded",
    "Stopped",
    "StartError",
    "Lost",
]
SECRETS_DIR = "/run/runink/secrets"
LIB_DIR = "/run/runink/lib"
"""Inside a slice: the runink package is bind-mounted read-only at ``LIB_DIR/runink``."""
SITE_DIR = "/run/runink/site"
"""Inside a ``python:`` slice: the agent's site-packages, read-only, on PYTHONPATH after LIB_DIR
(then ``SITE_DIR-1``... for directories its .pth files add)."""
WORK_DIR = "/run/runink/work"
"""Inside a slice: its private work dir (context.json, results.json, metrics.json)."""
STATE_FILE = "state.json"
SCRATCH_ROOTS = ("/run/runink/scratch", "/dev/shm/runink")
"""Where per-slice scratch dirs go: the first of these on a tmpfs (``/run`` is not one on every
host; ``/dev/shm`` is)."""
PACKAGE_DIR = Path(__file__).resolve().parent.parent
"""The directory holding the ``runink`` package's ``__init__.py`` (the checkout root here)."""


def _not_runnable_by_slices(path: str) -> str | None:
    """Why an unprivileged UID cannot execute *path*, or None when it can."""
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        return f"{path} does not exist"
    # Both the path as given (a venv's bin/) and where its symlinks lead (a pyenv under /root).
    bad = _datasets.unreachable_ancestor(Path(path).absolute().parent)
    bad = bad or _datasets.unreachable_ancestor(Path(real).parent)
    if bad is not None:
        return f"{path} ({real}) sits below {bad}, which other users cannot traverse"
    if not os.stat(real).st_mode & 0o001:
        return f"{path} ({real}) is not executable by other users"
    return None


def python_version(path: str) -> tuple[int, int] | None:
    """(major, minor) of the interpreter at *path*, or None when it does not run."""
    if os.path.realpath(path) in {
        os.path.realpath(sys.executable),
        os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
    }:
        return sys.version_info.major, sys.version_info.minor
    try:
        out = subprocess.run(
            [path, "-I", "-S", "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
        return int(out[0]), int(out[1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def choose_python(
    configured: str | None = None,
    *,
    want: tuple[int, int] | None = None,
    probe: Callable[[str], tuple[int, int] | None] = python_version,
) -> str:
    """The interpreter for ``python:`` steps: *configured*, else the agent's own, else a system
    python3 of the agent's major.minor. It must be executable by the slices' ephemeral UIDs (a
    pyenv or venv under /root is not) and of version *want* (default: the agent's), because the
    slices import the agent's site-packages, whose compiled extensions are built for that
    version. Raises `LaunchError` saying why each candidate was refused."""
    want = want or (sys.version_info.major, sys.version_info.minor)
    mm = f"{want[0]}.{want[1]}"
    candidates = (
        [configured]
        if configured
        else [
            sys.executable,
            "/usr/bin/python3",
            f"/usr/bin/python{mm}",
            "/usr/local/bin/python3",
            f"/usr/local/bin/python{mm}",
        ]
    )
    problems = []
    seen: set[str] = set()
    for c in candidates:
        real = os.path.realpath(c)
        if real in seen:
            continue
        seen.add(real)
        why = _not_runnable_by_slices(c)
        if why is None:
            got = probe(c)
            if got == want:
                return c
            have = "does not run" if got is None else f"is Python {got[0]}.{got[1]}"
            why = f"{c} {have}, not {mm}"
        problems.append(why)
    raise _launcher.LaunchError(
        0,
        f"no Python {mm} interpreter (the agent's version, which its site-packages are built "
        "for) that slices can run for a python: step: "
        + "; ".join(problems)
        + f". Install a python{mm} outside private directories (e.g. /usr/bin/python{mm}) or "
        "run the agent with an interpreter slices can execute.",
    )


def python_path_dirs(package_dir: Path = PACKAGE_DIR) -> list[str]:
    """The agent's own site-packages (sysconfig purelib, platlib) and the directories their
    ``.pth`` files add, in that order, for slices to import what the agent can (pydantic...).

    ``import`` lines of .pth files are not run inside slices; the runink package itself is
    served from LIB_DIR, so a .pth naming *package_dir* (or its parent) is skipped.
    """
    paths = sysconfig.get_paths()
    out: list[str] = []

    def add(d: str) -> None:
        real = os.path.realpath(d)
        skip = {str(package_dir.resolve()), str(package_dir.resolve().parent)}
        if os.path.isdir(real) and real not in out and real not in skip:
            out.append(real)

    for key in ("purelib", "platlib"):
        add(paths[key])
    for site_dir in out[:]:  # not the dirs .pth files add: those are no site dirs
        for pth in sorted(Path(site_dir).glob("*.pth")):
            try:
                lines = pth.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if not line or line.startswith(("#", "import ", "import\t")):
                    continue
                add(os.path.join(site_dir, line))
    return out


def site_mount_points(n: int) -> list[str]:
    """Where the *n* dirs of `python_path_dirs` appear inside a slice, in PYTHONPATH order."""
    return [SITE_DIR if i == 0 else f"{SITE_DIR}-{i}" for i in range(n)]


def _fs_type(path: str) -> str:
    """The filesystem type of the mount holding *path* (longest mount point prefix)."""
    best, fstype = "", ""
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            mp = parts[1].replace("\\040", " ")
            if (real == mp or real.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, fstype = mp, parts[2]
    return fstype


def default_scratch_dir(state_dir: str | os.PathLike[str]) -> Path:
    """This agent's scratch dir: ``<root>/<hash of the state dir>`` on the first tmpfs of
    `SCRATCH_ROOTS` (so that two agents on one machine never share it, and a restarted agent
    with the same state dir finds its slices again); ``<state_dir>/../scratch`` without one."""
    key = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]
    for root in SCRATCH_ROOTS:
        parent = os.path.dirname(root)
        if os.path.isdir(parent) and _fs_type(parent) == "tmpfs":
            return Path(root) / key
    return Path(state_dir).resolve().parent / "scratch" / key


def _make_private_root(root: Path) -> None:
    """Create *root* (mode 0711, root-owned) or check that an existing one is ours: under a
    world-writable parent such as /dev/shm another user could have made it first."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o711, parents=True)
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise RuntimeError(
            f"{root} is not a directory owned by uid {os.geteuid()} and writable by it only; "
            "remove it or pass another scratch_dir"
        )


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Resources:
    """Limits for one slice; ``None`` is unlimited."""

    cpu_millicores: int | None = None
    memory_bytes: int | None = None
    pids: int | None = None


@dataclass(frozen=True, slots=True)
class SliceSpec:
    """What to run, built from a Slice object by `spec_from_slice` (or directly in tests).

    Exactly one of ``command`` (an argv) and ``python`` (``module:function``, run through
    ``python -m runink.sdk._entry`` with a `runink.sdk.Context`) is set.
    """

    name: str
    herd: str
    uid: str
    command: tuple[str, ...] = ()
    python: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, bytes] = field(default_factory=dict)
    secret_env: dict[str, str] = field(default_factory=dict)
    """env var name -> secret name: the only way a secret reaches the environment."""
    resources: Resources = Resources()
    network: _launcher.NetworkMode = "none"
    service_account: str = "default"
    timeout: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    """Dataset name -> a URI (``file:///abs``) or a bare Dataset name, resolved at start."""
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Name of the slice's state dir (and of its cgroup, unless it was launched from a
        zygote: then it keeps the zygote's): unique per Slice object on this node."""
        return f"{self.herd}.{self.name}.{self.uid[:8]}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a slice ended; maps onto Slice.status."""

    exit_code: int | None
    signal: int | None
    oom_killed: bool
    start_time: str
    finish_time: str
    reason: Reason
    message: str = ""
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0 and not self.oom_killed


@dataclass(frozen=True, slots=True)
class Recovered:
    """What `recover` found for one slice left by a previous agent process."""

    id: str
    name: str
    herd: str
    uid: str
    running: bool
    outcome: Outcome | None


@dataclass(slots=True)
class _Slice:
    spec_id: str
    name: str
    herd: str
    uid: str
    dir: Path
    """The scratch dir (tmpfs): state.json, work/, the log FIFOs, the init's exit status."""
    logs: Path
    """The log dir (disk), kept after the slice ended until housekeeping removes it."""
    cgroup: _cgroups.SliceCgroup
    host_uid: int
    start_time: str
    pid: int = 0
    pid_start: str = ""
    own_child: bool = True
    stop_reason: Reason | None = None
    done: asyncio.Future[Outcome] | None = None
    saved: asyncio.Future[OSError | None] | None = None
    """Set once the state file is written (with the error when it could not be)."""
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    netns: _netpool.Netns | None = None


def _proc_starttime(pid: int) -> str:
    """Field 22 of /proc/PID/stat: tells a live pid from a recycled one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    fields = stat.rsplit(")", 1)[1].split()
    # A zombie has exited: only its parent's waitpid is missing.
    return "" if fields[0] in ("Z", "X") else fields[19]


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    # No fsync: these files live on tmpfs, and what they hold dies with the machine anyway (the
    # slice processes and their cgroups); an agent crash loses nothing the page cache holds.
    # The rename still matters: a reader never sees half a file.
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


@dataclass(slots=True)
class _Prepared:
    """What `SliceRuntime._prepare` made in its worker thread for one launch."""

    cgroup: _cgroups.SliceCgroup
    out_fd: int
    err_fd: int
    writer: _logs.LogWriter
    request: _launcher.LaunchRequest


class SliceRuntime:
    """Runs slices on this node. Not thread-safe; one per agent process."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        launcher: _launcher.Launcher,
        *,
        layout: _cgroups.Layout | None = None,
        uid_range: tuple[int, int] = (200_000, 265_536),
        secrets_dir: str = SECRETS_DIR,
        python: str | None = None,
        cgroup_parent: str = _cgroups.PARENT,
        datasets_root: str | os.PathLike[str] | None = None,
        herd_gid_range: tuple[int, int] = (300_000, 365_536),
        package_dir: str | os.PathLike[str] = PACKAGE_DIR,
        netns_pool: _netpool.NetnsPool | None = None,
        netns_pool_size: int = 2,
        log_forwarder: _fluent.Forwarder | None = None,
        zygotes: int = 2,
        scratch_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.scratch_dir = Path(
            scratch_dir if scratch_dir is not None else default_scratch_dir(state_dir)
        )
        self.launcher = launcher
        self.layout = layout or _cgroups.detect()
        self.uid_range = uid_range
        self.secrets_dir = secrets_dir
        self.python = python
        self._step_python: str | None = None
        self.cgroup_parent = cgroup_parent
        self.datasets_root = Path(
            datasets_root if datasets_root is not None else self.state_dir.parent / "datasets"
        )
        self.herd_gid_range = herd_gid_range
        self.package_dir = Path(package_dir)
        # (host dir, mount point) of the agent's site-packages for python: steps.
        dirs = python_path_dirs(self.package_dir)
        self._site_binds = list(zip(dirs, site_mount_points(len(dirs)), strict=True))
        self._slices: dict[str, _Slice] = {}
        self._by_name: dict[tuple[str, str], str] = {}  # (herd, slice name) -> latest id
        self._starting: set[str] = set()  # ids between start()'s mkdir and the launch
        self._reserved_uids: set[int] = set()  # allocated by starts still launching
        self._tg: asyncio.TaskGroup | None = None
        # Pre-wired netns with a veth for `network: isolated` slices (none: such slices fail).
        if netns_pool is None and netns_pool_size > 0 and _netpool.available():
            netns_pool = _netpool.NetnsPool(netns_pool_size)
        self.netns_pool = netns_pool
        self._pool_task: asyncio.Task[None] | None = None
        self.log_forwarder = log_forwarder
        # Pre-cloned inits per network mode (none, host), kept by the fork server (see there).
        self.zygotes = zygotes
        self._forward_task: asyncio.Task[None] | None = None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if scratch_dir is None:
            _make_private_root(self.scratch_dir.parent)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        # Slices run as ephemeral uids and must traverse to their own work dir.
        os.chmod(self.state_dir, 0o711)
        os.chmod(self.scratch_dir, 0o711)
        # Empty mount points; each slice mounts its own tmpfs / bind mounts on them in its own
        # mount namespace.
        mps = [self.secrets_dir, f"{LIB_DIR}/runink", WORK_DIR, *(m for _, m in self._site_binds)]
        for mp in mps:
            Path(mp).mkdir(parents=True, exist_ok=True)

    async def __aenter__(self) -> SliceRuntime:
        await asyncio.to_thread(_cgroups.ensure_parent, self.layout, self.cgroup_parent)
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        if self.zygotes > 0:
            # Each waits in a cgroup of its own: a launch from one writes limits, moves nothing.
            # `network: isolated` slices clone (their netns is the pool's, owned by the host).
            parents = _cgroups.plan(self.layout, "", _cgroups.Limits(), self.cgroup_parent)
            self.launcher.enable_zygotes(self.zygotes, ("none", "host"), parents)
        if self.netns_pool is not None:
            self._pool_task = self._tg.create_task(self.netns_pool.run())
        if self.log_forwarder is not None:
            self._forward_task = self._tg.create_task(self.log_forwarder.run())
        return self

    async def __aexit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        if self.zygotes > 0:
            with contextlib.suppress(OSError):  # a fork server already gone took them along
                self.launcher.enable_zygotes(0)
        if self._pool_task is not None:
            self._pool_task.cancel()
        if self._forward_task is not None:
            if et is None and self.log_forwarder is not None:
                # A clean shutdown ships what is buffered, if the collector answers quickly.
                await self.log_forwarder.flush(2.0)
            self._forward_task.cancel()
        try:
            await self._tg.__aexit__(et, ev, tb)
        finally:
            self._tg = None
            self._pool_task = None
            self._forward_task = None
            if self.netns_pool is not None:
                # Every netns goes, also those of slices still running: they lose their network
                # (the host end of the veth) as they would lose it with the agent's node.
                await self.netns_pool.aclose()
            if not self.running():
                # Nothing left to re-attach to: leave no empty parent cgroup (nor scratch dir)
                # behind either.
                await asyncio.to_thread(self._remove_empty_parents)

    def _remove_empty_parents(self) -> None:
        # Parked zygotes' cgroups: the fork server removes them as it kills them; it may not
        # have yet (or it is gone).
        for name in _cgroups.list_slices(self.layout, self.cgroup_parent):
            if name.startswith(self.launcher.zygote_prefix):
                with contextlib.suppress(OSError):
                    _cgroups.SliceCgroup(self.layout, name, self.cgroup_parent).remove()
        _cgroups.remove_parent(self.layout, self.cgroup_parent)
        with contextlib.suppress(OSError):  # still holding a slice started meanwhile: keep it
            self.scratch_dir.rmdir()
        if self.scratch_dir.parent.as_posix() in SCRATCH_ROOTS:
            with contextlib.suppress(OSError):  # another agent's scratch dir is still in it
                self.scratch_dir.parent.rmdir()

    # -- helpers -------------------------------------------------------------------------------
    def _allocate_uid(self) -> int:
        # Reserved too: concurrent starts are not in _slices until their launch returned.
        used = {s.host_uid for s in self._slices.values()} | self._reserved_uids
        lo, hi = self.uid_range
        for uid in range(lo, hi):
            if uid not in used and uid != 0:
                self._reserved_uids.add(uid)
                return uid
        raise RuntimeError(f"no free ephemeral uid in {lo}-{hi}")

    async def _argv(self, spec: SliceSpec) -> tuple[str, ...]:
        if spec.python is not None:
            if self._step_python is None:
                # Once per runtime: it may run a candidate interpreter to learn its version.
                self._step_python = await asyncio.to_thread(choose_python, self.python)
            return (self._step_python, "-m", "runink.sdk._entry", spec.python)
        if not spec.command:
            raise ValueError(f"slice {spec.id}: neither command nor python is set")
        return spec.command

    def _save_sync(self, s: _Slice, extra: dict[str, Any] | None = None) -> None:
        data = {
            "id": s.spec_id,
            "name": s.name,
            "herd": s.herd,
            "uid": s.uid,
            "cgroup": s.cgroup.name,
            "host_uid": s.host_uid,
            "pid": s.pid,
            "pid_start": s.pid_start,
            "start_time": s.start_time,
            "netns": asdict(s.netns) if s.netns is not None else None,
            **(extra or {}),
        }
        _atomic_write(s.dir / STATE_FILE, data)

    def _datasets(self, spec: SliceSpec) -> tuple[dict[str, str], dict[str, str], int | None]:
        """Resolved inputs, outputs and the herd's shared GID (None without a datasets root)."""
        refs = [*spec.inputs.values(), *spec.outputs.values()]
        try:
            root = _datasets.check_root(self.datasets_root)
        except _datasets.DatasetError:
            if any(_datasets.is_named(r) for r in refs):
                raise
            return dict(spec.inputs), dict(spec.outputs), None
        _, gid = _datasets.herd_dir(root, spec.herd, self.herd_gid_range)
        ins = {k: _datasets.resolve(v, spec.herd, root) for k, v in spec.inputs.items()}
        outs = {k: _datasets.resolve(v, spec.herd, root) for k, v in spec.outputs.items()}
        return ins, outs, gid

    def find(self, herd: str, name: str) -> str | None:
        """The runtime id of the latest slice *name* of *herd* run here (also from a previous
        agent process: its state dir is still on disk), or None."""
        sid = self._by_name.get((herd, name))
        if sid is not None:
            return sid
        prefix = f"{herd}.{name}."
        found = [
            d
            for d in (self.state_dir.iterdir() if self.state_dir.exists() else [])
            if d.name.startswith(prefix) and len(d.name) == len(prefix) + 8 and d.is_dir()
        ]
        if not found:
            return None
        return max(found, key=lambda d: d.stat().st_mtime).name

    def log_dir(self, spec_id: str) -> Path:
        return self.state_dir / spec_id / "logs"

    # -- public API ----------------------------------------------------------------------------
    async def start(self, spec: SliceSpec) -> int:
        """Launch *spec*; returns the host pid of the slice init. Raises `LaunchError`."""
        self._starting.add(spec.id)
        try:
            return await self._start(spec)
        finally:
            self._starting.discard(spec.id)

    async def _start(self, spec: SliceSpec) -> int:
        if self._tg is None:
            raise RuntimeError("use `async with SliceRuntime(...)`")
        if spec.id in self._slices:
            raise RuntimeError(f"slice {spec.id} is already running")
        argv = await self._argv(spec)
        if spec.network == "isolated" and self.netns_pool is None:
            raise _launcher.LaunchError(
                0,
                "network: isolated needs a netns pool, which this agent lacks (it must run as "
                "root with pyroute2 installed); use network: none or host",
            )
        host_uid = self._allocate_uid()
        try:
            return await self._launch(spec, argv, host_uid)
        finally:
            self._reserved_uids.discard(host_uid)

    def _sink(self, herd: str, name: str) -> Callable[[str, bytes], None] | None:
        if self.log_forwarder is None:
            return None
        fwd = self.log_forwarder

        def sink(stream: str, text: bytes) -> None:
            fwd.emit(herd, name, stream, text)

        return sink

    def _prepare(self, spec: SliceSpec, argv: tuple[str, ...], host_uid: int) -> _Prepared:
        """The slice's dirs, cgroup, context file, FIFOs and log file: every blocking call of a
        start, run in a worker thread. Undoes what it made when it fails."""
        inputs, outputs, herd_gid = self._datasets(spec)
        d = self.scratch_dir / spec.id
        logs = self.state_dir / spec.id
        for old in (d, logs):  # a previous run of this very Slice object (same uid)
            if old.exists():
                shutil.rmtree(old)
        work = d / "work"
        work.mkdir(parents=True)
        gid = herd_gid if herd_gid is not None else host_uid
        # The fork server makes the cgroup (or uses its zygote's): see LaunchRequest.cgroup.
        cg = _cgroups.SliceCgroup(self.layout, spec.id, self.cgroup_parent)
        r = spec.resources
        limits = _cgroups.Limits(r.cpu_millicores, r.memory_bytes, r.pids)
        fds: list[int] = []
        try:
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", **spec.env}
            binds = [(str(work), WORK_DIR, False)]
            if spec.python is not None:
                # The step's own PYTHONPATH first, then runink, then the agent's site-packages:
                # the interpreter is of the agent's minor version (choose_python), so compiled
                # extensions (pydantic_core...) load.
                sites = [m for _, m in self._site_binds]
                env["PYTHONPATH"] = os.pathsep.join(
                    filter(None, [env.get("PYTHONPATH"), LIB_DIR, *sites])
                )
                binds.append((str(self.package_dir), f"{LIB_DIR}/runink", True))
                binds += [(src, dst, True) for src, dst in self._site_binds]
            env.update(
                RUNINK_SLICE=spec.name,
                RUNINK_HERD=spec.herd,
                RUNINK_SLICE_UID=spec.uid,
                RUNINK_WORK_DIR=WORK_DIR,
                RUNINK_SECRETS_DIR=self.secrets_dir,
            )
            for var, secret in spec.secret_env.items():
                env[var] = spec.secrets[secret].decode()
            ctx = {
                "params": spec.params,
                "inputs": inputs,
                "outputs": outputs,
                "secrets": sorted(spec.secrets),
                "secret_env": spec.secret_env,
            }
            _atomic_write(work / "context.json", ctx)
            os.chown(work, host_uid, host_uid)
            os.chmod(work, 0o700)
            os.chmod(d, 0o711)
            out, err = d / "stdout", d / "stderr"
            os.mkfifo(out, 0o600)
            os.mkfifo(err, 0o600)
            fds.append(os.open(out, os.O_RDONLY | os.O_NONBLOCK))
            fds.append(os.open(err, os.O_RDONLY | os.O_NONBLOCK))
            writer = _logs.LogWriter(logs / "logs", sink=self._sink(spec.herd, spec.name))
        except BaseException:
            for fd in fds:
                os.close(fd)
            shutil.rmtree(d, ignore_errors=True)
            raise
        req = _launcher.LaunchRequest(
            argv=argv,
            env=env,
            hostname=spec.name[:63],
            uid=host_uid,
            gid=gid,
            cgroup=_cgroups.plan(self.layout, spec.id, limits, self.cgroup_parent),
            network=spec.network,
            cwd="/tmp",
            stdout=str(out),
            stderr=str(err),
            status_path=str(d / "status"),
            secrets_dir=self.secrets_dir,
            secrets=dict(spec.secrets),
            binds=tuple(binds),
        )
        return _Prepared(cg, fds[0], fds[1], writer, req)

    @staticmethod
    def _unprepare(p: _Prepared, d: Path) -> None:
        os.close(p.out_fd)
        os.close(p.err_fd)
        p.writer.close(done=True)
        p.cgroup.remove()  # what the fork server may have made before it failed
        shutil.rmtree(d, ignore_errors=True)

    async def _launch(self, spec: SliceSpec, argv: tuple[str, ...], host_uid: int) -> int:
        assert self._tg is not None
        p = await asyncio.to_thread(self._prepare, spec, argv, host_uid)
        d = self.scratch_dir / spec.id
        s = _Slice(
            spec.id, spec.name, spec.herd, spec.uid, d, self.state_dir / spec.id / "logs",
            p.cgroup, host_uid, "",
        )  # fmt: skip
        s.done = asyncio.get_running_loop().create_future()
        req = p.request
        try:
            if spec.network == "isolated":
                assert self.netns_pool is not None
                s.netns = await self.netns_pool.take()
                req = dataclasses.replace(req, netns_path=s.netns.path)
            launched = await self.launcher.launch(req)
        except BaseException:
            # Synchronously: this may be a cancellation, which an await here could lose.
            self._unprepare(p, d)
            if s.netns is not None and self.netns_pool is not None:
                await self.netns_pool.release(s.netns)
            raise
        s.pid = launched.pid
        if launched.cgroup is not None and launched.cgroup != s.cgroup.name:
            # Launched from a zygote: the cgroup it was parked in is the slice's.
            s.cgroup = _cgroups.SliceCgroup(self.layout, launched.cgroup, self.cgroup_parent)
        s.start_time = _utcnow()
        s.pid_start = _proc_starttime(s.pid)  # procfs: no disk behind it
        self._slices[spec.id] = s
        self._by_name[spec.herd, spec.name] = spec.id
        extra = {"service_account": spec.service_account}
        s.saved = asyncio.get_running_loop().create_future()
        self._tg.create_task(self._watch(s, p.out_fd, p.err_fd, spec.timeout, p.writer, extra))
        # Once start() returned, an agent crash must not lose the slice: wait for its state
        # file (written by the watcher, which owns the slice even if this await is cancelled).
        failed = await asyncio.shield(s.saved)
        if failed is not None:
            raise failed
        return s.pid

    async def wait(self, spec_id: str) -> Outcome:
        s = self._slices.get(spec_id)
        if s is None or s.done is None:
            raise KeyError(spec_id)
        return await asyncio.shield(s.done)

    def outcome(self, spec_id: str) -> Outcome | None:
        """How the slice ended, or None while it runs (or when it is unknown)."""
        s = self._slices.get(spec_id)
        if s is None or s.done is None or not s.done.done() or s.done.cancelled():
            return None
        return s.done.result()

    def start_time(self, spec_id: str) -> str:
        """When the slice's init was launched (RFC 3339, ms), as its Outcome will say."""
        return self._slices[spec_id].start_time

    def running(self) -> list[str]:
        return [k for k, s in self._slices.items() if s.done is not None and not s.done.done()]

    def _busy(self, spec_id: str) -> bool:
        s = self._slices.get(spec_id)
        running = s is not None and (s.done is None or not s.done.done())
        return running or spec_id in self._starting

    def _busy_ids(self) -> set[str]:
        return {k for k in self._slices if self._busy(k)} | self._starting

    def _drop(self, spec_id: str) -> None:
        self._slices.pop(spec_id, None)
        for k in [k for k, v in self._by_name.items() if v == spec_id]:
            del self._by_name[k]

    def _remove_dirs(self, spec_id: str) -> bool | None:
        """Delete a finished slice's log dir and what is left of its scratch dir (blocking).
        None, deleting nothing, when a state file says a previous agent process left it running
        (recover() decides about those); False when there was no log dir."""
        # <state>/<id>/state.json: where agents before the scratch dir kept it.
        if any((b / spec_id / STATE_FILE).exists() for b in (self.scratch_dir, self.state_dir)):
            return None
        shutil.rmtree(self.scratch_dir / spec_id, ignore_errors=True)
        d = self.state_dir / spec_id
        if not d.is_dir():
            return False
        shutil.rmtree(d, ignore_errors=True)
        return True

    def forget(self, spec_id: str) -> bool:
        """Delete a finished slice's state, work and log dir (its logs are gone for good).

        Returns False, deleting nothing, while the slice is starting or running, or when a state
        file says a previous agent process left it running (recover() decides about those).
        Blocking: on the event loop, use `aforget`.
        """
        if self._busy(spec_id):
            return False
        removed = self._remove_dirs(spec_id)
        if removed is not None:
            self._drop(spec_id)
        return bool(removed)

    async def aforget(self, spec_id: str) -> bool:
        """`forget`, with the deletion in a worker thread."""
        if self._busy(spec_id):
            return False
        removed = await asyncio.to_thread(self._remove_dirs, spec_id)
        if removed is not None and not self._busy(spec_id):
            self._drop(spec_id)
        return bool(removed)

    def _expired(
        self, keep: Collection[str], retention: float, now: float, busy: Collection[str]
    ) -> list[str]:
        deleted = []
        for d in list(self.state_dir.iterdir()) if self.state_dir.exists() else []:
            if not d.is_dir() or d.name in busy:
                continue
            try:
                # The done marker is touched when the slice ended (a dir without one: when the
                # dir was last changed).
                done = d / "logs" / _logs.DONE
                finished = (done if done.exists() else d).stat().st_mtime
            except FileNotFoundError:
                continue
            expired = d.name not in keep or now - finished > retention
            if expired and self._remove_dirs(d.name):
                deleted.append(d.name)
        return deleted

    def housekeep(
        self, keep: Collection[str], retention: float, now: float | None = None
    ) -> list[str]:
        """Delete the dirs of finished slices whose id is not in *keep* (their Slice objects
        are gone), or that finished more than *retention* seconds ago. Returns deleted ids.
        Blocking: on the event loop, use `ahousekeep`."""
        now = time.time() if now is None else now
        deleted = self._expired(keep, retention, now, self._busy_ids())
        for sid in deleted:
            self._drop(sid)
        return deleted

    async def ahousekeep(
        self, keep: Collection[str], retention: float, now: float | None = None
    ) -> list[str]:
        """`housekeep`, with the listing and deletions in a worker thread."""
        now = time.time() if now is None else now
        deleted = await asyncio.to_thread(
            self._expired, frozenset(keep), retention, now, self._busy_ids()
        )
        for sid in deleted:
            if not self._busy(sid):
                self._drop(sid)
        return deleted

    def cgroup(self, spec_id: str) -> _cgroups.SliceCgroup:
        """The cgroup a running slice is in."""
        return self._slices[spec_id].cgroup

    def usage(self, spec_id: str) -> _cgroups.Usage:
        return self._slices[spec_id].cgroup.usage()

    def stats(self) -> list[_metrics.SliceStats]:
        """Usage of every running slice (the metrics `SliceSource`; called from the HTTP thread)."""
        out = []
        for k, s in list(self._slices.items()):
            if s.done is None or s.done.done():
                continue
            step: dict[str, float] = {}
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, PermissionError):
                step = json.loads((s.dir / "work" / "metrics.json").read_text())
            try:
                usage = s.cgroup.usage()
            except FileNotFoundError:
                continue  # it ended between the listing and the read
            out.append(_metrics.SliceStats(k, s.name, s.herd, usage, step))
        return out

    async def stop(self, spec_id: str, grace: float = 10.0) -> Outcome:
        """SIGTERM the slice (its init forwards it to the step), then kill the cgroup after *grace*."""
        s = self._slices[spec_id]
        assert s.done is not None
        if s.done.done():
            return s.done.result()
        s.stop_reason = s.stop_reason or "Stopped"
        with contextlib.suppress(ProcessLookupError):
            os.kill(s.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                return await asyncio.shield(s.done)
        except TimeoutError:
            await asyncio.to_thread(s.cgroup.kill)
        return await asyncio.shield(s.done)

    # -- per-slice task ------------------------------------------------------------------------
    async def _wait_exit(self, s: _Slice) -> int | None:
        if s.own_child:
            return await self.launcher.wait(s.pid)
        # Not our child (re-attached after a restart): a pidfd says when it exits, the status
        # file says how.
        try:
            pidfd = os.pidfd_open(s.pid)
        except ProcessLookupError:
            return None
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        loop.add_reader(pidfd, ev.set)
        try:
            if _proc_starttime(s.pid) == s.pid_start:
                await ev.wait()
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        # Reap it if we are its subreaper (the daemon sets PR_SET_CHILD_SUBREAPER); otherwise
        # its new parent does.
        with contextlib.suppress(ChildProcessError):
            os.waitpid(s.pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
        return None

    async def _timeout(self, s: _Slice, seconds: float) -> None:
        await asyncio.sleep(seconds)
        s.stop_reason = "DeadlineExceeded"
        await self.stop(s.spec_id, grace=min(10.0, max(1.0, seconds / 10)))

    async def _watch(
        self,
        s: _Slice,
        out_fd: int | None,
        err_fd: int | None,
        timeout: float | None,
        writer: _logs.LogWriter,
        save: dict[str, Any] | None = None,
    ) -> None:
        """Own one slice until it ended: save its state file (when *save* is given), pump its
        logs, enforce *timeout*, then read its outcome and clean up. The blocking steps run in
        worker threads, one after the other, so a slice's files change in order."""
        assert s.done is not None
        closed = False
        try:
            async with asyncio.TaskGroup() as tg:
                if out_fd is not None:
                    tg.create_task(_logs.pump(out_fd, "stdout", writer))
                if err_fd is not None:
                    tg.create_task(_logs.pump(err_fd, "stderr", writer))
                timer = tg.create_task(self._timeout(s, timeout)) if timeout else None
                if save is not None:
                    assert s.saved is not None
                    try:
                        await asyncio.to_thread(self._save_sync, s, save)
                    except OSError as e:
                        # Unrecoverable after a crash: do not let it run (start() raises).
                        s.stop_reason = "StartError"
                        await asyncio.to_thread(s.cgroup.kill)
                        s.saved.set_result(e)
                    else:
                        s.saved.set_result(None)
                status = await self._wait_exit(s)
                if timer is not None:
                    timer.cancel()
                # The init's exit killed the namespace; kill stragglers so the pipes reach EOF.
                outcome = await asyncio.to_thread(self._outcome_and_kill, s, status)
            closed = True
            await asyncio.to_thread(self._finish_sync, s, writer)
        finally:
            if not closed:  # failing or cancelled: no await here, it could be lost
                writer.close()
        if s.netns is not None and self.netns_pool is not None:
            await self.netns_pool.release(s.netns)
        s.done.set_result(outcome)

    def _outcome_and_kill(self, s: _Slice, status: int | None) -> Outcome:
        outcome = self._outcome(s, status)
        s.cgroup.kill()
        return outcome

    def _finish_sync(self, s: _Slice, writer: _logs.LogWriter) -> None:
        writer.close()
        s.cgroup.remove()
        # The outcome is read: nothing in the scratch dir is needed any more (state file first,
        # so a crash in between leaves no state file pointing at a half-deleted dir).
        (s.dir / STATE_FILE).unlink(missing_ok=True)
        if s.dir.parent == self.scratch_dir:  # not a dir kept by an older agent, logs inside
            shutil.rmtree(s.dir, ignore_errors=True)

    def _outcome(self, s: _Slice, status: int | None) -> Outcome:
        try:
            st = json.loads((s.dir / "status").read_text() or "{}")
        except (FileNotFoundError, json.JSONDecodeError):
            st = {}
        code: int | None = st.get("exit")
        sig: int | None = st.get("signal")
        if not st and status is not None:
            code, sig = _launcher.exitcode(status)
            if code is not None and code > 128:
                # The init exits 128+N when the step died of signal N.
                sig = code - 128
                code = None
        oom = s.cgroup.oom_kills() > 0
        reason: Reason
        message = str(st.get("error", ""))
        if "error" in st:
            reason = "StartError"
        elif oom:
            reason, message = "OOMKilled", message or "the step exceeded its memory limit"
        elif s.stop_reason is not None:
            reason = s.stop_reason
        elif not st and status is None:
            reason, message = "Lost", "the slice ended while the agent was down; no exit status"
        elif sig is not None:
            reason, message = "Signaled", f"killed by signal {sig} ({signal.Signals(sig).name})"
        elif code == 0:
            reason = "Completed"
        else:
            reason, message = "Error", f"exit code {code}"
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, TypeError, KeyError):
                # A python: step's exception (sdk/_entry.py), e.g. a failed quality rule.
                err = json.loads((s.dir / "work" / "error.json").read_text())
                message = f"{message}: {err['type']}: {err['message']}"[:2048]
        results: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            results = json.loads((s.dir / "work" / "results.json").read_text())
        return Outcome(code, sig, oom, s.start_time, _utcnow(), reason, message, results)

    # -- recovery ------------------------------------------------------------------------------
    def _scan_sync(self, busy: Collection[str]) -> list[tuple[Path, Path, dict[str, Any]]]:
        """(scratch dir, log dir, state) of every slice with a state file; scratch dirs without
        one (an agent killed while it prepared or cleaned up a slice) are deleted."""
        out = []
        for d in sorted(self.scratch_dir.iterdir()) if self.scratch_dir.exists() else []:
            sf = d / STATE_FILE
            if sf.exists():
                out.append((d, self.state_dir / d.name / "logs", json.loads(sf.read_text())))
            elif d.is_dir() and d.name not in busy:
                shutil.rmtree(d, ignore_errors=True)
        # Left by an agent from before the scratch dir, which kept everything in <state>/<id>.
        for d in sorted(self.state_dir.iterdir()) if self.state_dir.exists() else []:
            sf = d / STATE_FILE
            if sf.exists():
                out.append((d, d / "logs", json.loads(sf.read_text())))
        return out

    def _reap_sync(self, s: _Slice) -> Outcome:
        """A dead slice left by a previous agent: its outcome, then its cgroup and state go."""
        outcome = self._outcome(s, None)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(s.pid, os.WNOHANG)
        s.cgroup.remove()
        (s.dir / STATE_FILE).unlink()
        s.logs.mkdir(parents=True, exist_ok=True)
        (s.logs / _logs.DONE).touch()
        if s.dir.parent == self.scratch_dir:
            shutil.rmtree(s.dir, ignore_errors=True)
        return outcome

    def _reattach_sync(self, s: _Slice) -> tuple[int | None, int | None, _logs.LogWriter]:
        fds: list[int | None] = []
        for name in ("stdout", "stderr"):
            try:
                fds.append(os.open(s.dir / name, os.O_RDONLY | os.O_NONBLOCK))
            except FileNotFoundError:
                fds.append(None)
        return fds[0], fds[1], _logs.LogWriter(s.logs, sink=self._sink(s.herd, s.name))

    async def recover(self) -> list[Recovered]:
        """Re-attach to slices that outlived the previous agent process, or clean them up.

        A slice whose init still runs (same pid and start time) is watched again and its logs
        re-opened; anything else is reported with its outcome (from the status file, else
        ``Lost``) and its cgroup removed. Stray runink cgroups with no state are killed and removed.
        """
        if self._tg is None:
            raise RuntimeError("use `async with SliceRuntime(...)`")
        found: list[Recovered] = []
        known: set[str] = set()
        for d, logs, st in await asyncio.to_thread(self._scan_sync, self._busy_ids()):
            known.add(st["cgroup"])
            cg = _cgroups.SliceCgroup(self.layout, st["cgroup"], self.cgroup_parent)
            s = _Slice(
                st["id"], st["name"], st["herd"], st["uid"], d, logs, cg, int(st["host_uid"]),
                st["start_time"], int(st["pid"]), st["pid_start"], own_child=False,
            )  # fmt: skip
            s.done = asyncio.get_running_loop().create_future()
            alive = bool(s.pid) and _proc_starttime(s.pid) == s.pid_start
            if alive:
                if st.get("netns") and self.netns_pool is not None:
                    s.netns = _netpool.Netns(**st["netns"])
                    self.netns_pool.adopt(s.netns)
                self._slices[s.spec_id] = s
                self._by_name[s.herd, s.name] = s.spec_id
                out_fd, err_fd, writer = await asyncio.to_thread(self._reattach_sync, s)
                self._tg.create_task(self._watch(s, out_fd, err_fd, None, writer))
                found.append(Recovered(s.spec_id, s.name, s.herd, s.uid, True, None))
                continue
            outcome = await asyncio.to_thread(self._reap_sync, s)
            found.append(Recovered(s.spec_id, s.name, s.herd, s.uid, False, outcome))
        for stray in _cgroups.list_slices(self.layout, self.cgroup_parent) - known:
            if stray.startswith(self.launcher.zygote_prefix):
                continue  # our own fork server's parked zygotes
            await asyncio.to_thread(
                _cgroups.SliceCgroup(self.layout, stray, self.cgroup_parent).remove
            )
        if self.netns_pool is not None:
            await self.netns_pool.sweep()  # netns (and veths) of slices that are gone
        return found


def outcome_dict(o: Outcome) -> dict[str, Any]:
    return asdict(o)
