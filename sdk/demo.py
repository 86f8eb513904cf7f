"""The demo pipeline's steps (manifests/demo/pipeline.yaml): real step code, run inside slices.

extract -> transform (one slice per region) -> quality -> report. Steps exchange data only through
dataset files (``ctx.inputs`` / ``ctx.outputs``), report small results, and the report is signed
with a key from a Secret delivered as a file on the slice's private tmpfs. extract and transform
report a ``lineage`` result (the schema of what they wrote, and transform's column lineage) that
the run controller merges into their OpenLineage COMPLETE events; quality reports its checks as
dataQualityAssertions. Standard library only: slices run the system python3.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import re
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

from runink.sdk import _context

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
_OL = "https://runink.io/sdk/demo"
_FACETS = "https://openlineage.io/spec/facets/"
_TYPES = {"quantity": "int64", "unit_price": "float64", "order_date": "date"}


def _schema(fields: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "_producer": _OL,
        "_schemaURL": _FACETS + "1-1-1/SchemaDatasetFacet.json",
        "fields": [{"name": n, "type": t} for n, t in fields],
    }


def _namespace(ctx: _context.Context) -> str:
    return f"runink://{ctx.herd or 'default'}"


def extract(ctx: _context.Context) -> None:
    """Copy the bundled sales CSV into the raw-sales dataset, keeping only well-formed rows."""
    src = resources.files("runink.sdk").joinpath("demo_data/sales.csv")
    out = Path(ctx.outputs["raw-sales"])
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with out.open("w", newline="") as g:
        reader = csv.DictReader(io.StringIO(src.read_text()))
        writer = csv.DictWriter(g, fieldnames=list(reader.fieldnames or []))
        writer.writeheader()
        for row in reader:
            if ctx.params.get("since") and row["order_date"] < str(ctx.params["since"]):
                continue
            writer.writerow(row)
            rows += 1
    ctx.logger.info("extracted %d orders into %s", rows, out)
    ctx.set_result("rows", rows)
    columns = [(c, _TYPES.get(c, "string")) for c in reader.fieldnames or []]
    ctx.set_result(
        "lineage",
        {
            "outputs": [
                {
                    "namespace": _namespace(ctx),
                    "name": "raw-sales",
                    "facets": {"schema": _schema(columns)},
                }
            ]
        },
    )


def transform(ctx: _context.Context) -> None:
    """Revenue per product for one region (the step fans out over regions with a matrix)."""
    region = str(ctx.params["region"])
    revenue: dict[str, float] = defaultdict(float)
    orders = 0
    with Path(ctx.inputs["raw-sales"]).open(newline="") as f:
        for row in csv.DictReader(f):
            if row["region"] != region:
                continue
            revenue[row["product"]] += int(row["quantity"]) * float(row["unit_price"])
            orders += 1
    out_dir = Path(ctx.outputs["regional-sales"])
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "region": region,
        "orders": orders,
        "revenue": {k: round(v, 2) for k, v in revenue.items()},
    }
    (out_dir / f"{region}.json").write_text(json.dumps(doc, indent=2, sort_keys=True))
    ctx.logger.info("%s: %d orders, %.2f revenue", region, orders, sum(revenue.values()))
    ctx.set_result("orders", orders)
    ns = _namespace(ctx)

    def source(*cols: str, kind: str = "DIRECT", subtype: str = "IDENTITY") -> dict[str, Any]:
        return {
            "inputFields": [
                {
                    "namespace": ns,
                    "name": "raw-sales",
                    "field": c,
                    "transformations": [{"type": kind, "subtype": subtype}],
                }
                for c in cols
            ]
        }

    ctx.set_result(
        "lineage",
        {
            "outputs": [
                {
                    "namespace": ns,
                    "name": "regional-sales",
                    "facets": {
                        "schema": _schema(
                            [
                                ("region", "string"),
                                ("orders", "int64"),
                                ("product", "string"),
                                ("revenue", "float64"),
                            ]
                        ),
                        "columnLineage": {
                            "_producer": _OL,
                            "_schemaURL": _FACETS + "1-2-0/ColumnLineageDatasetFacet.json",
                            "fields": {
                                "region": source("region"),
                                "orders": source("order_id", subtype="AGGREGATION"),
                                "product": source("product"),
                                "revenue": source("quantity", "unit_price", subtype="AGGREGATION"),
                            },
                        },
                    },
                }
            ]
        },
    )


def quality(ctx: _context.Context) -> None:
    """Blocking checks on raw-sales: order_id present and unique, quantity in range, e-mails well
    formed, enough rows. The outcome is reported as an OpenLineage ``dataQualityAssertions`` facet
    (the ``lineage`` result) before a failure, so the run says which check failed and how often.
    """
    seen: set[str] = set()
    nulls = dupes = out_of_range = malformed = rows = 0
    max_q = int(ctx.params.get("max_quantity", 100))
    with Path(ctx.inputs["raw-sales"]).open(newline="") as f:
        for row in csv.DictReader(f):
            rows += 1
            oid = row["order_id"]
            if not oid:
                nulls += 1
            elif oid in seen:
                dupes += 1
            seen.add(oid)
            if not 1 <= int(row["quantity"]) <= max_q:
                out_of_range += 1
            if not _EMAIL.match(row["customer_email"]):
                malformed += 1
    min_rows = int(ctx.params.get("min_rows", 1))
    checks = [
        ("not_null", "order_id", nulls, f"not_null on order_id: {nulls} of {rows} rows are null"),
        ("unique", "order_id", dupes, f"unique on order_id: {dupes} of {rows} rows are duplicates"),
        (
            "range",
            "quantity",
            out_of_range,
            f"range on quantity: {out_of_range} of {rows} rows outside [1, {max_q}]",
        ),
        (
            "regex",
            "customer_email",
            malformed,
            f"regex on customer_email: {malformed} of {rows} rows are malformed",
        ),
        (
            "row_count",
            None,
            int(rows < min_rows),
            f"row_count: {rows} rows, expected at least {min_rows}",
        ),
    ]
    assertions = [
        {"assertion": kind, "success": bad == 0, "severity": "error", "description": text}
        | ({"column": col} if col else {})
        for kind, col, bad, text in checks
    ]
    facet = {
        "_producer": _OL,
        "_schemaURL": _FACETS + "1-0-1/DataQualityAssertionsDatasetFacet.json",
        "assertions": assertions,
    }
    ctx.set_result(
        "lineage",
        {
            "inputs": [
                {
                    "namespace": _namespace(ctx),
                    "name": "raw-sales",
                    "inputFacets": {"dataQualityAssertions": facet},
                }
            ]
        },
    )
    failed = [str(a["description"]) for a in assertions if not a["success"]]
    ctx.set_result("checked_rows", rows)
    ctx.set_result("problems", len(failed))
    for text in failed:
        ctx.logger.error("quality: %s", text)
    if failed:
        raise RuntimeError("blocking quality check failed on raw-sales: " + "; ".join(failed))
    ctx.logger.info("quality: %d rows passed every check", rows)


def report(ctx: _context.Context) -> None:
    """Combine the regional files into one signed report (HMAC-SHA256 with the Secret's key)."""
    regions: list[dict[str, Any]] = [
        json.loads(path.read_text())
        for path in sorted(Path(ctx.inputs["regional-sales"]).glob("*.json"))
    ]
    total = round(sum(sum(r["revenue"].values()) for r in regions), 2)
    body = {
        "title": str(ctx.params.get("title", "Sales report")),
        "regions": {r["region"]: round(sum(r["revenue"].values()), 2) for r in regions},
        "orders": sum(r["orders"] for r in regions),
        "total_revenue": total,
    }
    payload = json.dumps(body, sort_keys=True).encode()
    signature = hmac.new(ctx.secret("report-signing/hmac-key"), payload, hashlib.sha256).hexdigest()
    out = Path(ctx.outputs["sales-report"])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"report": body, "hmac_sha256": signature}, indent=2, sort_keys=True))
    lines = [body["title"], "=" * len(body["title"])]
    lines += [f"{name:>6}: {value:>12,.2f}" for name, value in sorted(body["regions"].items())]
    lines.append(f"{'total':>6}: {total:>12,.2f}  ({body['orders']} orders)")
    for line in lines:
        print(line, flush=True)
    ctx.set_result("total_revenue", total)
    ctx.set_result("report", str(out))
