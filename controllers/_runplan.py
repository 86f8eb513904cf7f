"""What a PipelineRun should look like now: a pure function of the pipeline, the run, its Slices and ``now``.

The run controller (``_runs.py``) reads the objects, calls :func:`plan` and writes back what it returns;
all DAG, retry, timeout, ``when``, ``finally`` and matrix decisions live here, with no I/O and no
clock of their own (Nomad's ``AllocReconciler`` design), so they can be tested by the thousand.

A step's life::

    Pending ──deps met, when true──▶ Running ──all indexes succeeded──▶ Succeeded
       │                               │  ▲
       │ dep outcome / when false      │  │ backoff elapsed: next attempt
       ▼                               ▼  │
    Skipped                         Waiting (a failed attempt, retries left)
                                       │
                                       └──retries exhausted / timeout──▶ Failed
    (any non-terminal step) ──run cancelled or run timeout──▶ Cancelled

``finally`` steps start once every regular step is terminal, whatever the outcome.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

StepPhase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed", "Skipped", "Cancelled"]
RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
Condition = Literal["success", "failure", "always"]

TERMINAL_STEP: frozenset[str] = frozenset({"Succeeded", "Failed", "Skipped", "Cancelled"})
TERMINAL_SLICE: frozenset[str] = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    factor: float = 2.0
    jitter: float = 0.1

    def delay(self, attempt: int, seed: str) -> float:
        """Delay before attempt ``attempt + 1`` after attempt ``attempt`` failed.

        The jitter is drawn from a hash of ``seed`` so the plan stays a pure function.
        """
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        digest = hashlib.sha256(f"{seed}/{attempt}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64  # [0, 1)
        return max(0.0, base * (1.0 + self.jitter * (2.0 * u - 1.0)))


@dataclass(frozen=True, slots=True)
class StepDef:
    """One step of a pipeline, normalised from the Pipeline spec."""

    name: str
    deps: tuple[tuple[str, Condition], ...] = ()
    when: str | None = None
    matrix: tuple[Mapping[str, Any], ...] = ({},)
    max_parallel: int | None = None
    retry_limit: int = 0
    backoff: Backoff = Backoff()
    timeout: float | None = None
    is_finally: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SliceState:
    """What the controller needs to know of one existing Slice of this run."""

    name: str
    step: str
    index: int
    attempt: int
    phase: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    results: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    message: str | None = None
    cancelled: bool = False


@dataclass(frozen=True, slots=True)
class NewSlice:
    """A Slice the controller must create: attempt ``attempt`` of matrix index ``index`` of ``step``."""

    name: str
    step: str
    index: int
    attempt: int
    params: Mapping[str, Any]
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CancelSlice:
    name: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class StepStatus:
    phase: StepPhase
    attempts: int = 0
    slices: tuple[str, ...] = ()
    results: Mapping[str, Any] = field(default_factory=dict)
    message: str | None = None
    start_time: float | None = None
    completion_time: float | None = None


@dataclass(frozen=True, slots=True)
class RunPlan:
    phase: RunPhase
    steps: Mapping[str, StepStatus]
    create: tuple[NewSlice, ...] = ()
    cancel: tuple[CancelSlice, ...] = ()
    requeue_after: float | None = None
    reason: str | None = None
    message: str | None = None


class PlanError(ValueError):
    """The pipeline cannot be planned (a bad ``when`` expression or template): fails the run."""


class MissingResult(PlanError):
    """A reference to a result that a step did not produce (it failed or was skipped).

    A step that needs it is skipped rather than failed: in a ``finally`` step after a failure,
    that is the expected case (Tekton skips such finally tasks too).
    """


# ---------------------------------------------------------------------------------------------
# Templates and `when` expressions
# ---------------------------------------------------------------------------------------------

_TEMPLATE = re.compile(r"\$\(\s*([A-Za-z0-9_.\-\[\]]+)\s*\)")


def _lookup(ref: str, scope: Mapping[str, Any]) -> Any:
    node: Any = scope
    parts = ref.split(".")
    for i, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
            continue
        steps = scope.get("steps") or {}
        if parts[0] == "steps" and len(parts) > 1 and parts[1] in steps and i >= 2:
            phase = steps[parts[1]].get("phase", "Pending")
            raise MissingResult(f"$({ref}) is not available: step {parts[1]} is {phase}")
        raise PlanError(f"unknown reference $({ref})")
    return node


def substitute(value: Any, scope: Mapping[str, Any]) -> Any:
    """Replace ``$(params.x)`` and ``$(steps.s.results.r)`` in strings (recursively in lists/maps).

    A string that is exactly one reference takes the referenced value's type; references inside a
    longer string are rendered as text (JSON for non-strings).
    """
    if isinstance(value, str):
        whole = _TEMPLATE.fullmatch(value.strip())
        if whole:
            return _lookup(whole.group(1), scope)

        def render(m: re.Match[str]) -> str:
            v = _lookup(m.group(1), scope)
            return v if isinstance(v, str) else json.dumps(v)

        return _TEMPLATE.sub(render, value)
    if isinstance(value, list):
        return [substitute(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, scope) for k, v in value.items()}
    return value


_ALLOWED_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.And,
    ast.Or,
    ast.UnaryOp,
    ast.Not,
    ast.Compare,
    ast.Eq,
    ast.NotEq,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.In,
    ast.NotIn,
    ast.Constant,
    ast.Name,
    ast.Attribute,
    ast.Load,
    ast.List,
    ast.Tuple,
)


def evaluate_when(expr: str, scope: Mapping[str, Any]) -> bool:
    """Evaluate a ``when`` expression such as ``params.mode == 'full' and steps.extract.results.rows > 0``.

    Only comparisons, ``and``/``or``/``not``, literals and dotted references are allowed; anything
    else is a :class:`PlanError` naming the construct.
    """
    expr = _TEMPLATE.sub(lambda m: m.group(1), expr)
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise PlanError(f"when: cannot parse {expr!r}: {e.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise PlanError(f"when: {type(node).__name__} is not allowed in {expr!r}")
    return bool(_eval(tree.body, scope))


def _eval(node: ast.expr, scope: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name | ast.Attribute):
        return _lookup(_dotted(node), scope)
    if isinstance(node, ast.List | ast.Tuple):
        return [_eval(e, scope) for e in node.elts]
    if isinstance(node, ast.UnaryOp):
        return not _eval(node.operand, scope)
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, scope) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, scope)
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, scope)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    raise PlanError(f"when: unsupported expression {ast.dump(node)}")


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise PlanError("when: only dotted references are allowed")


def _compare(op: ast.cmpop, a: Any, b: Any) -> bool:
    try:
        match op:
            case ast.Eq():
                return bool(a == b)
            case ast.NotEq():
                return bool(a != b)
            case ast.Lt():
                return bool(a < b)
            case ast.LtE():
                return bool(a <= b)
            case ast.Gt():
                return bool(a > b)
            case ast.GtE():
                return bool(a >= b)
            case ast.In():
                return bool(a in b)
            case ast.NotIn():
                return bool(a not in b)
    except TypeError as e:
        raise PlanError(f"when: cannot compare {a!r} and {b!r}: {e}") from None
    raise PlanError("when: unsupported comparison")


def expand_matrix(params: Mapping[str, Sequence[Any]]) -> tuple[dict[str, Any], ...]:
    """The cartesian product of a matrix, in a stable order (keys sorted); ``{}`` gives one index."""
    if not params:
        return ({},)
    keys = sorted(params)
    return tuple(
        dict(zip(keys, combo, strict=True))
        for combo in itertools.product(*(params[k] for k in keys))
    )


def slice_name(run: str, step: str, index: int, attempt: int, *, matrix: bool) -> str:
    """A DNS-label name (<= 63 chars) for one attempt; long names are shortened with a hash."""
    suffix = f"-{index}-{attempt}" if matrix else f"-{attempt}"
    name = f"{run}-{step}{suffix}".lower()
    if len(name) <= 63:
        return name
    h = hashlib.sha256(f"{run}/{step}".encode()).hexdigest()[:8]
    return f"{name[: 63 - len(suffix) - 9].rstrip('-')}-{h}{suffix}"


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


def _topological(steps: Sequence[StepDef]) -> list[StepDef]:
    by_name = {s.name: s for s in steps}
    order: list[StepDef] = []
    seen: set[str] = set()

    def visit(s: StepDef, stack: tuple[str, ...]) -> None:
        if s.name in seen:
            return
        if s.name in stack:
            raise PlanError(f"dependency cycle through {' -> '.join((*stack, s.name))}")
        for dep, _ in s.deps:
            if dep in by_name:
                visit(by_name[dep], (*stack, s.name))
        seen.add(s.name)
        order.append(s)

    for s in steps:
        visit(s, ())
    return order


def _dep_gate(step: StepDef, statuses: Mapping[str, StepStatus]) -> tuple[str, str | None]:
    """``("wait", None)``, ``("go", None)`` or ``("skip", why)`` from the step's dependencies."""
    for dep, _ in step.deps:
        st = statuses.get(dep)
        if st is None or st.phase not in TERMINAL_STEP:
            return "wait", None
    for dep, cond in step.deps:
        phase = statuses[dep].phase
        ok = (
            cond == "always"
            or (cond == "success" and phase == "Succeeded")
            or (cond == "failure" and phase == "Failed")
        )
        if not ok:
            return "skip", f"dependency {dep} is {phase}, needed {cond}"
    return "go", None


def plan(
    *,
    run_name: str,
    steps: Sequence[StepDef],
    run_params: Mapping[str, Any],
    slices: Sequence[SliceState],
    now: float,
    cancelled: bool = False,
    run_start: float | None = None,
    run_timeout: float | None = None,
) -> RunPlan:
    """Compute the run's desired state. See the module docstring for the step state machine."""
    try:
        ordered = _topological([s for s in steps if not s.is_finally]) + _topological(
            [s for s in steps if s.is_finally]
        )
    except PlanError as e:
        return RunPlan(phase="Failed", steps={}, reason="InvalidPipeline", message=str(e))

    by_step: dict[str, dict[int, list[SliceState]]] = {}
    for sl in slices:
        by_step.setdefault(sl.step, {}).setdefault(sl.index, []).append(sl)
    for idx_map in by_step.values():
        for attempts in idx_map.values():
            attempts.sort(key=lambda s: s.attempt)

    timed_out = run_timeout is not None and run_start is not None and now - run_start > run_timeout
    stopping = cancelled or timed_out
    stop_reason = "Cancelled" if cancelled else "RunTimeout"

    statuses: dict[str, StepStatus] = {}
    create: list[NewSlice] = []
    cancel: list[CancelSlice] = []
    wakeups: list[float] = []
    regular_done = True
    failure: str | None = None

    for step in ordered:
        if step.is_finally and not regular_done:
            statuses[step.name] = StepStatus(phase="Pending")
            continue
        existing = by_step.get(step.name, {})
        scope = {
            "params": run_params,
            "steps": {
                n: {"results": dict(s.results), "phase": s.phase} for n, s in statuses.items()
            },
        }
        try:
            st, new, stop, wake = _plan_step(
                run_name, step, existing, scope, statuses, now, stopping and not step.is_finally
            )
        except MissingResult as e:
            st, new, stop, wake = StepStatus(phase="Skipped", message=str(e)), [], [], None
        except PlanError as e:
            st, new, stop, wake = StepStatus(phase="Failed", message=str(e)), [], [], None
            stop = [
                CancelSlice(s.name, "PlanError", str(e))
                for atts in existing.values()
                for s in atts
                if s.phase not in TERMINAL_SLICE and not s.cancelled
            ]
        if stopping and not step.is_finally:
            stop = [
                CancelSlice(
                    s.name,
                    stop_reason,
                    "run cancelled"
                    if cancelled
                    else f"run exceeded its timeout of {run_timeout:g}s",
                )
                for atts in existing.values()
                for s in atts
                if s.phase not in TERMINAL_SLICE and not s.cancelled
            ]
        statuses[step.name] = st
        create.extend(new)
        cancel.extend(stop)
        if wake is not None:
            wakeups.append(wake)
        if not step.is_finally and st.phase not in TERMINAL_STEP:
            regular_done = False
        if st.phase == "Failed" and failure is None:
            failure = f"step {step.name} failed" + (f": {st.message}" if st.message else "")

    all_done = all(s.phase in TERMINAL_STEP for s in statuses.values())
    anything_started = bool(slices) or bool(create)
    reason: str | None
    message: str | None
    if all_done and not cancel:
        if cancelled:
            phase: RunPhase = "Cancelled"
            reason, message = "Cancelled", "the run was cancelled"
        elif timed_out:
            phase, reason = "Failed", "RunTimeout"
            message = f"the run exceeded its timeout of {run_timeout:g}s"
        elif failure:
            phase, reason, message = "Failed", "StepFailed", failure
        else:
            phase, reason, message = "Succeeded", "Succeeded", "all steps succeeded"
    else:
        phase = "Running" if anything_started else "Pending"
        reason = message = None
        if stopping:
            reason = "Cancelling" if cancelled else "RunTimeout"
    if run_timeout is not None and run_start is not None and not stopping and phase == "Running":
        wakeups.append(run_start + run_timeout - now)
    requeue = min((w for w in wakeups if w >= 0), default=None)
    return RunPlan(
        phase=phase,
        steps=statuses,
        create=tuple(create),
        cancel=tuple(cancel),
        requeue_after=requeue,
        reason=reason,
        message=message,
    )


def _plan_step(
    run_name: str,
    step: StepDef,
    existing: Mapping[int, Sequence[SliceState]],
    scope: Mapping[str, Any],
    statuses: Mapping[str, StepStatus],
    now: float,
    stopping: bool,
) -> tuple[StepStatus, list[NewSlice], list[CancelSlice], float | None]:
    names = tuple(s.name for atts in existing.values() for s in atts)
    attempts = max((s.attempt for atts in existing.values() for s in atts), default=0)
    starts = [_first(s.started_at, s.created_at) for atts in existing.values() for s in atts]
    start_time = min(starts) if starts else None

    if not existing:
        gate, why = _dep_gate(step, statuses)
        if stopping:
            return (
                StepStatus(phase="Cancelled", message="run stopped before this step started"),
                [],
                [],
                None,
            )
        if gate == "wait":
            return StepStatus(phase="Pending"), [], [], None
        if gate == "skip":
            return StepStatus(phase="Skipped", message=why), [], [], None
        if step.when and not evaluate_when(step.when, scope):
            return StepStatus(phase="Skipped", message=f"when {step.when!r} is false"), [], [], None

    multi = len(step.matrix) > 1
    create: list[NewSlice] = []
    cancel: list[CancelSlice] = []
    wake: list[float] = []
    running = 0
    succeeded = 0
    failed_msg: str | None = None
    waiting = 0
    results_by_index: dict[int, Mapping[str, Any]] = {}
    finished: list[float] = []
    todo: list[int] = []

    for index, combo in enumerate(step.matrix):
        atts = existing.get(index, [])
        last = atts[-1] if atts else None
        if last is None:
            todo.append(index)
            continue
        if last.phase == "Succeeded":
            succeeded += 1
            results_by_index[index] = last.results
            finished.append(_first(last.finished_at, now))
            continue
        if last.phase == "Failed" or (last.cancelled and last.phase in TERMINAL_SLICE):
            why = last.message or last.reason or "failed"
            if last.attempt <= step.retry_limit and not stopping and last.reason != "Cancelled":
                ready_at = (_first(last.finished_at, now)) + step.backoff.delay(
                    last.attempt, f"{run_name}/{step.name}/{index}"
                )
                if now >= ready_at:
                    create.append(
                        _new(run_name, step, index, last.attempt + 1, combo, scope, multi)
                    )
                    running += 1
                else:
                    waiting += 1
                    wake.append(ready_at - now)
            else:
                failed_msg = failed_msg or (
                    f"attempt {last.attempt}/{step.retry_limit + 1}"
                    + (f" of index {index}" if multi else "")
                    + f": {why}"
                )
                finished.append(_first(last.finished_at, now))
            continue
        # Pending, Starting or Running.
        running += 1
        began = _first(last.started_at, last.created_at)
        if step.timeout is not None and not last.cancelled:
            if now - began > step.timeout:
                cancel.append(
                    CancelSlice(
                        last.name,
                        "DeadlineExceeded",
                        f"step exceeded its timeout of {step.timeout:g}s",
                    )
                )
            else:
                wake.append(began + step.timeout - now)

    live = sum(1 for atts in existing.values() for s in atts if s.phase not in TERMINAL_SLICE)
    if failed_msg is not None:
        # Fail fast: stop the other indexes, start nothing new; Failed once nothing runs any more.
        cancel.extend(
            CancelSlice(s.name, "StepFailed", "another index of this step failed")
            for atts in existing.values()
            for s in atts
            if s.phase not in TERMINAL_SLICE and not s.cancelled
        )
        status = StepStatus(
            phase="Running" if live else "Failed",
            attempts=attempts,
            slices=names,
            message=failed_msg,
            start_time=start_time,
            completion_time=None if live else max(finished, default=now),
        )
        return status, [], cancel, None

    if stopping:
        status = StepStatus(
            phase="Running" if live else "Cancelled",
            attempts=attempts,
            slices=names,
            start_time=start_time,
        )
        return status, [], [], None

    budget = len(todo) if step.max_parallel is None else max(0, step.max_parallel - running)
    create.extend(
        _new(run_name, step, index, 1, step.matrix[index], scope, multi) for index in todo[:budget]
    )

    if succeeded == len(step.matrix):
        results: Mapping[str, Any]
        if multi:
            keys = sorted({k for r in results_by_index.values() for k in r})
            results = {
                k: [results_by_index[i].get(k) for i in sorted(results_by_index)] for k in keys
            }
        else:
            results = dict(results_by_index.get(0, {}))
        return (
            StepStatus(
                phase="Succeeded",
                attempts=attempts,
                slices=names,
                results=results,
                start_time=start_time,
                completion_time=max(finished, default=now),
            ),
            [],
            cancel,
            None,
        )
    step_phase: StepPhase = "Waiting" if waiting and running == 0 and not create else "Running"
    all_names = names + tuple(n.name for n in create)
    return (
        StepStatus(
            phase=step_phase,
            attempts=max(attempts, max((n.attempt for n in create), default=0)),
            slices=all_names,
            start_time=start_time if start_time is not None else now,
        ),
        create,
        cancel,
        min(wake) if wake else None,
    )


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def _new(
    run_name: str,
    step: StepDef,
    index: int,
    attempt: int,
    combo: Mapping[str, Any],
    scope: Mapping[str, Any],
    multi: bool,
) -> NewSlice:
    local = {**scope, "params": {**scope["params"], **combo}, "matrix": dict(combo)}
    params = {k: substitute(v, local) for k, v in step.params.items()}
    params.update(combo)
    args = tuple(_text(substitute(a, local)) for a in step.args)
    env = {k: _text(substitute(v, local)) for k, v in step.env.items()}
    return NewSlice(
        name=slice_name(run_name, step.name, index, attempt, matrix=multi),
        step=step.name,
        index=index,
        attempt=attempt,
        params=params,
        args=args,
        env=env,
    )


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)
