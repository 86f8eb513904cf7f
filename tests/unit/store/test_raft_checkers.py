"""The cluster tests' linearizability checker must accept real histories and catch stale reads."""

from __future__ import annotations

import importlib.util
import math
import pathlib
import sys

_spec = importlib.util.spec_from_file_location(
    "_checkers", pathlib.Path(__file__).parents[2] / "cluster" / "_checkers.py"
)
assert _spec is not None and _spec.loader is not None
checkers = importlib.util.module_from_spec(_spec)
sys.modules["_checkers"] = checkers
_spec.loader.exec_module(checkers)
Op = checkers.Op


def test_concurrent_write_and_read_either_order_is_linearizable() -> None:
    ops = [Op("write", 0, 10, 1), Op("read", 1, 2, 1), Op("read", 3, 4, 0)]
    # The read of 0 at [3,4] happens while the write is still in flight: write after it.
    assert not checkers.linearizable(ops, 0)  # read 1 then read 0 cannot both hold
    assert checkers.linearizable([Op("write", 0, 10, 1), Op("read", 3, 4, 0)], 0)


def test_stale_read_after_acknowledged_write_is_caught() -> None:
    ops = [Op("write", 0, 1, 5), Op("read", 2, 3, 0)]
    assert not checkers.linearizable(ops, 0)


def test_unknown_outcome_write_may_or_may_not_happen() -> None:
    unknown = Op("write", 0, math.inf, 7)
    assert checkers.linearizable([unknown, Op("read", 5, 6, 0)], 0)
    assert checkers.linearizable([unknown, Op("read", 5, 6, 7)], 0)


def test_cas_results_must_match_the_state() -> None:
    ok = [Op("write", 0, 1, 1), Op("cas", 2, 3, 2, old=1, ok=True), Op("read", 4, 5, 2)]
    assert checkers.linearizable(ok, 0)
    lost = [Op("write", 0, 1, 1), Op("cas", 2, 3, 2, old=1, ok=False)]
    assert not checkers.linearizable(lost, 0)


def test_watch_gap_detection() -> None:
    assert checkers.watch_gaps([5, 6, 7], 4) == []
    assert checkers.watch_gaps([5, 7], 4) == ["expected revision 6, got 7"]
