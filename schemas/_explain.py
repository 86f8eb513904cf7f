"""JSON Schema per kind and `runink explain`, both derived from the pydantic models.

``json_schema("pipeline")`` is what ``python -m runink.schemas.export`` writes to
schemas/jsonschema/<plural>.json (for editors and the API's discovery). ``explain`` walks that
schema along a dotted path and renders kubectl-explain-like text from the field docstrings.
"""

from __future__ import annotations

import functools
from typing import Any

from runink.schemas import errors, registry


@functools.cache
def _schema_for(info: registry.KindInfo) -> dict[str, Any]:
    return info.model.model_json_schema(by_alias=True, mode="validation")


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a kind, by any name `lookup` accepts (a fresh copy)."""
    import copy

    return copy.deepcopy(_schema_for(registry.lookup(kind)))


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Follow $ref and unwrap Optional (anyOf with null) to the schema that describes the value."""
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            # A field's own description wins over its type's.
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        any_of = node.get("anyOf")
        if any_of:
            non_null = [n for n in any_of if n.get("type") != "null"]
            objects = [n for n in non_null if "$ref" in n or n.get("type") in ("object", "array")]
            if len(non_null) == 1 or (objects and len(objects) == 1):
                chosen = non_null[0] if len(non_null) == 1 else objects[0]
                node = {**chosen, **{k: v for k, v in node.items() if k != "anyOf"}}
                continue
        return node


def _descend(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """From a list or map field to the schema of its elements (explain goes through them)."""
    node = _resolve(node, defs)
    while node.get("type") == "array" and isinstance(node.get("items"), dict):
        node = _resolve(node["items"], defs)
    return node


def _type_name(node: dict[str, Any], defs: dict[str, Any]) -> str:
    node = _resolve(node, defs)
    if "enum" in node:
        return "string"
    if "const" in node:
        return "string"
    if "anyOf" in node:
        return " | ".join(
            sorted({_type_name(n, defs) for n in node["anyOf"] if n.get("type") != "null"})
        )
    t = node.get("type")
    if t == "array":
        return f"[]{_type_name(node.get('items', {}), defs)}"
    if t == "object":
        if "properties" in node:
            return "Object"
        extra = node.get("additionalProperties")
        return (
            f"map[string]{_type_name(extra, defs)}" if isinstance(extra, dict) else "map[string]any"
        )
    if t is None:
        return "any"
    return str(t)


def _walk(
    info: registry.KindInfo, fields: list[str] | tuple[str | int, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    root = _schema_for(info)
    defs = root.get("$defs", {})
    node: dict[str, Any] = root
    walked: list[str] = [info.kind]
    for f in fields:
        if isinstance(f, int):
            continue
        node = _descend(node, defs)
        if (
            node.get("type") == "object"
            and "properties" not in node
            and isinstance(node.get("additionalProperties"), dict)
        ):
            node = _descend(node["additionalProperties"], defs)
        props = node.get("properties", {})
        if f not in props:
            known = ", ".join(sorted(props)) or "none"
            raise errors.Invalid(
                f"field {f!r} does not exist in {'.'.join(walked)} (fields: {known})"
            )
        node = props[f]
        walked.append(f)
    return node, defs


def properties_at(info: registry.KindInfo, path: tuple[str | int, ...]) -> list[str]:
    """Field names allowed at ``path`` of a kind ([] when the path is not an object)."""
    try:
        node, defs = _walk(info, path)
    except errors.Invalid:
        return []
    node = _descend(node, defs)
    return list(node.get("properties", {}))


def explain(path: str) -> str:
    """kubectl-explain-like text for ``kind[.field...]``, e.g. "pipeline.spec.steps"."""
    kind, *fields = path.strip().split(".")
    info = registry.lookup(kind)
    node, defs = _walk(info, fields)
    lines = [f"KIND:       {info.kind}", f"VERSION:    {info.api_version}", ""]
    target = _descend(node, defs)
    if fields:
        lines += [f"FIELD: {fields[-1]} <{_type_name(node, defs)}>", ""]
    lines += ["DESCRIPTION:"]
    desc = node.get("description") or target.get("description") or "(no description)"
    lines += [f"    {ln}" for ln in str(desc).splitlines()]
    props = target.get("properties", {})
    if props:
        required = set(target.get("required", []))
        lines += ["", "FIELDS:"]
        for name, sub in props.items():
            req = " -required-" if name in required else ""
            lines.append(f"  {name}\t<{_type_name(sub, defs)}>{req}")
            sub_desc = sub.get("description") or _resolve(sub, defs).get("description") or ""
            lines += [f"    {ln}" for ln in str(sub_desc).splitlines()]
            resolved = _resolve(sub, defs)
            if "enum" in resolved:
                lines.append(f"    One of: {', '.join(map(str, resolved['enum']))}.")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["explain", "json_schema", "properties_at"]
