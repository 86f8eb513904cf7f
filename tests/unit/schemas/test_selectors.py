"""Label selectors: the Kubernetes syntax table, and refusals that name the bad token."""

from __future__ import annotations

import pytest

from runink.schemas import errors, selectors

LABELS = {"env": "prod", "tier": "web", "app.kubernetes.io/name": "ink"}


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("env=prod", True),
        ("env==prod", True),
        ("env=dev", False),
        ("env!=dev", True),
        ("env!=prod", False),
        ("missing!=x", True),  # != matches objects without the key
        ("env in (dev,prod)", True),
        ("env in (dev, qa)", False),
        ("tier notin (db)", True),
        ("tier notin (db,web)", False),
        ("missing notin (x)", True),
        ("env", True),
        ("missing", False),
        ("!missing", True),
        ("!env", False),
        ("env=prod,tier=web", True),
        ("env=prod, tier=db", False),
        ("app.kubernetes.io/name=ink", True),
        ("  env = prod  ,  tier in ( web )  ", True),
    ],
)
def test_selector_table(expr: str, expected: bool) -> None:
    assert selectors.parse_selector(expr).matches(LABELS) is expected
    assert selectors.matches(expr, LABELS) is expected


@pytest.mark.parametrize(
    ("expr", "token"),
    [
        ("env=prod tier=web", "tier"),
        ("env in dev", "dev"),
        ("env in (a b)", "b"),
        ("env in ()", "env in ()"),
        ("env in (a", "("),
        ("!", "!"),
        ("=prod", "="),
        ("env=prod,", ","),
        ("bad key!=x", "key"),
        ("env=bad/value", "bad/value"),
        ("-lead=x", "-lead"),
    ],
)
def test_bad_selectors_name_the_token(expr: str, token: str) -> None:
    with pytest.raises(errors.Invalid) as exc:
        selectors.parse_selector(expr)
    assert repr(token) in str(exc.value)
    assert repr(expr) in str(exc.value)


def test_empty_selector_matches_everything() -> None:
    assert selectors.parse_selector("").empty
    assert selectors.parse_selector("   ").matches({})
    assert not selectors.parse_selector("a").empty
    assert selectors.matches(None, None)
    assert selectors.matches("", {"a": "b"})
    assert not selectors.matches("a", None)


def test_str_round_trips() -> None:
    sel = selectors.parse_selector("b in (y,x),a=1,!c,d notin (z),e")
    assert selectors.parse_selector(str(sel)) == sel
