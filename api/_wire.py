"""What crosses the wire between the API server and its clients: method names, JSON codec, errors.

The resource service carries every object as JSON (see ``api/resources.proto`` for the documented
message shapes): gRPC generic handlers with JSON-bytes (de)serializers, so a new kind needs no new RPC
and no code generation. A ``RuninkError`` travels as a gRPC status code (chosen from its ``reason``)
plus the trailing metadata key ``runink-error-bin`` holding ``{reason, message, details, errors}``
as JSON, which the client turns back into the same exception class with the same field errors.
"""

from __future__ import annotations

import json
from typing import Any

import grpc

from runink.schemas import errors

SERVICE = "runink.v1.Resources"
LOGS_SERVICE = "runink.v1.Logs"
AUTH_SERVICE = "runink.v1.Auth"
BOOTSTRAP_SERVICE = "runink.v1.Bootstrap"
ERROR_KEY = "runink-error-bin"

Message = dict[str, Any]


def encode(msg: Message) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def decode(data: bytes) -> Message:
    if not data:
        return {}
    value = json.loads(data)
    if not isinstance(value, dict):
        raise errors.Invalid("request body must be a JSON object")
    return value


def method(service: str, name: str) -> str:
    return f"/{service}/{name}"


_CODES: dict[str, grpc.StatusCode] = {
    "NotFound": grpc.StatusCode.NOT_FOUND,
    "AlreadyExists": grpc.StatusCode.ALREADY_EXISTS,
    "Conflict": grpc.StatusCode.ABORTED,
    "Invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "Forbidden": grpc.StatusCode.PERMISSION_DENIED,
    "Unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "Gone": grpc.StatusCode.OUT_OF_RANGE,
    "QuotaExceeded": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "OutcomeUnknown": grpc.StatusCode.DEADLINE_EXCEEDED,
    "Unavailable": grpc.StatusCode.UNAVAILABLE,
    "Internal": grpc.StatusCode.INTERNAL,
}
# For errors raised by gRPC itself (no runink-error-bin metadata): the closest reason.
_REASONS: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.ABORTED: "Conflict",
    grpc.StatusCode.INVALID_ARGUMENT: "Invalid",
    grpc.StatusCode.PERMISSION_DENIED: "Forbidden",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
    grpc.StatusCode.OUT_OF_RANGE: "Gone",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "QuotaExceeded",
    grpc.StatusCode.DEADLINE_EXCEEDED: "OutcomeUnknown",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
}


def status_code(err: errors.RuninkError) -> grpc.StatusCode:
    return _CODES.get(err.reason, grpc.StatusCode.INTERNAL)


def error_payload(err: errors.RuninkError) -> bytes:
    body: Message = {"reason": err.reason, "message": err.message, "details": err.details}
    if isinstance(err, errors.Invalid):
        body["errors"] = [e.to_dict() for e in err.errors]
        # Invalid.message already has the field errors appended; send the bare headline.
        body["message"] = err.message.split("\n", 1)[0]
    return json.dumps(body, default=str).encode()


def error_from_payload(payload: bytes) -> errors.RuninkError:
    body = json.loads(payload)
    cls = errors.error_for_reason(str(body.get("reason", "Internal")))
    message = str(body.get("message", ""))
    details = body.get("details") or {}
    if issubclass(cls, errors.Invalid):
        field_errors = [errors.FieldError.from_dict(e) for e in body.get("errors") or []]
        return cls(message, errors=field_errors, details=details)
    return cls(message, details=details)


def error_from_rpc(exc: grpc.aio.AioRpcError) -> errors.RuninkError:
    """The ``RuninkError`` a failed call stands for (connection failures become ``Unavailable``)."""
    metadata: Any = exc.trailing_metadata() or ()  # grpc-stubs types the pairs opaquely
    for key, value in metadata:
        if key == ERROR_KEY and isinstance(value, bytes):
            return error_from_payload(value)
    code = exc.code()
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in str(exc.details()):
        return errors.Invalid(
            f"request too large for the server ({exc.details()}); split it into smaller requests"
        )
    reason = _REASONS.get(code, "Internal")
    cls = errors.error_for_reason(reason)
    return cls(f"{code.name.lower()}: {exc.details()}")


__all__ = [
    "AUTH_SERVICE",
    "BOOTSTRAP_SERVICE",
    "ERROR_KEY",
    "LOGS_SERVICE",
    "SERVICE",
    "decode",
    "encode",
    "error_from_payload",
    "error_from_rpc",
    "error_payload",
    "method",
    "status_code",
]
