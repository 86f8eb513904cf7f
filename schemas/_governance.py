"""Dataset, QualityRule and Annotation: the governance kinds (catalog, checks, data annotations).

Datasets are catalog entries that step inputs/outputs refer to; lineage is derived from them.
QualityRules are checks the governance controller runs against a Dataset; Annotations record a
label on a data element (by an LLM or a person) with enough provenance to audit or supersede it.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import pydantic

from runink.schemas import _base, _pipelines


class SchemaField(_base.Model):
    """One column or field of a dataset."""

    name: str
    """Column name."""
    type: str
    """Logical type, e.g. string, int64, float64, bool, timestamp, decimal(18,2)."""
    description: str | None = None
    """What the column means."""


class DatasetSpec(_base.Model):
    """A catalog entry."""

    uri: str
    """Where the data lives, e.g. file:///shared/finance/ledger.parquet."""
    schema_: list[SchemaField] = pydantic.Field(default=[], alias="schema")
    """Columns of the dataset."""
    description: str | None = None
    """What the dataset holds."""
    owners: list[str] = []
    """Users or groups accountable for the data."""
    tags: list[str] = []
    """Free tags, e.g. pii, gold."""
    glossary_terms: list[str] = []
    """Business glossary terms the dataset relates to."""


class ProducerRef(_base.Model):
    """The run and step that last wrote a dataset."""

    run: str
    """PipelineRun name."""
    step: str | None = None
    """Step name."""
    time: _base.Timestamp | None = None
    """When the write completed."""


class CheckResult(_base.Model):
    """Outcome of one quality check."""

    rule: str
    """QualityRule name."""
    check: _base.NonNegInt
    """Index of the check in the rule."""
    passed: bool
    """Whether the check passed."""
    message: str | None = None
    """Detail, e.g. '12 null values in amount'."""
    time: _base.Timestamp | None = None
    """When the check ran."""


class DatasetStatus(_base.Model):
    """Written by the governance controller."""

    last_producer: ProducerRef | None = None
    """The last run and step that wrote the dataset."""
    quality: list[CheckResult] = []
    """Latest quality check results."""
    conditions: list[_base.Condition] = []
    """e.g. QualityPassed."""
    observed_generation: _base.NonNegInt | None = None
    """The metadata.generation the controller last acted on."""


class Dataset(_base.Model):
    """A catalog entry for data produced or consumed by pipelines (herd-scoped)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Dataset"] = "Dataset"
    """Always Dataset."""
    metadata: _base.ObjectMeta
    """Name, herd, labels."""
    spec: DatasetSpec
    """The catalog entry."""
    status: DatasetStatus | None = None
    """Lineage and quality state."""


CheckType = Literal[
    "not_null", "unique", "row_count", "freshness", "range", "regex", "accepted_values"
]

# Which fields each check type needs; the validator names the missing one.
_NEEDS: dict[str, tuple[str, ...]] = {
    "not_null": ("column",),
    "unique": ("column",),
    "row_count": (),
    "freshness": ("max_age_seconds",),
    "range": ("column",),
    "regex": ("column", "pattern"),
    "accepted_values": ("column", "values"),
}


class Check(_base.Model):
    """One data quality check."""

    type: CheckType
    """not_null, unique, row_count, freshness, range, regex or accepted_values."""
    column: str | None = None
    """Column checked (all types except row_count and freshness)."""
    min: float | None = None
    """Lower bound (range: value; row_count: rows)."""
    max: float | None = None
    """Upper bound (range: value; row_count: rows)."""
    pattern: str | None = None
    """Regular expression every value must match (regex)."""
    values: list[Any] | None = None
    """Allowed values (accepted_values)."""
    max_age_seconds: _base.PosInt | None = None
    """Data older than this fails (freshness)."""

    @pydantic.model_validator(mode="after")
    def _fields_for_type(self) -> Check:
        problems: list[tuple[_pipelines.Loc, str]] = []
        for name in _NEEDS[self.type]:
            if getattr(self, name) is None:
                alias = Check.model_fields[name].alias or name
                problems.append(((alias,), f"required for a {self.type} check"))
        if self.type in ("range", "row_count") and self.min is None and self.max is None:
            problems.append(((), f"a {self.type} check needs min or max"))
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                problems.append((("pattern",), f"invalid regular expression: {e}"))
        if problems:
            raise _pipelines.PathErrors(problems)
        return self


class QualityRuleSpec(_base.Model):
    """Checks on one dataset."""

    dataset: _base.DnsLabel
    """Name of the Dataset checked (same Herd)."""
    checks: list[Check] = pydantic.Field(min_length=1)
    """The checks."""
    blocking: bool = False
    """If true, a failed check fails the step that wrote the dataset."""


class QualityRuleStatus(_base.Model):
    """Written by the governance controller."""

    last_results: list[CheckResult] = []
    """Results of the latest evaluation."""
    conditions: list[_base.Condition] = []
    """e.g. Passing."""


class QualityRule(_base.Model):
    """Data quality checks on a Dataset (herd-scoped)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["QualityRule"] = "QualityRule"
    """Always QualityRule."""
    metadata: _base.ObjectMeta
    """Name, herd, labels."""
    spec: QualityRuleSpec
    """The checks."""
    status: QualityRuleStatus | None = None
    """Latest results."""


class AnnotatedDataRef(_base.Model):
    """The data element annotated."""

    dataset: str
    """Dataset name."""
    version: str | None = None
    """Dataset version or snapshot id."""
    field: str | None = None
    """Column or field annotated."""
    record_key: str | None = None
    """Key of the record annotated."""
    run: str | None = None
    """PipelineRun that produced the data."""


class Provenance(_base.Model):
    """How the annotation was produced, for audit and reproducibility."""

    model_digest: str | None = None
    """Digest of the model weights or version id."""
    model_params: dict[str, Any] = {}
    """Generation parameters (temperature, max tokens...)."""
    prompt_hash: str | None = None
    """Hash of the rendered prompt."""
    input_hash: str | None = None
    """Hash of the input data shown to the model."""
    review_state: Literal["suggested", "confirmed", "rejected"] = "suggested"
    """Human review state."""
    supersedes: str | None = None
    """Name of the Annotation this one replaces."""
    producer: str | None = None
    """Who or what wrote it (slice name, user)."""


class AnnotationSpec(_base.Model):
    """A label on one data element."""

    annotation_type: str
    """What kind of annotation, e.g. sentiment, pii, category."""
    annotation_value: Any
    """The annotation itself (any JSON value)."""
    source_model: str | None = None
    """Model that produced it (absent for human annotations)."""
    confidence_score: float | None = pydantic.Field(default=None, ge=0, le=1)
    """Confidence between 0 and 1."""
    prompt_reference: str | None = None
    """Reference to the prompt template used."""
    timestamp: _base.Timestamp | None = None
    """When it was produced."""
    annotated_data_ref: AnnotatedDataRef
    """The data element annotated."""
    provenance: Provenance = Provenance()
    """How it was produced."""


class Annotation(_base.Model):
    """An annotation on a data element, by an LLM or a person, with provenance (herd-scoped)."""

    api_version: Literal["runink.io/v1"] = _base.API_VERSION
    """Always runink.io/v1."""
    kind: Literal["Annotation"] = "Annotation"
    """Always Annotation."""
    metadata: _base.ObjectMeta
    """Name, herd, labels."""
    spec: AnnotationSpec
    """The annotation."""


__all__ = [
    "AnnotatedDataRef",
    "Annotation",
    "AnnotationSpec",
    "Check",
    "CheckResult",
    "CheckType",
    "Dataset",
    "DatasetSpec",
    "DatasetStatus",
    "ProducerRef",
    "Provenance",
    "QualityRule",
    "QualityRuleSpec",
    "QualityRuleStatus",
    "SchemaField",
]
