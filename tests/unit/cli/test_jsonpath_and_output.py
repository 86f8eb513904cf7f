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
