"""The lineage store: ingest from real producers, order/duplicate tolerance, versioned edges, queries."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from runink.schemas import _openlineage as ol, errors
from runink.store import _lineage


def ingest(store: _lineage.LineageStore, ev: dict[str, Any]) -> dict[str, Any]:
    return store.ingest(ol.parse_run_event(ev), ev)


def event(
    run_id: str,
    typ: str,
    t: str,
    inputs: list[str],
    outputs: list[str],
    job: str = "etl",
    columns: dict[str, list[tuple[str, str]]] | None = None,
) -> dict[str, Any]:
    outs = []
    for o in outputs:
        facets: dict[str, Any] = {}
        if columns:
            facets["columnLineage"] = {
                "fields": {
                    col: {
                        "inputFields": [
                            {"namespace": "db", "name": ds, "field": f} for ds, f in srcs
                        ]
                    }
                    for col, srcs in columns.items()
                }
            }
        outs.append({"namespace": "db", "name": o, "facets": facets})
    return {
        "eventType": typ,
        "eventTime": t,
        "producer": "test",
        "run": {"runId": run_id},
        "job": {"namespace": "runink://c/h", "name": job},
        "inputs": [{"namespace": "db", "name": i} for i in inputs],
        "outputs": outs,
    }


def ids(graph: dict[str, Any]) -> set[str]:
    return {n["id"] for n in graph["graph"]}


def test_real_producers_events_appear_in_the_graph(
    lineage_store: _lineage.LineageStore, examples: dict[str, dict[str, Any]]
) -> None:
    for ev in examples.values():
        ingest(lineage_store, ev)
    taxes = lineage_store.lineage("dataset:postgres://workshop-db:None:workshop.public.taxes")
    assert {
        "job:workshop:process_taxes",
        "dataset:postgres://workshop-db:None:workshop.public.unpaid_taxes",
    } <= ids(taxes)
    orders = lineage_store.lineage("job:default:etl_orders.load", depth=1)
    assert ids(orders) == {
        "job:default:etl_orders.load",
        "dataset:postgres://db:5432:shop.public.raw_orders",
        "dataset:postgres://db:5432:shop.public.orders",
    }
    spark = lineage_store.lineage("dataset:s3://lake:warehouse/daily", direction="upstream")
    assert "dataset:s3://lake:warehouse/orders" in ids(spark)
    full = lineage_store.lineage("dataset:my-datasource-namespace:instance.schema.output")
    assert "dataset:my-datasource-namespace:instance.schema.table" in ids(full)
    # Column lineage from the Airflow event.
    col = lineage_store.lineage(
        "datasetField:postgres://db:5432:shop.public.orders:total", direction="upstream"
    )
    assert "datasetField:postgres://db:5432:shop.public.raw_orders:amount" in ids(col)


def test_cli_form_of_a_node_resolves_even_with_colons_and_slashes_in_the_namespace(
    lineage_store: _lineage.LineageStore, examples: dict[str, dict[str, Any]]
) -> None:
    ingest(lineage_store, examples["spec_start"])
    ingest(lineage_store, examples["spark"])
    assert (
        lineage_store.resolve("dataset:postgres://workshop-db:None/workshop.public.taxes")
        == "dataset:postgres://workshop-db:None:workshop.public.taxes"
    )
    assert (
        lineage_store.resolve("dataset:s3://lake/warehouse/orders")
        == "dataset:s3://lake:warehouse/orders"
    )
    with pytest.raises(errors.NotFound):
        lineage_store.resolve("dataset:nowhere/nothing")


def test_run_state_tolerates_reordering_and_duplicates(
    lineage_store: _lineage.LineageStore,
) -> None:
    rid = str(uuid.uuid4())
    start = event(rid, "START", "2024-01-01T00:00:00Z", ["a"], [])
    running = event(rid, "RUNNING", "2024-01-01T00:00:03Z", [], ["c"])
    complete = event(rid, "COMPLETE", "2024-01-01T00:00:05Z", ["b"], ["c"])
    # Arrival order: COMPLETE, START twice, RUNNING last (after the terminal event).
    for ev in (complete, start, start, running, complete):
        state = ingest(lineage_store, ev)
    assert state["state"] == "COMPLETE"
    assert state["startedAt"] == "2024-01-01T00:00:00Z"
    assert state["endedAt"] == "2024-01-01T00:00:05Z"
    assert state["eventCount"] == 3  # the two duplicates were recognised
    assert sorted(map(tuple, state["inputs"])) == [("db", "a"), ("db", "b")]
    assert len(lineage_store.dataset_versions("db", "c")) == 1


def test_a_late_start_does_not_reopen_a_failed_run(lineage_store: _lineage.LineageStore) -> None:
    rid = str(uuid.uuid4())
    ingest(lineage_store, event(rid, "FAIL", "2024-01-01T00:00:09Z", ["a"], ["c"]))
    state = ingest(lineage_store, event(rid, "START", "2024-01-01T00:00:00Z", ["a"], []))
    assert state["state"] == "FAIL"
    with pytest.raises(errors.NotFound):
        lineage_store.run(str(uuid.uuid4()))


def test_current_graph_drops_edges_when_the_job_version_changes(
    lineage_store: _lineage.LineageStore,
) -> None:
    r1, r2, r3 = (str(uuid.uuid4()) for _ in range(3))
    ingest(lineage_store, event(r1, "COMPLETE", "2024-01-01T00:00:00Z", ["a", "b"], ["c"]))
    up = lineage_store.lineage("dataset:db:c", direction="upstream")
    assert {"dataset:db:a", "dataset:db:b"} <= ids(up)
    # The job stops reading b.
    ingest(lineage_store, event(r2, "COMPLETE", "2024-01-02T00:00:00Z", ["a"], ["c"]))
    up = lineage_store.lineage("dataset:db:c", direction="upstream")
    assert "dataset:db:b" not in ids(up)
    assert "dataset:db:a" in ids(up)
    # A failed newer run with other inputs does not rewrite the current graph...
    ingest(lineage_store, event(r3, "FAIL", "2024-01-03T00:00:00Z", ["x"], ["c"]))
    assert "dataset:db:x" not in ids(lineage_store.lineage("dataset:db:c", direction="upstream"))
    # ... and an old run delivered late does not either.
    late = str(uuid.uuid4())
    ingest(lineage_store, event(late, "COMPLETE", "2023-12-01T00:00:00Z", ["old"], ["c"]))
    assert "dataset:db:old" not in ids(lineage_store.lineage("dataset:db:c"))
    # History is kept: the first run's graph still has b, and c has three versions.
    assert "dataset:db:b" in ids(lineage_store.run_graph(r1))
    versions = lineage_store.dataset_versions("db", "c")
    assert [v["runId"] for v in versions] == [r2, r1, late]
    assert lineage_store.dataset("db", "c")["currentVersion"] == versions[0]["version"]


def chain(store: _lineage.LineageStore, n: int) -> None:
    """d0 -> j0 -> d1 -> j1 -> ... -> dn."""
    store.ingest_many(
        (ol.parse_run_event(ev), ev)
        for ev in (
            event(
                str(uuid.uuid4()),
                "COMPLETE",
                "2024-01-01T00:00:00Z",
                [f"d{i}"],
                [f"d{i + 1}"],
                job=f"j{i}",
            )
            for i in range(n)
        )
    )


def test_depth_and_direction(lineage_store: _lineage.LineageStore) -> None:
    chain(lineage_store, 5)
    assert ids(lineage_store.lineage("dataset:db:d2", direction="downstream", depth=2)) == {
        "dataset:db:d2",
        "job:runink://c/h:j2",
        "dataset:db:d3",
    }
    assert ids(lineage_store.lineage("dataset:db:d2", direction="upstream", depth=1)) == {
        "dataset:db:d2",
        "job:runink://c/h:j1",
    }
    assert len(lineage_store.lineage("dataset:db:d2", depth=20)["graph"]) == 11
    assert ids(lineage_store.lineage("dataset:db:d2", depth=0)) == {"dataset:db:d2"}


def test_column_lineage_follows_fields_across_jobs(lineage_store: _lineage.LineageStore) -> None:
    ingest(
        lineage_store,
        event(
            str(uuid.uuid4()),
            "COMPLETE",
            "2024-01-01T00:00:00Z",
            ["raw"],
            ["clean"],
            job="clean",
            columns={"amount": [("raw", "amt")]},
        ),
    )
    ingest(
        lineage_store,
        event(
            str(uuid.uuid4()),
            "COMPLETE",
            "2024-01-01T00:00:00Z",
            ["clean"],
            ["report"],
            job="report",
            columns={"total": [("clean", "amount")]},
        ),
    )
    up = ids(lineage_store.lineage("datasetField:db:report:total", direction="upstream", depth=5))
    assert up == {
        "datasetField:db:report:total",
        "datasetField:db:clean:amount",
        "datasetField:db:raw:amt",
    }
    down = ids(lineage_store.lineage("datasetField:db:raw:amt", direction="downstream", depth=1))
    assert down == {"datasetField:db:raw:amt", "datasetField:db:clean:amount"}


def test_marquez_shape_and_dot(lineage_store: _lineage.LineageStore) -> None:
    chain(lineage_store, 2)
    graph = lineage_store.lineage("dataset:db:d0", direction="downstream")
    by_id = {n["id"]: n for n in graph["graph"]}
    job = by_id["job:runink://c/h:j0"]
    assert job["type"] == "JOB"
    assert job["data"]["latestRun"]["state"] == "COMPLETE"
    assert job["data"]["inputs"] == [{"namespace": "db", "name": "d0"}]
    assert job["inEdges"] == [{"origin": "dataset:db:d0", "destination": "job:runink://c/h:j0"}]
    assert by_id["dataset:db:d1"]["type"] == "DATASET"
    assert by_id["dataset:db:d1"]["data"]["id"] == {"namespace": "db", "name": "d1"}
    for node in graph["graph"]:  # every edge is listed at both of its ends
        for e in node["outEdges"]:
            assert e in by_id[e["destination"]]["inEdges"]
    dot = _lineage.to_dot(graph)
    assert dot.startswith('digraph "lineage" {')
    assert '"dataset:db:d0" -> "job:runink://c/h:j0";' in dot
    assert '"job:runink://c/h:j0" [label="j0", shape=box];' in dot


def test_graph_survives_reopen(tmp_path: Path) -> None:
    s = _lineage.open_lineage_store(tmp_path / "l", sync=False)
    r1, r2 = str(uuid.uuid4()), str(uuid.uuid4())
    ingest(s, event(r1, "COMPLETE", "2024-01-01T00:00:00Z", ["a", "b"], ["c"]))
    ingest(s, event(r2, "COMPLETE", "2024-01-02T00:00:00Z", ["a"], ["c"]))
    before = s.lineage("dataset:db:c")
    s.close()
    s = _lineage.open_lineage_store(tmp_path / "l", sync=False)
    try:
        assert s.lineage("dataset:db:c") == before
        assert "dataset:db:b" not in ids(before)
    finally:
        s.close()
