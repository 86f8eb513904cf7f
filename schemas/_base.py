"""The base of every Runink kind: model config, ObjectMeta, Condition and shared field types.

Every kind is ``apiVersion / kind / metadata / spec / status`` (DESIGN.md "Object model"). Models use
camelCase aliases on the wire and snake_case in Python, forbid unknown fields, and are frozen: they
are values passed between layers. Field docstrings become JSON Schema descriptions, which is what
``runink explain`` prints, so every field has one.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from typing import Annotated, Final, Literal

import pydantic
from pydantic import alias_generators

from runink.schemas import quantity, selectors

API_VERSION: Final = "runink.io/v1"
"""The one apiVersion of every built-in kind."""

_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PARAM_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_SECRET_KEY_RE = re.compile(r"^[-._A-Za-z0-9]+$")


class Model(pydantic.BaseModel):
    """Base of every schema model: camelCase on the wire, unknown fields refused, frozen."""

    model_config = pydantic.ConfigDict(
        alias_generator=alias_generators.to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        use_attribute_docstrings=True,
        frozen=True,
    )


def _dns_label(v: str) -> str:
    if len(v) > 63:
        raise ValueError(f"{v!r} is longer than 63 characters")
    if not _DNS_LABEL_RE.match(v):
        raise ValueError(
            f"{v!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return v


def _timestamp(v: str) -> str:
    try:
        parsed = dt.datetime.fromisoformat(v)
    except ValueError as e:
        raise ValueError(f"{v!r} is not an RFC 3339 timestamp (e.g. 2024-05-01T12:00:00Z)") from e
    if parsed.tzinfo is None:
        raise ValueError(f"{v!r} has no time zone: add 'Z' or an offset such as +02:00")
    return v


def _labels(v: dict[str, str]) -> dict[str, str]:
    for key, value in v.items():
        if not selectors.valid_label_key(key):
            raise ValueError(f"invalid label key {key!r}")
        if not selectors.valid_label_value(value):
            raise ValueError(f"invalid label value {value!r} for key {key!r}")
    return v


def _env_names(v: dict[str, str]) -> dict[str, str]:
    for key in v:
        if not _ENV_NAME_RE.match(key):
            raise ValueError(f"invalid environment variable name {key!r}")
    return v


def _cpu(v: str | int | float) -> str | int | float:
    quantity.parse_cpu(v)
    return v


def _memory(v: str | int) -> str | int:
    quantity.parse_memory(v)
    return v


def _base64(v: str) -> str:
    try:
        base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("is not valid base64 (use stringData for clear text)") from e
    return v


def _param_name(v: str) -> str:
    if not _PARAM_NAME_RE.match(v):
        raise ValueError(f"{v!r} is not a valid name: use letters, digits, '_', '.', '-'")
    return v


def _secret_key(v: str) -> str:
    if not _SECRET_KEY_RE.match(v):
        raise ValueError(f"{v!r} is not a valid key: use letters, digits, '-', '_', '.'")
    return v


DnsLabel = Annotated[str, pydantic.AfterValidator(_dns_label)]
Timestamp = Annotated[
    str,
    pydantic.AfterValidator(_timestamp),
    pydantic.WithJsonSchema({"type": "string", "format": "date-time"}),
]
Labels = Annotated[dict[str, str], pydantic.AfterValidator(_labels)]
EnvMap = Annotated[dict[str, str], pydantic.AfterValidator(_env_names)]
CpuQuantity = Annotated[
    str | int | float,
    pydantic.AfterValidator(_cpu),
    pydantic.WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "number"}], "examples": ["500m", "2"]}
    ),
]
MemoryQuantity = Annotated[
    str | int,
    pydantic.AfterValidator(_memory),
    pydantic.WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "integer"}], "examples": ["512Mi", "1Gi"]}
    ),
]
Base64 = Annotated[str, pydantic.AfterValidator(_base64)]
ParamName = Annotated[str, pydantic.AfterValidator(_param_name)]
SecretKey = Annotated[str, pydantic.AfterValidator(_secret_key)]
NonNegInt = Annotated[int, pydantic.Field(ge=0)]
PosInt = Annotated[int, pydantic.Field(gt=0)]
ConditionStatus = Literal["True", "False", "Unknown"]


class OwnerReference(Model):
    """An object this one belongs to; deleting the owner garbage-collects its dependents."""

    api_version: str = API_VERSION
    """apiVersion of the owner."""
    kind: str
    """Kind of the owner, e.g. PipelineRun."""
    name: str
    """Name of the owner (same Herd as this object: owners never cross Herds)."""
    uid: str
    """uid of the owner, so a re-created owner with the same name is not mistaken for it."""
    controller: bool = False
    """True for the one owner that manages this object (its controller)."""
    block_owner_deletion: bool = False
    """With foreground deletion, the owner is kept until this dependent is gone."""


class ManagedFieldsEntry(Model):
    """Which manager last set which fields (server-side apply bookkeeping)."""

    manager: str
    """Name of the field manager, e.g. 'runink-cli' or 'gitops'."""
    operation: Literal["Apply", "Update"]
    """Apply for server-side apply, Update for plain writes."""
    time: Timestamp | None = None
    """When this manager last wrote (RFC 3339)."""
    fields: list[str] = []
    """Dotted field paths owned by this manager, e.g. 'spec.steps[extract].resources.cpu'."""


class ObjectMeta(Model):
    """Identity and bookkeeping common to every object. Server-set fields are ignored on create."""

    name: DnsLabel
    """Unique name within the Herd (or cluster for cluster-scoped kinds): a DNS-1123 label, at most 63 characters."""
    herd: DnsLabel | None = None
    """The Herd (namespace) of the object; absent for cluster-scoped kinds. `runink -n` fills it in when omitted."""
    labels: Labels = {}
    """Identifying key/value pairs, selectable with `-l` label selectors."""
    annotations: dict[str, str] = {}
    """Non-identifying metadata for tools and people; not selectable."""
    uid: str | None = None
    """Set by the server: unique in time, a deleted and re-created object gets a new uid."""
    resource_version: str | None = None
    """Set by the server: the Barn revision of the last write (decimal string). Send it back to update; a stale one is a Conflict."""
    generation: NonNegInt | None = None
    """Set by the server: increases each time spec changes (never for status or metadata changes)."""
    creation_timestamp: Timestamp | None = None
    """Set by the server: when the object was created (RFC 3339)."""
    deletion_timestamp: Timestamp | None = None
    """Set by the server when deletion was requested; the object goes once its finalizers are empty."""
    finalizers: list[str] = []
    """Controllers that must clean up before the object is removed; each removes its own entry."""
    owner_references: list[OwnerReference] = []
    """Objects this one belongs to, for garbage collection."""
    managed_fields: list[ManagedFieldsEntry] = []
    """Set by the server: field ownership per manager (server-side apply)."""


class Condition(Model):
    """One observation about an object's state, as in Kubernetes (consumed by `runink wait --for=condition=`)."""

    type: str
    """Condition type in CamelCase, e.g. Ready, Succeeded, Scheduled."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str | None = None
    """One CamelCase word saying why, for machines, e.g. Unschedulable."""
    message: str | None = None
    """A human-readable explanation."""
    last_transition_time: Timestamp | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: NonNegInt | None = None
    """The metadata.generation this condition was computed from."""


__all__ = [
    "API_VERSION",
    "Base64",
    "Condition",
    "ConditionStatus",
    "CpuQuantity",
    "DnsLabel",
    "EnvMap",
    "Labels",
    "ManagedFieldsEntry",
    "MemoryQuantity",
    "Model",
    "NonNegInt",
    "ObjectMeta",
    "OwnerReference",
    "ParamName",
    "PosInt",
    "SecretKey",
    "Timestamp",
]
