"""The built-in quality step: ``python: runink.sdk.quality:check``.

A Pipeline step calls it with params ``rules`` (a QualityRule object or spec, or a list of checks,
as JSON) and optionally ``input`` (which of the step's input datasets; default: the only one),
``path`` (a file instead of a dataset), ``blocking`` (true/false, overrides the rules') and
``namespace`` (the OpenLineage dataset namespace; default ``runink://<herd>``). The step's results
are ``quality`` (CheckResults, row count) and ``lineage`` (the input with its
``dataQualityAssertions`` facet, for the run controller's OpenLineage event). A failing blocking
check fails the step with a message naming the rule, the check, the column and the counts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from runink.schemas import errors
from runink.sdk import _context
from runink.sdk._quality import (
    CheckOutcome,
    QualityFailed,
    QualityReport,
    Rule,
    evaluate,
    evaluate_file,
    parse_rules,
    read_rows,
)


def _bool(v: Any) -> bool | None:
    if v is None or isinstance(v, bool):
        return v
    return str(v).strip().lower() in ("1", "true", "yes", "on")


def check(ctx: _context.Context, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """Evaluate the step's quality rules on its input; raise QualityFailed on a blocking failure."""
    params = dict(ctx.params)
    if "rules" not in params:
        raise errors.Invalid("the quality step needs a 'rules' param (QualityRule spec as JSON)")
    dataset = params.get("input")
    path = params.get("path")
    if path is None:
        if dataset is None:
            if len(ctx.inputs) != 1:
                raise errors.Invalid(
                    f"the step has {len(ctx.inputs)} inputs: say which with the 'input' param"
                )
            dataset = next(iter(ctx.inputs))
        if dataset not in ctx.inputs:
            raise errors.Invalid(f"no input dataset {dataset!r} (inputs: {sorted(ctx.inputs)})")
        path = ctx.inputs[dataset]
    rules = parse_rules(params["rules"], default_name=str(dataset or "quality"))
    override = _bool(params.get("blocking"))
    if override is not None:
        rules = [Rule(name=r.name, checks=r.checks, blocking=override) for r in rules]
    report = evaluate_file(str(path), rules, now=now)
    namespace = params.get("namespace") or f"runink://{ctx.herd or 'default'}"
    summary = report.to_dict()
    ctx.set_result("quality", {k: v for k, v in summary.items() if k != "dataQualityAssertions"})
    lineage = {
        "inputs": [
            {
                "namespace": namespace,
                "name": str(dataset or path),
                "inputFacets": {"dataQualityAssertions": report.facet()},
            }
        ]
    }
    ctx.set_result("lineage", lineage)
    for o in report.outcomes:
        ctx.logger.info(
            "%s[%d] %s: %s", o.rule, o.index, "ok" if o.success else "FAILED", o.message
        )
    if report.blocking_failures:
        raise QualityFailed(report)
    return {"passed": report.passed, "rowCount": report.row_count}


__all__ = [
    "CheckOutcome",
    "QualityFailed",
    "QualityReport",
    "Rule",
    "check",
    "evaluate",
    "evaluate_file",
    "parse_rules",
    "read_rows",
]
