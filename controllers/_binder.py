"""The scheduler controller: the I/O shell around the pure ``scheduling.schedule``.

Every change to a Slice, Node or Herd enqueues one cluster-wide key, so passes never overlap. A
pass snapshots the informers' caches, asks the pure scheduler for a plan, and writes each binding
(``spec.nodeName``) with compare-and-swap; a conflict means the object moved under us, and the next
pass re-evaluates it. Bindings the caches have not caught up with yet are *assumed* (as
kube-scheduler does) so a quick second pass cannot overcommit a node. Slices that cannot be placed
get a ``Scheduled=False`` condition whose message says why ("0/5 nodes available: ...").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

from runink.controllers import _client, _clock, _helpers, _informer, _types, scheduling
from runink.schemas import errors

log = logging.getLogger("runink.controllers.scheduler")

Obj = dict[str, Any]
SCHEDULER_KEY = _types.Request("Scheduler", None, "default")
TERMINAL = frozenset({"Succeeded", "Failed"})
BIND_CONCURRENCY = 64


def to_scheduler(obj: Obj) -> Iterable[_types.Request]:
    del obj
    return (SCHEDULER_KEY,)


def _rv(obj: Obj) -> int:
    return int((obj.get("metadata") or {}).get("resourceVersion") or 0)


class SchedulerReconciler:
    def __init__(
        self,
        client: _client.Client,
        informers: _informer.InformerSet,
        *,
        clock: _clock.Clock,
        recorder: _helpers.EventRecorder | None = None,
        policy: scheduling.Policy = "binpack",
        retry_unplaced_after: float = 5.0,
    ) -> None:
        self.client = client
        self.informers = informers
        self.clock = clock
        self.recorder = recorder
        self.policy: scheduling.Policy = policy
        self.retry_unplaced_after = retry_unplaced_after
        # (herd, name) -> the Slice as our binding wrote it, until the cache shows that version.
        self._assumed: dict[tuple[str, str], Obj] = {}

    def _slices(self) -> list[Obj]:
        out = []
        for obj in self.informers.for_kind("Slice").items():
            meta = obj.get("metadata") or {}
            key = (str(meta.get("herd")), str(meta.get("name")))
            assumed = self._assumed.get(key)
            if assumed is not None:
                if _rv(obj) >= _rv(assumed):
                    del self._assumed[key]
                else:
                    obj = assumed
            out.append(obj)
        return out

    async def reconcile(self, request: _types.Request) -> _types.Result:
        del request
        now = self.clock.wall()
        slices = self._slices()
        by_key = {
            scheduling.SliceKey(str(s["metadata"].get("herd")), str(s["metadata"]["name"])): s
            for s in slices
        }
        snap = scheduling.snapshot_from_objects(
            self.informers.for_kind("Node").items(),
            slices,
            self.informers.for_kind("Herd").items(),
            now=now,
            policy=self.policy,
        )
        if not snap.pending:
            return _types.Result()
        plan = scheduling.schedule(snap, now)
        conflicts = 0
        failure: errors.RuninkError | None = None
        limit = asyncio.Semaphore(BIND_CONCURRENCY)

        async def bind(key: scheduling.SliceKey, node: str) -> None:
            nonlocal conflicts, failure
            obj = by_key[key]
            bound = {**obj, "spec": {**obj["spec"], "nodeName": node}}
            async with limit:
                try:
                    written = await self.client.update(bound)
                except (errors.Conflict, errors.NotFound):
                    conflicts += 1
                    return
                except errors.RuninkError as e:
                    # Not raised here: the TaskGroup would cancel sibling binds whose writes may
                    # still commit, and then we could not assume them.
                    failure = failure or e
                    return
                self._assumed[(key.herd, key.name)] = written
                await self._mark_scheduled(written, node)

        # Concurrently: bindings are independent CAS writes, and the Barn commits writes that
        # arrive together in one transaction; one at a time, each waited for its own commit.
        async with asyncio.TaskGroup() as tg:
            for key, node in sorted(plan.placements.items()):
                tg.create_task(bind(key, node))
        if failure is not None:
            raise failure
        for key, reason in sorted(plan.unplaced.items()):
            await self._mark_unschedulable(by_key[key], reason)
        if conflicts:
            return _types.Result(requeue_after=0.05)
        if plan.unplaced:
            # Room may free up without an event we watch (e.g. a quota raised elsewhere).
            return _types.Result(requeue_after=self.retry_unplaced_after)
        return _types.Result()

    async def _mark_scheduled(self, obj: Obj, node: str) -> None:
        cond = _helpers.get_condition(obj, "Scheduled")
        if cond is None or cond.get("status") == "True":
            return  # nothing to clear: skip a write per slice on the fast path
        st = {**obj, "status": dict(obj.get("status") or {})}
        _helpers.set_condition(st, "Scheduled", "True", "Scheduled", f"bound to node {node}")
        # On a conflict the agent wrote first; its phase says more than this condition.
        with contextlib.suppress(errors.Conflict, errors.NotFound):
            await self.client.update_status(st)

    async def _mark_unschedulable(self, obj: Obj, reason: str) -> None:
        st = {**obj, "status": dict(obj.get("status") or {})}
        if not _helpers.set_condition(st, "Scheduled", "False", "Unschedulable", reason):
            return
        st["status"].setdefault("phase", "Pending")
        try:
            await self.client.update_status(st)
        except (errors.Conflict, errors.NotFound):
            return
        if self.recorder is not None:
            try:
                await self.recorder.record(obj, "Warning", "FailedScheduling", reason)
            except errors.RuninkError as e:
                log.warning("could not record FailedScheduling: %s", e)
