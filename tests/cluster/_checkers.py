"""Checkers over recorded histories: per-key linearizability (Wing-Gong-Lowe with state caching),
gap-free ordered watch streams, identical replica digests.

A register history per key holds ``Op``s: ``read`` (result = value seen), ``write`` (value) and
``cas`` (old -> new, result = succeeded?). Values written are unique, so "state == old" is the
same as "the resourceVersion read is current". An op whose outcome is unknown (timeout, leader
change) has ``ret = inf``: it may take effect at any point after its call, or never.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Op:
    kind: str  # read | write | cas
    call: float
    ret: float  # math.inf when the outcome is unknown
    value: Any = None  # read: value seen; write: value; cas: new value
    old: Any = None  # cas: expected value
    ok: bool = True  # cas: succeeded?

    def step(self, state: Any) -> tuple[bool, Any]:
        """Whether this op, with its recorded result, can happen in ``state``, and the state after."""
        if self.kind == "read":
            return state == self.value, state
        if self.kind == "write":
            return True, self.value
        if math.isinf(self.ret):  # unknown CAS: if it happened, it succeeded
            return state == self.old, self.value
        if self.ok:
            return state == self.old, self.value
        return state != self.old, state


def linearizable(ops: list[Op], init: Any) -> bool:
    """Wing & Gong's search with Lowe's cache of (linearized set, state) configurations."""
    n = len(ops)
    required = 0
    for i, op in enumerate(ops):
        if not math.isinf(op.ret):
            required |= 1 << i
    order = sorted(range(n), key=lambda i: ops[i].call)
    seen: set[tuple[int, Any]] = set()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 4 * n + 1000))

    def search(done: int, state: Any) -> bool:
        if done & required == required:
            return True
        min_ret = min(ops[i].ret for i in range(n) if not done >> i & 1)
        for i in order:
            if done >> i & 1:
                continue
            if ops[i].call > min_ret:
                break
            ok, nxt = ops[i].step(state)
            if not ok:
                continue
            cfg = (done | 1 << i, nxt)
            if cfg in seen:
                continue
            seen.add(cfg)
            if search(*cfg):
                return True
        return False

    try:
        return search(0, init)
    finally:
        sys.setrecursionlimit(limit)


def watch_gaps(revisions: list[int], start: int) -> list[str]:
    """Problems in one unfiltered watch stream that started after revision ``start``."""
    problems = []
    expect = start + 1
    for rev in revisions:
        if rev != expect:
            problems.append(f"expected revision {expect}, got {rev}")
            expect = rev
        expect += 1
    return problems
