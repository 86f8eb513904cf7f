"""``runink lineage``, ``runink annotations`` and ``runink datasets search``.

The commands (``add_parsers``, wired into cli/_app.py) call the governance service over gRPC
(``api.Client``) and hand the result dicts to the renderers here, which print to a
`_output.Streams`: the lineage graph as a rich tree (``-o tree``), as Marquez-shaped JSON
(``-o json``, what existing tools read) or as Graphviz DOT (``-o dot``); annotation pages as a
table or JSON/YAML. ``datasets search`` lists Dataset objects (the catalog, in the Barn) and
filters them by name, tag, owner and field, which a label selector cannot express.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, Literal

from rich.markup import escape
from rich.tree import Tree

from runink.api import _governance
from runink.cli import _output
from runink.schemas import errors
from runink.store import _lineage

if TYPE_CHECKING:
    from runink.cli import _app

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


# -- commands -----------------------------------------------------------------------------------


async def cmd_lineage(ctx: _app.Ctx) -> int:
    a = ctx.args
    call = lineage_args(a.ref, upstream=a.upstream, downstream=a.downstream, depth=a.depth)
    graph = await ctx.client().lineage(
        call["node_id"], direction=call["direction"], depth=call["depth"]
    )
    render_lineage(ctx.streams, graph, ref=a.ref, direction=call["direction"], output=a.output)
    return 0


def _conf(v: str | None, flag: str) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except ValueError:
        raise errors.Invalid(f"{flag} {v!r} is not a number between 0 and 1") from None
    if not 0 <= f <= 1:
        raise errors.Invalid(f"{flag} {v!r} is not between 0 and 1")
    return f


async def cmd_annotations(ctx: _app.Ctx) -> int:
    a = ctx.args
    client = ctx.client()
    if a.action == "list":
        ref = {"dataset": a.dataset} if a.dataset else None
        if a.record_key:
            if not a.dataset:
                raise errors.Invalid("--record-key needs --dataset")
            ref = {**(ref or {}), "record_key": a.record_key}
        page = await client.query_annotations(
            type=a.type,
            model=a.model,
            data_ref=ref,
            min_confidence=_conf(a.min_confidence, "--min-confidence"),
            max_confidence=_conf(a.max_confidence, "--max-confidence"),
            since=a.since,
            until=a.until,
            review_state=a.review_state,
            limit=a.limit,
            continue_token=a.continue_token,
            count=True,
            herd=None if a.all_herds else ctx.herd,
        )
        render_annotations(ctx.streams, page, output=a.output)
        return 0
    if not a.ids:
        raise errors.Invalid(f"annotations {a.action} needs at least one annotation id")
    objs = []
    for aid in a.ids:
        if a.action == "get":
            objs.append(await client.get_annotation(aid))
        else:
            state = "confirmed" if a.action == "confirm" else "rejected"
            objs.append(await client.review_annotation(aid, state))
    if a.action != "get" and a.output == "table":
        for o in objs:
            ctx.streams.write(f"annotation/{o['metadata']['name']} {a.action}ed\n")
        return 0
    render_annotations(ctx.streams, {"items": objs}, output=a.output)
    return 0


DATASET_COLUMNS = ["NAME", "URI", "FIELDS", "OWNERS", "TAGS"]


async def cmd_datasets(ctx: _app.Ctx) -> int:
    a = ctx.args
    herd = None if a.all_herds else ctx.herd
    items: list[Json] = []
    token: str | None = None
    while True:
        page = await ctx.client().list("Dataset", herd, limit=500, continue_token=token)
        items.extend(page.items)
        token = page.continue_token
        if not token:
            break
    found = _governance.search_datasets(items, name=a.name, tag=a.tag, owner=a.owner, field=a.field)
    if a.output in ("json", "yaml", "name"):
        ctx.streams.write(_output.render(found, a.output, single=False))
        return 0
    if not found:
        ctx.streams.err.print("No datasets found.")
        return 0
    rows = []
    for o in found:
        spec = o.get("spec") or {}
        fields = ", ".join(
            f"{f.get('name')}:{f.get('type')}" for f in (spec.get("schema") or [])[:6]
        )
        more = len(spec.get("schema") or []) - 6
        rows.append(
            [
                str(o["metadata"]["name"]),
                str(spec.get("uri", "")),
                fields + (f" (+{more})" if more > 0 else ""),
                ",".join(spec.get("owners") or []) or "-",
                ",".join(spec.get("tags") or []) or "-",
            ]
        )
    _output.print_table(ctx.streams, DATASET_COLUMNS, rows)
    return 0


def add_parsers(sub: Any) -> None:
    """``lineage``, ``annotations`` and ``datasets`` (``sub`` is the CLI's subparsers)."""
    lp = sub.add_parser(
        "lineage",
        help="upstream/downstream lineage of a dataset, job or column",
        description="REF is dataset:NAMESPACE/NAME, job:NAMESPACE/NAME (also the Marquez ids "
        "dataset:NS:NAME, job:NS:NAME) or datasetField:NAMESPACE:NAME:FIELD.",
    )
    lp.add_argument("ref", help="dataset:NAMESPACE/NAME, job:NAMESPACE/NAME or datasetField:...")
    direction = lp.add_mutually_exclusive_group()
    direction.add_argument("--upstream", action="store_true", help="only what it comes from")
    direction.add_argument("--downstream", action="store_true", help="only what it feeds")
    lp.add_argument("--depth", type=int, default=20, help="edges to walk (default 20)")
    lp.add_argument("-o", "--output", choices=["tree", "json", "dot"], default="tree")
    lp.set_defaults(func=cmd_lineage)

    ap = sub.add_parser("annotations", help="list, show, confirm or reject data annotations")
    ap.add_argument("action", choices=["list", "get", "confirm", "reject"])
    ap.add_argument("ids", nargs="*", help="annotation ids (get, confirm, reject)")
    ap.add_argument("--type", help="annotation type, e.g. sentiment")
    ap.add_argument("--model", help="source model")
    ap.add_argument("--dataset", help="annotated dataset")
    ap.add_argument("--record-key", help="annotated record key (with --dataset)")
    ap.add_argument("--min-confidence")
    ap.add_argument("--max-confidence")
    ap.add_argument("--since", help="RFC 3339 time")
    ap.add_argument("--until", help="RFC 3339 time")
    ap.add_argument("--review-state", choices=["suggested", "confirmed", "rejected"])
    ap.add_argument(
        "-A", "--all-herds", action="store_true", help="list every herd's (default: the herd's)"
    )
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--continue", dest="continue_token", help="the token a previous page printed")
    ap.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")
    ap.set_defaults(func=cmd_annotations)

    dp = sub.add_parser("datasets", help="search the dataset catalog")
    dsub = dp.add_subparsers(dest="action", required=True)
    sp = dsub.add_parser(
        "search",
        help="datasets by name, tag, owner and field",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument("--name", help="substring of the name or URI")
    sp.add_argument("--tag", help="has this tag")
    sp.add_argument("--owner", help="has this owner")
    sp.add_argument("--field", help="has a field whose name contains this")
    sp.add_argument("-A", "--all-herds", action="store_true", help="search every herd")
    sp.add_argument("-o", "--output", choices=["table", "json", "yaml", "name"], default="table")
    sp.set_defaults(func=cmd_datasets)


__all__ = [
    "ANNOTATION_COLUMNS",
    "add_parsers",
    "annotation_row",
    "lineage_args",
    "lineage_tree",
    "render_annotations",
    "render_lineage",
]
