"""The built-in LLM step: ``python: runink.sdk.llm:annotate_dataset``.

Reads a CSV or JSON Lines input dataset, asks any OpenAI-compatible chat-completions endpoint
about one field of each record, and writes one Annotation object per record (JSON Lines) to the
step's output dataset, with provenance (model digest and params, prompt and input hashes, review
state ``suggested``, the producing service account). The lineage of the step (input dataset ->
llm step -> annotations dataset) is returned as an OpenLineage RunEvent in the step's results.

Retries: 429, 5xx, connection errors and timeouts are retried with exponential backoff and jitter
(``Retry-After`` honoured). Idempotence: an annotation id is a hash of (dataset, version, record
key, field, model, prompt template hash), and records whose id is already in the output file are
skipped, so a retried request or a re-run step never writes a duplicate. Standard library only.

Params: model, endpoint (base URL, e.g. ``http://host:8000/v1``), api_key_secret | api_key_env |
api_key_file, prompt (``str.format`` template over ``value``, ``field``, ``key`` and the record's
columns), input, field, key_field (default: ``id`` if present, else the line number),
annotation_type, output, batch_size, concurrency, retries, timeout, backoff, temperature,
max_tokens, dataset_version (default: hash of the input file), producer (default: the slice's
service account from ``RUNINK_SERVICE_ACCOUNT``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import email.utils
import hashlib
import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runink.schemas import errors
from runink.sdk import _context, _quality

PRODUCER = "https://runink.io/sdk/llm"
RUN_EVENT_SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


class LlmError(RuntimeError):
    """The endpoint refused a request for good (4xx other than 429) or retries ran out."""


@dataclass(frozen=True, slots=True)
class LlmConfig:
    model: str
    endpoint: str
    prompt: str
    field: str
    annotation_type: str
    dataset: str
    """Input dataset name, as in the annotations' data reference."""
    key_field: str | None = None
    batch_size: int = 32
    concurrency: int = 4
    retries: int = 5
    timeout: float = 30.0
    backoff: float = 0.5
    max_backoff: float = 30.0
    temperature: float = 0.0
    max_tokens: int | None = None
    dataset_version: str | None = None
    producer: str | None = None
    herd: str = "default"
    run: str | None = None
    extra_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def prompt_hash(self) -> str:
        return "sha256:" + hashlib.sha256(self.prompt.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LlmReport:
    written: int
    skipped: int
    """Records already annotated in the output (a re-run): not asked again."""
    requests: int
    retries: int
    output: str


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def annotation_id(
    dataset: str, version: str, record_key: str, fld: str, model: str, prompt_hash: str
) -> str:
    """The deterministic id of an annotation: retries and re-runs map to the same one."""
    h = hashlib.sha256(
        "\x00".join([dataset, version, record_key, fld, model, prompt_hash]).encode()
    )
    return "ann-" + h.hexdigest()[:40]


class _Client:
    """POST chat completions with retries; counts requests and retries (thread-safe enough)."""

    def __init__(self, cfg: LlmConfig, api_key: str | None, sleep: Callable[[float], None]) -> None:
        self.cfg = cfg
        self.url = cfg.endpoint.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.sleep = sleep
        self.requests = 0
        self.retries = 0

    def complete(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.cfg.temperature,
            **self.cfg.extra_params,
        }
        if self.cfg.max_tokens is not None:
            body["max_tokens"] = self.cfg.max_tokens
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                self.retries += 1
            self.requests += 1
            delay: float | None = None
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout) as resp:
                    result: dict[str, Any] = json.loads(resp.read())
                    return result
            except urllib.error.HTTPError as e:
                e.close()
                if e.code != 429 and e.code < 500:
                    raise LlmError(f"{self.url}: HTTP {e.code} {e.reason}: not retried") from e
                last = f"HTTP {e.code}"
                delay = _retry_after(e.headers.get("Retry-After"))
            except (
                urllib.error.URLError,
                TimeoutError,
                ConnectionError,
                http.client.HTTPException,
            ) as e:
                last = f"{type(e).__name__}: {e}"
            except ValueError as e:  # a 200 whose body is not JSON: the server is misbehaving
                last = f"bad response: {e}"
            if attempt == self.cfg.retries:
                break
            backoff = min(self.cfg.max_backoff, self.cfg.backoff * 2**attempt)
            # Full jitter spreads the retries of concurrent workers apart.
            self.sleep(delay if delay is not None else random.uniform(backoff / 2, backoff))
        raise LlmError(f"{self.url}: giving up after {self.cfg.retries + 1} attempts ({last})")


def _retry_after(v: str | None) -> float | None:
    if not v:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


def _parse_answer(content: str) -> tuple[Any, float | None]:
    """The annotation value and confidence from a reply: JSON {value|label, confidence} or text."""
    text = content.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        return text, None
    if isinstance(obj, dict):
        value = obj.get("value", obj.get("label", obj))
        conf = obj.get("confidence")
        if isinstance(conf, int | float) and not isinstance(conf, bool) and 0 <= conf <= 1:
            return value, float(conf)
        return value, None
    return obj, None


def _existing_ids(path: Path) -> set[str]:
    ids: set[str] = set()
    if not path.exists():
        return ids
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                ids.add(json.loads(line)["metadata"]["name"])
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line from a killed run: that record is redone
    return ids


def annotate_file(
    cfg: LlmConfig,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    api_key: str | None = None,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> LlmReport:
    """Annotate ``cfg.field`` of every record of ``input_path``; append to ``output_path``."""
    inp, out = Path(input_path), Path(output_path)
    version = cfg.dataset_version or _sha256(inp.read_bytes())
    done = _existing_ids(out)
    client = _Client(cfg, api_key, sleep)
    todo: list[tuple[str, str, str, Mapping[str, Any]]] = []  # (id, key, value, row)
    skipped = 0
    for n, row in enumerate(_quality.read_rows(inp), 1):
        key_field = cfg.key_field or ("id" if "id" in row else None)
        key = str(row[key_field]) if key_field is not None else str(n)
        aid = annotation_id(cfg.dataset, version, key, cfg.field, cfg.model, cfg.prompt_hash)
        if aid in done:
            skipped += 1
            continue
        if cfg.field not in row:
            raise errors.Invalid(f"{inp}: record {key} has no field {cfg.field!r}")
        done.add(aid)  # a duplicate key in the input is annotated once
        todo.append((aid, key, "" if row[cfg.field] is None else str(row[cfg.field]), row))

    def one(item: tuple[str, str, str, Mapping[str, Any]]) -> dict[str, Any]:
        aid, key, value, row = item
        try:
            prompt = cfg.prompt.format_map({**row, "value": value, "field": cfg.field, "key": key})
        except (KeyError, IndexError, ValueError) as e:
            raise errors.Invalid(f"prompt template: {e!r} is not available") from e
        resp = client.complete(prompt)
        try:
            content = resp["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise LlmError(f"response has no choices[0].message.content: {resp!r:.200}") from e
        ann_value, confidence = _parse_answer(str(content))
        spec: dict[str, Any] = {
            "annotationType": cfg.annotation_type,
            "annotationValue": ann_value,
            "sourceModel": cfg.model,
            "promptReference": cfg.prompt_hash,
            "timestamp": now().astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
            "annotatedDataRef": {
                k: v
                for k, v in {
                    "dataset": cfg.dataset,
                    "version": version,
                    "field": cfg.field,
                    "recordKey": key,
                    "run": cfg.run,
                }.items()
                if v is not None
            },
            "provenance": {
                "modelDigest": resp.get("system_fingerprint") or resp.get("model") or cfg.model,
                "modelParams": {
                    "temperature": cfg.temperature,
                    **({"max_tokens": cfg.max_tokens} if cfg.max_tokens is not None else {}),
                    **dict(cfg.extra_params),
                },
                "promptHash": _sha256(prompt.encode()),
                "inputHash": _sha256(value.encode()),
                "reviewState": "suggested",
                **({"producer": cfg.producer} if cfg.producer else {}),
            },
        }
        if confidence is not None:
            spec["confidenceScore"] = confidence
        return {
            "apiVersion": "runink.io/v1",
            "kind": "Annotation",
            "metadata": {"name": aid, "herd": cfg.herd},
            "spec": spec,
        }

    written = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        out.open("a", encoding="utf-8") as f,
        concurrent.futures.ThreadPoolExecutor(max_workers=max(1, cfg.concurrency)) as pool,
    ):
        for start in range(0, len(todo), max(1, cfg.batch_size)):
            batch = todo[start : start + max(1, cfg.batch_size)]
            # Each batch is written and flushed as a unit: a crash loses at most one batch of
            # work, and the ids already written are skipped by the re-run.
            annotations = list(pool.map(one, batch))
            f.writelines(json.dumps(a, separators=(",", ":")) + "\n" for a in annotations)
            f.flush()
            os.fsync(f.fileno())
            written += len(annotations)
    return LlmReport(
        written=written,
        skipped=skipped,
        requests=client.requests,
        retries=client.retries,
        output=str(out),
    )


def lineage_event(
    cfg: LlmConfig,
    *,
    job_namespace: str,
    job_name: str,
    run_id: str,
    input_name: str,
    output_name: str,
    dataset_namespace: str,
    event_time: dt.datetime,
    event_type: str = "COMPLETE",
) -> dict[str, Any]:
    """The OpenLineage RunEvent of an llm step: input dataset -> step -> annotations dataset."""
    return {
        "eventType": event_type,
        "eventTime": event_time.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT_SCHEMA_URL,
        "run": {"runId": run_id, "facets": {}},
        "job": {
            "namespace": job_namespace,
            "name": job_name,
            "facets": {
                "jobType": {
                    "_producer": PRODUCER,
                    "_schemaURL": "https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json",
                    "processingType": "BATCH",
                    "integration": "RUNINK",
                    "jobType": "LLM_ANNOTATION",
                }
            },
        },
        "inputs": [{"namespace": dataset_namespace, "name": input_name}],
        "outputs": [
            {
                "namespace": dataset_namespace,
                "name": output_name,
                "facets": {
                    "columnLineage": {
                        "_producer": PRODUCER,
                        "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json",
                        "fields": {
                            "annotationValue": {
                                "inputFields": [
                                    {
                                        "namespace": dataset_namespace,
                                        "name": input_name,
                                        "field": cfg.field,
                                        "transformations": [
                                            {
                                                "type": "INDIRECT",
                                                "subtype": "TRANSFORMATION",
                                                "description": f"LLM {cfg.model}",
                                            }
                                        ],
                                    }
                                ]
                            }
                        },
                    }
                },
            }
        ],
    }


def _api_key(ctx: _context.Context, params: Mapping[str, Any]) -> str | None:
    if params.get("api_key_secret"):
        return ctx.secret(str(params["api_key_secret"])).decode().strip()
    if params.get("api_key_env"):
        var = str(params["api_key_env"])
        if var not in os.environ:
            raise errors.Invalid(f"api_key_env: environment variable {var} is not set")
        return os.environ[var]
    if params.get("api_key_file"):
        return Path(str(params["api_key_file"])).read_text().strip()
    return None


def annotate_dataset(ctx: _context.Context) -> dict[str, Any]:
    """The step function: params as in the module docstring; results ``llm`` and ``lineage``."""
    p = dict(ctx.params)
    missing = [k for k in ("model", "endpoint", "prompt", "field", "annotation_type") if k not in p]
    if missing:
        raise errors.Invalid(f"the llm step needs params {missing}")
    path = p.get("path")
    inp_name = p.get("input")
    if path is None:
        if inp_name is None:
            if len(ctx.inputs) != 1:
                raise errors.Invalid("say which input dataset with the 'input' param")
            inp_name = next(iter(ctx.inputs))
        path = ctx.inputs[inp_name]
    out_name = p.get("output")
    out_path = p.get("output_path")
    if out_path is None:
        if out_name is None:
            if len(ctx.outputs) != 1:
                raise errors.Invalid("say which output dataset with the 'output' param")
            out_name = next(iter(ctx.outputs))
        out_path = ctx.outputs[out_name]
    herd = ctx.herd or "default"
    cfg = LlmConfig(
        model=str(p["model"]),
        endpoint=str(p["endpoint"]),
        prompt=str(p["prompt"]),
        field=str(p["field"]),
        annotation_type=str(p["annotation_type"]),
        dataset=str(inp_name or path),
        key_field=p.get("key_field"),
        batch_size=int(p.get("batch_size", 32)),
        concurrency=int(p.get("concurrency", 4)),
        retries=int(p.get("retries", 5)),
        timeout=float(p.get("timeout", 30)),
        backoff=float(p.get("backoff", 0.5)),
        temperature=float(p.get("temperature", 0)),
        max_tokens=int(p["max_tokens"]) if p.get("max_tokens") is not None else None,
        dataset_version=p.get("dataset_version"),
        producer=p.get("producer") or os.environ.get("RUNINK_SERVICE_ACCOUNT") or None,
        herd=herd,
        run=p.get("run") or os.environ.get("RUNINK_RUN") or None,
    )
    report = annotate_file(cfg, str(path), str(out_path), api_key=_api_key(ctx, p))
    ctx.set_result(
        "llm",
        {
            "written": report.written,
            "skipped": report.skipped,
            "requests": report.requests,
            "retries": report.retries,
        },
    )
    event = lineage_event(
        cfg,
        job_namespace=f"runink://{herd}",
        job_name=ctx.slice or "llm",
        run_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"runink://{herd}/{ctx.slice or path}")),
        input_name=cfg.dataset,
        output_name=str(out_name or out_path),
        dataset_namespace=str(p.get("namespace") or f"runink://{herd}"),
        event_time=dt.datetime.now(dt.UTC),
    )
    ctx.set_result("lineage", event)
    return {"written": report.written, "skipped": report.skipped}


__all__ = [
    "LlmConfig",
    "LlmError",
    "LlmReport",
    "annotate_dataset",
    "annotate_file",
    "annotation_id",
    "lineage_event",
]
