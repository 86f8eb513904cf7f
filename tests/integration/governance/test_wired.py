"""Governance through a real `runink up` (no agent): the HTTPS endpoint, gRPC, catalog and CLI.

Producers post OpenLineage events as they send them (the specification's examples, Airflow- and
Spark-shaped events) to POST /api/v1/lineage; `runink lineage` then shows them. A malformed event
is refused with the bad field's path over HTTP (422) and gRPC (Invalid). An llm step's output and
COMPLETE event, fed through the same sink the run controller uses, land as exactly 100
annotations with provenance, queryable through the CLI.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from runink import api
from runink.cli import _up
from runink.controllers import _runs
from runink.schemas import errors
from runink.sdk import Context, llm

pytestmark = pytest.mark.integration

Cli = Callable[..., Awaitable[tuple[int, str, str]]]
Post = Callable[[Any, str | None], tuple[int, Any]]
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
F = "https://openlineage.io/spec/facets/"

# The specification's own examples (spec/OpenLineage.md, "Run events"): START then COMPLETE.
SPEC_START = {
    "eventType": "START",
    "eventTime": "2020-12-28T19:52:00.001+10:00",
    "run": {"runId": "0176a8c2-fe01-7439-87e6-56a1a1b4029f"},
    "job": {"namespace": "my-namespace", "name": "myjob.mytask"},
    "inputs": [{"namespace": "my-namespace", "name": "my-input"}],
    "outputs": [{"namespace": "my-namespace", "name": "my-output"}],
    "producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
    "schemaURL": SCHEMA_URL,
}
SPEC_COMPLETE = {
    **SPEC_START,
    "eventType": "COMPLETE",
    "eventTime": "2020-12-28T20:52:00.001+10:00",
    "outputs": [
        {
            "namespace": "my-namespace",
            "name": "my-output",
            "facets": {
                "schema": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/blob/v1-0-0/client",
                    "_schemaURL": F + "1-1-1/SchemaDatasetFacet.json",
                    "fields": [
                        {"name": "a", "type": "VARCHAR"},
                        {"name": "b", "type": "VARCHAR"},
                    ],
                }
            },
        }
    ],
}
AIRFLOW = {
    "eventType": "COMPLETE",
    "eventTime": "2026-11-27T02:00:05.123456+00:00",
    "producer": "https://github.com/apache/airflow/tree/providers-openlineage/1.14.0",
    "schemaURL": SCHEMA_URL,
    "run": {
        "runId": "01932c5e-9a1b-7c3d-8e4f-5a6b7c8d9e0f",
        "facets": {
            "parent": {
                "_producer": "https://github.com/apache/airflow",
                "_schemaURL": F + "1-0-1/ParentRunFacet.json",
                "run": {"runId": "01932c5e-0000-7000-8000-000000000001"},
                "job": {"namespace": "airflow-prod", "name": "etl_orders"},
            },
            "airflow": {
                "_producer": "https://github.com/apache/airflow",
                "_schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet",
                "dag": {"dag_id": "etl_orders", "schedule_interval": "@daily"},
                "task": {"task_id": "load_orders", "operator_class": "SQLExecuteQueryOperator"},
            },
            "nominalTime": {
                "_producer": "https://github.com/apache/airflow",
                "_schemaURL": F + "1-0-1/NominalTimeRunFacet.json",
                "nominalStartTime": "2026-11-26T00:00:00+00:00",
            },
        },
    },
    "job": {
        "namespace": "airflow-prod",
        "name": "etl_orders.load_orders",
        "facets": {
            "jobType": {
                "_producer": "https://github.com/apache/airflow",
                "_schemaURL": F + "2-0-3/JobTypeJobFacet.json",
                "processingType": "BATCH",
                "integration": "AIRFLOW",
                "jobType": "TASK",
            },
            "sql": {
                "_producer": "https://github.com/apache/airflow",
                "_schemaURL": F + "1-0-1/SQLJobFacet.json",
                "query": "INSERT INTO public.orders SELECT * FROM public.raw_orders",
            },
        },
    },
    "inputs": [{"namespace": "postgres://db:5432", "name": "shop.public.raw_orders"}],
    "outputs": [
        {
            "namespace": "postgres://db:5432",
            "name": "shop.public.orders",
            "facets": {
                "schema": {
                    "_producer": "https://github.com/apache/airflow",
                    "_schemaURL": F + "1-1-1/SchemaDatasetFacet.json",
                    "fields": [
                        {"name": "order_id", "type": "integer"},
                        {"name": "amount", "type": "numeric(12,2)"},
                    ],
                },
                "ownership": {
                    "_producer": "https://github.com/apache/airflow",
                    "_schemaURL": F + "1-0-1/OwnershipDatasetFacet.json",
                    "owners": [{"name": "team:finance", "type": "TEAM"}],
                },
            },
        }
    ],
}
SPARK = {
    "eventType": "COMPLETE",
    "eventTime": "2026-11-27T03:10:00.000Z",
    "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.24.2/integration/spark",
    "schemaURL": SCHEMA_URL,
    "run": {
        "runId": "01932d00-1111-7222-8333-444455556666",
        "facets": {
            "spark_version": {
                "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.24.2/integration/spark",
                "_schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunFacet",
                "spark-version": "3.5.1",
            },
            "processing_engine": {
                "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.24.2/integration/spark",
                "_schemaURL": F + "1-1-1/ProcessingEngineRunFacet.json",
                "version": "3.5.1",
                "name": "spark",
            },
        },
    },
    "job": {
        "namespace": "spark-cluster",
        "name": "orders_app.execute_insert_into_hadoop_fs_relation_command.gold_orders",
    },
    "inputs": [
        {
            "namespace": "postgres://db:5432",
            "name": "shop.public.orders",
            "inputFacets": {},
        }
    ],
    "outputs": [
        {
            "namespace": "s3://lake",
            "name": "gold/orders",
            "facets": {
                "schema": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.24.2/integration/spark",
                    "_schemaURL": F + "1-1-1/SchemaDatasetFacet.json",
                    "fields": [{"name": "total", "type": "decimal(18,2)"}],
                },
                "columnLineage": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.24.2/integration/spark",
                    "_schemaURL": F + "1-2-0/ColumnLineageDatasetFacet.json",
                    "fields": {
                        "total": {
                            "inputFields": [
                                {
                                    "namespace": "postgres://db:5432",
                                    "name": "shop.public.orders",
                                    "field": "amount",
                                    "transformations": [
                                        {"type": "DIRECT", "subtype": "AGGREGATION"}
                                    ],
                                }
                            ]
                        }
                    },
                },
            },
            "outputFacets": {
                "outputStatistics": {
                    "_producer": "https://github.com/OpenLineage/OpenLineage/tree/1.24.2/integration/spark",
                    "_schemaURL": F + "1-0-2/OutputStatisticsOutputDatasetFacet.json",
                    "rowCount": 42,
                    "size": 4096,
                }
            },
        }
    ],
}


async def _token(cluster: _up.Cluster) -> str:
    async with api.Client.from_config(cluster.config_path) as c:
        return str((await c.create_api_key(description="lineage producer"))["token"])


async def test_producers_events_over_https_appear_in_runink_lineage(
    cluster: _up.Cluster, cli: Cli, post: Post
) -> None:
    token = await _token(cluster)
    assert str(cluster.lineage_url).startswith("https://127.0.0.1:")
    for event in (SPEC_START, SPEC_COMPLETE, AIRFLOW, SPARK):
        status, body = await asyncio.to_thread(post, event, token)
        assert status == 201, body
    assert body["state"] == "COMPLETE"

    code, out, err = await cli("lineage", "dataset:my-namespace/my-input", "--downstream")
    assert code == 0, err
    assert "myjob.mytask" in out and "my-output" in out

    # Airflow's output feeds Spark's job: one graph across producers, Marquez-shaped JSON.
    code, out, err = await cli(
        "lineage", "dataset:postgres://db:5432/shop.public.raw_orders", "-o", "json"
    )
    assert code == 0, err
    ids = {n["id"] for n in json.loads(out)["graph"]}
    assert "job:airflow-prod:etl_orders.load_orders" in ids
    assert "dataset:s3://lake:gold/orders" in ids

    # Column lineage reported by Spark: upstream of gold/orders.total is orders.amount.
    code, out, err = await cli(
        "lineage", "datasetField:s3://lake:gold/orders:total", "--upstream", "-o", "json"
    )
    assert code == 0, err
    assert "datasetField:postgres://db:5432:shop.public.orders:amount" in {
        n["id"] for n in json.loads(out)["graph"]
    }
    code, out, _ = await cli("lineage", "dataset:s3://lake/gold/orders", "-o", "dot")
    assert out.startswith('digraph "lineage"') and "->" in out

    # The schema facets became Dataset objects in the catalog, searchable by field and owner.
    code, out, err = await cli("datasets", "search", "--field", "amount", "-o", "json")
    assert code == 0, err
    found = json.loads(out)["items"]
    assert [d["spec"]["uri"] for d in found] == ["postgres://db:5432/shop.public.orders"]
    assert found[0]["spec"]["owners"] == ["team:finance"]
    assert {"name": "amount", "type": "numeric(12,2)"} in found[0]["spec"]["schema"]
    code, out, _ = await cli("get", "datasets")
    assert "my-output" in out


async def test_malformed_events_are_refused_with_the_field_path(
    cluster: _up.Cluster, post: Post
) -> None:
    token = await _token(cluster)
    bad = {**SPEC_START, "run": {"runId": "not-a-uuid"}}
    status, body = await asyncio.to_thread(post, bad, token)
    assert status == 422
    assert "run.runId" in [e["path"] for e in body["errors"]]

    status, body = await asyncio.to_thread(post, SPEC_START, None)
    assert status == 401
    status, body = await asyncio.to_thread(post, SPEC_START, "rk_not_a_real_key")
    assert status == 401

    async with api.Client.from_config(cluster.config_path) as c:
        with pytest.raises(errors.Invalid) as info:
            await c.ingest_lineage({**SPEC_START, "job": {"namespace": "my-namespace"}})
        assert "job.name" in [e.path for e in info.value.errors]
        with pytest.raises(errors.NotFound):
            await c.lineage("dataset:nowhere:nothing")


async def test_llm_step_annotations_reach_the_store_with_provenance(
    cluster: _up.Cluster,
    cli: Cli,
    openai_server: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The step, in-process, as the agent would run it: input and output under the datasets root.
    herd, root = "demo", cluster.data_dir / "datasets"
    (root / herd).mkdir(parents=True)
    (root / herd / "reviews.csv").write_text(
        "id,text\n" + "".join(f"{i},review number {i}\n" for i in range(100))
    )
    wd = tmp_path / "work"
    wd.mkdir()
    monkeypatch.setenv("RUNINK_HERD", herd)
    monkeypatch.setenv("RUNINK_SLICE", "nightly-7-annotate")
    params = {
        "model": "llama3-8b",
        "endpoint": f"http://127.0.0.1:{openai_server.server_address[1]}/v1",
        "prompt": "Sentiment of record #{key}: {value}",
        "field": "text",
        "annotation_type": "sentiment",
        "batch_size": 16,
        "concurrency": 4,
        "retries": 3,
        "timeout": 0.5,
        "backoff": 0.01,
    }
    (wd / "context.json").write_text(
        json.dumps(
            {
                "params": params,
                "inputs": {"reviews.csv": str(root / herd / "reviews.csv")},
                "outputs": {"review-sentiment.jsonl": str(root / herd / "review-sentiment.jsonl")},
            }
        )
    )
    ctx = Context(work_dir=wd)
    await asyncio.to_thread(llm.annotate_dataset, ctx)
    results = json.loads((wd / "results.json").read_text())
    assert sum(openai_server.attempts.values()) > 100, "429s, 500s and stalls were retried"

    # The run controller's COMPLETE event for the step, with the step's lineage merged in,
    # through the sink `runink up` gives the run controller (twice: no duplicates).
    event = {
        "eventType": "COMPLETE",
        "eventTime": "2026-11-27T04:00:00Z",
        "producer": _runs.PRODUCER,
        "schemaURL": SCHEMA_URL,
        "run": {
            "runId": str(uuid.uuid4()),
            "facets": {
                "runink_step": {
                    "_producer": _runs.PRODUCER,
                    "_schemaURL": "https://runink.io/spec/facets/RuninkStepRunFacet.json",
                    "herd": herd,
                    "step": "annotate",
                    "serviceAccount": "annotator",
                }
            },
        },
        "job": {"namespace": f"runink://{herd}", "name": "nightly.annotate"},
        "inputs": [{"namespace": f"runink://{herd}", "name": "reviews.csv"}],
        "outputs": [{"namespace": f"runink://{herd}", "name": "review-sentiment.jsonl"}],
    }
    merged = _runs.merge_reported(event, str(results["lineage"]))  # as the agent reports it
    sink = _up.GovernanceLineageSink(cluster.server, tmp_path / "events.jsonl", root)
    await sink.emit(merged)
    await sink.emit(merged)

    code, out, err = await cli(
        "annotations", "list", "-n", herd, "--type", "sentiment", "--model", "llama3-8b",
        "-o", "json",
    )  # fmt: skip
    assert code == 0, err
    items = json.loads(out)["items"]
    assert len(items) == 100
    assert len({i["metadata"]["name"] for i in items}) == 100
    assert {i["spec"]["annotatedDataRef"]["recordKey"] for i in items} == {
        str(k) for k in range(100)
    }
    prov = items[0]["spec"]["provenance"]
    assert prov["producer"] == "system:serviceaccount:demo:annotator"
    assert prov["promptHash"].startswith("sha256:") and prov["inputHash"]
    assert prov["reviewState"] == "suggested"

    code, out, _ = await cli(
        "annotations", "list", "-A", "--type", "sentiment", "--min-confidence", "0.9", "-o", "json"
    )
    high = json.loads(out)["items"]
    assert high and all(i["spec"]["confidenceScore"] >= 0.9 for i in high)
    assert len(high) == sum(1 for i in items if i["spec"]["confidenceScore"] >= 0.9)

    # The admin (not the producer) confirms one; the table shows the new state.
    aid = items[0]["metadata"]["name"]
    code, out, err = await cli("annotations", "confirm", aid)
    assert code == 0, err
    code, out, _ = await cli("annotations", "list", "-n", herd, "--review-state", "confirmed")
    assert aid in out and "confirmed" in out
    # Another herd's list does not show them (kubectl's namespaced list).
    code, out, _ = await cli("annotations", "list", "-n", "other", "-o", "json")
    assert code == 0 and json.loads(out)["items"] == []

    # Lineage: reviews -> the llm step -> review-sentiment, with the column edge.
    code, out, _ = await cli(
        "lineage", f"dataset:runink://{herd}/reviews.csv", "--downstream", "-o", "json"
    )
    ids = {n["id"] for n in json.loads(out)["graph"]}
    assert f"job:runink://{herd}:nightly.annotate" in ids
    assert f"dataset:runink://{herd}:review-sentiment.jsonl" in ids


async def test_a_herd_viewer_lists_only_its_herds_annotations(cluster: _up.Cluster) -> None:
    """Annotations are herd-scoped like any list: a viewer of one herd sees that herd's, is
    refused another herd's and the all-herds list (which needs a cluster-wide binding)."""

    def annotation(herd: str, i: int) -> dict[str, Any]:
        return {
            "apiVersion": "runink.io/v1",
            "kind": "Annotation",
            "metadata": {"name": f"{herd}-{i}", "herd": herd},
            "spec": {
                "annotationType": "sentiment",
                "annotationValue": "positive",
                "sourceModel": "m1",
                "confidenceScore": 0.9,
                "timestamp": "2026-11-27T04:00:00Z",
                "annotatedDataRef": {"dataset": "reviews", "recordKey": str(i)},
            },
        }

    async with api.Client.from_config(cluster.config_path) as admin:
        for h in ("alpha", "beta"):
            await admin.create(
                {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": h}, "spec": {}}
            )
        await admin.put_annotations([annotation(h, i) for h in ("alpha", "beta") for i in range(3)])
        await admin.create(
            {
                "apiVersion": "runink.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "ann-view", "herd": "alpha"},
                "spec": {
                    "subjects": [{"kind": "User", "name": "ann"}],
                    "roleRef": {"kind": "ClusterRole", "name": "view"},
                },
            }
        )
        every = await admin.query_annotations(type="sentiment")
        assert len(every["items"]) == 6  # the admin, across herds
    pair = api.issue(cluster.pki.ca, "ann")
    async with api.Client(
        f"127.0.0.1:{cluster.port}",
        ca_pem=cluster.pki.ca.cert_pem,
        cert_pem=pair.cert_pem,
        key_pem=pair.key_pem,
    ) as ann:
        mine = await ann.query_annotations(type="sentiment", herd="alpha", count=True)
        assert {i["metadata"]["herd"] for i in mine["items"]} == {"alpha"}
        assert mine["count"] == 3
        for herd in ("beta", None):
            with pytest.raises(errors.Forbidden):
                await ann.query_annotations(type="sentiment", herd=herd)
