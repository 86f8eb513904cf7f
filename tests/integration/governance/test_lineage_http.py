"""POST /api/v1/lineage on loopback, as OpenLineage HTTP transports send it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runink.api import _governance, _lineage_http
from runink.store import _annotations, _lineage

pytestmark = pytest.mark.integration

EVENT = {
    "eventType": "COMPLETE",
    "eventTime": "2024-05-01T10:00:05Z",
    "producer": "https://github.com/OpenLineage/OpenLineage/tree/1.12.0/client/python",
    "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent",
    "run": {"runId": "0190a4c8-1111-7222-8333-444455556666"},
    "job": {"namespace": "default", "name": "etl.load"},
    "inputs": [{"namespace": "postgres://db:5432", "name": "shop.raw"}],
    "outputs": [{"namespace": "postgres://db:5432", "name": "shop.orders"}],
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_lineage_http.LineageHttpServer]:
    lin = _lineage.open_lineage_store(tmp_path / "lineage")
    ann = _annotations.open_annotation_store(tmp_path / "annotations")
    svc = _governance.GovernanceService(lin, ann)
    srv = _lineage_http.LineageHttpServer(
        svc, authenticate=lambda header: header == "Bearer good-token"
    )
    try:
        with srv:
            yield srv
    finally:
        lin.close()
        ann.close()


def call(
    url: str, body: Any = None, *, token: str = "good-token", raw: bytes | None = None
) -> tuple[int, Any]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(
        url,
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_post_event_then_read_the_graph(server: _lineage_http.LineageHttpServer) -> None:
    status, state = call(server.url, EVENT)
    assert status == 201
    assert state["state"] == "COMPLETE"
    status, graph = call(server.url + "?nodeId=dataset:postgres://db:5432:shop.orders&depth=5")
    assert status == 200
    assert {n["id"] for n in graph["graph"]} == {
        "dataset:postgres://db:5432:shop.raw",
        "job:default:etl.load",
        "dataset:postgres://db:5432:shop.orders",
    }


def test_malformed_event_gets_422_with_the_field_path(
    server: _lineage_http.LineageHttpServer,
) -> None:
    bad = json.loads(json.dumps(EVENT))
    bad["run"]["runId"] = "run-42"
    bad["outputs"][0].pop("name")
    status, body = call(server.url, bad)
    assert status == 422
    assert {e["path"] for e in body["errors"]} == {"run.runId", "outputs[0].name"}
    assert call(server.url, raw=b"{oops")[0] == 400


def test_unauthenticated_and_unknown_paths(server: _lineage_http.LineageHttpServer) -> None:
    assert call(server.url, EVENT, token="stolen")[0] == 401
    assert call(server.url.replace("/lineage", "/other"), EVENT)[0] == 404
    assert call(server.url + "?nodeId=dataset:nowhere:x")[0] == 404
