"""The annotation store: idempotent bulk writes, filtered pages with counts, the review rule."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from runink.api import _governance
from runink.schemas import errors
from runink.store import _annotations, _lineage

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def ann(
    i: int,
    *,
    typ: str = "sentiment",
    model: str = "m1",
    conf: float | None = 0.5,
    producer: str = "sa:llm",
    dataset: str = "reviews",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "annotationType": typ,
        "annotationValue": "positive" if i % 2 else "negative",
        "sourceModel": model,
        "timestamp": (T0 + dt.timedelta(minutes=i)).isoformat(),
        "annotatedDataRef": {
            "dataset": dataset,
            "version": "v1",
            "field": "text",
            "recordKey": str(i),
        },
        "provenance": {"producer": producer, "promptHash": "sha256:x"},
    }
    if conf is not None:
        spec["confidenceScore"] = conf
    return {"metadata": {"name": f"ann-{i}", "herd": "h"}, "spec": spec}


@pytest.fixture
def filled(annotation_store: _annotations.LmdbAnnotationStore) -> _annotations.LmdbAnnotationStore:
    items = [
        ann(i, typ="sentiment" if i % 3 else "pii", model="m1" if i % 2 else "m2", conf=i / 100)
        for i in range(100)
    ]
    assert annotation_store.put_many(items).written == 100
    return annotation_store


def names(page: _annotations.AnnotationPage) -> list[str]:
    return [o["metadata"]["name"] for o in page.items]


def test_retried_batches_never_duplicate(
    annotation_store: _annotations.LmdbAnnotationStore,
) -> None:
    assert annotation_store.put_many([ann(i) for i in range(10)]) == _annotations.PutResult(10, 0)
    assert annotation_store.put_many([ann(i) for i in range(5, 15)]) == _annotations.PutResult(5, 5)
    page = annotation_store.query(annotation_type="sentiment", limit=1000, count=True)
    assert page.count == 15 and len(page.items) == 15


def test_query_by_type_and_model_pages_newest_first_with_an_exact_count(
    filled: _annotations.LmdbAnnotationStore,
) -> None:
    expected = [f"ann-{i}" for i in range(99, -1, -1) if i % 3 and i % 2]
    seen: list[str] = []
    cursor = None
    while True:
        page = filled.query(
            annotation_type="sentiment", source_model="m1", limit=10, cursor=cursor, count=True
        )
        assert page.count == len(expected)
        seen += names(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == expected


def test_confidence_time_review_and_data_reference_filters(
    filled: _annotations.LmdbAnnotationStore,
) -> None:
    page = filled.query(source_model="m2", min_confidence=0.5, max_confidence=0.6, count=True)
    assert names(page) == ["ann-60", "ann-58", "ann-56", "ann-54", "ann-52", "ann-50"]
    assert page.count == 6
    window = filled.query(since=T0 + dt.timedelta(minutes=10), until=T0 + dt.timedelta(minutes=12))
    assert names(window) == ["ann-12", "ann-11", "ann-10"]
    by_record = filled.query(data_ref={"dataset": "reviews", "record_key": "42"})
    assert names(by_record) == ["ann-42"]
    assert filled.query(review_state="confirmed", count=True).count == 0
    with pytest.raises(errors.Invalid):
        filled.query(data_ref={"table": "x"})


def test_producer_may_not_confirm_its_own_annotation(
    filled: _annotations.LmdbAnnotationStore,
) -> None:
    with pytest.raises(errors.Forbidden, match="may not confirm"):
        filled.set_review("ann-7", "confirmed", reviewer="sa:llm")
    # It may still reject its own, and someone else may confirm it.
    filled.set_review("ann-8", "rejected", reviewer="sa:llm")
    obj = filled.set_review("ann-7", "confirmed", reviewer="alice")
    assert obj["spec"]["provenance"]["reviewState"] == "confirmed"
    assert obj["metadata"]["annotations"][_annotations.REVIEWED_BY] == "alice"
    assert names(filled.query(review_state="confirmed")) == ["ann-7"]
    assert filled.query(review_state="suggested", count=True).count == 98
    assert filled.get("ann-7")["spec"]["provenance"]["reviewState"] == "confirmed"
    with pytest.raises(errors.NotFound):
        filled.set_review("ann-nope", "confirmed", reviewer="alice")


def test_invalid_annotation_refuses_the_batch_with_its_path(
    annotation_store: _annotations.LmdbAnnotationStore,
) -> None:
    bad = ann(1)
    bad["spec"]["confidenceScore"] = 1.5
    with pytest.raises(errors.Invalid) as exc:
        annotation_store.put_many([ann(0), bad])
    assert [e.path for e in exc.value.errors] == ["[1].spec.confidenceScore"]
    assert annotation_store.query(count=True).count == 0


def test_service_records_the_caller_as_producer(
    lineage_store: _lineage.LineageStore, annotation_store: _annotations.LmdbAnnotationStore
) -> None:
    svc = _governance.GovernanceService(lineage_store, annotation_store)
    item = ann(1, producer="someone-else")
    assert svc.put_annotations([item], caller="sa:llm") == {"written": 1, "skipped": 0}
    with pytest.raises(errors.Forbidden):
        svc.review_annotation("ann-1", "confirmed", reviewer="sa:llm")
    confirmed = ann(2)
    confirmed["spec"]["provenance"]["reviewState"] = "confirmed"
    with pytest.raises(errors.Forbidden):
        svc.put_annotations([confirmed], caller="sa:llm")
    page = svc.query_annotations(
        annotation_type="sentiment", source_model="m1", count=True, since="2024-01-01T00:00:00Z"
    )
    assert page["count"] == 1 and page["items"][0]["metadata"]["name"] == "ann-1"
