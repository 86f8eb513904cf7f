"""QualityRule evaluation on CSV and JSON Lines files: pure functions behind runink.sdk.quality.

A QualityRule (runink.schemas, kind QualityRule) lists checks: not_null, unique, row_count,
freshness, range, regex, accepted_values. `evaluate` streams the rows once and evaluates every
check of every rule; results come back as `CheckOutcome`s, convertible to the schema's
CheckResult and to an OpenLineage ``dataQualityAssertions`` facet. Time is a parameter (``now``)
so freshness is testable. Values from CSV are strings: numbers are parsed where a check needs them,
and an empty CSV cell counts as null.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from runink.schemas import _governance, _pipelines, errors

PRODUCER = "https://runink.io/sdk/quality"
ASSERTIONS_SCHEMA_URL = (
    "https://openlineage.io/spec/facets/1-0-1/DataQualityAssertionsDatasetFacet.json"
    "#/$defs/DataQualityAssertionsDatasetFacet"
)


@dataclass(frozen=True, slots=True)
class Rule:
    """A named set of checks (a QualityRule's name and spec)."""

    name: str
    checks: tuple[_governance.Check, ...]
    blocking: bool = False


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    rule: str
    index: int
    type: str
    column: str | None
    success: bool
    blocking: bool
    message: str
    expected: str | None = None
    actual: str | None = None
    unexpected_count: int = 0

    def to_assertion(self) -> dict[str, Any]:
        """One OpenLineage dataQualityAssertions entry."""
        out: dict[str, Any] = {
            "assertion": self.type,
            "success": self.success,
            "name": f"{self.rule}[{self.index}]",
            "severity": "error" if self.blocking else "warn",
            "description": self.message,
        }
        if self.column is not None:
            out["column"] = self.column
        if self.expected is not None:
            out["expected"] = self.expected
        if self.actual is not None:
            out["actual"] = self.actual
        return out

    def to_check_result(self, now: dt.datetime) -> dict[str, Any]:
        """The schema's CheckResult (Dataset/QualityRule status), camelCase JSON."""
        return _governance.CheckResult(
            rule=self.rule,
            check=self.index,
            passed=self.success,
            message=self.message,
            time=now.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        ).model_dump(mode="json", exclude_none=True)


@dataclass(frozen=True, slots=True)
class QualityReport:
    path: str
    row_count: int
    outcomes: tuple[CheckOutcome, ...]
    evaluated_at: dt.datetime
    data_time: dt.datetime | None = None

    @property
    def passed(self) -> bool:
        return all(o.success for o in self.outcomes)

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        return [o for o in self.outcomes if o.blocking and not o.success]

    def facet(self) -> dict[str, Any]:
        """The OpenLineage ``dataQualityAssertions`` dataset facet."""
        return {
            "_producer": PRODUCER,
            "_schemaURL": ASSERTIONS_SCHEMA_URL,
            "assertions": [o.to_assertion() for o in self.outcomes],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rowCount": self.row_count,
            "passed": self.passed,
            "evaluatedAt": self.evaluated_at.astimezone(dt.UTC).isoformat(),
            "results": [o.to_check_result(self.evaluated_at) for o in self.outcomes],
            "dataQualityAssertions": self.facet(),
        }


class QualityFailed(RuntimeError):
    """A blocking check failed; the message names the rule, the check, the column and counts."""

    def __init__(self, report: QualityReport) -> None:
        self.report = report
        lines = [f"{o.rule}[{o.index}] {o.message}" for o in report.blocking_failures]
        super().__init__(f"blocking quality check failed on {report.path}: " + "; ".join(lines))


# -- rules from params ------------------------------------------------------------------------


def parse_rules(value: Any, *, default_name: str = "rule") -> list[Rule]:
    """Rules from a step param: JSON text or data, as QualityRule object(s), spec(s) or checks.

    Accepted: a QualityRule object ``{kind, metadata, spec}``, a spec ``{dataset, checks,
    blocking}``, ``{checks: [...]}``, a list of any of these, or a bare list of checks.
    """
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError as e:
            raise errors.Invalid(f"quality rules are not JSON: {e}") from e
    items = value if isinstance(value, list) else [value]
    if items and all(isinstance(i, dict) and "type" in i for i in items):
        items = [{"checks": items}]
    rules: list[Rule] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise errors.Invalid(f"rules[{n}] is not an object")
        name = (item.get("metadata") or {}).get("name") or (
            default_name if len(items) == 1 else f"{default_name}-{n}"
        )
        spec = item.get("spec", item)
        checks: list[_governance.Check] = []
        problems: list[errors.FieldError] = []
        for j, raw in enumerate(spec.get("checks") or []):
            try:
                checks.append(_governance.Check.model_validate(raw))
            except pydantic.ValidationError as e:
                problems.extend(_field_errors(f"rules[{n}].checks[{j}]", e))
        if problems:
            raise errors.Invalid("invalid quality check", errors=problems)
        if not checks:
            raise errors.Invalid(f"rules[{n}] has no checks")
        rules.append(Rule(name=name, checks=tuple(checks), blocking=bool(spec.get("blocking"))))
    return rules


def _field_errors(base: str, e: pydantic.ValidationError) -> list[errors.FieldError]:
    out: list[errors.FieldError] = []
    for er in e.errors(include_url=False):
        # Model validators report several fields at once through PathErrors (schemas).
        inner = (er.get("ctx") or {}).get("error")
        pairs = (
            inner.problems
            if isinstance(inner, _pipelines.PathErrors)
            else [(tuple(er["loc"]), er["msg"])]
        )
        for loc, msg in pairs:
            path = base + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
            out.append(errors.FieldError(path=path, message=msg))
    return out


# -- reading ----------------------------------------------------------------------------------


def read_rows(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Rows of a CSV (header line first) or JSON Lines file, by extension (.csv, .tsv, .jsonl)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        with p.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    raise errors.Invalid(f"{p}:{lineno}: not JSON: {e}") from e
                if not isinstance(row, dict):
                    raise errors.Invalid(f"{p}:{lineno}: a JSON Lines row must be an object")
                yield row
    elif suffix in (".csv", ".tsv"):
        with p.open(encoding="utf-8", newline="") as f:
            yield from csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
    else:
        raise errors.Invalid(f"{p}: unknown format {suffix!r} (use .csv, .tsv or .jsonl)")


# -- evaluation -------------------------------------------------------------------------------


def _is_null(v: Any) -> bool:
    return v is None or v == "" or (isinstance(v, float) and math.isnan(v))


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _time(v: Any) -> dt.datetime | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return dt.datetime.fromtimestamp(v, dt.UTC)
    if isinstance(v, str):
        try:
            t = dt.datetime.fromisoformat(v)
        except ValueError:
            return None
        return t if t.tzinfo is not None else t.replace(tzinfo=dt.UTC)
    return None


@dataclass(slots=True)
class _State:
    """Running counters for one check while the rows stream past."""

    nulls: int = 0
    bad: int = 0
    seen: set[str] = field(default_factory=set)
    latest: dt.datetime | None = None
    examples: list[str] = field(default_factory=list)


def _feed(
    c: _governance.Check, st: _State, row: Mapping[str, Any], pattern: re.Pattern[str] | None
) -> None:
    if c.column is None:
        return
    v = row.get(c.column)
    if c.type == "freshness":
        t = _time(v)
        if t is not None and (st.latest is None or t > st.latest):
            st.latest = t
        return
    if _is_null(v):
        st.nulls += 1
        return
    bad = False
    if c.type == "unique":
        key = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
        bad = key in st.seen
        st.seen.add(key)
    elif c.type == "range":
        x = _number(v)
        bad = x is None or (c.min is not None and x < c.min) or (c.max is not None and x > c.max)
    elif c.type == "regex":
        assert pattern is not None
        bad = pattern.fullmatch(str(v)) is None
    elif c.type == "accepted_values":
        allowed = c.values or []
        bad = v not in allowed and str(v) not in {str(a) for a in allowed}
    if bad:
        st.bad += 1
        if len(st.examples) < 3:
            st.examples.append(repr(v))


def evaluate(
    rows: Iterable[Mapping[str, Any]],
    rules: Sequence[Rule],
    *,
    now: dt.datetime,
    data_time: dt.datetime | None = None,
    path: str = "",
) -> QualityReport:
    """Evaluate every check of every rule over ``rows`` in one pass.

    ``data_time`` (e.g. the file's mtime) is what freshness checks without a column use.
    """
    plan = [
        (r, i, c, _State(), re.compile(c.pattern) if c.pattern else None)
        for r in rules
        for i, c in enumerate(r.checks)
    ]
    n = 0
    for row in rows:
        n += 1
        for _r, _i, c, st, pat in plan:
            _feed(c, st, row, pat)
    outcomes = [_outcome(r, i, c, st, n, now, data_time) for r, i, c, st, _p in plan]
    return QualityReport(
        path=path, row_count=n, outcomes=tuple(outcomes), evaluated_at=now, data_time=data_time
    )


def _outcome(
    r: Rule,
    i: int,
    c: _governance.Check,
    st: _State,
    n: int,
    now: dt.datetime,
    data_time: dt.datetime | None,
) -> CheckOutcome:
    col = c.column
    ex = f" (e.g. {', '.join(st.examples)})" if st.examples else ""

    def out(
        ok: bool, msg: str, expected: str | None, actual: str | None, bad: int = 0
    ) -> CheckOutcome:
        return CheckOutcome(
            rule=r.name,
            index=i,
            type=c.type,
            column=col,
            success=ok,
            blocking=r.blocking,
            message=msg,
            expected=expected,
            actual=actual,
            unexpected_count=bad,
        )

    if c.type == "not_null":
        return out(
            st.nulls == 0,
            f"not_null on {col}: {st.nulls} of {n} rows are null",
            "0",
            str(st.nulls),
            st.nulls,
        )
    if c.type == "row_count":
        ok = (c.min is None or n >= c.min) and (c.max is None or n <= c.max)
        want = f"[{_fmt(c.min)}, {_fmt(c.max)}]"
        return out(ok, f"row_count: {n} rows, expected {want}", want, str(n), 0 if ok else 1)
    if c.type == "freshness":
        latest = st.latest if col is not None else data_time
        assert c.max_age_seconds is not None
        if latest is None:
            what = f"no timestamp in {col}" if col else "no data time known"
            return out(False, f"freshness: {what}", f"<= {c.max_age_seconds}s", None, 1)
        age = (now - latest).total_seconds()
        ok = age <= c.max_age_seconds
        on = f" on {col}" if col else ""
        return out(
            ok,
            f"freshness{on}: newest data is {age:.0f}s old, limit {c.max_age_seconds}s",
            f"<= {c.max_age_seconds}s",
            f"{age:.0f}s",
            0 if ok else 1,
        )
    what = {
        "unique": "duplicate values",
        "range": f"values outside [{_fmt(c.min)}, {_fmt(c.max)}]",
        "regex": f"values not matching {c.pattern!r}",
        "accepted_values": f"values not in {c.values!r}",
    }[c.type]
    return out(
        st.bad == 0,
        f"{c.type} on {col}: {st.bad} of {n} rows have {what}{ex}",
        "0",
        str(st.bad),
        st.bad,
    )


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    return str(int(x)) if x == int(x) else str(x)


def evaluate_file(
    path: str | os.PathLike[str], rules: Sequence[Rule], *, now: dt.datetime | None = None
) -> QualityReport:
    """Read a CSV or JSON Lines file and evaluate the rules (freshness falls back to mtime)."""
    p = Path(path)
    mtime = dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC)
    return evaluate(
        read_rows(p), rules, now=now or dt.datetime.now(dt.UTC), data_time=mtime, path=str(p)
    )


__all__ = [
    "CheckOutcome",
    "QualityFailed",
    "QualityReport",
    "Rule",
    "evaluate",
    "evaluate_file",
    "parse_rules",
    "read_rows",
]
