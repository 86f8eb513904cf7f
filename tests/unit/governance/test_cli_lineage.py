"""Rendering `runink lineage` and `runink annotations` output, to strings."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from rich.console import Console

from runink.cli import _lineage as cli_lineage, _output
from runink.schemas import _openlineage as ol, errors
from runink.store import _lineage


def streams(terminal: bool = False) -> tuple[_output.Streams, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return (
        _output.Streams(
            out=Console(file=out, width=120, force_terminal=terminal, color_system=None),
            err=Console(file=err, width=120, color_system=None),
        ),
        out,
        err,
    )


@pytest.fixture
def graph(lineage_store: _lineage.LineageStore) -> dict:  # type: ignore[type-arg]
    for i, (ins, outs) in enumerate([(["raw"], ["clean"]), (["clean"], ["report", "export"])]):
        ev = {
            "eventType": "COMPLETE",
            "eventTime": "2024-01-01T00:00:00Z",
            "producer": "t",
            "run": {"runId": str(uuid.uuid4())},
            "job": {"namespace": "runink://demo/finance", "name": f"nightly.step{i}"},
            "inputs": [{"namespace": "file", "name": n} for n in ins],
            "outputs": [{"namespace": "file", "name": n} for n in outs],
        }
        lineage_store.ingest(ol.parse_run_event(ev), ev)
    args = cli_lineage.lineage_args("dataset:file/raw", downstream=True, depth=10)
    return lineage_store.lineage(args["node_id"], direction=args["direction"], depth=args["depth"])


def test_tree_shows_the_downstream_datasets_and_steps(graph: dict) -> None:  # type: ignore[type-arg]
    s, out, _ = streams()
    cli_lineage.render_lineage(s, graph, ref="dataset:file/raw", direction="downstream")
    text = out.getvalue()
    lines = text.splitlines()
    assert "dataset file/raw" in lines[0]
    for name in (
        "job runink://demo/finance/nightly.step0 [COMPLETE]",
        "dataset file/clean",
        "dataset file/report",
        "dataset file/export",
    ):
        assert name in text
    assert (
        text.index("step0") < text.index("file/clean") < text.index("step1") < text.index("report")
    )


def test_json_is_marquez_shaped_and_dot_is_graphviz(graph: dict) -> None:  # type: ignore[type-arg]
    s, out, _ = streams()
    cli_lineage.render_lineage(s, graph, ref="dataset:file/raw", output="json")
    doc = json.loads(out.getvalue())
    assert {n["type"] for n in doc["graph"]} == {"DATASET", "JOB"}
    assert all({"id", "type", "data", "inEdges", "outEdges"} <= set(n) for n in doc["graph"])
    s, out, _ = streams()
    cli_lineage.render_lineage(s, graph, ref="dataset:file/raw", output="dot")
    assert '"dataset:file:raw" -> "job:runink://demo/finance:nightly.step0";' in out.getvalue()
    with pytest.raises(errors.Invalid):
        cli_lineage.render_lineage(s, graph, ref="x", output="png")


def test_arguments_are_checked() -> None:
    with pytest.raises(errors.Invalid, match="exclusive"):
        cli_lineage.lineage_args("dataset:a/b", upstream=True, downstream=True)
    with pytest.raises(errors.Invalid, match="dataset:NAMESPACE/NAME"):
        cli_lineage.lineage_args("orders")
    assert cli_lineage.lineage_args("job:ns/j", upstream=True)["direction"] == "upstream"


def test_annotations_table_and_paging_note() -> None:
    page = {
        "items": [
            {
                "metadata": {"name": "ann-1"},
                "spec": {
                    "annotationType": "sentiment",
                    "annotationValue": "positive",
                    "sourceModel": "llama3",
                    "confidenceScore": 0.875,
                    "annotatedDataRef": {"dataset": "reviews", "recordKey": "17"},
                    "provenance": {"reviewState": "suggested"},
                },
            }
        ],
        "nextCursor": "abcd",
        "count": 42,
    }
    s, out, err = streams()
    cli_lineage.render_annotations(s, page)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == cli_lineage.ANNOTATION_COLUMNS
    assert lines[1].split() == [
        "ann-1",
        "sentiment",
        "positive",
        "llama3",
        "0.88",
        "suggested",
        "reviews",
        "17",
    ]
    assert "1 of 42 shown" in err.getvalue() and "--continue abcd" in err.getvalue()
    s, out, _ = streams()
    cli_lineage.render_annotations(s, page, output="json")
    assert json.loads(out.getvalue())["items"][0]["metadata"]["name"] == "ann-1"
