"""A hypothesis state machine checks the Barn against a plain-dict model, on both backends.

Checked after every step: each successful write moves the revision by exactly one, failed ones not
at all; a stale resourceVersion is always a Conflict; a list at any kept revision R equals the model
as it was at R; replaying a watch from R over the state at R rebuilds today's state.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from runink import store
from runink.schemas import errors

NAMES = st.sampled_from(["a", "b", "c", "d"])
VALUES = st.integers(0, 2)


class BarnModel(RuleBasedStateMachine):
    backend = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.mkdtemp(prefix="barn-model-")
        self.barn = store.open_memory() if self.backend == "memory" else store.open_local(self.tmp)
        self.model: dict[str, dict[str, Any]] = {}
        self.history: dict[int, dict[str, dict[str, Any]]] = {0: {}}
        self.compacted = 0

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self.barn.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def committed(self, before: int) -> None:
        assert self.barn.revision == before + 1
        self.history[self.barn.revision] = copy.deepcopy(self.model)

    def failed(self, before: int, exc: type[errors.RuninkError], coro: Any) -> None:
        with pytest.raises(exc):
            self.run(coro)
        assert self.barn.revision == before

    @rule(name=NAMES, x=VALUES, env=VALUES)
    def create(self, name: str, x: int, env: int) -> None:
        before = self.barn.revision
        obj = {"kind": "Pipeline", "metadata": {"name": name, "herd": "h"}, "spec": {"x": x}}
        obj["metadata"]["labels"] = {"env": str(env)}
        if name in self.model:
            self.failed(before, errors.AlreadyExists, self.barn.create(obj))
            return
        self.model[name] = self.run(self.barn.create(obj))
        self.committed(before)

    @rule(name=NAMES, x=VALUES, env=VALUES, stale=st.booleans())
    def update(self, name: str, x: int, env: int, stale: bool) -> None:
        before = self.barn.revision
        if name not in self.model:
            obj = {"kind": "Pipeline", "metadata": {"name": name, "herd": "h"}, "spec": {}}
            self.failed(before, errors.NotFound, self.barn.update(obj))
            return
        cur = self.model[name]
        obj = copy.deepcopy(cur)
        obj["spec"] = {"x": x}
        obj["metadata"]["labels"] = {"env": str(env)}
        if stale:
            obj["metadata"]["resourceVersion"] = str(int(cur["metadata"]["resourceVersion"]) - 1)
            self.failed(before, errors.Conflict, self.barn.update(obj))
            return
        out = self.run(self.barn.update(obj))
        if out == cur:  # nothing changed: no revision consumed
            assert self.barn.revision == before
            return
        bump = 1 if cur["spec"] != obj["spec"] else 0
        assert out["metadata"]["generation"] == cur["metadata"]["generation"] + bump
        self.model[name] = out
        self.committed(before)

    @rule(name=NAMES, phase=VALUES)
    def update_status(self, name: str, phase: int) -> None:
        before = self.barn.revision
        if name not in self.model:
            return
        cur = self.model[name]
        out = self.run(self.barn.update_status({**cur, "status": {"phase": phase}}))
        assert out["spec"] == cur["spec"]
        assert out["metadata"]["generation"] == cur["metadata"]["generation"]
        if out == cur:
            assert self.barn.revision == before
            return
        self.model[name] = out
        self.committed(before)

    @rule(name=NAMES, stale=st.booleans())
    def delete(self, name: str, stale: bool) -> None:
        before = self.barn.revision
        if name not in self.model:
            self.failed(before, errors.NotFound, self.barn.delete("Pipeline", name, "h"))
            return
        rv = self.model[name]["metadata"]["resourceVersion"]
        if stale:
            stale_rv = str(int(rv) - 1)
            self.failed(
                before,
                errors.Conflict,
                self.barn.delete("Pipeline", name, "h", resource_version=stale_rv),
            )
            return
        self.run(self.barn.delete("Pipeline", name, "h", resource_version=rv))
        del self.model[name]
        self.committed(before)

    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(self.compacted, self.barn.revision))
        self.run(self.barn.compact(store.Revision(rev)))
        self.compacted = rev

    @rule(data=st.data(), selector=st.sampled_from([None, "env=1", "env!=0"]))
    def list_at_kept_revision(self, data: st.DataObject, selector: str | None) -> None:
        rev = data.draw(st.integers(self.compacted, self.barn.revision))
        got = self.run(self.barn.list("Pipeline", revision=store.Revision(rev), selector=selector))
        want = [
            o
            for _, o in sorted(self.history[rev].items())
            if selector is None or store_matches(selector, o)
        ]
        assert got.items == want
        if rev > self.compacted:
            with pytest.raises(errors.Gone):
                self.run(self.barn.list("Pipeline", revision=store.Revision(self.compacted - 1)))

    @rule(data=st.data())
    def watch_replay_rebuilds_state(self, data: st.DataObject) -> None:
        rev = data.draw(st.integers(self.compacted, self.barn.revision))
        state = copy.deepcopy(self.history[rev])

        async def replay() -> None:
            w = self.barn.watch("Pipeline", since=store.Revision(rev))
            for expected in range(rev + 1, self.barn.revision + 1):
                ev = await anext(w)
                assert ev.revision == expected
                name = ev.object["metadata"]["name"]
                if ev.type == "DELETED":
                    del state[name]
                else:
                    state[name] = ev.object
            await w.aclose()  # type: ignore[attr-defined]

        self.run(replay())
        assert state == self.model
        if self.compacted > 0:
            with pytest.raises(errors.Gone):
                self.run(anext(self.barn.watch(since=store.Revision(self.compacted - 1))))


def store_matches(selector: str, obj: dict[str, Any]) -> bool:
    from runink.schemas import selectors

    return selectors.parse_selector(selector).matches(obj["metadata"]["labels"])


class LmdbBarnModel(BarnModel):
    backend = "lmdb"


TestMemoryModel = BarnModel.TestCase
TestLmdbModel = LmdbBarnModel.TestCase
TestLmdbModel.settings = settings(max_examples=15, stateful_step_count=30, deadline=None)
