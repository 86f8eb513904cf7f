"""The run controller: drives each PipelineRun through its DAG by creating and stopping Slices.

It reads the run, its pipeline (snapshotted into ``status.pipelineSpec`` when the run starts, so
editing the Pipeline never changes a run in flight) and the run's Slices (from the shared informer
cache, indexed by owner uid), asks the pure planner (``_runplan.plan``) what should exist now,
and writes that back: new Slices (owned by the run), cancellations, and the run's status (phase,
per-step status, conditions). Step transitions are reported as OpenLineage-shaped run events to a
:class:`LineageSink` and as Events for describe.
The controller is the authoritative emitter of START/COMPLETE/FAIL; what a step reports in its
``lineage`` result (dataset facets such as schema, columnLineage, dataQualityAssertions, or a whole
RunEvent from the llm step) is merged into that step's COMPLETE/FAIL event (`merge_reported`).
A step that fails a blocking quality check carries the failed checks in its message, and so does
the message of every step skipped because of it (`failure_detail`).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import datetime as dt
import json
import logging
import uuid
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from runink.controllers import _client, _clock, _helpers, _informer, _runplan, _types
from runink.schemas import errors

log = logging.getLogger("runink.controllers.runs")

Obj = dict[str, Any]
API_VERSION = "runink.io/v1"
LABEL_RUN = "runink.io/run"
LABEL_PIPELINE = "runink.io/pipeline"
LABEL_STEP = "runink.io/step"
ANNOTATION_CANCEL_REASON = "runink.io/cancel-reason"
PRODUCER = "https://runink.io/controllers/run"
OPENLINEAGE_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
TERMINAL_RUN = frozenset({"Succeeded", "Failed", "Cancelled"})
CREATE_CONCURRENCY = 64
INDEX_CONTROLLER = "runink.io/controller-uid"
"""Slice informer index: the uid of each Slice's controller owner (its run)."""


class LineageSink(Protocol):
    """Where the run controller sends OpenLineage RunEvents (the governance service, a file...)."""

    async def emit(self, event: Obj) -> None: ...


class NullLineageSink:
    async def emit(self, event: Obj) -> None:
        del event


def parse_time(value: Any) -> float | None:
    """RFC 3339 (``2026-11-27T03:25:55Z``) -> epoch seconds; ``None`` for a missing value."""
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    return dt.datetime.fromisoformat(text).timestamp()


def format_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def step_defs(spec: Mapping[str, Any]) -> list[_runplan.StepDef]:
    """Normalise a (validated) Pipeline spec's steps and finally steps for the planner."""
    out = []
    for is_finally, steps in ((False, spec.get("steps") or []), (True, spec.get("finally") or [])):
        for s in steps:
            deps: list[tuple[str, _runplan.Condition]] = []
            for d in s.get("dependsOn") or []:
                if isinstance(d, str):
                    deps.append((d, "success"))
                else:
                    deps.append((d["step"], d.get("condition", "success")))
            retry = s.get("retry") or {}
            b = retry.get("backoff") or {}
            matrix = s.get("matrix") or {}
            out.append(
                _runplan.StepDef(
                    name=s["name"],
                    deps=tuple(deps),
                    when=s.get("when"),
                    matrix=_runplan.expand_matrix(matrix.get("params") or {}),
                    max_parallel=matrix.get("maxParallel"),
                    retry_limit=int(retry.get("limit", 0)),
                    backoff=_runplan.Backoff(
                        initial=float(b.get("initialSeconds", 1.0)),
                        maximum=float(b.get("maxSeconds", 300.0)),
                        factor=float(b.get("factor", 2.0)),
                        jitter=float(b.get("jitter", 0.1)),
                    ),
                    timeout=s.get("timeoutSeconds"),
                    is_finally=is_finally,
                    params={p["name"]: p.get("default") for p in s.get("params") or []},
                    args=tuple(s.get("args") or ()),
                    env=dict(s.get("env") or {}),
                )
            )
    return out


def resolve_params(spec: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Pipeline params with their defaults, overridden by the run's; type-checked.

    Raises ``Invalid`` naming the param (unknown names, wrong types, a required one missing).
    """
    from runink.schemas import _pipelines  # the params type check lives with the model

    declared = {p["name"]: p for p in spec.get("params") or []}
    problems: list[errors.FieldError] = []
    known = ", ".join(sorted(declared)) or "none"
    problems.extend(
        errors.FieldError(
            f"spec.params.{name}", f"the pipeline declares no param {name!r} (known: {known})"
        )
        for name in given
        if name not in declared
    )
    out: dict[str, Any] = {}
    for name, p in declared.items():
        value = given.get(name, p.get("default"))
        if value is None:
            problems.append(errors.FieldError(f"spec.params.{name}", "required param has no value"))
            continue
        why = _pipelines.check_param_value(p.get("type", "string"), value)
        if why:
            problems.append(errors.FieldError(f"spec.params.{name}", why))
        out[name] = value
    if problems:
        raise errors.Invalid("invalid run params", errors=problems)
    return out


def decode_result(value: Any) -> Any:
    """A result as reported in a Slice's status: JSON text, or the Python literal that an agent
    writing ``str(value)`` produced; anything else is returned as given."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return value


def _reported_items(value: Any) -> list[Obj]:
    """The ``lineage`` result(s) of a step: one dict, or one per matrix index."""
    value = decode_result(value)
    items = value if isinstance(value, list) else [value]
    return [v for v in (decode_result(i) for i in items) if isinstance(v, dict)]


def merge_reported(event: Obj, reported: Any) -> Obj:
    """``event`` with what the step reported in its ``lineage`` result merged in.

    ``reported`` is a dict (or a list of them, one per matrix index) with ``inputs`` / ``outputs``
    (OpenLineage datasets with ``facets`` / ``inputFacets`` / ``outputFacets``) and optionally
    ``run.facets`` and ``job.facets`` (so a whole RunEvent works). Datasets are matched by
    (namespace, name); a facet the step reports replaces the controller's one of the same key
    (OpenLineage facets are atomic). The event's identity (run, job, type, time) is ours.
    """
    out: Obj = json.loads(json.dumps(event))
    for item in _reported_items(reported):
        for io in ("inputs", "outputs"):
            mine: list[Obj] = out.setdefault(io, [])
            for d in item.get(io) or []:
                if not isinstance(d, dict) or "namespace" not in d or "name" not in d:
                    continue
                ident = (str(d["namespace"]), str(d["name"]))
                target = next((x for x in mine if (x["namespace"], x["name"]) == ident), None)
                if target is None:
                    target = {"namespace": ident[0], "name": ident[1]}
                    mine.append(target)
                for key in ("facets", "inputFacets", "outputFacets"):
                    facets = d.get(key)
                    if isinstance(facets, dict) and facets:
                        target[key] = {**(target.get(key) or {}), **facets}
        run_facets = (
            (item.get("run") or {}).get("facets") if isinstance(item.get("run"), dict) else None
        )
        if isinstance(run_facets, dict):
            # parent stays ours: the step does not know its run's OpenLineage identity.
            extra = {k: v for k, v in run_facets.items() if k != "parent"}
            out["run"]["facets"] = {**out["run"].get("facets", {}), **extra}
        job_facets = (
            (item.get("job") or {}).get("facets") if isinstance(item.get("job"), dict) else None
        )
        if isinstance(job_facets, dict) and job_facets:
            out["job"]["facets"] = {**(out["job"].get("facets") or {}), **job_facets}
    return out


def failure_detail(results: Mapping[str, Any]) -> str | None:
    """Why a step failed, from what it reported: its ``error`` result, or the failed blocking
    checks in the dataQualityAssertions of its ``lineage`` result (rule, column and counts)."""
    err = decode_result(results.get("error"))
    if isinstance(err, str) and err:
        return err
    failed: list[str] = []
    for item in _reported_items(results.get("lineage")):
        for d in [*(item.get("inputs") or []), *(item.get("outputs") or [])]:
            if not isinstance(d, dict):
                continue
            for key in ("inputFacets", "facets", "outputFacets"):
                facet = (d.get(key) or {}).get("dataQualityAssertions") or {}
                failed.extend(
                    str(a.get("description") or a.get("assertion"))
                    for a in facet.get("assertions") or []
                    if isinstance(a, dict)
                    and a.get("success") is False
                    and a.get("severity", "error") == "error"
                )
    if failed:
        return "blocking quality check failed: " + "; ".join(failed)
    return None


def _step_failure_details(slices: list[Obj]) -> dict[str, str]:
    """Step name -> failure detail of its latest failed slice that reported one."""
    out: dict[str, str] = {}
    ordered = sorted(slices, key=lambda o: int((o.get("spec") or {}).get("attempt", 1)))
    for obj in ordered:
        st = obj.get("status") or {}
        if st.get("phase") != "Failed":
            continue
        detail = failure_detail(st.get("results") or {})
        if detail:
            out[str((obj.get("spec") or {}).get("step"))] = detail
    return out


def slice_state(obj: Obj) -> _runplan.SliceState:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    st = obj.get("status") or {}
    results: dict[str, Any] = {}
    for k, v in (st.get("results") or {}).items():
        try:
            results[k] = json.loads(v) if isinstance(v, str) else v
        except ValueError:
            results[k] = v
    return _runplan.SliceState(
        name=meta["name"],
        step=spec["step"],
        index=int(spec.get("matrixIndex") or 0),
        attempt=int(spec.get("attempt", 1)),
        phase=st.get("phase", "Pending"),
        created_at=parse_time(meta.get("creationTimestamp")) or 0.0,
        started_at=parse_time(st.get("startTime")),
        finished_at=parse_time(st.get("completionTime")),
        results=results,
        reason=st.get("reason"),
        message=st.get("message"),
        cancelled=bool(spec.get("cancelled")),
    )


def _failed_lineage(slices: list[Obj], step: str) -> list[Any]:
    """The ``lineage`` results of a failed step's failed slices (a quality step reports its
    assertions before it fails)."""
    out: list[Any] = []
    for obj in slices:
        st = obj.get("status") or {}
        if (obj.get("spec") or {}).get("step") == step and st.get("phase") == "Failed":
            value = (st.get("results") or {}).get("lineage")
            if value is not None:
                out.append(value)
    return out


def controller_uids(obj: Obj) -> list[str]:
    """Index function: the uid of ``obj``'s controller owner, if any."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return [str(r["uid"]) for r in refs if r.get("controller") and r.get("uid")]


def _rv(obj: Obj) -> int:
    return int((obj.get("metadata") or {}).get("resourceVersion") or 0)


@dataclass(slots=True)
class _RunView:
    """What the controller keeps between passes over one run (one uid), so a pass costs O(changes)
    conversions rather than O(slices): the run's pipelineSpec is frozen once the run starts."""

    uid: str
    steps: list[_runplan.StepDef]
    specs: dict[str, Obj]  # step name -> its spec in status.pipelineSpec
    multi: dict[str, bool]  # step name -> has a matrix of more than one index
    states: dict[str, tuple[int, _runplan.SliceState]] = field(default_factory=dict)
    # Slices this controller created (or wrote) that the informer has not shown yet: name -> obj.
    assumed: dict[str, Obj] = field(default_factory=dict)


LLM_STEP = "runink.sdk.llm:annotate_dataset"


def llm_slice(llm: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[Obj], list[str]]:
    """What a built-in ``llm:`` step runs: the SDK's annotator, its params, and the API key's
    Secret delivered as a file (``<secret>/<key>`` in the slice's secrets tmpfs, never env)."""
    names = {
        "model": "model",
        "endpoint": "endpoint",
        "prompt": "prompt",
        "input": "input",
        "field": "field",
        "keyField": "key_field",
        "annotationType": "annotation_type",
        "output": "output",
        "batchSize": "batch_size",
        "concurrency": "concurrency",
        "retries": "retries",
        "timeoutSeconds": "timeout",
        "temperature": "temperature",
        "maxTokens": "max_tokens",
    }
    params = {sdk: llm[key] for key, sdk in names.items() if llm.get(key) is not None}
    secrets: list[Obj] = []
    ref = llm.get("apiKey")
    if ref:
        secrets.append({"secret": ref["secret"], "key": ref["key"], "as": "file"})
        params["api_key_secret"] = f"{ref['secret']}/{ref['key']}"
    return LLM_STEP, params, secrets, ["llm", "lineage"]


class RunReconciler:
    """Reconciles one PipelineRun. See the module docstring."""

    def __init__(
        self,
        client: _client.Client,
        *,
        clock: _clock.Clock,
        recorder: _helpers.EventRecorder | None = None,
        lineage: LineageSink | None = None,
        namespace_prefix: str = "runink",
        informers: _informer.InformerSet | None = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.recorder = recorder
        self.lineage: LineageSink = lineage or NullLineageSink()
        self.namespace_prefix = namespace_prefix
        # With informers, a pass reads the run's Slices from the shared cache (an index by owner
        # uid) instead of listing them from the Barn: each slice write requeues its run, so a
        # list per pass was O(N^2) for an N-way matrix. Without, it lists (tests, plugins).
        self._slices: _informer.Informer | None = None
        if informers is not None:
            self._slices = informers.for_kind("Slice")
            self._slices.add_indexer(INDEX_CONTROLLER, controller_uids)
        self._views: dict[tuple[str | None, str], _RunView] = {}

    async def reconcile(self, request: _types.Request) -> _types.Result:
        key = (request.herd, request.name)
        try:
            run = await self.client.get("PipelineRun", request.name, request.herd)
        except errors.NotFound:
            self._views.pop(key, None)
            return _types.Result()
        if (run.get("metadata") or {}).get("deletionTimestamp"):
            self._views.pop(key, None)
            return _types.Result()
        status = dict(run.get("status") or {})
        if status.get("phase") in TERMINAL_RUN:
            self._views.pop(key, None)
            return _types.Result()
        if not status.get("pipelineSpec"):
            return await self._start(run)

        spec = status["pipelineSpec"]
        view = self._view(key, run, spec)
        owned = await self._owned(run, view)
        now = self.clock.wall()
        plan = _runplan.plan(
            run_name=request.name,
            steps=view.steps,
            run_params=status.get("params") or {},
            slices=self._states(view, owned),
            now=now,
            cancelled=bool((run.get("spec") or {}).get("cancelled")),
            run_start=parse_time(status.get("startTime")),
            run_timeout=(run.get("spec") or {}).get("timeoutSeconds") or spec.get("timeoutSeconds"),
        )

        by_name = {s["metadata"]["name"]: s for s in owned}
        # Concurrently: the Barn commits writes that arrive together in one transaction (one
        # fsync), so a 1,000-way matrix is created in a few commits instead of 1,000.
        limit = asyncio.Semaphore(CREATE_CONCURRENCY)

        async def bounded(coro: Coroutine[Any, Any, None]) -> None:
            async with limit:
                await coro

        async with asyncio.TaskGroup() as tg:
            for new in plan.create:
                tg.create_task(bounded(self._create_slice(run, view, new)))
            for c in plan.cancel:
                if c.name in by_name:
                    tg.create_task(bounded(self._cancel_slice(view, by_name[c.name], c)))

        await self._write_status(run, plan, now, owned)
        return _types.Result(requeue_after=plan.requeue_after)

    # -- the run's slices ---------------------------------------------------------------------

    def _view(self, key: tuple[str | None, str], run: Obj, spec: Obj) -> _RunView:
        uid = str((run.get("metadata") or {}).get("uid"))
        view = self._views.get(key)
        if view is not None and view.uid == uid:
            return view
        try:
            steps = step_defs(spec)
        except (KeyError, TypeError, ValueError) as e:
            raise _types.TerminalError(f"cannot plan run {_types.Request.of(run)}: {e}") from e
        view = _RunView(
            uid=uid,
            steps=steps,
            specs={
                s["name"]: s for s in [*(spec.get("steps") or []), *(spec.get("finally") or [])]
            },
            multi={s.name: len(s.matrix) > 1 for s in steps},
        )
        self._views[key] = view
        return view

    async def _owned(self, run: Obj, view: _RunView) -> list[Obj]:
        """The run's Slices: from the informer's index, overlaid with our own writes it has not
        shown yet (as the scheduler's assumed bindings), or listed from the Barn."""
        if self._slices is None:
            meta = run["metadata"]
            listed = await self.client.list(
                "Slice", meta.get("herd"), selector=f"{LABEL_RUN}={meta['name']}"
            )
            return [s for s in listed.items if _helpers.is_controlled_by(s, run)]
        cached = self._slices.by_index(INDEX_CONTROLLER, view.uid)
        if not view.assumed:
            return cached
        # Once the informer has seen a revision, its cache is exact up to it: an assumed object is
        # then either there (at its version or newer) or deleted since.
        seen = self._slices.last_revision
        for name, obj in list(view.assumed.items()):
            if _rv(obj) <= seen:
                del view.assumed[name]
        if not view.assumed:
            return cached
        out = [view.assumed.get(s["metadata"]["name"], s) for s in cached]
        names = {s["metadata"]["name"] for s in cached}
        out.extend(obj for name, obj in view.assumed.items() if name not in names)
        return out

    @staticmethod
    def _states(view: _RunView, owned: list[Obj]) -> list[_runplan.SliceState]:
        """``slice_state`` of each slice, converted only when its resourceVersion moved."""
        old, new = view.states, {}
        out = []
        for obj in owned:
            name, rv = obj["metadata"]["name"], _rv(obj)
            hit = old.get(name)
            state = hit[1] if hit is not None and hit[0] == rv else slice_state(obj)
            new[name] = (rv, state)
            out.append(state)
        view.states = new
        return out

    def _assume(self, view: _RunView, obj: Obj) -> None:
        if self._slices is not None:
            view.assumed[obj["metadata"]["name"]] = obj

    # -- start --------------------------------------------------------------------------------

    async def _start(self, run: Obj) -> _types.Result:
        meta = run["metadata"]
        ref = str(((run.get("spec") or {}).get("pipelineRef") or {}).get("name"))
        now = self.clock.wall()
        status: Obj = dict(run.get("status") or {})
        try:
            pipeline = await self.client.get("Pipeline", ref, meta.get("herd"))
            params = resolve_params(
                pipeline.get("spec") or {}, (run.get("spec") or {}).get("params") or {}
            )
        except (errors.NotFound, errors.Invalid) as e:
            reason = "PipelineNotFound" if isinstance(e, errors.NotFound) else "InvalidParams"
            status.update(
                phase="Failed", completionTime=format_time(now), startTime=format_time(now)
            )
            obj = {**run, "status": status}
            _helpers.set_condition(obj, "Succeeded", "False", reason, e.message)
            await self.client.update_status(obj)
            await self._event(run, "Warning", reason, e.message)
            return _types.Result()
        status.update(
            phase="Running",
            startTime=format_time(now),
            pipelineSpec=pipeline["spec"],
            params=params,
            steps={},
        )
        obj = {**run, "status": status}
        _helpers.set_condition(obj, "Succeeded", "Unknown", "Running", "the run has started")
        await self.client.update_status(obj)
        await self._event(run, "Normal", "Started", f"run of pipeline {ref} started")
        return _types.Result(requeue_after=0)

    # -- slices -------------------------------------------------------------------------------

    async def _create_slice(self, run: Obj, view: _RunView, new: _runplan.NewSlice) -> None:
        meta = run["metadata"]
        step = view.specs[new.step]
        pipeline = ((run.get("spec") or {}).get("pipelineRef") or {}).get("name")
        spec: Obj = {
            "pipeline": pipeline,
            "run": meta["name"],
            "step": new.step,
            "attempt": new.attempt,
            "params": dict(new.params),
            "args": list(new.args),
            "env": dict(new.env),
            "results": list(step.get("results") or []),
            "secrets": list(step.get("secrets") or []),
            "resources": dict(step.get("resources") or {}),
            "nodeSelector": dict(step.get("nodeSelector") or {}),
            "tolerations": list(step.get("tolerations") or []),
            "network": step.get("network", "isolated"),
            "inputs": list(step.get("inputs") or []),
            "outputs": list(step.get("outputs") or []),
        }
        if view.multi[new.step]:
            spec["matrixIndex"] = new.index
        for key in ("python", "command", "timeoutSeconds", "affinity", "locality"):
            if step.get(key) is not None:
                spec[key] = step[key]
        if step.get("llm"):
            python, params, secrets, results = llm_slice(step["llm"])
            spec["python"] = python
            spec["params"] = {**params, **spec["params"]}
            spec["secrets"] = [*spec["secrets"], *secrets]
            spec["results"] = sorted({*spec["results"], *results})
        sa = step.get("serviceAccount") or (run.get("spec") or {}).get("serviceAccount")
        if sa:
            spec["serviceAccount"] = sa
        obj: Obj = {
            "apiVersion": API_VERSION,
            "kind": "Slice",
            "metadata": {
                "name": new.name,
                "herd": meta.get("herd"),
                "labels": {
                    LABEL_RUN: meta["name"],
                    LABEL_PIPELINE: str(pipeline),
                    LABEL_STEP: new.step,
                },
            },
            "spec": spec,
        }
        _helpers.set_controller_reference(run, obj)
        try:
            self._assume(view, await self.client.create(obj))
        except errors.AlreadyExists:
            return  # created by an earlier pass whose write we have not seen yet
        if new.attempt > 1:
            await self._event(run, "Normal", "Retrying", f"step {new.step}: attempt {new.attempt}")

    async def _cancel_slice(self, view: _RunView, obj: Obj, c: _runplan.CancelSlice) -> None:
        spec = obj.get("spec") or {}
        if not spec.get("nodeName"):
            # Never placed: nothing runs, so the controller ends it itself.
            st = {
                **(obj.get("status") or {}),
                "phase": "Failed",
                "reason": c.reason,
                "message": c.message,
                "completionTime": format_time(self.clock.wall()),
            }
            # On a conflict the next pass sees the new state and decides again.
            with contextlib.suppress(errors.Conflict, errors.NotFound):
                self._assume(view, await self.client.update_status({**obj, "status": st}))
            return
        meta = dict(obj.get("metadata") or {})
        meta["annotations"] = {
            **(meta.get("annotations") or {}),
            ANNOTATION_CANCEL_REASON: c.reason,
        }
        with contextlib.suppress(errors.Conflict, errors.NotFound):
            cancelled = {**obj, "metadata": meta, "spec": {**spec, "cancelled": True}}
            self._assume(view, await self.client.update(cancelled))

    # -- status -------------------------------------------------------------------------------

    async def _write_status(
        self, run: Obj, plan: _runplan.RunPlan, now: float, slices: list[Obj] | None = None
    ) -> None:
        old = dict(run.get("status") or {})
        old_steps: Mapping[str, Any] = old.get("steps") or {}
        steps: dict[str, Obj] = {}
        details = _step_failure_details(slices or [])
        plan_message = plan.message
        for name, s in plan.steps.items():
            d: Obj = {"phase": s.phase, "attempts": s.attempts, "slices": list(s.slices)}
            if s.results:
                d["results"] = {
                    k: v if isinstance(v, str) else json.dumps(v) for k, v in s.results.items()
                }
            if s.message:
                d["message"] = s.message
            if s.phase == "Failed" and name in details and s.message:
                d["message"] = f"{s.message}; {details[name]}"
                if plan_message:
                    plan_message = plan_message.replace(s.message, d["message"], 1)
            elif s.phase == "Skipped" and s.message:
                dep = s.message.removeprefix("dependency ").split(" ", 1)[0]
                if s.message.startswith("dependency ") and dep in details:
                    d["message"] = f"{s.message}: {dep} {details[dep]}"
            if s.start_time is not None:
                d["startTime"] = format_time(s.start_time)
            if s.completion_time is not None:
                d["completionTime"] = format_time(s.completion_time)
            steps[name] = d
        new = {**old, "phase": plan.phase, "steps": steps}
        if plan.phase in TERMINAL_RUN:
            new["completionTime"] = format_time(now)
        obj = {**run, "status": new}
        cond = {"Succeeded": "True", "Failed": "False", "Cancelled": "False"}.get(
            plan.phase, "Unknown"
        )
        _helpers.set_condition(
            obj,
            "Succeeded",
            cond,  # type: ignore[arg-type]
            plan.reason or plan.phase,
            plan_message or "",
        )
        if obj["status"] != run.get("status"):
            await self.client.update_status(obj)
        await self._report_transitions(run, old_steps, plan, now, slices or [], steps)

    async def _report_transitions(
        self,
        run: Obj,
        old_steps: Mapping[str, Any],
        plan: _runplan.RunPlan,
        now: float,
        slices: list[Obj],
        steps: Mapping[str, Obj],
    ) -> None:
        for name, s in plan.steps.items():
            before = (old_steps.get(name) or {}).get("phase", "Pending")
            if before == s.phase:
                continue
            message = (steps.get(name) or {}).get("message") or s.message
            if s.phase == "Running" and before in ("Pending", "Waiting"):
                if before == "Pending":
                    await self._lineage(run, name, "START", now)
                    await self._event(run, "Normal", "StepStarted", f"step {name} started")
            elif s.phase == "Succeeded":
                reported = s.results.get("lineage")
                await self._lineage(run, name, "COMPLETE", now, reported=reported)
                await self._event(run, "Normal", "StepSucceeded", f"step {name} succeeded")
            elif s.phase == "Failed":
                await self._lineage(
                    run, name, "FAIL", now, message, reported=_failed_lineage(slices, name)
                )
                await self._event(run, "Warning", "StepFailed", f"step {name} failed: {message}")
            elif s.phase == "Skipped":
                await self._event(run, "Normal", "StepSkipped", f"step {name} skipped: {message}")
        old_phase = (run.get("status") or {}).get("phase")
        if plan.phase in TERMINAL_RUN and old_phase != plan.phase:
            kind = "Normal" if plan.phase == "Succeeded" else "Warning"
            await self._event(run, kind, f"Run{plan.phase}", plan.message or plan.phase)

    async def _lineage(
        self,
        run: Obj,
        step: str,
        event_type: str,
        now: float,
        error: str | None = None,
        *,
        reported: Any = None,
    ) -> None:
        meta = run["metadata"]
        spec = (run.get("status") or {}).get("pipelineSpec") or {}
        step_spec: Obj = next(
            (
                s
                for s in [*(spec.get("steps") or []), *(spec.get("finally") or [])]
                if s["name"] == step
            ),
            {},
        )
        herd = meta.get("herd")
        ns = f"{self.namespace_prefix}://{herd}"
        pipeline = ((run.get("spec") or {}).get("pipelineRef") or {}).get("name")

        def datasets(refs: list[Obj]) -> list[Obj]:
            return [{"namespace": ns, "name": r.get("name") or r.get("uri")} for r in refs]

        run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{meta.get('uid')}/{step}"))
        event: Obj = {
            "eventType": event_type,
            "eventTime": dt.datetime.fromtimestamp(now, dt.UTC).isoformat().replace("+00:00", "Z"),
            "producer": PRODUCER,
            "schemaURL": OPENLINEAGE_SCHEMA,
            "run": {
                "runId": run_id,
                "facets": {
                    "parent": {
                        "_producer": PRODUCER,
                        "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ParentRunFacet.json",
                        "run": {"runId": str(uuid.uuid5(uuid.NAMESPACE_URL, str(meta.get("uid"))))},
                        "job": {"namespace": ns, "name": f"{pipeline}"},
                    }
                },
            },
            "job": {"namespace": ns, "name": f"{pipeline}.{step}"},
            "inputs": datasets(step_spec.get("inputs") or []),
            "outputs": datasets(step_spec.get("outputs") or []),
        }
        # Who ran the step, for the governance side (an llm step's annotations are stored with
        # its service account as producer). A custom facet, named as the spec asks.
        event["run"]["facets"]["runink_step"] = {
            "_producer": PRODUCER,
            "_schemaURL": "https://runink.io/spec/facets/RuninkStepRunFacet.json",
            "herd": herd,
            "pipeline": pipeline,
            "pipelineRun": meta["name"],
            "step": step,
            "serviceAccount": step_spec.get("serviceAccount")
            or (run.get("spec") or {}).get("serviceAccount")
            or "default",
        }
        if reported is not None:
            event = merge_reported(event, reported)
        if error:
            event["run"]["facets"]["errorMessage"] = {
                "_producer": PRODUCER,
                "_schemaURL": "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json",
                "message": error,
                "programmingLanguage": "python",
            }
        try:
            await self.lineage.emit(event)
        except errors.RuninkError as e:
            log.warning("lineage event for %s/%s not recorded: %s", meta["name"], step, e)

    async def _event(self, run: Obj, type_: str, reason: str, message: str) -> None:
        if self.recorder is None:
            return
        try:
            await self.recorder.record(run, type_, reason, message)  # type: ignore[arg-type]
        except errors.RuninkError as e:
            log.warning("event %s for %s not recorded: %s", reason, _types.Request.of(run), e)
