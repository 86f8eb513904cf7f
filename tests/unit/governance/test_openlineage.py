"""Parsing OpenLineage RunEvents: real producers' events pass, malformed ones name the bad field."""

from __future__ import annotations

from typing import Any

import pytest

from runink.schemas import _openlineage as ol, errors


@pytest.mark.parametrize("name", ["spec_start", "spec_complete", "spec_full", "airflow", "spark"])
def test_real_events_are_accepted(examples: dict[str, dict[str, Any]], name: str) -> None:
    ev = ol.parse_run_event(examples[name])
    assert ev.run.run_id == examples[name]["run"]["runId"].lower()
    assert ev.job.name == examples[name]["job"]["name"]
    assert ev.event_time.tzinfo is not None


def test_custom_facets_pass_through_and_standard_ones_are_typed(
    examples: dict[str, dict[str, Any]],
) -> None:
    ev = ol.parse_run_event(examples["airflow"])
    assert ev.run.facets.parent is not None
    assert ev.run.facets.parent.job.name == "etl_orders"
    assert ev.run.facets.model_extra is not None
    assert ev.run.facets.model_extra["airflow"]["task"]["task_id"] == "load"
    cl = ev.outputs[0].facets.column_lineage
    assert cl is not None
    assert cl.fields["total"].input_fields[0].field == "amount"
    dq = ev.inputs[0].input_facets.data_quality_assertions
    assert dq is not None and dq.assertions[0].success


def _paths(e: errors.Invalid) -> list[str]:
    return [fe.path for fe in e.errors]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda ev: ev["run"].update(runId="not-a-uuid"), "run.runId"),
        (lambda ev: ev["job"].pop("name"), "job.name"),
        (lambda ev: ev.update(eventType="FINISHED"), "eventType"),
        (lambda ev: ev.update(eventTime="yesterday"), "eventTime"),
        (lambda ev: ev.pop("producer"), "producer"),
        (lambda ev: ev["inputs"][0].update(namespace=""), "inputs[0].namespace"),
        (
            lambda ev: ev["outputs"][0]["facets"]["columnLineage"]["fields"]["total"].pop(
                "inputFields"
            ),
            "outputs[0].facets.columnLineage.fields.total.inputFields",
        ),
        (
            lambda ev: ev["run"]["facets"]["parent"]["run"].pop("runId"),
            "run.facets.parent.run.runId",
        ),
        (
            lambda ev: ev["inputs"][0]["inputFacets"]["dataQualityAssertions"]["assertions"][
                0
            ].update(success="maybe"),
            "inputs[0].inputFacets.dataQualityAssertions.assertions[0].success",
        ),
    ],
)
def test_malformed_event_is_refused_with_the_field_path(
    examples: dict[str, dict[str, Any]], mutate: Any, path: str
) -> None:
    ev = examples["airflow"]
    mutate(ev)
    with pytest.raises(errors.Invalid) as exc:
        ol.parse_run_event(ev)
    assert path in _paths(exc.value)
    assert path in str(exc.value)


def test_text_that_is_not_json_is_refused() -> None:
    with pytest.raises(errors.Invalid, match="not JSON"):
        ol.parse_run_event(b"{not json")
    with pytest.raises(errors.Invalid, match="JSON object"):
        ol.parse_run_event("[1, 2]")
