"""``runink lineage`` and ``runink annotations``: rendering of the governance service's answers.

The command code (wired by the lead into the parser) calls the governance service (gRPC, or the
in-process `GovernanceService`) and hands the result dicts to these functions, which print to a
`_output.Streams`: the lineage graph as a rich tree (``-o tree``), as Marquez-shaped JSON
(``-o json``, what existing tools read) or as Graphviz DOT (``-o dot``); annotation pages as a
table or JSON/YAML.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from rich.markup import escape
from rich.tree import Tree

from runink.cli import _output
from runink.schemas import errors
from runink.store import _lineage

Json = dict[str, Any]
LineageFormat = Literal["tree", "json", "dot"]


def lineage_args(
    ref: str, *, upstream: bool = False, downstream: bool = False, depth: int = 20
) -> Json:
    """The service call's arguments from the command line: node id, direction, depth."""
    if upstream and downstream:
        raise errors.Invalid("--upstream and --downstream are exclusive (omit both for both)")
    if depth < 0:
        raise errors.Invalid("--depth must be 0 or more")
    if ref.split(":", 1)[0] not in ("dataset", "job", "datasetField"):
        raise errors.Invalid(
            f"{ref!r}: name a node as dataset:NAMESPACE/NAME, job:NAMESPACE/NAME or "
            "datasetField:NAMESPACE:NAME:FIELD"
        )
    direction = "upstream" if upstream else "downstream" if downstream else "both"
    return {"node_id": ref, "direction": direction, "depth": depth}


def _label(node: Json) -> str:
    data = node.get("data") or {}
    kind = node.get("type", "")
    where = escape(f"{data.get('namespace', '')}/{data.get('name', '')}")
    if kind == "JOB":
        run = data.get("latestRun") or {}
        state = escape(f" [{run['state']}]") if run.get("state") else ""
        return f"[bold]job[/bold] {where}{state}"
    if kind == "DATASET_FIELD":
        col = escape(f"{data.get('dataset', '')}.{data.get('field', '')}")
        return f"[bold]field[/bold] {col}"
    fields = data.get("fields") or []
    cols = f" ({len(fields)} fields)" if fields else ""
    return f"[bold]dataset[/bold] {where}{cols}"


def _root(graph: Json, ref: str) -> str:
    ids = [n["id"] for n in graph["graph"]]
    if ref in ids:
        return ref
    # The CLI form dataset:NS/NAME: match the node whose namespace/name it spells.
    for n in graph["graph"]:
        data = n.get("data") or {}
        if f"{n['type'].lower()}:{data.get('namespace')}/{data.get('name')}" == ref:
            return str(n["id"])
    return str(ids[0])


def lineage_tree(graph: Json, ref: str, direction: str) -> Tree:
    """A rich Tree from the root: downstream follows outEdges, upstream inEdges (both: two)."""
    nodes = {n["id"]: n for n in graph["graph"]}
    if not nodes:
        return Tree("(empty graph)")
    root_id = _root(graph, ref)
    tree = Tree(_label(nodes[root_id]))

    def grow(parent: Tree, nid: str, edges: str, end: str, path: set[str]) -> None:
        for e in sorted(nodes[nid].get(edges, []), key=lambda e: str(e[end])):
            child = str(e[end])
            if child not in nodes:
                continue
            if child in path:
                parent.add(_label(nodes[child]) + " [dim](cycle)[/dim]")
                continue
            grow(parent.add(_label(nodes[child])), child, edges, end, path | {child})

    if direction in ("downstream", "both"):
        down = tree if direction == "downstream" else tree.add("[italic]downstream[/italic]")
        grow(down, root_id, "outEdges", "destination", {root_id})
    if direction in ("upstream", "both"):
        up = tree if direction == "upstream" else tree.add("[italic]upstream[/italic]")
        grow(up, root_id, "inEdges", "origin", {root_id})
    return tree


def render_lineage(
    streams: _output.Streams,
    graph: Json,
    *,
    ref: str,
    direction: str = "both",
    output: str = "tree",
) -> None:
    """Print a lineage graph as ``tree``, ``json`` (Marquez LineageGraph) or ``dot``."""
    if output == "json":
        streams.write(json.dumps(graph, indent=2, sort_keys=True) + "\n")
    elif output == "dot":
        streams.write(_lineage.to_dot(graph))
    elif output == "tree":
        streams.out.print(lineage_tree(graph, ref, direction))
    else:
        raise errors.Invalid(f"unknown output format {output!r}: use tree, json or dot")


ANNOTATION_COLUMNS = ["NAME", "TYPE", "VALUE", "MODEL", "CONFIDENCE", "REVIEW", "DATASET", "RECORD"]


def annotation_row(obj: Json) -> list[str]:
    spec = obj.get("spec") or {}
    ref = spec.get("annotatedDataRef") or {}
    conf = spec.get("confidenceScore")
    value = spec.get("annotationValue")
    text = value if isinstance(value, str) else json.dumps(value)
    return [
        str((obj.get("metadata") or {}).get("name", "")),
        str(spec.get("annotationType", "")),
        text if len(text) <= 40 else text[:39] + "…",
        str(spec.get("sourceModel") or "-"),
        f"{conf:.2f}" if isinstance(conf, int | float) else "-",
        str((spec.get("provenance") or {}).get("reviewState", "suggested")),
        str(ref.get("dataset", "")),
        str(ref.get("recordKey") or "-"),
    ]


def render_annotations(streams: _output.Streams, page: Json, *, output: str = "table") -> None:
    """Print a page from the annotation query (``{"items", "nextCursor", "count"}``)."""
    items: list[Json] = list(page.get("items") or [])
    if output in ("json", "yaml"):
        streams.write(_output.render(items, output, single=False))
        return
    if output != "table":
        raise errors.Invalid(f"unknown output format {output!r}: use table, json or yaml")
    if not items:
        streams.err.print("No annotations found.")
        return
    _output.print_table(streams, ANNOTATION_COLUMNS, [annotation_row(o) for o in items])
    notes = []
    if page.get("count") is not None:
        notes.append(f"{len(items)} of {page['count']} shown")
    if page.get("nextCursor"):
        notes.append(f"more: --continue {page['nextCursor']}")
    if notes:
        streams.err.print("; ".join(notes))


__all__ = [
    "ANNOTATION_COLUMNS",
    "annotation_row",
    "lineage_args",
    "lineage_tree",
    "render_annotations",
    "render_lineage",
]
