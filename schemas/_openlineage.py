"""OpenLineage RunEvent (spec 2-0-2) as pydantic models: the wire format of Runink lineage.

The run controller and external producers (Airflow, Spark, dbt...) send RunEvents; the lineage
store (runink.store._lineage) ingests what `parse_run_event` returns. The core fields are checked
(eventType, eventTime, producer, run.runId as a UUID, job/dataset namespace and name)
and so are the standard facets we read (schema, columnLineage, dataQualityAssertions,
errorMessage, parent); facets are open maps, so producers' custom facets pass through untouched.
Pure: no I/O, no asyncio.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any, Literal

import pydantic

from runink.schemas import errors

EventType = Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]
TERMINAL_EVENT_TYPES: frozenset[str] = frozenset({"COMPLETE", "ABORT", "FAIL"})
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


class _OL(pydantic.BaseModel):
    """Base of the OpenLineage models: spec (camelCase) names, unknown fields kept, frozen."""

    model_config = pydantic.ConfigDict(
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="allow",
        frozen=True,
    )


class BaseFacet(_OL):
    """Every facet: who produced it and against which schema (kept optional: producers differ)."""

    producer: str | None = pydantic.Field(default=None, alias="_producer")
    schema_url: str | None = pydantic.Field(default=None, alias="_schemaURL")
    deleted: bool | None = pydantic.Field(default=None, alias="_deleted")


class SchemaDatasetField(_OL):
    name: str
    type: str | None = None
    description: str | None = None
    ordinal_position: int | None = None
    fields: list[SchemaDatasetField] = []


class SchemaDatasetFacet(BaseFacet):
    fields: list[SchemaDatasetField] = []


class Transformation(_OL):
    type: str
    subtype: str | None = None
    description: str | None = None
    masking: bool | None = None


class InputField(_OL):
    namespace: str
    name: str
    field: str
    transformations: list[Transformation] = []


class ColumnLineageField(_OL):
    input_fields: list[InputField] = pydantic.Field(alias="inputFields")
    transformation_description: str | None = pydantic.Field(
        default=None, alias="transformationDescription"
    )
    transformation_type: str | None = pydantic.Field(default=None, alias="transformationType")


class ColumnLineageDatasetFacet(BaseFacet):
    fields: dict[str, ColumnLineageField]
    dataset: list[InputField] = []


class Assertion(_OL):
    assertion: str
    success: bool
    column: str | None = None
    severity: str | None = None
    name: str | None = None
    description: str | None = None
    expected: str | None = None
    actual: str | None = None


class DataQualityAssertionsDatasetFacet(BaseFacet):
    assertions: list[Assertion]


class ErrorMessageRunFacet(BaseFacet):
    message: str
    programming_language: str = pydantic.Field(alias="programmingLanguage")
    stack_trace: str | None = pydantic.Field(default=None, alias="stackTrace")


class RunRef(_OL):
    run_id: str = pydantic.Field(alias="runId")


class JobRef(_OL):
    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)


class ParentRunFacet(BaseFacet):
    run: RunRef
    job: JobRef
    root: dict[str, Any] | None = None


class RunFacets(_OL):
    """Run facets: the standard ones we read are typed, any other key is accepted as is."""

    parent: ParentRunFacet | None = None
    error_message: ErrorMessageRunFacet | None = pydantic.Field(default=None, alias="errorMessage")


class DatasetFacets(_OL):
    schema_: SchemaDatasetFacet | None = pydantic.Field(default=None, alias="schema")
    column_lineage: ColumnLineageDatasetFacet | None = pydantic.Field(
        default=None, alias="columnLineage"
    )
    data_quality_assertions: DataQualityAssertionsDatasetFacet | None = pydantic.Field(
        default=None, alias="dataQualityAssertions"
    )


class InputDatasetFacets(_OL):
    data_quality_assertions: DataQualityAssertionsDatasetFacet | None = pydantic.Field(
        default=None, alias="dataQualityAssertions"
    )


class Run(_OL):
    run_id: str = pydantic.Field(alias="runId")
    facets: RunFacets = RunFacets()

    @pydantic.field_validator("run_id")
    @classmethod
    def _uuid(cls, v: str) -> str:
        try:
            uuid.UUID(v)
        except ValueError as e:
            raise ValueError(f"{v!r} is not a UUID (the spec requires runId to be one)") from e
        return v.lower()


class Job(_OL):
    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)
    facets: dict[str, Any] = {}


class InputDataset(_OL):
    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)
    facets: DatasetFacets = DatasetFacets()
    input_facets: InputDatasetFacets = pydantic.Field(
        default=InputDatasetFacets(), alias="inputFacets"
    )


class OutputDataset(_OL):
    namespace: str = pydantic.Field(min_length=1)
    name: str = pydantic.Field(min_length=1)
    facets: DatasetFacets = DatasetFacets()
    output_facets: dict[str, Any] = pydantic.Field(default={}, alias="outputFacets")


class RunEvent(_OL):
    """One OpenLineage RunEvent; ``raw`` (set by `parse_run_event`) is the JSON as received."""

    event_type: EventType = pydantic.Field(default="OTHER", alias="eventType")
    event_time: dt.datetime = pydantic.Field(alias="eventTime")
    producer: str = pydantic.Field(min_length=1)
    # Required by 2-0-2, but the spec's own example events (and 1.x producers) omit it.
    schema_url: str = pydantic.Field(default=SCHEMA_URL, alias="schemaURL", min_length=1)
    run: Run
    job: Job
    inputs: list[InputDataset] = []
    outputs: list[OutputDataset] = []

    @pydantic.field_validator("event_time")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        # A naive time cannot be ordered against aware ones; producers mean UTC when they omit it.
        return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)

    @property
    def terminal(self) -> bool:
        return self.event_type in TERMINAL_EVENT_TYPES


def _loc_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


_RUN_EVENT_ADAPTER = pydantic.TypeAdapter(RunEvent)


def parse_run_event(json_obj: dict[str, Any] | str | bytes) -> RunEvent:
    """Validate one RunEvent (a JSON object, or its text); raise errors.Invalid naming bad fields.

    Each FieldError's ``path`` is the field's dotted path in the event as sent, e.g.
    ``run.runId`` or ``outputs[0].facets.columnLineage.fields.total.inputFields``.
    """
    if isinstance(json_obj, str | bytes):
        try:
            json_obj = json.loads(json_obj)
        except ValueError as e:
            raise errors.Invalid(
                "invalid OpenLineage event",
                errors=[errors.FieldError(path="", message=f"not JSON: {e}")],
            ) from e
    if not isinstance(json_obj, dict):
        raise errors.Invalid(
            "invalid OpenLineage event",
            errors=[errors.FieldError(path="", message="expected a JSON object")],
        )
    try:
        return _RUN_EVENT_ADAPTER.validate_python(json_obj)
    except pydantic.ValidationError as e:
        problems = [
            errors.FieldError(path=_loc_path(tuple(err["loc"])), message=err["msg"])
            for err in e.errors(include_url=False)
        ]
        raise errors.Invalid("invalid OpenLineage event", errors=problems) from None


__all__ = [
    "SCHEMA_URL",
    "TERMINAL_EVENT_TYPES",
    "Assertion",
    "ColumnLineageDatasetFacet",
    "DataQualityAssertionsDatasetFacet",
    "DatasetFacets",
    "ErrorMessageRunFacet",
    "EventType",
    "InputDataset",
    "InputField",
    "Job",
    "OutputDataset",
    "ParentRunFacet",
    "Run",
    "RunEvent",
    "RunFacets",
    "SchemaDatasetFacet",
    "parse_run_event",
]
