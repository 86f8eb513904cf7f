"""The governance service: lineage ingest and queries, annotation writes, queries and reviews.

A plain class over the lineage store and an `AnnotationStore` (runink.store), with no transport in
it: the API server mounts its methods as gRPC methods, `runink.api._lineage_http` serves the
OpenLineage HTTP endpoint (``POST /api/v1/lineage``) with it. Every method takes and returns
plain JSON values and raises runink.schemas.errors (Invalid, NotFound, Forbidden), which the
transports map to status codes. The caller's identity is passed in, already authenticated.

The stores are synchronous (LMDB); an asyncio server calls these methods through
``asyncio.to_thread``: each is a short transaction. `catalog_objects` turns an event's dataset
schema facets into Dataset objects, which the API server applies through the Barn (the catalog is
replicated configuration; the lineage graph itself is derived data kept beside the Barn).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, cast

from runink.schemas import _openlineage, errors
from runink.store import _annotations, _lineage

Json = dict[str, Any]

SERVICE = "runink.v1.Governance"
"""The gRPC service name; methods: Ingest, Lineage, RunGraph, DatasetVersions, PutAnnotations,
QueryAnnotations, GetAnnotation, ReviewAnnotation (JSON bodies, as every Runink service)."""
CATALOG_MANAGER = "runink-lineage"
"""The field manager of the Dataset fields that lineage ingest owns (spec.uri, spec.schema)."""
LINEAGE_NAMESPACE = "runink.io/lineage-namespace"
LINEAGE_NAME = "runink.io/lineage-name"
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")


class GovernanceService:
    def __init__(
        self, lineage: _lineage.LineageStore, annotations: _annotations.AnnotationStore
    ) -> None:
        self.lineage_store = lineage
        self.annotation_store = annotations

    # -- lineage --------------------------------------------------------------------------------

    def ingest(self, event_json: Mapping[str, Any] | str | bytes) -> Json:
        """Validate an OpenLineage RunEvent (as producers send it), store it, return the run state.

        Raises errors.Invalid with the path of every bad field.
        """
        if isinstance(event_json, Mapping):
            raw: Json = dict(event_json)
            event = _openlineage.parse_run_event(raw)
        else:
            event = _openlineage.parse_run_event(event_json)
            raw = event.model_dump(mode="json", by_alias=True, exclude_none=True)
        return self.lineage_store.ingest(event, raw)

    def lineage(self, node_id: str, direction: str = "both", depth: int = 20) -> Json:
        """The graph around ``node_id`` (``dataset:NS:NAME``, ``job:NS:NAME``,
        ``datasetField:NS:NAME:FIELD`` or the CLI's ``dataset:NS/NAME``), Marquez-shaped."""
        if direction not in ("upstream", "downstream", "both"):
            raise errors.Invalid(f"direction {direction!r} is not upstream, downstream or both")
        if not 0 <= depth <= 100:
            raise errors.Invalid("depth must be between 0 and 100")
        return self.lineage_store.lineage(
            node_id, direction=cast(_lineage.Direction, direction), depth=depth
        )

    def run_graph(self, run_id: str) -> Json:
        return self.lineage_store.run_graph(run_id)

    def run(self, run_id: str) -> Json:
        return self.lineage_store.run(run_id)

    def dataset_versions(self, namespace: str, name: str, limit: int = 100) -> list[Json]:
        return self.lineage_store.dataset_versions(namespace, name, limit=limit)

    # -- annotations ----------------------------------------------------------------------------

    def put_annotations(self, items: Iterable[Mapping[str, Any]], *, caller: str) -> Json:
        """Store annotations written by ``caller``, who is recorded as their producer.

        Creating an annotation already ``confirmed`` counts as confirming it, which a producer may
        not do for its own work (errors.Forbidden).
        """
        prepared: list[Json] = []
        for i, item in enumerate(items):
            obj = dict(item)
            spec = dict(obj.get("spec") or {})
            prov = dict(spec.get("provenance") or {})
            if prov.get("reviewState") == "confirmed":
                raise errors.Forbidden(
                    f"annotation [{i}]: {caller} may not create an annotation already confirmed; "
                    "create it as suggested and have another reviewer confirm it"
                )
            prov["producer"] = caller
            spec["provenance"] = prov
            obj["spec"] = spec
            prepared.append(obj)
        result = self.annotation_store.put_many(prepared)
        return {"written": result.written, "skipped": result.skipped}

    def get_annotation(self, annotation_id: str) -> Json:
        return self.annotation_store.get(annotation_id)

    def query_annotations(
        self,
        *,
        annotation_type: str | None = None,
        source_model: str | None = None,
        data_ref: Mapping[str, str] | None = None,
        min_confidence: float | None = None,
        max_confidence: float | None = None,
        since: str | None = None,
        until: str | None = None,
        review_state: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        count: bool = False,
        herd: str | None = None,
    ) -> Json:
        """A page of annotations: ``{"items", "nextCursor", "count"}`` (times as RFC 3339);
        with *herd*, only that herd's."""
        if review_state not in (None, "suggested", "confirmed", "rejected"):
            raise errors.Invalid(
                f"review state {review_state!r} is not suggested/confirmed/rejected"
            )
        if not 1 <= limit <= 1000:
            raise errors.Invalid("limit must be between 1 and 1000")
        page = self.annotation_store.query(
            annotation_type=annotation_type,
            source_model=source_model,
            data_ref=data_ref,
            min_confidence=min_confidence,
            max_confidence=max_confidence,
            since=_time(since, "since"),
            until=_time(until, "until"),
            review_state=cast(_annotations.ReviewState | None, review_state),
            limit=limit,
            cursor=cursor,
            count=count,
            herd=herd,
        )
        return {"items": page.items, "nextCursor": page.next_cursor, "count": page.count}

    def review_annotation(
        self, annotation_id: str, state: str, *, reviewer: str, now: dt.datetime | None = None
    ) -> Json:
        if state not in ("suggested", "confirmed", "rejected"):
            raise errors.Invalid(f"review state {state!r} is not suggested/confirmed/rejected")
        return self.annotation_store.set_review(
            annotation_id, cast(_annotations.ReviewState, state), reviewer=reviewer, now=now
        )


def herd_of_namespace(namespace: str, default: str = "default") -> str:
    """``runink://<herd>`` (or ``runink://<cluster>/<herd>``) -> herd; other namespaces -> default."""
    if namespace.startswith("runink://"):
        rest = namespace[len("runink://") :].strip("/")
        herd = rest.rsplit("/", 1)[-1]
        if herd and dataset_object_name(herd) == herd:
            return herd
    return default


def dataset_object_name(name: str) -> str:
    """A DNS label for a lineage dataset name (``shop.orders`` -> ``shop-orders``).

    Names that had to change get a short hash suffix, so two different names never collide.
    """
    label = _NOT_LABEL.sub("-", name.lower()).strip("-")
    if label == name and len(label) <= 63:
        return label
    suffix = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{label[: 63 - 7].strip('-') or 'dataset'}-{suffix}"


def catalog_objects(event: Mapping[str, Any], *, default_herd: str = "default") -> list[Json]:
    """Dataset objects (apply intents) for the event's datasets that carry a ``schema`` facet.

    Only what lineage knows is stated: URI, fields and types, and the description, owners and
    tags when the producer sent documentation/ownership/tags facets; what people wrote on the
    Dataset (glossary terms, their own description) is left to them by server-side apply.
    """
    out: dict[tuple[str, str], Json] = {}
    for io in ("inputs", "outputs"):
        for d in event.get(io) or []:
            if not isinstance(d, Mapping):
                continue
            facets = dict(d.get("facets") or {})
            schema = facets.get("schema")
            if not isinstance(schema, Mapping):
                continue
            ns, name = str(d.get("namespace", "")), str(d.get("name", ""))
            fields = [
                {"name": str(f["name"]), "type": str(f.get("type") or "string")}
                | ({"description": str(f["description"])} if f.get("description") else {})
                for f in schema.get("fields") or []
                if isinstance(f, Mapping) and f.get("name")
            ]
            spec: Json = {
                "uri": name if "://" in name else f"{ns.rstrip('/')}/{name}",
                "schema": fields,
            }
            doc = facets.get("documentation")
            if isinstance(doc, Mapping) and doc.get("description"):
                spec["description"] = str(doc["description"])
            own = facets.get("ownership")
            if isinstance(own, Mapping):
                owners = [str(o["name"]) for o in own.get("owners") or [] if o.get("name")]
                if owners:
                    spec["owners"] = owners
            tags = facets.get("tags")
            if isinstance(tags, Mapping):
                keys = [str(t["key"]) for t in tags.get("tags") or [] if t.get("key")]
                if keys:
                    spec["tags"] = keys
            herd = herd_of_namespace(ns, default_herd)
            obj_name = dataset_object_name(name)
            out[(herd, obj_name)] = {
                "apiVersion": "runink.io/v1",
                "kind": "Dataset",
                "metadata": {
                    "name": obj_name,
                    "herd": herd,
                    "annotations": {LINEAGE_NAMESPACE: ns, LINEAGE_NAME: name},
                },
                "spec": spec,
            }
    return list(out.values())


def search_datasets(
    items: Iterable[Mapping[str, Any]],
    *,
    name: str | None = None,
    tag: str | None = None,
    owner: str | None = None,
    field: str | None = None,
) -> list[Json]:
    """Datasets matching every given criterion: name and field are case-insensitive substrings
    (a field matches by column name or type-less name), tag and owner exact members."""
    out: list[Json] = []
    for obj in items:
        spec = obj.get("spec") or {}
        meta = obj.get("metadata") or {}
        names = [str(meta.get("name", "")), str(spec.get("uri", ""))]
        names.append(str((meta.get("annotations") or {}).get(LINEAGE_NAME, "")))
        if name is not None and not any(name.lower() in n.lower() for n in names):
            continue
        if tag is not None and tag not in (spec.get("tags") or []):
            continue
        if owner is not None and owner not in (spec.get("owners") or []):
            continue
        cols = [str(f.get("name", "")) for f in spec.get("schema") or []]
        if field is not None and not any(field.lower() in c.lower() for c in cols):
            continue
        out.append(dict(obj))
    return out


def _time(v: str | None, name: str) -> dt.datetime | None:
    if v is None:
        return None
    try:
        t = dt.datetime.fromisoformat(v)
    except ValueError as e:
        raise errors.Invalid(f"{name}: {v!r} is not an RFC 3339 time") from e
    return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)


__all__ = [
    "CATALOG_MANAGER",
    "SERVICE",
    "GovernanceService",
    "catalog_objects",
    "dataset_object_name",
    "herd_of_namespace",
    "search_datasets",
]
