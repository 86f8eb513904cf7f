"""The run planner: DAG order, results flow, retries with backoff, when/finally, matrix, cancel, timeouts."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, strategies as st

from runink.controllers import _runplan as rp


def _sim_slice(new: rp.NewSlice, now: float) -> rp.SliceState:
    return rp.SliceState(
        name=new.name,
        step=new.step,
        index=new.index,
        attempt=new.attempt,
        phase="Pending",
        created_at=now,
    )


def _finish(s: rp.SliceState, phase: str, now: float, **results: Any) -> rp.SliceState:
    return replace(s, phase=phase, started_at=s.created_at, finished_at=now, results=results)


def test_linear_dag_runs_in_order_and_results_flow_into_params() -> None:
    steps = [
        rp.StepDef("extract"),
        rp.StepDef(
            "transform",
            deps=(("extract", "success"),),
            params={"rows": "$(steps.extract.results.rows)"},
        ),
        rp.StepDef("report", deps=(("transform", "success"),), args=("--date", "$(params.date)")),
    ]
    p = rp.plan(run_name="r1", steps=steps, run_params={"date": "2026-11-27"}, slices=[], now=0)
    assert [c.step for c in p.create] == ["extract"]
    assert p.phase == "Running"
    assert p.steps["transform"].phase == "Pending"

    ex = _finish(_sim_slice(p.create[0], 0), "Succeeded", 1, rows=42)
    p = rp.plan(run_name="r1", steps=steps, run_params={"date": "2026-11-27"}, slices=[ex], now=1)
    assert [c.step for c in p.create] == ["transform"]
    assert p.create[0].params == {"rows": 42}
    assert p.steps["extract"].results == {"rows": 42}

    tr = _finish(_sim_slice(p.create[0], 1), "Succeeded", 2)
    p = rp.plan(
        run_name="r1", steps=steps, run_params={"date": "2026-11-27"}, slices=[ex, tr], now=2
    )
    assert p.create[0].args == ("--date", "2026-11-27")
    rep = _finish(_sim_slice(p.create[0], 2), "Succeeded", 3)
    p = rp.plan(
        run_name="r1", steps=steps, run_params={"date": "2026-11-27"}, slices=[ex, tr, rep], now=3
    )
    assert p.phase == "Succeeded"
    assert not p.create


def test_failed_step_is_retried_with_backoff_then_fails_run_and_finally_still_runs() -> None:
    backoff = rp.Backoff(initial=10, maximum=100, factor=2, jitter=0)
    steps = [
        rp.StepDef("flaky", retry_limit=2, backoff=backoff),
        rp.StepDef("after", deps=(("flaky", "success"),)),
        rp.StepDef("cleanup", is_finally=True),
    ]
    slices: list[rp.SliceState] = []
    now = 0.0
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=slices, now=now)
    delays = []
    for attempt in (1, 2, 3):
        assert [(c.step, c.attempt) for c in p.create] == [("flaky", attempt)]
        slices.append(_finish(_sim_slice(p.create[0], now), "Failed", now))
        p = rp.plan(run_name="r", steps=steps, run_params={}, slices=slices, now=now)
        if attempt < 3:
            assert p.steps["flaky"].phase == "Waiting"
            assert not p.create, "a retry must wait for its backoff"
            assert p.requeue_after is not None
            delays.append(p.requeue_after)
            now += p.requeue_after
            p = rp.plan(run_name="r", steps=steps, run_params={}, slices=slices, now=now)
    assert delays == [10, 20], "exponential backoff"
    assert p.steps["flaky"].phase == "Failed"
    assert p.steps["after"].phase == "Skipped"
    assert [c.step for c in p.create] == ["cleanup"], "finally runs after a failure"
    assert p.phase == "Running"
    slices.append(_finish(_sim_slice(p.create[0], now), "Succeeded", now))
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=slices, now=now)
    assert p.phase == "Failed"
    assert "flaky" in (p.message or "")


def test_when_and_dependency_conditions() -> None:
    steps = [
        rp.StepDef("a"),
        rp.StepDef("only_full", deps=(("a", "success"),), when="params.mode == 'full'"),
        rp.StepDef("on_fail", deps=(("a", "failure"),)),
        rp.StepDef("always", deps=(("only_full", "always"),)),
    ]
    a = _finish(
        _sim_slice(
            rp.plan(
                run_name="r", steps=steps, run_params={"mode": "delta"}, slices=[], now=0
            ).create[0],
            0,
        ),
        "Succeeded",
        1,
    )
    p = rp.plan(run_name="r", steps=steps, run_params={"mode": "delta"}, slices=[a], now=1)
    assert p.steps["only_full"].phase == "Skipped"
    assert "false" in (p.steps["only_full"].message or "")
    assert p.steps["on_fail"].phase == "Skipped"
    assert [c.step for c in p.create] == ["always"]


def test_matrix_fans_out_within_max_parallel() -> None:
    steps = [
        rp.StepDef(
            "t",
            matrix=rp.expand_matrix({"region": ["eu", "us", "ap"], "day": [1, 2]}),
            max_parallel=2,
        )
    ]
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=[], now=0)
    assert len(p.create) == 2
    assert p.create[0].params == {"day": 1, "region": "eu"}
    slices = [_sim_slice(c, 0) for c in p.create]
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=slices, now=0)
    assert not p.create, "two already running"
    done = 0
    while p.phase != "Succeeded":
        slices = [
            _finish(s, "Succeeded", 1, out=s.index) if s.phase != "Succeeded" else s for s in slices
        ]
        p = rp.plan(run_name="r", steps=steps, run_params={}, slices=slices, now=1)
        assert len(p.create) <= 2
        slices += [_sim_slice(c, 1) for c in p.create]
        done += 1
        assert done < 10
    assert len(slices) == 6
    assert len({s.name for s in slices}) == 6
    assert p.steps["t"].results == {"out": [0, 1, 2, 3, 4, 5]}


def test_cancel_stops_running_slices_and_ends_cancelled() -> None:
    steps = [rp.StepDef("a"), rp.StepDef("b", deps=(("a", "success"),))]
    a = replace(
        _sim_slice(
            rp.plan(run_name="r", steps=steps, run_params={}, slices=[], now=0).create[0], 0
        ),
        phase="Running",
        started_at=0,
    )
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=[a], now=5, cancelled=True)
    assert [(c.name, c.reason) for c in p.cancel] == [(a.name, "Cancelled")]
    assert p.phase == "Running"
    a = replace(a, phase="Failed", cancelled=True, finished_at=6, reason="Cancelled")
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=[a], now=6, cancelled=True)
    assert p.phase == "Cancelled"
    assert p.steps["b"].phase == "Cancelled"
    assert not p.create


def test_step_timeout_cancels_slice_with_deadline_exceeded() -> None:
    steps = [rp.StepDef("slow", timeout=30)]
    s = replace(
        _sim_slice(
            rp.plan(run_name="r", steps=steps, run_params={}, slices=[], now=0).create[0], 0
        ),
        phase="Running",
        started_at=0,
    )
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=[s], now=10)
    assert not p.cancel
    assert p.requeue_after == pytest.approx(20)
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=[s], now=31)
    assert [c.reason for c in p.cancel] == ["DeadlineExceeded"]


def test_run_timeout_fails_the_run() -> None:
    steps = [rp.StepDef("a")]
    s = replace(
        _sim_slice(
            rp.plan(run_name="r", steps=steps, run_params={}, slices=[], now=0).create[0], 0
        ),
        phase="Running",
        started_at=0,
    )
    p = rp.plan(
        run_name="r", steps=steps, run_params={}, slices=[s], now=100, run_start=0, run_timeout=60
    )
    assert [c.reason for c in p.cancel] == ["RunTimeout"]
    s = replace(s, phase="Failed", finished_at=101, cancelled=True)
    p = rp.plan(
        run_name="r", steps=steps, run_params={}, slices=[s], now=101, run_start=0, run_timeout=60
    )
    assert p.phase == "Failed"
    assert p.reason == "RunTimeout"


@pytest.mark.parametrize(
    "expr", ["__import__('os').system('true')", "params.x.__class__", "f(1)", "[x for x in y]"]
)
def test_when_refuses_anything_but_comparisons(expr: str) -> None:
    with pytest.raises(rp.PlanError):
        rp.evaluate_when(expr, {"params": {"x": 1}})


def test_bad_reference_fails_the_step_with_a_message() -> None:
    steps = [rp.StepDef("a", params={"x": "$(params.missing)"})]
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=[], now=0)
    assert p.phase == "Failed"
    assert "params.missing" in (p.message or "")


def test_long_names_stay_dns_labels() -> None:
    name = rp.slice_name("r" * 50, "step" * 10, 3, 2, matrix=True)
    assert len(name) <= 63
    assert name.endswith("-3-2")


@st.composite
def _pipelines(draw: st.DrawFn) -> list[rp.StepDef]:
    n = draw(st.integers(1, 6))
    steps = []
    for i in range(n):
        parents = draw(st.sets(st.integers(0, i - 1), max_size=2)) if i > 0 else set()
        deps = tuple(
            (f"s{j}", draw(st.sampled_from(["success", "failure", "always"])))
            for j in sorted(parents)
        )
        steps.append(
            rp.StepDef(
                f"s{i}",
                deps=deps,  # type: ignore[arg-type]
                retry_limit=draw(st.integers(0, 2)),
                backoff=rp.Backoff(initial=1, maximum=4, jitter=0.5),
                matrix=rp.expand_matrix({"k": list(range(draw(st.integers(1, 3))))}),
                max_parallel=draw(st.sampled_from([None, 1, 2])),
                is_finally=draw(st.booleans()) and i == n - 1 and not deps,
            )
        )
    return steps


@given(steps=_pipelines(), outcomes=st.lists(st.booleans(), min_size=64, max_size=64))
def test_any_pipeline_terminates_respecting_order_and_retry_limits(
    steps: list[rp.StepDef], outcomes: list[bool]
) -> None:
    slices: dict[str, rp.SliceState] = {}
    now = 0.0
    flips = iter(outcomes * 10)
    for _ in range(500):
        p = rp.plan(run_name="r", steps=steps, run_params={}, slices=list(slices.values()), now=now)
        if p.phase in ("Succeeded", "Failed", "Cancelled"):
            break
        for c in p.create:
            step = next(s for s in steps if s.name == c.step)
            for dep, _ in step.deps:
                assert p.steps[dep].phase in rp.TERMINAL_STEP, (
                    f"{c.step} started before {dep} ended"
                )
            if step.is_finally:
                assert all(
                    p.steps[s.name].phase in rp.TERMINAL_STEP for s in steps if not s.is_finally
                )
            assert c.attempt <= step.retry_limit + 1
            assert c.name not in slices
            slices[c.name] = _sim_slice(c, now)
        # Every live slice ends, succeeding or failing at random.
        for name, s in list(slices.items()):
            if s.phase not in rp.TERMINAL_SLICE:
                slices[name] = _finish(s, "Succeeded" if next(flips) else "Failed", now)
        now += p.requeue_after if p.requeue_after else 1.0
    else:
        pytest.fail("the run never finished")
    regular = [s for s in steps if not s.is_finally]
    expect_fail = any(p.steps[s.name].phase == "Failed" for s in steps)
    assert p.phase == ("Failed" if expect_fail else "Succeeded")
    assert all(p.steps[s.name].phase in rp.TERMINAL_STEP for s in regular)


def test_a_finally_step_needing_a_missing_result_is_skipped_not_failed() -> None:
    steps = [
        rp.StepDef("extract"),
        rp.StepDef("announce", is_finally=True, env={"ROWS": "$(steps.extract.results.rows)"}),
    ]
    first = rp.plan(run_name="r", steps=steps, run_params={}, slices=[], now=0).create[0]
    failed = _finish(_sim_slice(first, 0), "Failed", 1)
    p = rp.plan(run_name="r", steps=steps, run_params={}, slices=[failed], now=1)
    assert p.steps["announce"].phase == "Skipped"
    assert "extract is Failed" in (p.steps["announce"].message or "")
    assert p.phase == "Failed"
    assert "extract" in (p.message or "")


def test_an_llm_step_runs_the_sdk_annotator_with_its_key_as_a_file() -> None:
    from runink.controllers import _runs

    python, params, secrets, results = _runs.llm_slice(
        {
            "model": "m1",
            "endpoint": "http://127.0.0.1:9/v1",
            "prompt": "Sentiment of: {value}",
            "field": "review",
            "annotationType": "sentiment",
            "batchSize": 10,
            "apiKey": {"secret": "openai", "key": "token"},
        }
    )
    assert python == "runink.sdk.llm:annotate_dataset"
    assert params["annotation_type"] == "sentiment"
    assert params["batch_size"] == 10
    assert params["api_key_secret"] == "openai/token"
    assert secrets == [{"secret": "openai", "key": "token", "as": "file"}]
    assert "lineage" in results
