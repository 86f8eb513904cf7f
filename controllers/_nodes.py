"""Node lifecycle and Herd usage: two small level-triggered controllers.

Node lifecycle: the agent renews ``status.heartbeatTime`` (its lease). A node whose lease has
expired is marked ``Ready=False`` (reason NodeStatusUnknown); once it has stayed so for the grace
period, its unfinished Slices are failed with reason NodeLost, so the run controller retries them
elsewhere per each step's retry policy. Herd usage: sums the resources of the Herd's bound,
unfinished Slices into ``status.usage`` so `runink get herds` shows usage against quota.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from runink.controllers import _client, _clock, _helpers, _informer, _runs, _types
from runink.schemas import errors, quantity

log = logging.getLogger("runink.controllers.nodes")

Obj = dict[str, Any]
TERMINAL = frozenset({"Succeeded", "Failed"})


def node_ready(node: Obj, now: float) -> tuple[bool, float | None]:
    """Whether the node's lease is current, and when it expires (``None``: never heartbeated)."""
    st = node.get("status") or {}
    beat = _runs.parse_time(st.get("heartbeatTime"))
    if beat is None:
        return False, None
    expires = beat + float(st.get("leaseDurationSeconds") or 40)
    return now < expires, expires


class NodeLifecycleReconciler:
    def __init__(
        self,
        client: _client.Client,
        informers: _informer.InformerSet,
        *,
        clock: _clock.Clock,
        recorder: _helpers.EventRecorder | None = None,
        grace_period: float = 10.0,
    ) -> None:
        self.client = client
        self.informers = informers
        self.clock = clock
        self.recorder = recorder
        self.grace_period = grace_period

    async def reconcile(self, request: _types.Request) -> _types.Result:
        try:
            node = await self.client.get("Node", request.name)
        except errors.NotFound:
            return _types.Result()
        now = self.clock.wall()
        alive, expires = node_ready(node, now)
        if expires is None:
            # Never heartbeated: the agent may be registering right now. Give it one lease
            # (Kubernetes' node startup grace period) before calling the node NotReady.
            created = _runs.parse_time(node["metadata"].get("creationTimestamp")) or now
            lease = float((node.get("status") or {}).get("leaseDurationSeconds") or 40)
            if now < created + lease:
                return _types.Result(requeue_after=created + lease - now)
        if alive:
            assert expires is not None
            return _types.Result(requeue_after=max(0.05, expires - now))
        cond = _helpers.get_condition(node, "Ready")
        if cond is None or cond.get("status") == "True":
            obj = {**node, "status": dict(node.get("status") or {})}
            msg = "the agent stopped renewing its lease" if expires else "the agent never reported"
            _helpers.set_condition(
                obj, "Ready", "False", "NodeStatusUnknown", msg, now=_runs.format_time(now)
            )
            try:
                node = await self.client.update_status(obj)
            except errors.Conflict:
                return _types.Result(requeue_after=0.05)
            if self.recorder is not None:
                await self.recorder.record(node, "Warning", "NodeNotReady", msg)
            return _types.Result(requeue_after=self.grace_period)
        since = _runs.parse_time(cond.get("lastTransitionTime")) or now
        if now - since < self.grace_period:
            return _types.Result(requeue_after=self.grace_period - (now - since))
        lost = [
            s
            for s in self.informers.for_kind("Slice").items()
            if (s.get("spec") or {}).get("nodeName") == request.name
            and (s.get("status") or {}).get("phase") not in TERMINAL
        ]
        for s in lost:
            st = {
                **(s.get("status") or {}),
                "phase": "Failed",
                "reason": "NodeLost",
                "message": f"node {request.name} stopped reporting for more than {self.grace_period:g}s",
                "completionTime": _runs.format_time(now),
            }
            try:
                await self.client.update_status({**s, "status": st})
            except (errors.Conflict, errors.NotFound):
                continue
        if lost and self.recorder is not None:
            await self.recorder.record(
                node, "Warning", "NodeLost", f"failed {len(lost)} slice(s) of an unreachable node"
            )
        return _types.Result(requeue_after=self.grace_period)


# Every slice of a step asks for the same quantities ("250m", "16Mi") and herd usage re-sums all
# of a herd's slices on each change: parse each distinct string once.
_cpu_text = functools.lru_cache(maxsize=1024)(quantity.parse_cpu)
_memory_text = functools.lru_cache(maxsize=1024)(quantity.parse_memory)


def _cpu(q: str | int | float) -> int:
    return _cpu_text(q) if isinstance(q, str) else quantity.parse_cpu(q)


def _memory(q: str | int | float) -> int:
    return _memory_text(q) if isinstance(q, str) else quantity.parse_memory(q)


def slices_to_herd(obj: Obj) -> Iterable[_types.Request]:
    herd = (obj.get("metadata") or {}).get("herd")
    return (_types.Request("Herd", None, herd),) if herd else ()


class HerdUsageReconciler:
    def __init__(self, client: _client.Client, informers: _informer.InformerSet) -> None:
        self.client = client
        self.informers = informers

    async def reconcile(self, request: _types.Request) -> _types.Result:
        try:
            herd = await self.client.get("Herd", request.name)
        except errors.NotFound:
            return _types.Result()
        cpu = memory = gpu = count = 0
        for s in self.informers.for_kind("Slice").items(herd=request.name):
            spec = s.get("spec") or {}
            if not spec.get("nodeName") or (s.get("status") or {}).get("phase") in TERMINAL:
                continue
            res = spec.get("resources") or {}
            cpu += _cpu(res.get("cpu", 0))
            memory += _memory(res.get("memory", 0))
            gpu += int(res.get("gpu") or 0)
            count += 1
        usage = {
            "cpu": quantity.format_cpu(cpu),
            "memory": quantity.format_memory(memory),
            "gpu": gpu,
            "slices": count,
        }
        status = dict(herd.get("status") or {})
        if status.get("usage") == usage and status.get("observedGeneration") == herd[
            "metadata"
        ].get("generation"):
            return _types.Result()
        status["usage"] = usage
        status["observedGeneration"] = herd["metadata"].get("generation")
        try:
            await self.client.update_status({**herd, "status": status})
        except errors.Conflict:
            return _types.Result(requeue_after=0.05)
        return _types.Result()
