"""The manifest codec: YAML text <-> plain JSON dicts, with line numbers for every field.

``runink apply -f``, the GitOps controller and tests parse manifests here. Parsing is two passes
over ruamel.yaml: an event scan that refuses anchors/aliases (alias bombs), custom tags, nesting
deeper than 64 and documents over 1 MiB before anything is built, then a round-trip load that keeps
each key's line. Every document is validated against its registry model and all problems come back
as ONE ``errors.Invalid`` whose FieldErrors name the file, document index, line and field path.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pydantic
from ruamel import yaml as ryaml
from ruamel.yaml import comments, constructor, error as yaml_error, reader

from runink.schemas import _pipelines, errors, registry

MAX_DOCUMENT_BYTES = 1024 * 1024
"""Largest accepted document (1 MiB)."""
MAX_DEPTH = 64
"""Deepest accepted nesting of mappings and sequences."""

Path = tuple[str | int, ...]


class _Constructor(constructor.RoundTripConstructor):
    """Keeps timestamps as the user's text: the models validate RFC 3339 strings."""


_Constructor.add_constructor(
    "tag:yaml.org,2002:timestamp", constructor.RoundTripConstructor.construct_yaml_str
)


def _yaml() -> ryaml.YAML:
    y = ryaml.YAML(typ="rt", pure=True)
    y.Constructor = _Constructor
    return y


def format_path(path: Path) -> str:
    """('spec', 'steps', 2, 'dependsOn') -> 'spec.steps[2].dependsOn'."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True, slots=True)
class Document:
    """One YAML document: its 0-based index in the file, plain JSON data, and line numbers."""

    index: int
    data: dict[str, Any]
    line: int
    lines: Mapping[Path, int] = field(default_factory=dict, repr=False)
    file: str = "<input>"

    def line_of(self, path: Path) -> int:
        """1-based line of the field at ``path``, or of its nearest ancestor present in the source."""
        for n in range(len(path), 0, -1):
            found = self.lines.get(tuple(path[:n]))
            if found is not None:
                return found
        return self.line


@dataclass(frozen=True, slots=True)
class Manifest:
    """A validated document: its kind and the normalized object (defaults filled in)."""

    document: Document
    info: registry.KindInfo
    obj: dict[str, Any]


class _Refused(Exception):
    def __init__(self, line: int, path: str, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.path = path
        self.message = message


def _scan(text: str, filename: str) -> None:
    """Refuse what must never reach the constructor; raises Invalid for the first offence found."""
    depth = 0
    doc = -1
    doc_start = 0
    try:
        for ev in _yaml().parse(text):
            line = ev.start_mark.line + 1
            if isinstance(ev, ryaml.events.DocumentStartEvent):
                doc += 1
                depth = 0
                doc_start = ev.start_mark.index
            elif isinstance(ev, ryaml.events.DocumentEndEvent):
                size = len(text[doc_start : ev.end_mark.index].encode())
                if size > MAX_DOCUMENT_BYTES:
                    raise _invalid(
                        filename,
                        doc,
                        doc_line(text, doc_start),
                        "",
                        f"document is {size} bytes, over the {MAX_DOCUMENT_BYTES} byte limit",
                    )
            elif isinstance(ev, ryaml.events.AliasEvent):
                raise _invalid(
                    filename,
                    doc,
                    line,
                    "",
                    f"YAML alias *{ev.anchor} is not allowed (anchors and aliases are refused)",
                )
            if isinstance(ev, ryaml.events.NodeEvent) and ev.anchor is not None:
                raise _invalid(
                    filename,
                    doc,
                    line,
                    "",
                    f"YAML anchor &{ev.anchor} is not allowed (anchors and aliases are refused)",
                )
            tag = getattr(ev, "tag", None)
            if tag is not None and not str(tag).startswith("tag:yaml.org,2002:"):
                raise _invalid(filename, doc, line, "", f"custom YAML tag {tag} is not allowed")
            if isinstance(ev, ryaml.events.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _invalid(
                        filename, doc, line, "", f"nesting deeper than {MAX_DEPTH} levels"
                    )
            elif isinstance(ev, ryaml.events.CollectionEndEvent):
                depth -= 1
    except yaml_error.MarkedYAMLError as e:
        raise _broken(filename, max(doc, 0), e) from None
    except reader.ReaderError as e:
        # Characters YAML forbids (NUL, most control characters): say which, and where.
        line = doc_line(text, e.position) if isinstance(e.position, int) else None
        raise _invalid(
            filename,
            max(doc, 0),
            line,
            "",
            f"invalid YAML: character {e.character!r} is not allowed ({e.reason})",
        ) from None


def doc_line(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _broken(filename: str, doc: int, e: yaml_error.MarkedYAMLError) -> errors.Invalid:
    mark = e.problem_mark or e.context_mark
    line = mark.line + 1 if mark is not None else None
    what = " ".join(p for p in (e.context, e.problem) if p)
    return _invalid(filename, doc, line, "", f"invalid YAML: {what}")


def _invalid(filename: str, doc: int, line: int | None, path: str, message: str) -> errors.Invalid:
    fe = errors.FieldError(path=path, message=message, file=filename, document=doc, line=line)
    return errors.Invalid(f"invalid manifest {filename}", errors=[fe])


def _plain(node: Any, path: Path, lines: dict[Path, int]) -> Any:
    """CommentedMap/Seq and ruamel scalar types -> plain JSON types, recording each key's line."""
    if isinstance(node, comments.CommentedMap):
        out: dict[str, Any] = {}
        for k, v in node.items():
            if not isinstance(k, str):
                raise _Refused(
                    node.lc.line + 1,
                    format_path(path),
                    f"mapping key {k!r} must be a string (quote it)",
                )
            line, _col = node.lc.key(k)
            lines[(*path, k)] = line + 1
            out[k] = _plain(v, (*path, k), lines)
        return out
    if isinstance(node, comments.CommentedSeq):
        seq: list[Any] = []
        for i, v in enumerate(node):
            line, _col = node.lc.item(i)
            lines[(*path, i)] = line + 1
            seq.append(_plain(v, (*path, i), lines))
        return seq
    if node is None or isinstance(node, bool):
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    raise _Refused(
        lines.get(path, 1),
        format_path(path),
        f"unsupported YAML value of type {type(node).__name__}",
    )


def load_documents(text: str | bytes, filename: str = "<input>") -> list[Document]:
    """Parse a multi-document YAML text into plain documents; empty documents are skipped.

    Raises ``errors.Invalid`` (with file, document index and line) for broken YAML, anchors and
    aliases, custom tags, nesting deeper than 64, documents over 1 MiB and non-mapping documents.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise _invalid(filename, 0, None, "", f"not UTF-8: {e}") from None
    _scan(text, filename)
    docs: list[Document] = []
    index = -1
    loader = _yaml().load_all(io.StringIO(text))
    while True:
        try:
            raw = next(loader)
        except StopIteration:
            break
        except yaml_error.MarkedYAMLError as e:
            # Duplicate keys and other constructor-level problems surface here.
            raise _broken(filename, index + 1, e) from None
        index += 1
        if raw is None:
            continue
        if not isinstance(raw, comments.CommentedMap):
            line = raw.lc.line + 1 if isinstance(raw, comments.CommentedSeq) else None
            raise _invalid(
                filename,
                index,
                line,
                "",
                f"a document must be a mapping (got {type(raw).__name__})",
            )
        lines: dict[Path, int] = {}
        try:
            data = _plain(raw, (), lines)
        except _Refused as r:
            raise _invalid(filename, index, r.line, r.path, r.message) from None
        docs.append(
            Document(index=index, data=data, line=raw.lc.line + 1, lines=lines, file=filename)
        )
    return docs


def _pydantic_problems(exc: pydantic.ValidationError, data: Any) -> list[tuple[Path, str]]:
    out: list[tuple[Path, str]] = []
    for err in exc.errors(include_url=False):
        loc = _data_path(tuple(err["loc"]), data)
        ctx = err.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, _pipelines.PathErrors):
            out += [((*loc, *rel), msg) for rel, msg in cause.problems]
            continue
        msg = err["msg"]
        if isinstance(cause, ValueError):
            msg = str(cause)
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + _suggest(loc, data)
        elif err["type"] == "missing":
            msg = "required field is missing"
        out.append((loc, msg))
    return out


def _suggest(loc: Path, data: Any) -> str:
    # Suggest a known sibling spelled alike, from the kind's JSON schema.
    if not loc or not isinstance(data, dict):
        return ""
    try:
        info = registry.get(str(data.get("apiVersion")), str(data.get("kind")))
    except errors.Invalid:
        return ""
    from runink.schemas import _explain

    props = _explain.properties_at(info, loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), props, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _data_path(loc: Path, data: Any) -> Path:
    """Drop pydantic's union-member tags from ``loc``, keeping the steps that exist in the data."""
    out: list[str | int] = []
    cur = data
    for i, part in enumerate(loc):
        in_map = isinstance(cur, dict) and part in cur
        in_list = isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        if in_map or in_list:
            cur = cur[part]
            out.append(part)
        elif i == len(loc) - 1:
            out.append(part)
    return tuple(out)


def _check_scope(info: registry.KindInfo, data: dict[str, Any]) -> list[tuple[Path, str]]:
    meta = data.get("metadata")
    if not info.namespaced and isinstance(meta, dict) and meta.get("herd") is not None:
        return [(("metadata", "herd"), f"{info.kind} is cluster-scoped and has no herd")]
    return []


def _validate_one(
    data: dict[str, Any],
) -> tuple[registry.KindInfo | None, dict[str, Any] | None, list[tuple[Path, str]]]:
    api_version, kind = data.get("apiVersion"), data.get("kind")
    if not isinstance(kind, str) or not kind:
        return None, None, [(("kind",), "required field is missing")]
    if not isinstance(api_version, str) or not api_version:
        return None, None, [(("apiVersion",), "required field is missing")]
    try:
        info = registry.get(api_version, kind)
    except errors.Invalid as e:
        return None, None, [((fe.path,), fe.message) for fe in e.errors]
    problems = _check_scope(info, data)
    try:
        model = info.model.model_validate(data)
    except pydantic.ValidationError as e:
        return info, None, problems + _pydantic_problems(e, data)
    if problems:
        return info, None, problems
    return info, model.model_dump(mode="json", by_alias=True, exclude_none=True), []


def parse_manifests(text: str | bytes, filename: str = "<input>") -> list[Manifest]:
    """Load and validate every document; one ``errors.Invalid`` lists every problem in the file."""
    docs = load_documents(text, filename)
    found: list[errors.FieldError] = []
    out: list[Manifest] = []
    for doc in docs:
        info, obj, problems = _validate_one(doc.data)
        for path, msg in problems:
            found.append(
                errors.FieldError(
                    path=format_path(path),
                    message=msg,
                    file=filename,
                    document=doc.index,
                    line=doc.line_of(path),
                )
            )
        if info is not None and obj is not None:
            out.append(Manifest(document=doc, info=info, obj=obj))
    if found:
        raise errors.Invalid(f"invalid manifest {filename}", errors=found)
    return out


def validate(obj: dict[str, Any]) -> dict[str, Any]:
    """Validate an object (e.g. from the API) with its registry model; return it normalized."""
    _info, normalized, problems = _validate_one(obj)
    if problems or normalized is None:
        what = f"{obj.get('kind', 'object')} {(obj.get('metadata') or {}).get('name', '')}".strip()
        raise errors.Invalid(
            f"invalid {what}",
            errors=[errors.FieldError(path=format_path(p), message=m) for p, m in problems],
        )
    return normalized


def dump_yaml(obj: dict[str, Any] | list[dict[str, Any]]) -> str:
    """Plain JSON object(s) -> YAML; a list becomes a multi-document stream."""
    y = ryaml.YAML(typ="safe", pure=True)
    y.default_flow_style = False
    # Keep the models' field order (apiVersion, kind, metadata, spec, status) rather than sorting.
    y.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    buf = io.StringIO()
    if isinstance(obj, list):
        y.explicit_start = True
        y.dump_all(obj, buf)
    else:
        y.dump(obj, buf)
    return buf.getvalue()


__all__ = [
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "Document",
    "Manifest",
    "dump_yaml",
    "format_path",
    "load_documents",
    "parse_manifests",
    "validate",
]
