"""The lineage graph store: OpenLineage RunEvents -> runs, jobs, datasets, versions and edges.

Lives on its own LMDB environment beside the Barn (lineage is high-volume, derived data: it does
not go through the Raft log). The API's governance service (runink.api._governance) writes to it
and queries it; nothing else does.

Tolerant by construction (the Marquez complaints in research/governance_security.md 1.5):

- run state: a terminal event (COMPLETE/ABORT/FAIL) beats a non-terminal one, then the latest
  eventTime wins, so RUNNING arriving after COMPLETE, or a START sent twice, changes nothing;
  an event already seen (same canonical JSON) is a no-op.
- edges are versioned by job version = hash(job, inputs, outputs) of a run; a job's *current*
  edges are those of its latest COMPLETE run (by run start time; a job that never completed uses
  its latest run), so when a job stops reading a dataset the current graph drops that edge.
  A failed run never rewrites the current graph.

Queries walk an in-memory adjacency cache (node id -> neighbour ids), rebuilt at open and kept in
step with each committed write, and read node details from LMDB in one read transaction.
Node ids follow Marquez: ``dataset:NS:NAME``, ``job:NS:NAME``, ``datasetField:NS:NAME:FIELD``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lmdb

from runink.schemas import _openlineage as ol, errors

Direction = Literal["upstream", "downstream", "both"]
Json = dict[str, Any]

_DBS = ("runs", "jobs", "datasets", "versions", "dsversions", "events")
_MAX_DIGESTS = 64  # per run: enough for every event a real run sends; bounds the record
_TYPE_RANK = {"OTHER": 0, "START": 1, "RUNNING": 2, "ABORT": 3, "FAIL": 4, "COMPLETE": 5}


def dataset_id(namespace: str, name: str) -> str:
    return f"dataset:{namespace}:{name}"


def job_id(namespace: str, name: str) -> str:
    return f"job:{namespace}:{name}"


def field_id(namespace: str, name: str, fld: str) -> str:
    return f"datasetField:{namespace}:{name}:{fld}"


def _key(namespace: str, name: str) -> bytes:
    return f"{namespace}\x00{name}".encode()


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


@dataclass(slots=True)
class _Changes:
    """Adjacency updates decided inside a write transaction, applied after it commits."""

    nodes: set[str] = field(default_factory=set)
    job_edges: dict[str, tuple[list[str], list[str]]] = field(default_factory=dict)
    column_edges: dict[str, dict[str, list[str]]] = field(default_factory=dict)


class LineageStore:
    """Lineage on an LMDB environment at ``path``. Thread-safe; one writer at a time."""

    def __init__(
        self, path: str | os.PathLike[str], *, map_size: int = 8 << 30, sync: bool = True
    ) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self._env = lmdb.open(
            str(path), map_size=map_size, max_dbs=len(_DBS) + 1, sync=sync, metasync=sync
        )
        self._db = {name: self._env.open_db(name.encode()) for name in _DBS}
        self._lock = threading.RLock()
        self._out: dict[str, set[str]] = {}
        self._in: dict[str, set[str]] = {}
        self._col_out: dict[str, set[str]] = {}
        self._col_in: dict[str, set[str]] = {}
        self._nodes: set[str] = set()
        # Current edges per job and per output dataset's columns, to remove them on change.
        self._job_edges: dict[str, tuple[list[str], list[str]]] = {}
        self._col_edges: dict[str, dict[str, list[str]]] = {}
        self._rebuild()

    def close(self) -> None:
        self._env.close()

    # -- writes -------------------------------------------------------------------------------

    def ingest(self, event: ol.RunEvent, raw: Json | None = None) -> Json:
        """Store one RunEvent; return the run's state after it (see `run`)."""
        return self.ingest_many([(event, raw)])[0]

    def ingest_many(self, events: Iterable[tuple[ol.RunEvent, Json | None]]) -> list[Json]:
        """Store several events in one transaction (bulk import, benchmarks)."""
        changes = _Changes()
        out: list[Json] = []
        with self._lock:
            with self._env.begin(write=True) as txn:
                for event, raw in events:
                    out.append(self._ingest(txn, event, raw, changes))
            self._apply(changes)
        return out

    def _ingest(self, txn: Any, ev: ol.RunEvent, raw: Json | None, ch: _Changes) -> Json:
        raw_json = raw if raw is not None else ev.model_dump(mode="json", exclude_none=True)
        digest = hashlib.sha256(_dumps(raw_json)).hexdigest()[:32]
        rid = ev.run.run_id
        rb = txn.get(rid.encode(), db=self._db["runs"])
        t = _iso(ev.event_time)
        run: Json
        if rb is None:
            run = {
                "runId": rid,
                "job": {"namespace": ev.job.namespace, "name": ev.job.name},
                "state": ev.event_type,
                "stateTime": t,
                "startedAt": t,
                "endedAt": None,
                "inputs": [],
                "outputs": [],
                "facets": {},
                "facetTimes": {},
                "datasetFacets": {},
                "digests": [],
                "jobVersion": None,
                "eventCount": 0,
            }
        else:
            run = json.loads(rb)
            if digest in run["digests"]:
                return _public_run(run)  # exact duplicate: already applied
        run["digests"] = (run["digests"] + [digest])[-_MAX_DIGESTS:]
        run["eventCount"] += 1
        txn.put(f"{rid}\x00{t}\x00{digest}".encode(), _dumps(raw_json), db=self._db["events"])
        run["startedAt"] = min(run["startedAt"], t)
        new_rank = (ev.terminal, t, _TYPE_RANK[ev.event_type])
        cur_rank = (
            run["state"] in ol.TERMINAL_EVENT_TYPES,
            run["stateTime"],
            _TYPE_RANK[run["state"]],
        )
        if new_rank > cur_rank:
            run["state"], run["stateTime"] = ev.event_type, t
        if run["state"] in ol.TERMINAL_EVENT_TYPES:
            run["endedAt"] = run["stateTime"]
        # Facets are atomic: the same key from a later event replaces the earlier one.
        raw_run_facets = (raw_json.get("run") or {}).get("facets") or {}
        for k, v in raw_run_facets.items():
            if t >= run["facetTimes"].get(k, ""):
                run["facets"][k] = v
                run["facetTimes"][k] = t
        raw_ins = raw_json.get("inputs") or []
        raw_outs = raw_json.get("outputs") or []
        io: list[tuple[str, list[ol.InputDataset | ol.OutputDataset], list[Json]]] = [
            ("inputs", list(ev.inputs), raw_ins),
            ("outputs", list(ev.outputs), raw_outs),
        ]
        for kind, dsets, raws in io:
            for i, d in enumerate(dsets):
                pair = [d.namespace, d.name]
                if pair not in run[kind]:
                    run[kind].append(pair)
                rawd = raws[i] if i < len(raws) else {}
                facets = dict(rawd.get("facets") or {})
                per = run["datasetFacets"].setdefault(f"{d.namespace}\x00{d.name}", {})
                for k, v in facets.items():
                    if t >= per.get(k, [""])[0]:
                        per[k] = [t, v]
                self._touch_dataset(txn, d.namespace, d.name, facets, t, ch)
        ch.nodes.add(job_id(ev.job.namespace, ev.job.name))
        run["jobVersion"] = _job_version(run)
        txn.put(
            run["jobVersion"].encode(),
            _dumps(
                {
                    "namespace": ev.job.namespace,
                    "name": ev.job.name,
                    "version": run["jobVersion"],
                    "inputs": run["inputs"],
                    "outputs": run["outputs"],
                }
            ),
            db=self._db["versions"],
        )
        if run["state"] == "COMPLETE":
            self._write_versions(txn, run, ch)
        txn.put(rid.encode(), _dumps(run), db=self._db["runs"])
        self._update_job(txn, ev, run, t, ch)
        return _public_run(run)

    def _touch_dataset(
        self, txn: Any, ns: str, name: str, facets: Json, t: str, ch: _Changes
    ) -> None:
        k = _key(ns, name)
        b = txn.get(k, db=self._db["datasets"])
        rec: Json = (
            json.loads(b)
            if b is not None
            else {
                "namespace": ns,
                "name": name,
                "createdAt": t,
                "updatedAt": t,
                "facets": {},
                "facetTimes": {},
                "currentVersion": None,
                "columnLineage": None,
            }
        )
        if b is not None and not facets and t <= rec["updatedAt"] and t >= rec["createdAt"]:
            return
        rec["createdAt"] = min(rec["createdAt"], t)
        rec["updatedAt"] = max(rec["updatedAt"], t)
        for fk, fv in facets.items():
            if fk == "columnLineage":
                continue  # current column lineage comes from the latest COMPLETE version
            if t >= rec["facetTimes"].get(fk, ""):
                rec["facets"][fk] = fv
                rec["facetTimes"][fk] = t
        txn.put(k, _dumps(rec), db=self._db["datasets"])
        ch.nodes.add(dataset_id(ns, name))

    def _update_job(self, txn: Any, ev: ol.RunEvent, run: Json, t: str, ch: _Changes) -> None:
        ns, name = ev.job.namespace, ev.job.name
        k = _key(ns, name)
        b = txn.get(k, db=self._db["jobs"])
        job: Json = (
            json.loads(b)
            if b is not None
            else {
                "namespace": ns,
                "name": name,
                "createdAt": t,
                "updatedAt": t,
                "facets": {},
                "facetTimes": {},
                "latestRun": None,
                "completeRun": None,
                "currentVersion": None,
            }
        )
        job["createdAt"] = min(job["createdAt"], t)
        job["updatedAt"] = max(job["updatedAt"], t)
        for fk, fv in ev.job.facets.items():
            if t >= job["facetTimes"].get(fk, ""):
                job["facets"][fk] = fv
                job["facetTimes"][fk] = t
        me = [run["startedAt"], run["runId"]]
        if job["latestRun"] is None or job["latestRun"][1] == run["runId"] or me > job["latestRun"]:
            job["latestRun"] = me
        if run["state"] == "COMPLETE" and (
            job["completeRun"] is None
            or job["completeRun"][1] == run["runId"]
            or me > job["completeRun"]
        ):
            job["completeRun"] = me
        if job["latestRun"][1] == run["runId"]:
            # Kept in the job record so that a graph query reads one record per job node.
            job["latestRunSummary"] = {
                "id": run["runId"],
                "state": run["state"],
                "startedAt": run["startedAt"],
                "endedAt": run["endedAt"],
            }
        current = job["completeRun"] or job["latestRun"]
        if current[1] == run["runId"]:
            cur_run = run
        else:
            cur_run = json.loads(txn.get(current[1].encode(), db=self._db["runs"]))
        if job["currentVersion"] != cur_run["jobVersion"] or cur_run is run:
            job["currentVersion"] = cur_run["jobVersion"]
            job["currentIO"] = [cur_run["inputs"], cur_run["outputs"]]
            jid = job_id(ns, name)
            ch.job_edges[jid] = (
                [dataset_id(a, b) for a, b in cur_run["inputs"]],
                [dataset_id(a, b) for a, b in cur_run["outputs"]],
            )
        txn.put(k, _dumps(job), db=self._db["jobs"])

    def _write_versions(self, txn: Any, run: Json, ch: _Changes) -> None:
        for ns, name in run["outputs"]:
            facets = {k: v[1] for k, v in run["datasetFacets"].get(f"{ns}\x00{name}", {}).items()}
            version = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{run['runId']}/{ns}/{name}"))
            rec = {
                "version": version,
                "namespace": ns,
                "name": name,
                "runId": run["runId"],
                "createdAt": run["stateTime"],
                "runStartedAt": run["startedAt"],
                "fields": _fields(facets.get("schema")),
                "facets": facets,
            }
            vk = _key(ns, name) + f"\x00{run['startedAt']}\x00{run['runId']}".encode()
            # A START arriving late moves the run's start back: drop the key it had before.
            old = run.setdefault("versionKeys", {}).get(f"{ns}\x00{name}")
            if old is not None and old != vk.decode():
                txn.delete(old.encode(), db=self._db["dsversions"])
            run["versionKeys"][f"{ns}\x00{name}"] = vk.decode()
            txn.put(vk, _dumps(rec), db=self._db["dsversions"])
            dk = _key(ns, name)
            ds = json.loads(txn.get(dk, db=self._db["datasets"]))
            cur = ds.get("currentVersionKey")
            if cur is None or cur == old or vk.decode() >= cur:
                ds["currentVersion"] = version
                ds["currentVersionKey"] = vk.decode()
                cl = facets.get("columnLineage")
                if isinstance(cl, dict) or ds.get("columnLineage") is not None:
                    ds["columnLineage"] = _column_inputs(cl) if isinstance(cl, dict) else None
                    ch.column_edges[dataset_id(ns, name)] = ds["columnLineage"] or {}
                txn.put(dk, _dumps(ds), db=self._db["datasets"])

    # -- the in-memory adjacency ----------------------------------------------------------------

    def _rebuild(self) -> None:
        ch = _Changes()
        with self._env.begin() as txn:
            for k, _v in txn.cursor(db=self._db["datasets"]):
                ns, _, name = k.decode().partition("\x00")
                ch.nodes.add(dataset_id(ns, name))
                ds = json.loads(_v)
                if ds.get("columnLineage"):
                    ch.column_edges[dataset_id(ns, name)] = ds["columnLineage"]
            for _k, v in txn.cursor(db=self._db["jobs"]):
                job = json.loads(v)
                jid = job_id(job["namespace"], job["name"])
                ch.nodes.add(jid)
                vb = txn.get(str(job["currentVersion"]).encode(), db=self._db["versions"])
                if vb is not None:
                    ver = json.loads(vb)
                    ch.job_edges[jid] = (
                        [dataset_id(a, b) for a, b in ver["inputs"]],
                        [dataset_id(a, b) for a, b in ver["outputs"]],
                    )
        self._apply(ch)

    def _apply(self, ch: _Changes) -> None:
        self._nodes |= ch.nodes
        for jid, (ins, outs) in ch.job_edges.items():
            old_ins, old_outs = self._job_edges.get(jid, ([], []))
            for d in old_ins:
                _unlink(self._out, self._in, d, jid)
            for d in old_outs:
                _unlink(self._out, self._in, jid, d)
            for d in ins:
                _link(self._out, self._in, d, jid)
            for d in outs:
                _link(self._out, self._in, jid, d)
            self._job_edges[jid] = (ins, outs)
        for did, cols in ch.column_edges.items():
            ns_name = did[len("dataset:") :]
            for col, srcs in self._col_edges.get(did, {}).items():
                for s in srcs:
                    _unlink(self._col_out, self._col_in, s, f"datasetField:{ns_name}:{col}")
            for col, srcs in cols.items():
                for s in srcs:
                    _link(self._col_out, self._col_in, s, f"datasetField:{ns_name}:{col}")
            self._col_edges[did] = cols

    # -- queries --------------------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """A node id from an exact id or the CLI's ``dataset:NAMESPACE/NAME`` form."""
        with self._lock:
            if ref in self._nodes or ref in self._col_in or ref in self._col_out:
                return ref
            kind, sep, rest = ref.partition(":")
            if sep and kind in ("dataset", "job"):
                # The namespace may itself hold '/' or ':' (s3://bucket, postgres://h:5432): try
                # every split, leftmost first.
                for i, c in enumerate(rest):
                    if c in "/:":
                        cand = f"{kind}:{rest[:i]}:{rest[i + 1 :]}"
                        if cand in self._nodes:
                            return cand
        raise errors.NotFound(f"no lineage node {ref!r}")

    def lineage(self, node_id: str, *, direction: Direction = "both", depth: int = 20) -> Json:
        """The graph around a node, ``depth`` edges away, in Marquez's LineageGraph shape."""
        if depth < 0:
            raise errors.Invalid("depth must be >= 0")
        with self._lock:
            node_id = self.resolve(node_id)
            if node_id.startswith("datasetField:"):
                seen = _walk(node_id, depth, direction, self._col_out, self._col_in)
                return self._graph(seen, self._col_out, self._col_in)
            seen = _walk(node_id, depth, direction, self._out, self._in)
            return self._graph(seen, self._out, self._in)

    def _graph(
        self, seen: dict[str, int], out: dict[str, set[str]], inn: dict[str, set[str]]
    ) -> Json:
        with self._env.begin() as txn:
            nodes = [
                {
                    "id": n,
                    "type": _node_type(n),
                    "data": self._node_data(txn, n),
                    "inEdges": [
                        {"origin": m, "destination": n} for m in sorted(inn.get(n, ())) if m in seen
                    ],
                    "outEdges": [
                        {"origin": n, "destination": m} for m in sorted(out.get(n, ())) if m in seen
                    ],
                }
                for n in sorted(seen)
            ]
        return {"graph": nodes}

    def _node_data(self, txn: Any, n: str) -> Json:
        kind, _, rest = n.partition(":")
        if kind == "datasetField":
            ns_name, _, fld = rest.rpartition(":")
            return {"nodeId": n, "field": fld, "dataset": ns_name}
        for db, rec in (("datasets", "dataset"), ("jobs", "job")):
            if kind != rec:
                continue
            for i, c in enumerate(rest):
                if c != ":":
                    continue
                b = txn.get(_key(rest[:i], rest[i + 1 :]), db=self._db[db])
                if b is not None:
                    return (
                        _dataset_data(json.loads(b))
                        if rec == "dataset"
                        else self._job_data(txn, json.loads(b))
                    )
        return {}

    def _job_data(self, txn: Any, job: Json) -> Json:
        ins, outs = job.get("currentIO") or ([], [])
        return {
            "id": {"namespace": job["namespace"], "name": job["name"]},
            "type": "BATCH",
            "namespace": job["namespace"],
            "name": job["name"],
            "createdAt": job["createdAt"],
            "updatedAt": job["updatedAt"],
            "currentVersion": job["currentVersion"],
            "inputs": [{"namespace": a, "name": b} for a, b in ins],
            "outputs": [{"namespace": a, "name": b} for a, b in outs],
            "latestRun": job.get("latestRunSummary"),
            "facets": job["facets"],
        }

    def run(self, run_id: str) -> Json:
        """A run's state: runId, job, state, startedAt, endedAt, inputs, outputs, facets."""
        with self._env.begin() as txn:
            b = txn.get(run_id.lower().encode(), db=self._db["runs"])
        if b is None:
            raise errors.NotFound(f"no run {run_id!r}")
        return _public_run(json.loads(b))

    def run_graph(self, run_id: str) -> Json:
        """The job of one run with that run's own inputs and outputs (Marquez shape + ``run``)."""
        run = self.run(run_id)
        jid = job_id(run["job"]["namespace"], run["job"]["name"])
        ins = [dataset_id(a, b) for a, b in run["inputs"]]
        outs = [dataset_id(a, b) for a, b in run["outputs"]]
        out = {jid: set(outs), **{d: {jid} for d in ins}}
        inn = {jid: set(ins), **{d: {jid} for d in outs}}
        seen = dict.fromkeys([jid, *ins, *outs], 0)
        graph = self._graph(seen, out, inn)
        graph["run"] = run
        return graph

    def dataset_versions(self, namespace: str, name: str, *, limit: int = 100) -> list[Json]:
        """A dataset's versions (one per COMPLETE run that wrote it), newest first."""
        prefix = _key(namespace, name) + b"\x00"
        out: list[Json] = []
        with self._env.begin() as txn:
            if txn.get(_key(namespace, name), db=self._db["datasets"]) is None:
                raise errors.NotFound(f"no dataset {namespace}:{name}")
            cur = txn.cursor(db=self._db["dsversions"])
            # Seek past the prefix, then walk backwards: newest (latest run start) first.
            ok = cur.prev() if cur.set_range(prefix + b"\xff") else cur.last()
            while ok and cur.key().startswith(prefix) and len(out) < limit:
                out.append(json.loads(cur.value()))
                ok = cur.prev()
        return out

    def dataset(self, namespace: str, name: str) -> Json:
        with self._env.begin() as txn:
            b = txn.get(_key(namespace, name), db=self._db["datasets"])
        if b is None:
            raise errors.NotFound(f"no dataset {namespace}:{name}")
        return _dataset_data(json.loads(b))

    def stats(self) -> Json:
        with self._lock:
            return {
                "nodes": len(self._nodes),
                "edges": sum(len(v) for v in self._out.values()),
                "columnEdges": sum(len(v) for v in self._col_out.values()),
            }


def _link(out: dict[str, set[str]], inn: dict[str, set[str]], a: str, b: str) -> None:
    out.setdefault(a, set()).add(b)
    inn.setdefault(b, set()).add(a)


def _unlink(out: dict[str, set[str]], inn: dict[str, set[str]], a: str, b: str) -> None:
    out.get(a, set()).discard(b)
    inn.get(b, set()).discard(a)


def _walk(
    start: str,
    depth: int,
    direction: Direction,
    out: dict[str, set[str]],
    inn: dict[str, set[str]],
) -> dict[str, int]:
    seen = {start: 0}
    frontier = [start]
    empty: set[str] = set()
    for d in range(1, depth + 1):
        nxt: list[str] = []
        for n in frontier:
            if direction != "upstream":
                for m in out.get(n, empty):
                    if m not in seen:
                        seen[m] = d
                        nxt.append(m)
            if direction != "downstream":
                for m in inn.get(n, empty):
                    if m not in seen:
                        seen[m] = d
                        nxt.append(m)
        if not nxt:
            break
        frontier = nxt
    return seen


def _node_type(n: str) -> str:
    return {"dataset": "DATASET", "job": "JOB", "datasetField": "DATASET_FIELD"}[
        n.partition(":")[0]
    ]


def _job_version(run: Json) -> str:
    ident = _dumps([run["job"], sorted(run["inputs"]), sorted(run["outputs"])])
    return str(uuid.uuid5(uuid.NAMESPACE_URL, hashlib.sha256(ident).hexdigest()))


def _fields(schema_facet: Any) -> list[Json]:
    if not isinstance(schema_facet, dict):
        return []
    return [
        {"name": f.get("name"), "type": f.get("type"), "description": f.get("description")}
        for f in schema_facet.get("fields") or []
        if isinstance(f, dict)
    ]


def _column_inputs(facet: Json) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for col, spec in (facet.get("fields") or {}).items():
        out[col] = [
            field_id(i["namespace"], i["name"], i["field"]) for i in spec.get("inputFields") or []
        ]
    return out


def _dataset_data(ds: Json) -> Json:
    return {
        "id": {"namespace": ds["namespace"], "name": ds["name"]},
        "type": "DB_TABLE",
        "namespace": ds["namespace"],
        "name": ds["name"],
        "createdAt": ds["createdAt"],
        "updatedAt": ds["updatedAt"],
        "currentVersion": ds["currentVersion"],
        "fields": _fields(ds["facets"].get("schema")),
        "facets": ds["facets"],
        "columnLineage": ds.get("columnLineage"),
    }


def _public_run(run: Json) -> Json:
    return {
        k: run.get(k)
        for k in (
            "runId",
            "job",
            "state",
            "stateTime",
            "startedAt",
            "endedAt",
            "inputs",
            "outputs",
            "facets",
            "jobVersion",
            "eventCount",
        )
    }


def to_dot(graph: Json, *, name: str = "lineage") -> str:
    """Graphviz DOT for a Marquez-shaped graph: jobs as boxes, datasets as ellipses."""

    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(name)} {{", "  rankdir=LR;"]
    for node in graph["graph"]:
        data = node.get("data") or {}
        label = data.get("name") or node["id"]
        if node["type"] == "DATASET_FIELD":
            label = f"{data.get('dataset', '')}.{data.get('field', '')}"
        shape = "box" if node["type"] == "JOB" else "ellipse"
        lines.append(f"  {q(node['id'])} [label={q(str(label))}, shape={shape}];")
    for node in graph["graph"]:
        lines.extend(
            f"  {q(e['origin'])} -> {q(e['destination'])};" for e in node.get("outEdges", [])
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def open_lineage_store(path: str | os.PathLike[str], **options: Any) -> LineageStore:
    """The lineage store in the LMDB directory ``path`` (created if missing)."""
    return LineageStore(path, **options)


__all__ = [
    "Direction",
    "LineageStore",
    "dataset_id",
    "field_id",
    "job_id",
    "open_lineage_store",
    "to_dot",
]
