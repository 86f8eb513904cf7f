"""The Runi Agent daemon: registers its Node, heartbeats, and runs the Slices bound to it.

It talks to the control plane through `Client`, a Protocol with the Barn's method names (the
in-process store, the gRPC client and test fakes satisfy it), and runs slices through
`SliceRuntime`. Slice phases it writes (status.phase), one status write per arrow::

    Pending --(bound here, launched)--> Running --exit 0--> Succeeded
       |  |                                `--error/signal/OOM/timeout/cancel--> Failed
       |  `--launched, and already exited when the agent reports--> Succeeded | Failed
       `--launch failed--> Failed (reason StartError)

(``Starting`` is no longer written: a launch takes milliseconds, and a slice whose agent died
while launching it is still Pending and bound here, so the restarted agent launches it again.)

A Slice deleted, cancelled (spec.cancelled) or given a deletionTimestamp is stopped with a grace
period, then its whole cgroup is killed. On start the agent recovers slices left by its previous
process and fails, as Lost, Running slices of this node that it has no trace of.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from runink import __version__
from runink.agent import _runtime
from runink.schemas import errors, quantity
from runink.store import _api

SecretResolver = Callable[[str, str], Mapping[str, bytes]]
"""(herd, secret name) -> {key: value}: how the agent obtains a Secret's clear data."""
AsyncSecretResolver = Callable[[str, str], Awaitable[Mapping[str, bytes]]]
"""The same, asking the API server (``runink.api.Client.reveal``) for a standalone agent."""


class Client(Protocol):
    """What the agent needs from the control plane (same signatures as the Barn)."""

    async def create(self, obj: _api.Obj) -> _api.Obj: ...

    async def get(
        self, kind: str, name: str, herd: str | None = None, *, linearizable: bool = False
    ) -> _api.Obj: ...

    async def list(
        self,
        kind: str,
        herd: str | None = None,
        *,
        selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
        linearizable: bool = False,
    ) -> _api.ListResult: ...

    async def update(self, obj: _api.Obj) -> _api.Obj: ...

    async def update_status(self, obj: _api.Obj) -> _api.Obj: ...

    async def delete(
        self, kind: str, name: str, herd: str | None = None, *, resource_version: str | None = None
    ) -> _api.Obj: ...

    def watch(
        self,
        kind: str | None = None,
        herd: str | None = None,
        *,
        since: _api.Revision | None = None,
        selector: str | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[_api.WatchEvent]: ...


@dataclass(frozen=True, slots=True)
class AgentConfig:
    node_name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    heartbeat_interval: float = 10.0
    lease_duration: int = 40
    stop_grace: float = 10.0
    fluentd: str | None = None
    """``HOST:PORT`` of a Fluentd/Fluent Bit forward input: slice log lines are shipped there."""
    log_retention: float = 24 * 3600.0
    """Seconds a finished slice's state and log dir stay on disk while its Slice object exists."""
    housekeeping_interval: float = 300.0
    """How often finished slices' dirs are checked against the Slices that still exist."""
    addresses: list[dict[str, str]] = field(default_factory=list)
    """Node ``status.addresses`` (``{"type": "InternalIP", "address": ...}``): how the API server
    reaches this agent's endpoints."""
    log_port: int | None = None
    """The port of this agent's slice log endpoint (``status.daemonEndpoints.logs.port``)."""


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- capacity ----------------------------------------------------------------------------------
def _nvml_gpus() -> list[dict[str, Any]] | None:
    """GPUs through NVML (package nvidia-ml-py, module pynvml); None when NVML is unusable."""
    try:
        pynvml: Any = importlib.import_module("pynvml")
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # library missing, driver not loaded
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            out.append(
                {
                    "index": i,
                    "uuid": str(pynvml.nvmlDeviceGetUUID(h)),
                    "model": str(pynvml.nvmlDeviceGetName(h)),
                    "memory": int(pynvml.nvmlDeviceGetMemoryInfo(h).total),
                }
            )
        return out
    finally:
        pynvml.nvmlShutdown()


def detect_gpus() -> list[dict[str, Any]]:
    """GPUs through NVML, else nvidia-smi, else /proc/driver/nvidia; [] when none."""
    gpus = _nvml_gpus()
    if gpus is not None:
        return gpus
    smi = shutil.which("nvidia-smi")
    if smi:
        proc = subprocess.run(
            [smi, "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if proc.returncode == 0:
            gpus = []
            for line in proc.stdout.strip().splitlines():
                idx, uuid, name, mem = (x.strip() for x in line.split(","))
                gpus.append(
                    {"index": int(idx), "uuid": uuid, "model": name, "memory": int(mem) << 20}
                )
            return gpus
    nv = Path("/proc/driver/nvidia/gpus")
    if nv.is_dir():
        return [{"index": i} for i, _ in enumerate(sorted(nv.iterdir()))]
    return []


def detect_capacity() -> dict[str, Any]:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    gpus = detect_gpus()
    cpu = len(os.sched_getaffinity(0))
    return {
        "capacity": {"cpu": str(cpu), "memory": mem_kib * 1024, "gpu": len(gpus)},
        "gpus": gpus,
    }


# -- Slice object -> SliceSpec -----------------------------------------------------------------
def spec_from_slice(
    obj: _api.Obj, resolve_secret: SecretResolver | None = None
) -> _runtime.SliceSpec:
    meta, spec = obj["metadata"], obj["spec"]
    herd = meta.get("herd") or "default"
    res = spec.get("resources") or {}
    secrets: dict[str, bytes] = {}
    secret_env: dict[str, str] = {}
    for use in spec.get("secrets") or []:
        if resolve_secret is None:
            raise errors.Invalid(f"slice uses secret {use['secret']!r} but no resolver is set")
        data = resolve_secret(herd, use["secret"])
        keys = [use["key"]] if use.get("key") else sorted(data)
        for key in keys:
            fname = f"{use['secret']}/{key}"
            secrets[fname] = data[key]
            if use.get("as", "env") == "env":
                var = use.get("env") if use.get("key") and use.get("env") else key.upper()
                secret_env[str(var).replace("-", "_").replace(".", "_")] = fname

    def datasets(refs: list[dict[str, Any]]) -> dict[str, str]:
        # name -> uri, else the bare name; the runtime resolves both (agent/_datasets.py).
        return {
            str(r.get("name") or r.get("uri")): str(r.get("uri") or r.get("name")) for r in refs
        }

    command = tuple(spec.get("command") or ()) + tuple(spec.get("args") or ())
    return _runtime.SliceSpec(
        name=meta["name"],
        herd=herd,
        uid=str(meta.get("uid") or meta["name"]),
        command=command if spec.get("command") else (),
        python=spec.get("python"),
        env=dict(spec.get("env") or {}),
        secrets=secrets,
        secret_env=secret_env,
        resources=_runtime.Resources(
            cpu_millicores=quantity.parse_cpu(res.get("cpu", "100m")),
            memory_bytes=quantity.parse_memory(res.get("memory", "128Mi")),
            pids=int(res["pids"]) if "pids" in res else 1024,
        ),
        network=spec.get("network", "isolated"),
        service_account=spec.get("serviceAccount") or "default",
        timeout=float(spec["timeoutSeconds"]) if spec.get("timeoutSeconds") else None,
        params=dict(spec.get("params") or {}),
        inputs=datasets(spec.get("inputs") or []),
        outputs=datasets(spec.get("outputs") or []),
    )


def _ready(node: _api.Obj) -> list[dict[str, Any]]:
    """The Node's conditions with Ready=True (the agent is alive and renewing its lease)."""
    conds = [
        c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") != "Ready"
    ]
    old = next(
        (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"),
        None,
    )
    since = old["lastTransitionTime"] if old and old.get("status") == "True" else _now()
    ready = {
        "type": "Ready",
        "status": "True",
        "reason": "AgentReady",
        "message": "the agent is renewing its lease",
        "lastTransitionTime": since,
    }
    return [*conds, ready]


def _should_stop(obj: _api.Obj) -> bool:
    return bool(obj["spec"].get("cancelled") or obj["metadata"].get("deletionTimestamp"))


class Agent:
    """One node's agent. ``await agent.run()`` until cancelled."""

    def __init__(
        self,
        client: Client,
        runtime: _runtime.SliceRuntime,
        config: AgentConfig,
        resolve_secret: SecretResolver | None = None,
        *,
        reveal_secret: AsyncSecretResolver | None = None,
    ) -> None:
        self.client = client
        self.runtime = runtime
        self.config = config
        self.resolve_secret = resolve_secret
        self.reveal_secret = reveal_secret
        self._tasks: dict[str, asyncio.Task[None]] = {}  # slice key -> its runner
        self._ids: dict[str, str] = {}  # slice key -> runtime id
        self._cancelled: dict[str, str] = {}  # slice key -> cancel reason, once asked to stop
        # Slices the control plane already ended (NodeLost while we were away or partitioned):
        # we stop them and must not overwrite their status with our own outcome.
        self._superseded: set[str] = set()
        self._tg: asyncio.TaskGroup | None = None

    @staticmethod
    def _key(obj: _api.Obj) -> str:
        return str(_api.ObjectKey.of(obj))

    # -- node --------------------------------------------------------------------------------
    async def register(self) -> _api.Obj:
        c = self.config
        meta = {"name": c.node_name, "labels": dict(c.labels)}
        try:
            node = await self.client.get("Node", c.node_name)
            node["metadata"]["labels"] = {**node["metadata"].get("labels", {}), **c.labels}
            node["spec"] = {**node.get("spec", {}), "taints": list(c.taints)}
            node = await self.client.update(node)
        except errors.NotFound:
            node = await self.client.create(
                {
                    "apiVersion": "runink.io/v1",
                    "kind": "Node",
                    "metadata": meta,
                    "spec": {"taints": list(c.taints)},
                }
            )
        cap = await asyncio.to_thread(detect_capacity)
        status = {
            "capacity": cap["capacity"],
            "allocatable": cap["capacity"],
            "gpus": cap["gpus"],
            "heartbeatTime": _now(),
            "leaseDurationSeconds": c.lease_duration,
            "agentVersion": __version__,
            "conditions": _ready(node),
            # Where this agent serves logs now (an old port from a previous process is dropped).
            "addresses": list(c.addresses),
            "daemonEndpoints": {"logs": {"port": c.log_port}} if c.log_port else {},
        }
        node["metadata"].pop("resourceVersion", None)  # the agent owns its Node's status: no CAS
        return await self.client.update_status({**node, "status": status})

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            node = await self.client.get("Node", self.config.node_name)
            node["status"] = {
                **(node.get("status") or {}),
                "heartbeatTime": _now(),
                "conditions": _ready(node),
            }
            node["metadata"].pop("resourceVersion", None)
            await self.client.update_status(node)

    # -- slices ------------------------------------------------------------------------------
    async def _set_status(self, obj: _api.Obj, **fields: Any) -> None:
        try:
            cur = await self.client.get(
                "Slice", obj["metadata"]["name"], obj["metadata"].get("herd")
            )
        except errors.NotFound:
            return
        cur["status"] = {**(cur.get("status") or {}), **fields}
        cur["metadata"].pop("resourceVersion", None)  # the agent owns this status: no CAS
        await self.client.update_status(cur)

    async def _run_slice(self, obj: _api.Obj) -> None:
        key = self._key(obj)
        try:
            spec = spec_from_slice(obj, await self._resolver_for(obj))
        except (errors.RuninkError, KeyError, ValueError) as e:
            await self._set_status(obj, phase="Failed", reason="InvalidSpec", message=str(e))
            return
        self._ids[key] = spec.id
        attempt = obj["spec"].get("attempt", 1)
        try:
            await self.runtime.start(spec)
        except (OSError, RuntimeError, ValueError) as e:
            await self._set_status(
                obj,
                phase="Failed",
                reason="StartError",
                message=str(e),
                completionTime=_now(),
                attempt=attempt,
            )
            return
        if await self._set_started(obj, spec.id, attempt):
            return
        outcome = await self.runtime.wait(spec.id)
        await self._report(obj, outcome)

    async def _set_started(self, obj: _api.Obj, sid: str, attempt: int) -> bool:
        """Write Running, or the final status when the slice has already ended by now (one
        status write instead of two). True when the final status was written."""
        try:
            cur = await self.client.get(
                "Slice", obj["metadata"]["name"], obj["metadata"].get("herd")
            )
        except errors.NotFound:
            return False  # deleted meanwhile: the runner waits for the stop, reports nothing
        outcome = self.runtime.outcome(sid)
        final = None if outcome is None else self._final_status(obj, outcome)
        if outcome is not None and final is None:
            return True  # superseded: someone else ended it
        fields = final or {"phase": "Running", "startTime": self.runtime.start_time(sid)}
        cur["status"] = {**(cur.get("status") or {}), **fields, "attempt": attempt}
        cur["metadata"].pop("resourceVersion", None)  # the agent owns this status: no CAS
        await self.client.update_status(cur)
        return final is not None

    async def _resolver_for(self, obj: _api.Obj) -> SecretResolver | None:
        """A sync resolver for this slice: the configured one, or its secrets fetched first."""
        if self.reveal_secret is None:
            return self.resolve_secret
        herd = obj["metadata"].get("herd") or "default"
        fetched: dict[str, Mapping[str, bytes]] = {}
        for use in obj["spec"].get("secrets") or []:
            if use["secret"] not in fetched:
                fetched[use["secret"]] = await self.reveal_secret(herd, use["secret"])
        return lambda _herd, name: fetched[name]

    def _final_status(self, obj: _api.Obj, o: _runtime.Outcome) -> dict[str, Any] | None:
        """The status fields for how the slice ended; None when it is not ours to report."""
        if self._key(obj) in self._superseded:
            return None
        reason: str = o.reason
        message = o.message
        cancel = self._cancelled.get(self._key(obj))
        if o.reason == "Stopped" and cancel is not None:
            reason, message = "Cancelled", cancel or message
        return {
            "phase": "Succeeded" if o.succeeded and o.reason == "Completed" else "Failed",
            "reason": reason,
            "message": message or None,
            "exitCode": o.exit_code,
            "signal": o.signal,
            "oomKilled": o.oom_killed,
            "startTime": o.start_time,
            "completionTime": o.finish_time,
            # Non-string results as JSON, so later steps and tools read them back exactly.
            "results": {
                k: v if isinstance(v, str) else json.dumps(v) for k, v in o.results.items()
            },
        }

    async def _report(self, obj: _api.Obj, o: _runtime.Outcome) -> None:
        fields = self._final_status(obj, o)
        if fields is not None:
            await self._set_status(obj, **fields)

    async def _stop(self, obj: _api.Obj) -> None:
        annotations = obj["metadata"].get("annotations") or {}
        self._cancelled[self._key(obj)] = str(annotations.get("runink.io/cancel-reason", ""))
        sid = self._ids.get(self._key(obj))
        if sid is not None and sid in self.runtime.running():
            await self.runtime.stop(sid, self.config.stop_grace)

    def _mine(self, obj: _api.Obj) -> bool:
        return bool(obj.get("spec", {}).get("nodeName") == self.config.node_name)

    async def _on_slice(self, obj: _api.Obj, deleted: bool) -> None:
        assert self._tg is not None
        if not self._mine(obj):
            return
        key = self._key(obj)
        phase = (obj.get("status") or {}).get("phase") or "Pending"
        running = key in self._tasks and not self._tasks[key].done()
        if deleted:
            sid = self._ids.get(key)
            if running:
                self._tg.create_task(self._stop(obj))
            elif sid is not None:
                # The Slice is gone: so are its logs (a task: the next events need not wait).
                self._tg.create_task(self.runtime.aforget(sid))
            return
        if _should_stop(obj):
            if running:
                self._tg.create_task(self._stop(obj))
            elif phase == "Pending":
                await self._set_status(obj, phase="Failed", reason="Cancelled")
            return
        if running and phase in ("Succeeded", "Failed") and key not in self._superseded:
            # Someone else ended it (the node lifecycle controller: NodeLost): the slice has
            # been retried elsewhere, so this copy must not run on, nor report.
            self._superseded.add(key)
            self._tg.create_task(self._stop(obj))
            return
        if key not in self._tasks and phase == "Pending":
            self._tasks[key] = self._tg.create_task(self._run_slice(obj))

    async def _recover(self) -> None:
        assert self._tg is not None
        recovered = {r.uid: r for r in await self.runtime.recover()}
        listing = await self.client.list("Slice")
        seen: set[str] = set()
        for obj in listing.items:
            if not self._mine(obj):
                continue
            uid = str(obj["metadata"].get("uid") or obj["metadata"]["name"])
            seen.add(uid)
            phase = (obj.get("status") or {}).get("phase")
            r = recovered.get(uid)
            key = self._key(obj)
            if r is not None and r.running and phase in ("Succeeded", "Failed"):
                # Failed as NodeLost while this agent was down, and retried elsewhere.
                self._superseded.add(key)
                self._ids[key] = r.id
                self._tasks[key] = self._tg.create_task(self._await_recovered(obj, r.id, True))
            elif r is not None and r.running:
                self._ids[key] = r.id
                self._tasks[key] = self._tg.create_task(self._await_recovered(obj, r.id))
            elif r is not None and r.outcome is not None:
                await self._report(obj, r.outcome)
            elif phase in ("Starting", "Running"):
                await self._set_status(
                    obj,
                    phase="Failed",
                    reason="Lost",
                    message="the agent restarted and found no trace of this slice",
                    completionTime=_now(),
                )

        for r in recovered.values():
            if r.running and r.uid not in seen:
                # Its Slice is gone (deleted, garbage-collected, or bound elsewhere now).
                self._tg.create_task(self.runtime.stop(r.id, self.config.stop_grace))

    async def _await_recovered(self, obj: _api.Obj, sid: str, stop: bool = False) -> None:
        if stop or _should_stop(obj):
            await self._stop(obj)
        await self._report(obj, await self.runtime.wait(sid))

    async def _watch_slices(self) -> None:
        while True:
            listing = await self.client.list("Slice")
            for obj in listing.items:
                await self._on_slice(obj, deleted=False)
            try:
                async for ev in self.client.watch("Slice", since=listing.revision):
                    if ev.type == "BOOKMARK":
                        continue
                    await self._on_slice(ev.object, deleted=ev.type == "DELETED")
            except errors.Gone:
                continue  # compacted past our revision: re-list

    async def _housekeep(self) -> None:
        """Delete finished slices' state and log dirs once their Slice objects are gone, or
        after the retention time; never a running slice's (`SliceRuntime.housekeep`)."""
        while True:
            listing = await self.client.list("Slice")
            keep = {
                _runtime.SliceSpec(
                    name=o["metadata"]["name"],
                    herd=o["metadata"].get("herd") or "default",
                    uid=str(o["metadata"].get("uid") or o["metadata"]["name"]),
                ).id
                for o in listing.items
                if self._mine(o)
            }
            await self.runtime.ahousekeep(keep, self.config.log_retention)
            await asyncio.sleep(min(self.config.log_retention, self.config.housekeeping_interval))

    async def run(self) -> None:
        """Register, recover, then heartbeat and run slices until cancelled."""
        await self.register()
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            await self._recover()
            tg.create_task(self._heartbeat())
            tg.create_task(self._watch_slices())
            tg.create_task(self._housekeep())


async def run_agent(
    client: Client,
    config: AgentConfig,
    state_dir: str | os.PathLike[str],
    launcher: Any,
    metrics_port: int | None = None,
    *,
    datasets_root: str | os.PathLike[str] | None = None,
    python: str | None = None,
    resolve_secret: SecretResolver | None = None,
    reveal_secret: AsyncSecretResolver | None = None,
    cgroup_parent: str | None = None,
    netns_prefix: str | None = None,
) -> None:
    """Composition helper for `runink agent` / `runink up`: runtime + metrics + Agent.

    *launcher* is a started `runink.agent.Launcher` (start it before heavy imports).
    *datasets_root* defaults to ``<state_dir>/../datasets``; it must not be under /tmp and its
    parents must be traversable by other users (a slice that names a dataset fails otherwise).
    Several agents on one machine need their own *cgroup_parent* and *netns_prefix* (1-4 letters
    or digits): each agent's recovery sweeps away the cgroups and netns under its own.
    """
    from runink.agent import _cgroups, _fluent, _metrics, _netpool

    forwarder = None
    if config.fluentd:
        host, port = _fluent.parse_address(config.fluentd)
        forwarder = _fluent.Forwarder(host, port, node=config.node_name)
    pool = None
    if _netpool.available():
        pool = _netpool.NetnsPool(2, prefix=netns_prefix or _netpool.DEFAULT_PREFIX)
    rt_ = _runtime.SliceRuntime(
        state_dir,
        launcher,
        datasets_root=datasets_root,
        python=python,
        log_forwarder=forwarder,
        cgroup_parent=cgroup_parent or _cgroups.PARENT,
        netns_pool=pool,
        netns_pool_size=0 if pool is None else 2,
    )
    async with rt_ as rt:
        server = None
        if metrics_port is not None:
            server = _metrics.serve(_metrics.make_registry(rt), metrics_port)
        try:
            await Agent(client, rt, config, resolve_secret, reveal_secret=reveal_secret).run()
        finally:
            if server is not None:
                with contextlib.suppress(OSError):
                    server.shutdown()
