"""Quality rules on CSV and JSON Lines, and the built-in quality step."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runink.schemas import _openlineage as ol, errors
from runink.sdk import Context, quality

NOW = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
ROWS = [
    {"id": 1, "email": "a@x.io", "amount": 10.5, "status": "paid", "ts": "2024-06-01T11:00:00Z"},
    {"id": 2, "email": "b@x.io", "amount": -3, "status": "paid", "ts": "2024-06-01T10:00:00Z"},
    {
        "id": 2,
        "email": "not-an-email",
        "amount": None,
        "status": "lost",
        "ts": "2024-05-30T00:00:00Z",
    },
    {"id": 4, "email": "", "amount": 99, "status": "open", "ts": "2024-06-01T11:30:00Z"},
]
CHECKS = [
    {"type": "not_null", "column": "amount"},
    {"type": "unique", "column": "id"},
    {"type": "row_count", "min": 1, "max": 10},
    {"type": "range", "column": "amount", "min": 0, "max": 100},
    {"type": "regex", "column": "email", "pattern": r"[^@]+@[^@]+\.[a-z]+"},
    {"type": "accepted_values", "column": "status", "values": ["paid", "open"]},
    {"type": "freshness", "column": "ts", "maxAgeSeconds": 3600},
]


def write(tmp_path: Path, fmt: str) -> Path:
    if fmt == "jsonl":
        p = tmp_path / "orders.jsonl"
        p.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    else:
        p = tmp_path / "orders.csv"
        cols = list(ROWS[0])
        lines = [",".join(cols)] + [
            ",".join("" if r[c] is None else str(r[c]) for c in cols) for r in ROWS
        ]
        p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_every_check_type_on_csv_and_jsonl(tmp_path: Path, fmt: str) -> None:
    rules = quality.parse_rules(
        {"spec": {"dataset": "orders", "checks": CHECKS}}, default_name="orders"
    )
    report = quality.evaluate_file(write(tmp_path, fmt), rules, now=NOW)
    got = {o.type: (o.success, o.unexpected_count) for o in report.outcomes}
    assert got == {
        "not_null": (False, 1),
        "unique": (False, 1),
        "row_count": (True, 0),
        "range": (False, 1),
        "regex": (False, 1),  # the empty email is null, not a regex failure
        "accepted_values": (False, 1),
        "freshness": (True, 0),  # newest ts is 30 minutes old
    }
    assert report.row_count == 4
    facet = report.facet()
    parsed = ol.DataQualityAssertionsDatasetFacet.model_validate(facet)
    assert [a.assertion for a in parsed.assertions][:2] == ["not_null", "unique"]
    assert parsed.assertions[0].column == "amount" and parsed.assertions[0].actual == "1"


def test_freshness_without_column_uses_the_file_time(tmp_path: Path) -> None:
    p = write(tmp_path, "csv")
    old = NOW - dt.timedelta(hours=2)
    os.utime(p, (old.timestamp(), old.timestamp()))
    rules = quality.parse_rules([{"type": "freshness", "maxAgeSeconds": 3600}])
    report = quality.evaluate_file(p, rules, now=NOW)
    assert not report.passed
    assert "7200s old" in report.outcomes[0].message


def test_rules_are_validated_with_paths() -> None:
    with pytest.raises(errors.Invalid) as exc:
        quality.parse_rules('{"checks": [{"type": "regex", "column": "x"}]}')
    assert exc.value.errors[0].path == "rules[0].checks[0].pattern"


def step_ctx(tmp_path: Path, params: dict[str, Any], data: Path) -> Context:
    wd = tmp_path / "work"
    wd.mkdir()
    (wd / "context.json").write_text(
        json.dumps({"params": params, "inputs": {"orders": str(data)}, "outputs": {}})
    )
    return Context(work_dir=wd)


def test_quality_step_fails_on_a_blocking_rule_naming_rule_column_and_counts(
    tmp_path: Path,
) -> None:
    rules = {
        "metadata": {"name": "orders-amount"},
        "spec": {
            "dataset": "orders",
            "blocking": True,
            "checks": [{"type": "not_null", "column": "amount"}, {"type": "row_count", "min": 1}],
        },
    }
    ctx = step_ctx(tmp_path, {"rules": json.dumps(rules)}, write(tmp_path, "csv"))
    with pytest.raises(quality.QualityFailed) as exc:
        quality.check(ctx, now=NOW)
    assert str(exc.value).endswith("orders-amount[0] not_null on amount: 1 of 4 rows are null")
    results = json.loads((ctx.work_dir / "results.json").read_text())
    assert results["quality"]["passed"] is False
    assert [r["passed"] for r in results["quality"]["results"]] == [False, True]
    inp = results["lineage"]["inputs"][0]
    assert inp["name"] == "orders"
    assert inp["inputFacets"]["dataQualityAssertions"]["assertions"][0]["success"] is False


def test_quality_step_passes_when_failures_are_not_blocking(tmp_path: Path) -> None:
    ctx = step_ctx(tmp_path, {"rules": json.dumps(CHECKS)}, write(tmp_path, "jsonl"))
    assert quality.check(ctx, now=NOW) == {"passed": False, "rowCount": 4}
