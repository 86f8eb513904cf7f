"""JSONPath templates (-o jsonpath, wait --for=jsonpath) and plain-text tables when piped."""

from __future__ import annotations

from runink.cli import _jsonpath, _output

DATA = {
    "items": [
        {
            "metadata": {"name": "a", "labels": {"runink.io/app": "x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        },
        {"metadata": {"name": "b"}},
    ]
}


def test_star_joins_with_spaces_and_range_repeats_the_body():
    assert _jsonpath.render("{.items[*].metadata.name}", DATA) == "a b"
    assert _jsonpath.render('{range .items[*]}{.metadata.name}{"\\n"}{end}', DATA) == "a\nb\n"


def test_escaped_dots_and_filters():
    assert _jsonpath.render("{.items[0].metadata.labels.runink\\.io/app}", DATA) == "x"
    assert _jsonpath.find(DATA, ".items[0].status.conditions[?type=Ready].status") == ["True"]
    assert _jsonpath.find(DATA, ".items[1].status.phase") == []


def test_plain_table_aligns_columns_without_markup():
    text = _output.plain_table(["NAME", "AGE"], [["long-name", "1m"], ["b", "2h"]])
    assert text == "NAME        AGE\nlong-name   1m\nb           2h\n"


def test_node_rows_show_memory_as_a_quantity_and_the_agent_version():
    from runink import schemas

    node = {
        "metadata": {"name": "n1", "creationTimestamp": "2026-11-27T08:00:00Z"},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "2", "memory": 25276063744, "gpu": 0},
            "agentVersion": "0.1.0",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    headers, rows = _output.rows_for(
        schemas.lookup("Node"), [node], wide=True, all_herds=False, show_labels=False
    )
    row = dict(zip(headers, rows[0], strict=True))
    assert row["MEMORY"] == "23.5Gi" and row["VERSION"] == "0.1.0" and row["CPU"] == "2"
    assert [_output.human_bytes(n) for n in (512, 1024, 64 << 20, 3 << 40)] == [
        "512",
        "1Ki",
        "64Mi",
        "3Ti",
    ]
