"""The annotation store: LLM and human annotations, queried by type, model, data and review state.

Annotations are many and append-mostly (an LLM step writes one per record), so they live behind
the `AnnotationStore` Protocol rather than in the Raft log; the default `LmdbAnnotationStore` keeps
them on an LMDB environment of their own beside the Barn. The API's governance service and the
bench use it; `runink annotations` renders its pages.

Layout: ``ann`` holds id -> the Annotation object (kind Annotation, metadata.name = id). ``idx``
holds key-only secondary indexes, each key ``<index>\\0<values...>\\0<time:8 bytes BE>\\0<id>``,
so one range scan answers "type X by model Y, newest first, in this time window". ``counts``
keeps exact counts per index prefix, which is what makes "first 100 of 1,000,000 and how many"
cheap. Writes are idempotent by id (a retried batch never duplicates) and batched per call.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import lmdb
import pydantic

from runink.schemas import _governance, errors

ReviewState = Literal["suggested", "confirmed", "rejected"]
Json = dict[str, Any]
REVIEWED_BY = "runink.io/reviewed-by"
REVIEWED_AT = "runink.io/reviewed-at"
_REF_FIELDS = {"version": "version", "field": "field", "record_key": "recordKey", "run": "run"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_TS_BIAS = 1 << 62  # keeps pre-1970 times orderable as unsigned big-endian


@dataclass(frozen=True, slots=True)
class PutResult:
    written: int
    """Annotations stored by this call."""
    skipped: int
    """Ids that were already stored (retries): left untouched."""


@dataclass(frozen=True, slots=True)
class AnnotationPage:
    items: list[Json]
    """Annotation objects, newest first."""
    next_cursor: str | None
    """Pass back as ``cursor`` for the next page; None on the last page."""
    count: int | None
    """How many match in total (None unless asked for with ``count=True``)."""


class AnnotationStore(Protocol):
    """Where annotations live; what the governance service needs from it."""

    def put_many(self, annotations: Iterable[Mapping[str, Any]]) -> PutResult: ...

    def get(self, annotation_id: str) -> Json: ...

    def query(
        self,
        *,
        annotation_type: str | None = None,
        source_model: str | None = None,
        data_ref: Mapping[str, str] | None = None,
        min_confidence: float | None = None,
        max_confidence: float | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        review_state: ReviewState | None = None,
        limit: int = 100,
        cursor: str | None = None,
        count: bool = False,
        herd: str | None = None,
    ) -> AnnotationPage: ...

    def set_review(
        self,
        annotation_id: str,
        state: ReviewState,
        *,
        reviewer: str,
        now: dt.datetime | None = None,
    ) -> Json: ...

    def close(self) -> None: ...


def _ts(t: dt.datetime) -> bytes:
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    micros = (t - _EPOCH) // dt.timedelta(microseconds=1)
    return struct.pack(">Q", micros + _TS_BIAS)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _part(v: str) -> bytes:
    if "\x00" in v:
        raise errors.Invalid(f"{v!r}: NUL characters are not allowed in indexed fields")
    return v.encode()


def _index_prefixes(obj: Json) -> list[bytes]:
    """The index prefixes (without time and id) an annotation is filed under."""
    spec = obj["spec"]
    typ = _part(spec["annotationType"])
    model = _part(spec.get("sourceModel") or "")
    ds = _part(spec["annotatedDataRef"]["dataset"])
    state = _part(spec.get("provenance", {}).get("reviewState", "suggested"))
    out = [
        b"a",
        b"t\x00" + typ,
        b"m\x00" + model,
        b"tm\x00" + typ + b"\x00" + model,
        b"d\x00" + ds,
        b"r\x00" + state,
    ]
    key = spec["annotatedDataRef"].get("recordKey")
    if key is not None:
        out.append(b"k\x00" + ds + b"\x00" + _part(key))
    return out


class LmdbAnnotationStore:
    """`AnnotationStore` on its own LMDB environment. Thread-safe."""

    def __init__(
        self, path: str | os.PathLike[str], *, map_size: int = 32 << 30, sync: bool = True
    ) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(str(path), map_size=map_size, max_dbs=4, sync=sync, metasync=sync)
        self._ann = self._env.open_db(b"ann")
        self._idx = self._env.open_db(b"idx")
        self._counts = self._env.open_db(b"counts")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._env.close()

    # -- writes -------------------------------------------------------------------------------

    def put_many(
        self, annotations: Iterable[Mapping[str, Any]], *, now: dt.datetime | None = None
    ) -> PutResult:
        """Validate and store annotations in one transaction; ids already stored are skipped.

        Each item is an Annotation object (``metadata.name`` is its id); a missing
        ``spec.timestamp`` is set to ``now``. One invalid item refuses the whole batch, with
        the item's index in the field path.
        """
        now = now or dt.datetime.now(dt.UTC)
        prepared: list[tuple[bytes, bytes, bytes, list[bytes]]] = []
        problems: list[errors.FieldError] = []
        for i, raw in enumerate(annotations):
            try:
                model = _governance.Annotation.model_validate(
                    {"apiVersion": "runink.io/v1", "kind": "Annotation", **raw}
                )
            except pydantic.ValidationError as e:
                problems.extend(
                    errors.FieldError(
                        path=f"[{i}]"
                        + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"]),
                        message=err["msg"],
                    )
                    for err in e.errors(include_url=False)
                )
                continue
            obj = model.model_dump(mode="json", exclude_none=True)
            ts_raw = model.spec.timestamp
            when = dt.datetime.fromisoformat(ts_raw) if ts_raw else now
            obj["spec"]["timestamp"] = ts_raw or _iso(now)
            aid = _part(model.metadata.name)
            prepared.append(
                (
                    aid,
                    json.dumps(obj, separators=(",", ":")).encode(),
                    _ts(when),
                    _index_prefixes(obj),
                )
            )
        if problems:
            raise errors.Invalid("invalid annotations", errors=problems)
        written = skipped = 0
        deltas: dict[bytes, int] = {}
        with self._lock, self._env.begin(write=True) as txn:
            for aid, data, ts, prefixes in prepared:
                if not txn.put(aid, data, db=self._ann, overwrite=False):
                    skipped += 1
                    continue
                written += 1
                for p in prefixes:
                    txn.put(p + b"\x00" + ts + aid, b"", db=self._idx)
                    deltas[p] = deltas.get(p, 0) + 1
            self._add_counts(txn, deltas)
        return PutResult(written=written, skipped=skipped)

    def _add_counts(self, txn: Any, deltas: Mapping[bytes, int]) -> None:
        for p, d in deltas.items():
            b = txn.get(p, db=self._counts)
            n = (struct.unpack(">q", b)[0] if b is not None else 0) + d
            txn.put(p, struct.pack(">q", n), db=self._counts)

    def set_review(
        self,
        annotation_id: str,
        state: ReviewState,
        *,
        reviewer: str,
        now: dt.datetime | None = None,
    ) -> Json:
        """Confirm or reject (or reset to suggested) an annotation, as ``reviewer``.

        The service account that produced an annotation may not confirm it (errors.Forbidden):
        a model's own output needs a second party.
        """
        if state not in ("suggested", "confirmed", "rejected"):
            raise errors.Invalid(f"review state {state!r} is not suggested, confirmed or rejected")
        now = now or dt.datetime.now(dt.UTC)
        aid = _part(annotation_id)
        with self._lock, self._env.begin(write=True) as txn:
            b = txn.get(aid, db=self._ann)
            if b is None:
                raise errors.NotFound(f"no annotation {annotation_id!r}")
            obj: Json = json.loads(b)
            prov = obj["spec"].setdefault("provenance", {})
            if state == "confirmed" and prov.get("producer") and prov.get("producer") == reviewer:
                raise errors.Forbidden(
                    f"{reviewer} produced annotation {annotation_id} and may not confirm it: "
                    "ask another reviewer"
                )
            ts = _ts(dt.datetime.fromisoformat(obj["spec"]["timestamp"]))
            old_prefixes = _index_prefixes(obj)
            prov["reviewState"] = state
            ann = obj["metadata"].setdefault("annotations", {})
            ann[REVIEWED_BY] = reviewer
            ann[REVIEWED_AT] = _iso(now)
            new_prefixes = _index_prefixes(obj)
            deltas: dict[bytes, int] = {}
            for p in set(old_prefixes) - set(new_prefixes):
                txn.delete(p + b"\x00" + ts + aid, db=self._idx)
                deltas[p] = -1
            for p in set(new_prefixes) - set(old_prefixes):
                txn.put(p + b"\x00" + ts + aid, b"", db=self._idx)
                deltas[p] = 1
            self._add_counts(txn, deltas)
            txn.put(aid, json.dumps(obj, separators=(",", ":")).encode(), db=self._ann)
        return obj

    # -- reads --------------------------------------------------------------------------------

    def get(self, annotation_id: str) -> Json:
        with self._env.begin() as txn:
            b = txn.get(_part(annotation_id), db=self._ann)
        if b is None:
            raise errors.NotFound(f"no annotation {annotation_id!r}")
        result: Json = json.loads(b)
        return result

    def query(
        self,
        *,
        annotation_type: str | None = None,
        source_model: str | None = None,
        data_ref: Mapping[str, str] | None = None,
        min_confidence: float | None = None,
        max_confidence: float | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        review_state: ReviewState | None = None,
        limit: int = 100,
        cursor: str | None = None,
        count: bool = False,
        herd: str | None = None,
    ) -> AnnotationPage:
        """Annotations matching every given filter, newest first, ``limit`` per page.

        ``data_ref`` may hold dataset, version, field, record_key and run. The most selective
        index is scanned (type+model, dataset+record key, dataset, model, type, review state, or
        all); the other
        filters are checked on each candidate. ``count`` is exact: read from the counters when
        the filters are exactly one index's, otherwise counted by scanning that index.
        ``herd`` keeps only that herd's annotations (what a herd-scoped reader may see).
        """
        if limit < 1:
            raise errors.Invalid("limit must be at least 1")
        ref = dict(data_ref or {})
        unknown = set(ref) - {"dataset", *_REF_FIELDS}
        if unknown:
            raise errors.Invalid(f"unknown data reference fields: {sorted(unknown)}")
        # Choose the index; the filters it does not cover are checked per item.
        covered: set[str]
        if annotation_type is not None and source_model is not None:
            prefix = b"tm\x00" + _part(annotation_type) + b"\x00" + _part(source_model)
            covered = {"type", "model"}
        elif "dataset" in ref and "record_key" in ref:
            prefix = b"k\x00" + _part(ref["dataset"]) + b"\x00" + _part(ref["record_key"])
            covered = {"dataset", "record_key"}
        elif "dataset" in ref:
            prefix, covered = b"d\x00" + _part(ref["dataset"]), {"dataset"}
        elif source_model is not None:
            prefix, covered = b"m\x00" + _part(source_model), {"model"}
        elif annotation_type is not None:
            prefix, covered = b"t\x00" + _part(annotation_type), {"type"}
        elif review_state is not None:
            prefix, covered = b"r\x00" + _part(review_state), {"review"}
        else:
            prefix, covered = b"a", set()

        def residual(obj: Json) -> bool:
            spec = obj["spec"]
            state = spec.get("provenance", {}).get("reviewState", "suggested")
            if herd is not None and (obj.get("metadata") or {}).get("herd") != herd:
                return False
            if (
                (annotation_type is not None and spec["annotationType"] != annotation_type)
                or (source_model is not None and spec.get("sourceModel") != source_model)
                or (review_state is not None and state != review_state)
            ):
                return False
            dref = spec["annotatedDataRef"]
            if "dataset" in ref and "dataset" not in covered and dref["dataset"] != ref["dataset"]:
                return False
            for k, wire in _REF_FIELDS.items():
                if k in ref and k not in covered and dref.get(wire) != ref[k]:
                    return False
            conf = spec.get("confidenceScore")
            if min_confidence is not None and (conf is None or conf < min_confidence):
                return False
            return not (max_confidence is not None and (conf is None or conf > max_confidence))

        needs_residual = (
            herd is not None
            or (annotation_type is not None and "type" not in covered)
            or (source_model is not None and "model" not in covered)
            or (review_state is not None and "review" not in covered)
            or bool(set(ref) - covered)
            or min_confidence is not None
            or max_confidence is not None
        )
        lo = prefix + b"\x00" + (_ts(since) if since is not None else b"")
        hi = (
            prefix
            + b"\x00"
            + (_ts(until + dt.timedelta(microseconds=1)) if until is not None else b"\xff" * 9)
        )
        start = bytes.fromhex(cursor) if cursor else hi
        if cursor and not (lo <= start <= hi):
            raise errors.Invalid("cursor does not belong to this query")
        items: list[Json] = []
        next_cursor: str | None = None
        last_key = b""
        total: int | None = None
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._idx)
            ok = cur.set_range(start)
            ok = cur.prev() if ok else cur.last()
            while ok:
                k = cur.key()
                if k < lo:
                    break
                aid = k[len(prefix) + 9 :]
                obj = json.loads(txn.get(aid, db=self._ann) or b"{}")
                if not needs_residual or residual(obj):
                    if len(items) == limit:
                        next_cursor = last_key.hex()
                        break
                    items.append(obj)
                    last_key = k
                ok = cur.prev()
            if count:
                if not needs_residual and since is None and until is None:
                    b = txn.get(prefix, db=self._counts)
                    total = struct.unpack(">q", b)[0] if b is not None else 0
                else:
                    total = self._scan_count(
                        txn, prefix, lo, hi, residual if needs_residual else None
                    )
        return AnnotationPage(items=items, next_cursor=next_cursor, count=total)

    def _scan_count(self, txn: Any, prefix: bytes, lo: bytes, hi: bytes, residual: Any) -> int:
        n = 0
        cur = txn.cursor(db=self._idx)
        ok = cur.set_range(lo)
        while ok:
            k = cur.key()
            if k >= hi:
                break
            if residual is None or residual(
                json.loads(txn.get(k[len(prefix) + 9 :], db=self._ann))
            ):
                n += 1
            ok = cur.next()
        return n


def open_annotation_store(path: str | os.PathLike[str], **options: Any) -> LmdbAnnotationStore:
    """The default annotation store in the LMDB directory ``path`` (created if missing)."""
    return LmdbAnnotationStore(path, **options)


__all__ = [
    "AnnotationPage",
    "AnnotationStore",
    "LmdbAnnotationStore",
    "PutResult",
    "ReviewState",
    "open_annotation_store",
]
