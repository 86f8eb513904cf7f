"""``runink up``: the composition root of the embedded single-node cluster.

It takes the data dir's lock, loads or creates the cluster PKI, opens the Barn on LMDB, starts the
API server on 127.0.0.1, writes the admin context into the client config, then runs every
``Component`` (an async callable that runs until cancelled) in one TaskGroup until Ctrl-C/SIGTERM.
The controller manager and the local agent plug in as one line each in ``components()``.

    data dir/  lock  pki/{ca,server,admin,agent-client}.{crt,key}  barn/ (LMDB)  up.log (--detach)
               governance/{lineage,annotations}/ (LMDB, beside the Barn)  lineage/events.jsonl

Governance: the run controller's OpenLineage events go to `GovernanceLineageSink`, which ingests
them through the API server (lineage store + Dataset catalog) and loads the annotations an llm
step wrote; producers post events to the HTTPS endpoint on API port + 3 (``--lineage-port``).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runink import agent, api, controllers, schemas, store
from runink.api import _governance
from runink.schemas import errors

if TYPE_CHECKING:
    from runink.cli import _app

log = logging.getLogger("runink.up")


@dataclass
class Cluster:
    """What components get: the running pieces of this node's control plane."""

    data_dir: Path
    barn: store.LocalBarn
    server: api.ApiServer
    pki: api.ClusterPKI
    config_path: Path
    port: int
    plugins: list[controllers.PluginInfo] = field(default_factory=list)
    controller_port: int | None = None
    manager: controllers.Manager | None = None
    node_name: str | None = None
    gitops_path: Path | None = None
    lineage_url: str | None = None
    metrics: controllers.Metrics = field(default_factory=controllers.Metrics)
    node_grace_period: float = 10.0
    agent_metrics_port: int | None = None
    fluentd: str | None = None


Component = Callable[[Cluster], Coroutine[Any, Any, None]]


class FileLineageSink:
    """Appends the run controller's OpenLineage events to ``<data dir>/lineage/events.jsonl``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    async def emit(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":")) + "\n"
        await asyncio.to_thread(self._append, line)

    def _append(self, line: str) -> None:
        with self.path.open("a") as f:
            f.write(line)


class GovernanceLineageSink:
    """The run controller's events -> the lineage store and catalog (the API server's ingest),
    and a copy in ``<data dir>/lineage/events.jsonl``.

    On the COMPLETE event of an llm step (job facet ``jobType.jobType == LLM_ANNOTATION``) it
    also loads the annotations the step wrote to its output dataset into the annotation store,
    with the step's service account as producer. The control plane loads them, rather than the
    step posting them, because slices hold no API credential today; the store skips ids it
    already has, so a re-emitted event or a re-run step never duplicates an annotation.
    """

    def __init__(
        self, server: api.ApiServer, path: Path, datasets_root: Path, *, batch: int = 1000
    ) -> None:
        self.server = server
        self.file = FileLineageSink(path)
        self.datasets_root = datasets_root
        self.batch = batch

    async def emit(self, event: dict[str, Any]) -> None:
        await self.file.emit(event)
        await self.server.ingest_lineage(event)
        job_type = ((event.get("job") or {}).get("facets") or {}).get("jobType") or {}
        if event.get("eventType") == "COMPLETE" and job_type.get("jobType") == "LLM_ANNOTATION":
            await self.load_annotations(event)

    def dataset_path(self, namespace: str, name: str, herd: str) -> Path | None:
        """Where the local agent put a step's output dataset (as agent/_datasets resolves it)."""
        if name.startswith("file://"):
            return Path(name[len("file://") :])
        if name.startswith("/"):
            return Path(name)
        if "://" in name or not namespace.startswith("runink://"):
            return None
        return self.datasets_root / herd / name

    async def load_annotations(self, event: dict[str, Any]) -> int:
        gov = self.server.governance
        if gov is None:
            return 0
        step = ((event.get("run") or {}).get("facets") or {}).get("runink_step") or {}
        herd = str(step.get("herd") or "default")
        caller = f"system:serviceaccount:{herd}:{step.get('serviceAccount') or 'default'}"
        written = 0
        for out in event.get("outputs") or []:
            path = self.dataset_path(str(out.get("namespace")), str(out.get("name")), herd)
            if path is None or not path.is_file():
                continue
            try:
                items = await asyncio.to_thread(_read_annotations, path, herd)
            except (OSError, ValueError) as e:
                log.warning("annotations in %s not loaded: %s", path, e)
                continue
            for i in range(0, len(items), self.batch):
                chunk = items[i : i + self.batch]
                result = await asyncio.to_thread(gov.put_annotations, chunk, caller=caller)
                written += int(result["written"])
        return written


def _read_annotations(path: Path, herd: str) -> list[dict[str, Any]]:
    items = []
    with path.open() as f:
        for line in f:
            if line.strip():
                obj = json.loads(line)
                obj.setdefault("metadata", {}).setdefault("herd", herd)
                items.append(obj)
    return items


async def run_controller_manager(cluster: Cluster) -> None:
    """The controller manager: every built-in controller and every plugin's, on the Barn."""
    mgr = controllers.Manager(
        cluster.barn, http_port=cluster.controller_port, metrics=cluster.metrics
    )
    cluster.manager = mgr
    for info in cluster.plugins:
        if info.ok:
            mgr.add(*info.controllers, plugin=info.name)
        else:
            mgr.add_broken_plugin(info.name, str(info.error))
    mgr.add(
        *controllers.builtin_controllers(
            mgr,
            node_grace_period=cluster.node_grace_period,
            lineage=GovernanceLineageSink(
                cluster.server,
                cluster.data_dir / "lineage" / "events.jsonl",
                # The local agent's datasets root (agent.SliceRuntime's default for its state dir).
                cluster.data_dir / "datasets",
            ),
        )
    )
    try:
        await mgr.run()
    finally:
        cluster.manager = None


class SecretCache:
    """Secrets for the local agent, kept current by a watch (as the kubelet's secret manager).

    The agent asks synchronously while it prepares a launch; the cache answers from memory.
    """

    def __init__(
        self,
        barn: store.LocalBarn,
        opener: Callable[[dict[str, Any]], dict[str, bytes]] | None = None,
    ) -> None:
        self.barn = barn
        self.opener = opener
        self._data: dict[tuple[str, str], dict[str, bytes]] = {}
        self.synced = asyncio.Event()

    def decode(self, obj: dict[str, Any]) -> dict[str, bytes]:
        """Clear values: from the envelope the API sealed them in, or (unsealed) data."""
        spec = obj.get("spec") or {}
        if spec.get("encrypted") and self.opener is not None:
            return self.opener(obj)
        out = {k: base64.b64decode(v) for k, v in (spec.get("data") or {}).items()}
        out.update({k: str(v).encode() for k, v in (spec.get("stringData") or {}).items()})
        return out

    def _put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._data[(str(meta.get("herd")), str(meta["name"]))] = self.decode(obj)

    async def run(self) -> None:
        listed = await self.barn.list("Secret")
        for obj in listed.items:
            self._put(obj)
        self.synced.set()
        async for ev in self.barn.watch("Secret", since=listed.revision):
            if ev.type == "DELETED":
                meta = ev.object["metadata"]
                self._data.pop((str(meta.get("herd")), str(meta["name"])), None)
            elif ev.type != "BOOKMARK":
                self._put(ev.object)

    def resolve(self, herd: str, name: str) -> dict[str, bytes]:
        try:
            return dict(self._data[(herd, name)])
        except KeyError:
            raise errors.NotFound(f"secret {name!r} not found in herd {herd!r}") from None


def node_name() -> str:
    """This host's name as a DNS label (the local agent's Node name)."""
    raw = socket.gethostname().split(".")[0].lower()
    name = re.sub(r"[^a-z0-9-]+", "-", raw).strip("-")[:63]
    return name or "local"


_host_node_name = node_name  # `serve` has a parameter of that name


async def run_local_agent(cluster: Cluster) -> None:
    """The node agent for this host: registers a Node and runs the Slices bound to it."""
    launcher = await asyncio.to_thread(agent.Launcher.start)
    try:
        security = getattr(cluster.server, "security", None)
        secrets = SecretCache(cluster.barn, security.open_secret if security else None)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(secrets.run())
            await secrets.synced.wait()
            config = agent.AgentConfig(
                node_name=cluster.node_name or node_name(), fluentd=cluster.fluentd
            )
            tag = hashlib.sha256(str(cluster.data_dir.resolve()).encode()).hexdigest()[:6]
            await agent.run_agent(
                cluster.barn,
                config,
                cluster.data_dir / "agent",
                launcher,
                metrics_port=cluster.agent_metrics_port,
                datasets_root=cluster.data_dir / "datasets",
                resolve_secret=secrets.resolve,
                # Per data dir: an agent's recovery sweeps every cgroup and netns under its own
                # names, so two clusters on one machine must never share them.
                cgroup_parent=f"runink-{tag}",
                netns_prefix=f"u{tag[:3]}",
            )
    finally:
        await asyncio.to_thread(launcher.close)


async def supervise(
    name: str, component: Component, cluster: Cluster, say: Callable[[str], None]
) -> None:
    """Run a component; if it fails, report why and restart it with backoff (1 s to 30 s).

    One broken component (an agent that cannot register, say) must not take the API down.
    """
    delay = 1.0
    while True:
        started = time.monotonic()
        try:
            await component(cluster)
            return
        except Exception as e:  # the isolation boundary between components
            log.exception("component %s failed", name)
            say(f"warning: {name} failed ({type(e).__name__}: {e}); restarting in {delay:.0f}s")
        if time.monotonic() - started > 60:
            delay = 1.0
        await asyncio.sleep(delay)
        delay = min(delay * 2, 30.0)


async def run_gitops(cluster: Cluster) -> None:
    """The GitOps controller. It applies through the API (server-side apply, field ownership,
    admission, RBAC), so it runs its own manager over a gRPC client rather than the Barn."""
    from runink.cli import _gitops

    async with api.Client.from_config(cluster.config_path) as client:
        if cluster.gitops_path is not None:
            source = _gitops.source_for_path(cluster.gitops_path)
            await client.apply(source, "runink-up", force=True)
        manager = controllers.Manager(client, resync_period=600.0)
        ops = controllers.GitOps(
            client, recorder=manager.recorder, cache_dir=cluster.data_dir / "gitops-cache"
        )
        manager.add(ops.controller)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(ops.run_watches())
                tg.create_task(manager.run())
        finally:
            manager.stop()


def components(*, with_agent: bool = True) -> list[tuple[str, Component]]:
    """Everything ``runink up`` runs beside the API server. Add one line per component."""
    out: list[tuple[str, Component]] = [
        ("controllers", run_controller_manager),
        ("gitops", run_gitops),
    ]
    if with_agent:
        out.append(("agent", run_local_agent))
    return out


def default_data_dir() -> Path:
    """/var/lib/runink for root (slices run as other UIDs and must reach their datasets, and
    /root is 0700); ~/.local/share/runink (or $XDG_DATA_HOME) otherwise."""
    if os.geteuid() == 0 and not os.environ.get("XDG_DATA_HOME"):
        return Path("/var/lib/runink")
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "runink"


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Exclusive use of ``data_dir``; a second ``runink up`` on it gets a clear error."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # 0711: slices run as throwaway UIDs and must traverse to <data dir>/datasets; nothing here
    # can be listed, and what is private (pki/, secrets/, barn/, agent state) is 0700 below.
    data_dir.chmod(0o711)
    path = data_dir / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise errors.Unavailable(
                f"data dir {data_dir} is in use by another runink up (pid {holder}); "
                "stop it or pass --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


async def _ensure_default_herd(barn: store.LocalBarn) -> None:
    try:
        await barn.get("Herd", "default")
    except errors.NotFound:
        herd = schemas.validate(
            {
                "apiVersion": "runink.io/v1",
                "kind": "Herd",
                "metadata": {"name": "default"},
                "spec": {},
            }
        )
        with contextlib.suppress(errors.AlreadyExists):
            await barn.create(herd)


def write_client_config(
    path: Path | None,
    pki: api.ClusterPKI,
    port: int,
    name: str = "local",
    *,
    server: str | None = None,
) -> Path:
    """Write (or refresh) the admin context ``name``. ``server`` overrides ``127.0.0.1:port``,
    e.g. ``ipv4:127.0.0.1:7443,127.0.0.1:7453`` so gRPC fails over between replicas."""
    config = api.load_config(path)
    herd = config.contexts[name].herd if name in config.contexts else "default"
    ctx = api.Context(
        name=name,
        server=server or f"127.0.0.1:{port}",
        certificate_authority_data=pki.ca.cert_pem.decode(),
        client_certificate_data=pki.admin.cert_pem.decode(),
        client_key_data=pki.admin.key_pem.decode(),
        herd=herd,
    )
    return config.with_context(ctx).save(path)


def _resolved(path: str | None) -> Path | None:
    return Path(path).expanduser().resolve() if path else None


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()


@contextlib.asynccontextmanager
async def serve(
    data_dir: Path,
    *,
    port: int,
    config: Path | None,
    say: Callable[[str], None],
    controller_port: int | None = None,
    with_components: Sequence[tuple[str, Component]] | None = None,
    node_name: str | None = None,
    gitops_path: Path | None = None,
    lineage_port: int | None = None,
    node_grace_period: float = 10.0,
    agent_metrics_port: int | None = None,
    fluentd: str | None = None,
) -> AsyncIterator[Cluster]:
    """Bring the whole single-node cluster up, yield it, and take it down again (also on error)."""
    with data_dir_lock(data_dir):
        pki = api.ensure_cluster_pki(data_dir / "pki")
        (data_dir / "barn").mkdir(mode=0o700, exist_ok=True)
        barn = store.open_local(data_dir / "barn")
        lineage = store.open_lineage_store(data_dir / "governance" / "lineage")
        annotations = store.open_annotation_store(data_dir / "governance" / "annotations")
        # Plugins register their kinds on import, so load them before the API serves anything.
        metrics = controllers.Metrics()
        plugins = controllers.load_plugins(barn, metrics=metrics)
        for info in plugins:
            if not info.ok:
                say(f"warning: plugin {info.name} failed to load: {info.error}")
        comps = components() if with_components is None else with_components
        local_agent = any(name == "agent" for name, _ in comps)
        server = api.ApiServer(
            barn,
            ca_pem=pki.ca.cert_pem,
            server_pair=pki.server,
            port=port,
            # Security: keyring, sealing/SA keys, API keys, bootstrap token and audit log live in
            # the data dir; the token port (bearer clients: OIDC, API keys, bootstrap) is port+2.
            security=api.SecurityConfig(data_dir=data_dir),
            ca_pair=pki.ca,
            # `runink logs`: slices of this host's agent are read from its state dir, the others
            # are proxied from their node's agent (mutual TLS, the agent-client certificate).
            log_source=agent.SliceLogSource.for_state_dir(data_dir / "agent"),
            local_node=(node_name or _host_node_name()) if local_agent else None,
            agent_client=pki.agent_client,
            token_port=port + 2 if port else 0,
            governance=_governance.GovernanceService(lineage, annotations),
        )
        lineage_http = None
        try:
            await _ensure_default_herd(barn)
            bound = await server.start()
            lineage_http = server.lineage_http(
                port=lineage_port if lineage_port is not None else (bound + 3 if port else 0)
            )
            lineage_http.start()
            config_path = write_client_config(config, pki, bound)
            cluster = Cluster(
                data_dir,
                barn,
                server,
                pki,
                config_path,
                bound,
                plugins,
                controller_port if controller_port is not None else (bound + 1 if port else 0),
                node_name=node_name,
                gitops_path=gitops_path,
                lineage_url=lineage_http.url,
                metrics=metrics,
                node_grace_period=node_grace_period,
                agent_metrics_port=agent_metrics_port,
                fluentd=fluentd,
            )
            async with asyncio.TaskGroup() as tg:
                tasks = [
                    tg.create_task(supervise(name, component, cluster, say), name=name)
                    for name, component in comps
                ]
                try:
                    yield cluster
                finally:
                    for t in tasks:
                        t.cancel()
        finally:
            if lineage_http is not None:
                await asyncio.to_thread(lineage_http.stop)
            await server.stop(1.0)
            await barn.close()
            lineage.close()
            annotations.close()


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGINT/SIGTERM sent to *this* process.

    Not ``loop.add_signal_handler``: it routes signals through a wakeup fd that a forked child
    (pyroute2 and ctypes fork helpers) inherits, so a SIGTERM sent to such a child would stop us.
    """
    loop = asyncio.get_running_loop()
    me = os.getpid()

    def handler(signum: int, frame: object) -> None:
        if os.getpid() == me:
            loop.call_soon_threadsafe(stop.set)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


async def run(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    data_dir = _data_dir(args)
    stop = asyncio.Event()
    with stop_on_signals(stop):
        async with serve(
            data_dir,
            port=args.port,
            config=Path(args.config) if args.config else None,
            say=say,
            controller_port=args.controller_port,
            with_components=components(with_agent=not args.no_agent),
            node_name=args.node_name,
            gitops_path=_resolved(args.gitops),
            node_grace_period=args.node_grace_period,
            agent_metrics_port=args.agent_metrics_port,
            fluentd=args.fluentd,
            lineage_port=getattr(args, "lineage_port", None),
        ) as cluster:
            say(f"runink is up: API on 127.0.0.1:{cluster.port}, data in {data_dir}")
            say(f"admin credentials written to {cluster.config_path} (context 'local')")
            if cluster.controller_port:
                say(
                    f"controllers: metrics and health on http://127.0.0.1:{cluster.controller_port}"
                )
            if cluster.lineage_url:
                say(f"lineage: OpenLineage events to POST {cluster.lineage_url} (bearer token)")
            if cluster.gitops_path is not None:
                say(f"gitops: following {cluster.gitops_path} (GitSource default/local)")
            if args.ready_file:
                # Written last: its appearance means "the API answers" to `up --detach`.
                await asyncio.to_thread(Path(args.ready_file).write_text, f"{cluster.port}\n")
            await stop.wait()
            say("shutting down")
    return 0


def detach(args: argparse.Namespace, say: Callable[[str], None]) -> int:
    """Start ``runink up`` in the background and return once its API answers (or it failed)."""
    data_dir = Path(args.data_dir).expanduser() if args.data_dir else default_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ready = data_dir / "ready"
    ready.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "runink.cli", *(["--config", args.config] if args.config else [])]
    argv += [
        "up",
        "--data-dir",
        str(data_dir),
        "--port",
        str(args.port),
        "--ready-file",
        str(ready),
    ]
    # Every other option of this `up` goes to the background one (it once dropped them).
    for flag, value in (
        ("--controller-port", args.controller_port),
        ("--gitops", args.gitops),
        ("--lineage-port", args.lineage_port),
        ("--node-grace-period", args.node_grace_period),
        ("--agent-metrics-port", args.agent_metrics_port),
        ("--fluentd", args.fluentd),
        ("--node-name", args.node_name),
    ):
        if value is not None:
            argv += [flag, str(value)]
    if args.no_agent:
        argv.append("--no-agent")
    with open(data_dir / "up.log", "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready.exists() and ready.read_text().strip():
            say(
                f"runink is up in the background (pid {proc.pid}): API on 127.0.0.1:{ready.read_text().strip()}"
            )
            return 0
        if proc.poll() is not None:
            raise errors.Unavailable(
                f"runink up exited with {proc.returncode}; see {data_dir / 'up.log'}:\n"
                + (data_dir / "up.log").read_text()[-2000:]
            )
        time.sleep(0.1)
    raise errors.Unavailable(f"runink up did not become ready in 60 s; see {data_dir / 'up.log'}")


def stop(data_dir: Path, timeout: float, say: Callable[[str], None]) -> int:
    """Stop the ``runink up`` holding *data_dir*'s lock: SIGTERM, then wait for the lock."""
    path = data_dir / "lock"
    if not path.exists():
        say(f"runink is not running on {data_dir} (no lock file)")
        return 0
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: running
        else:
            say(f"runink is not running on {data_dir}")
            return 0
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if not text.isdigit():
            raise errors.Unavailable(
                f"{path} is locked but names no pid ({text!r}); stop that process yourself"
            )
        pid = int(text)
        os.kill(pid, signal.SIGTERM)
        say(f"stopping runink up (pid {pid}) on {data_dir}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break  # released: it is gone (or going; nothing holds the data dir any more)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise errors.Unavailable(
                        f"runink up (pid {pid}) did not stop within {timeout:g} s; "
                        f"see {data_dir / 'up.log'}, or `kill -9 {pid}`"
                    ) from None
                time.sleep(0.1)
    finally:
        os.close(fd)
    say("stopped")
    return 0


async def cmd_down(ctx: _app.Ctx) -> int:
    a = ctx.args

    def down() -> int:
        data_dir = Path(a.data_dir).expanduser() if a.data_dir else default_data_dir()
        return stop(data_dir, a.timeout, lambda t: ctx.streams.write(t + "\n"))

    return await asyncio.to_thread(down)


async def cmd_up(ctx: _app.Ctx) -> int:
    def say(text: str) -> None:
        ctx.streams.write(text + "\n")

    if ctx.args.replicas > 1:
        from runink.cli import _cluster

        # Blocks this (otherwise idle) loop on purpose: it must run on the main thread to turn
        # SIGTERM into a clean stop of the replica processes it starts.
        return _cluster.up_replicas(ctx.args, ctx.args.replicas, say)
    if ctx.args.detach:
        return await asyncio.to_thread(detach, ctx.args, say)
    return await run(ctx.args, say)


def add_parser(sub: Any) -> None:
    up = sub.add_parser("up", help="run a whole single-node cluster in this process")
    up.add_argument(
        "--data-dir", help="where objects and TLS material live (default ~/.local/share/runink)"
    )
    up.add_argument(
        "--port", type=int, default=7443, help="API port on 127.0.0.1 (0: any free port)"
    )
    up.add_argument(
        "--detach", action="store_true", help="run in the background; return when ready"
    )
    up.add_argument(
        "--controller-port",
        type=int,
        default=None,
        help="port for the controllers' /metrics, /healthz and /controllers (default: API port + 1)",
    )
    up.add_argument(
        "--no-agent",
        action="store_true",
        help="run no local agent (nodes join with `runink agent`)",
    )
    up.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="control-plane replicas (3 or 5: a local Raft cluster of processes, no agent)",
    )
    up.add_argument(
        "--gitops", metavar="PATH", help="follow the Git repository at PATH (prune, self-heal)"
    )
    up.add_argument(
        "--lineage-port",
        type=int,
        default=None,
        help="HTTPS port of POST /api/v1/lineage (OpenLineage producers; default: API port + 3)",
    )
    up.add_argument(
        "--node-grace-period",
        type=float,
        default=10.0,
        help="seconds a node may stay NotReady before its slices fail with NodeLost",
    )
    up.add_argument(
        "--agent-metrics-port", type=int, default=None, help="serve the agent's /metrics here"
    )
    up.add_argument("--fluentd", metavar="HOST:PORT", help="ship slice logs to Fluentd (forward)")
    up.add_argument("--node-name", help="Node name of the local agent (default: the host name)")
    up.add_argument("--ready-file", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the runink up (e.g. --detach) running on a data dir")
    down.add_argument("--data-dir", help="its data dir (default ~/.local/share/runink)")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it to stop")
    down.set_defaults(func=cmd_down)


__all__ = [
    "Cluster",
    "Component",
    "FileLineageSink",
    "GovernanceLineageSink",
    "add_parser",
    "components",
    "data_dir_lock",
    "run",
    "serve",
    "write_client_config",
]
