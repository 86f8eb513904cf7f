"""The pipeline controller: cron schedules become PipelineRuns; finished runs are pruned.

For a Pipeline with ``spec.schedule``, each pass finds the latest firing time that has not been
run yet (since ``status.lastScheduleTime``, or since creation), honours ``startingDeadlineSeconds``
(a firing missed for longer is skipped), ``suspend`` and the ``concurrencyPolicy`` (Allow, Forbid:
skip while a run is active, Replace: cancel the active runs first), and creates a run named after
the firing minute so two passes can never start the same firing twice (as CronJob does). It then
requeues itself for the next firing. History: keeps ``historyLimit.successful`` / ``.failed``
finished runs and deletes runs older than ``ttlSecondsAfterFinished``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from typing import Any

from runink.controllers import _client, _clock, _cron, _helpers, _runs, _types
from runink.schemas import errors

log = logging.getLogger("runink.controllers.pipelines")

Obj = dict[str, Any]
ANNOTATION_SCHEDULED = "runink.io/scheduled-at"
TERMINAL = _runs.TERMINAL_RUN


def make_run(
    pipeline: Obj,
    *,
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
    service_account: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Obj:
    """A new PipelineRun of ``pipeline`` (owned by it, so deleting the pipeline collects it)."""
    meta = pipeline["metadata"]
    run_name = name or f"{meta['name'][:50]}-{secrets.token_hex(3)}"
    spec: Obj = {"pipelineRef": {"name": meta["name"]}, "params": dict(params or {})}
    if service_account:
        spec["serviceAccount"] = service_account
    run: Obj = {
        "apiVersion": _runs.API_VERSION,
        "kind": "PipelineRun",
        "metadata": {
            "name": run_name,
            "herd": meta.get("herd"),
            "labels": {_runs.LABEL_PIPELINE: meta["name"]},
            "annotations": dict(annotations or {}),
        },
        "spec": spec,
    }
    _helpers.set_controller_reference(pipeline, run)
    return run


class PipelineReconciler:
    def __init__(
        self,
        client: _client.Client,
        *,
        clock: _clock.Clock,
        recorder: _helpers.EventRecorder | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.recorder = recorder

    async def reconcile(self, request: _types.Request) -> _types.Result:
        try:
            pipeline = await self.client.get("Pipeline", request.name, request.herd)
        except errors.NotFound:
            return _types.Result()
        if (pipeline.get("metadata") or {}).get("deletionTimestamp"):
            return _types.Result()
        now = self.clock.wall()
        runs = [
            r
            for r in (
                await self.client.list(
                    "PipelineRun", request.herd, selector=f"{_runs.LABEL_PIPELINE}={request.name}"
                )
            ).items
            if _helpers.is_controlled_by(r, pipeline)
        ]
        requeue: list[float] = []
        status = dict(pipeline.get("status") or {})
        spec = pipeline.get("spec") or {}
        schedule = spec.get("schedule")
        if schedule and not schedule.get("suspend"):
            wake = await self._schedule(pipeline, schedule, runs, status, now)
            if wake is not None:
                requeue.append(wake)
        wake = await self._prune(spec, runs, now)
        if wake is not None:
            requeue.append(wake)

        obj = {**pipeline, "status": status}
        message = f"{len(spec.get('steps') or [])} step(s)"
        if schedule:
            message += f", schedule {schedule.get('cron')!r}" + (
                " (suspended)" if schedule.get("suspend") else ""
            )
        changed = _helpers.set_condition(obj, "Ready", "True", "Valid", message)
        if changed or status != (pipeline.get("status") or {}):
            try:
                await self.client.update_status(obj)
            except errors.Conflict:
                return _types.Result(requeue_after=0.05)
        return _types.Result(requeue_after=min(requeue) if requeue else None)

    async def _schedule(
        self, pipeline: Obj, schedule: Mapping[str, Any], runs: list[Obj], status: Obj, now: float
    ) -> float | None:
        try:
            cron = _cron.parse(str(schedule.get("cron")))
        except errors.Invalid as e:
            raise _types.TerminalError(f"spec.schedule.cron: {e.message}") from e
        meta = pipeline["metadata"]
        since = _runs.parse_time(status.get("lastScheduleTime")) or _runs.parse_time(
            meta.get("creationTimestamp")
        )
        since = now if since is None else since
        due = cron.last_at_or_before(now, not_before=since + 1)
        if due is not None:
            deadline = schedule.get("startingDeadlineSeconds")
            if deadline is not None and now - due > float(deadline):
                await self._event(
                    pipeline,
                    "Warning",
                    "MissedSchedule",
                    f"missed the firing at {_runs.format_time(due)}: past startingDeadlineSeconds",
                )
                status["lastScheduleTime"] = _runs.format_time(due)
            else:
                await self._fire(pipeline, schedule, runs, status, due)
        return max(0.05, cron.next_after(now) - now)

    async def _fire(
        self, pipeline: Obj, schedule: Mapping[str, Any], runs: list[Obj], status: Obj, due: float
    ) -> None:
        active = [r for r in runs if (r.get("status") or {}).get("phase") not in TERMINAL]
        policy = schedule.get("concurrencyPolicy", "Allow")
        if active and policy == "Forbid":
            await self._event(
                pipeline,
                "Normal",
                "SkippedSchedule",
                f"{len(active)} run(s) still active (concurrencyPolicy Forbid)",
            )
            status["lastScheduleTime"] = _runs.format_time(due)
            return
        if active and policy == "Replace":
            for r in active:
                try:
                    await self.client.update({**r, "spec": {**r["spec"], "cancelled": True}})
                except (errors.Conflict, errors.NotFound):
                    continue
        name = f"{pipeline['metadata']['name'][:45]}-{int(due // 60)}"
        run = make_run(
            pipeline, name=name, annotations={ANNOTATION_SCHEDULED: _runs.format_time(due)}
        )
        try:
            await self.client.create(run)
        except errors.AlreadyExists:
            pass  # this firing already has its run
        else:
            await self._event(pipeline, "Normal", "ScheduledRun", f"created run {name}")
        status["lastScheduleTime"] = _runs.format_time(due)

    async def _prune(self, spec: Mapping[str, Any], runs: list[Obj], now: float) -> float | None:
        limits = spec.get("historyLimit") or {}
        ttl = spec.get("ttlSecondsAfterFinished")
        finished = sorted(
            (r for r in runs if (r.get("status") or {}).get("phase") in TERMINAL),
            key=lambda r: (r.get("status") or {}).get("completionTime") or "",
            reverse=True,
        )
        doomed: list[Obj] = []
        wake: list[float] = []
        for phase_set, keep in (
            ({"Succeeded"}, int(limits.get("successful", 3))),
            ({"Failed", "Cancelled"}, int(limits.get("failed", 1))),
        ):
            matching = [r for r in finished if r["status"]["phase"] in phase_set]
            doomed.extend(matching[keep:])
        if ttl is not None:
            for r in finished:
                done = _runs.parse_time(r["status"].get("completionTime"))
                if done is None or r in doomed:
                    continue
                if now - done >= float(ttl):
                    doomed.append(r)
                else:
                    wake.append(done + float(ttl) - now)
        for r in doomed:
            try:
                await self.client.delete(
                    "PipelineRun", r["metadata"]["name"], r["metadata"].get("herd")
                )
            except errors.NotFound:
                continue
        return min(wake) if wake else None

    async def _event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            try:
                await self.recorder.record(obj, type_, reason, message)  # type: ignore[arg-type]
            except errors.RuninkError as e:
                log.warning("event %s not recorded: %s", reason, e)
