"""The Barn's semantics, identical on the memory and the LMDB backend (one parametrized suite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runink import store
from runink.schemas import errors


def pipeline(name: str = "p", herd: str | None = "finance", **extra: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "labels": extra.pop("labels", {})}
    if herd is not None:
        md["herd"] = herd
    md.update(extra.pop("metadata", {}))
    obj = {"apiVersion": "runink.io/v1", "kind": "Pipeline", "metadata": md, "spec": {"x": 1}}
    obj.update(extra)
    return obj


async def test_create_sets_server_fields_and_bumps_revision(barn: store.LocalBarn) -> None:
    before = barn.revision
    obj = await barn.create(pipeline(metadata={"uid": "forged", "generation": 9}))
    md = obj["metadata"]
    assert barn.revision == before + 1
    assert md["resourceVersion"] == str(barn.revision)
    assert md["generation"] == 1
    assert md["uid"] != "forged" and len(md["uid"]) == 36
    assert md["creationTimestamp"].endswith("Z")
    assert await barn.get("Pipeline", "p", "finance") == obj


async def test_create_twice_is_already_exists_and_consumes_no_revision(
    barn: store.LocalBarn,
) -> None:
    await barn.create(pipeline())
    rev = barn.revision
    with pytest.raises(errors.AlreadyExists):
        await barn.create(pipeline())
    assert barn.revision == rev
    # Same name in another herd, or cluster-scoped, is a different object.
    await barn.create(pipeline(herd="ops"))
    await barn.create(pipeline(herd=None))
    assert barn.revision == rev + 2


async def test_update_generation_moves_only_with_spec(barn: store.LocalBarn) -> None:
    obj = await barn.create(pipeline())
    obj["metadata"]["labels"] = {"team": "a"}
    obj = await barn.update(obj)
    assert obj["metadata"]["generation"] == 1
    assert obj["metadata"]["labels"] == {"team": "a"}
    obj["spec"] = {"x": 2}
    obj = await barn.update(obj)
    assert obj["metadata"]["generation"] == 2


async def test_update_with_stale_version_is_conflict_naming_current(barn: store.LocalBarn) -> None:
    first = await barn.create(pipeline())
    second = await barn.update({**first, "spec": {"x": 2}})
    rev = barn.revision
    with pytest.raises(errors.Conflict) as info:
        await barn.update({**first, "spec": {"x": 3}})
    current = second["metadata"]["resourceVersion"]
    assert info.value.details["currentResourceVersion"] == current
    assert current in info.value.message
    assert barn.revision == rev
    assert (await barn.get("Pipeline", "p", "finance"))["spec"] == {"x": 2}


async def test_update_never_changes_status_and_server_fields(barn: store.LocalBarn) -> None:
    obj = await barn.create(pipeline())
    obj = await barn.update_status({**obj, "status": {"phase": "Ready"}})
    sneaky = {**obj, "status": {"phase": "Hacked"}, "spec": {"x": 5}}
    sneaky["metadata"] = {
        **obj["metadata"],
        "generation": 77,
        "creationTimestamp": "1999-01-01T00:00:00Z",
        "deletionTimestamp": "1999-01-01T00:00:00Z",
    }
    out = await barn.update(sneaky)
    assert out["status"] == {"phase": "Ready"}
    assert out["metadata"]["generation"] == 2
    assert out["metadata"]["creationTimestamp"] == obj["metadata"]["creationTimestamp"]
    assert "deletionTimestamp" not in out["metadata"]


async def test_update_with_other_uid_is_conflict(barn: store.LocalBarn) -> None:
    obj = await barn.create(pipeline())
    obj["metadata"]["uid"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(errors.Conflict):
        await barn.update(obj)


async def test_update_status_changes_only_status(barn: store.LocalBarn) -> None:
    obj = await barn.create(pipeline())
    out = await barn.update_status({**obj, "spec": {"x": 99}, "status": {"observedGeneration": 1}})
    assert out["spec"] == {"x": 1}
    assert out["status"] == {"observedGeneration": 1}
    assert out["metadata"]["generation"] == 1
    # Without resourceVersion it is unconditional; with a stale one, Conflict.
    no_rv = {
        **out,
        "metadata": {k: v for k, v in out["metadata"].items() if k != "resourceVersion"},
    }
    await barn.update_status({**no_rv, "status": {"observedGeneration": 2}})
    with pytest.raises(errors.Conflict):
        await barn.update_status({**out, "status": {"observedGeneration": 3}})


async def test_missing_objects_are_not_found(barn: store.LocalBarn) -> None:
    with pytest.raises(errors.NotFound, match='Pipeline "nope" not found in herd "finance"'):
        await barn.get("Pipeline", "nope", "finance")
    with pytest.raises(errors.NotFound):
        await barn.update(pipeline("nope"))
    with pytest.raises(errors.NotFound):
        await barn.update_status(pipeline("nope"))
    with pytest.raises(errors.NotFound):
        await barn.delete("Pipeline", "nope", "finance")
    assert barn.revision == 0


async def test_invalid_objects_are_refused(barn: store.LocalBarn) -> None:
    with pytest.raises(errors.Invalid) as info:
        await barn.create({"kind": "Pipeline", "metadata": {}})
    assert [e.path for e in info.value.errors] == ["metadata.name"]
    with pytest.raises(errors.Invalid):
        await barn.create(pipeline(spec={"when": object()}))
    assert barn.revision == 0


async def test_delete_without_finalizers_removes(barn: store.LocalBarn) -> None:
    obj = await barn.create(pipeline())
    with pytest.raises(errors.Conflict):
        await barn.delete("Pipeline", "p", "finance", resource_version="999")
    gone = await barn.delete(
        "Pipeline", "p", "finance", resource_version=obj["metadata"]["resourceVersion"]
    )
    assert gone["metadata"]["resourceVersion"] == str(barn.revision)
    with pytest.raises(errors.NotFound):
        await barn.get("Pipeline", "p", "finance")


async def test_finalizers_hold_deletion_until_emptied(barn: store.LocalBarn) -> None:
    await barn.create(pipeline(metadata={"finalizers": ["gc", "lineage"]}))
    events = barn.watch("Pipeline", since=store.Revision(1))
    marked = await barn.delete("Pipeline", "p", "finance")
    assert marked["metadata"]["deletionTimestamp"]
    assert (await barn.get("Pipeline", "p", "finance"))["metadata"]["deletionTimestamp"]
    with pytest.raises(errors.Invalid):
        await barn.update({**marked, "metadata": {**marked["metadata"], "finalizers": ["new"]}})
    one_left = await barn.update(
        {**marked, "metadata": {**marked["metadata"], "finalizers": ["lineage"]}}
    )
    await barn.update({**one_left, "metadata": {**one_left["metadata"], "finalizers": []}})
    with pytest.raises(errors.NotFound):
        await barn.get("Pipeline", "p", "finance")
    seen = [(await anext(events)).type for _ in range(3)]
    assert seen == ["MODIFIED", "MODIFIED", "DELETED"]
    await events.aclose()  # type: ignore[attr-defined]


async def test_list_by_kind_herd_and_selector(barn: store.LocalBarn) -> None:
    await barn.create(pipeline("a", labels={"env": "prod"}))
    await barn.create(pipeline("b", labels={"env": "dev"}))
    await barn.create(pipeline("c", herd="ops", labels={"env": "prod"}))
    await barn.create({"kind": "Herd", "metadata": {"name": "finance"}})
    res = await barn.list("Pipeline")
    assert [o["metadata"]["name"] for o in res.items] == ["a", "b", "c"]
    assert res.revision == barn.revision and res.continue_token is None
    assert len((await barn.list("Pipeline", "finance")).items) == 2
    prod = await barn.list("Pipeline", selector="env in (prod)")
    assert [o["metadata"]["name"] for o in prod.items] == ["a", "c"]
    assert [o["metadata"]["name"] for o in (await barn.list("Herd")).items] == ["finance"]
    with pytest.raises(errors.Invalid):
        await barn.list("Pipeline", selector="env in prod")


async def test_pages_share_one_revision_despite_writes(barn: store.LocalBarn) -> None:
    for i in range(5):
        await barn.create(pipeline(f"p{i}"))
    page = await barn.list("Pipeline", limit=2)
    rev = page.revision
    names = [o["metadata"]["name"] for o in page.items]
    # Writes between pages must not show up: the list is read at the first page's revision.
    await barn.delete("Pipeline", "p3", "finance")
    await barn.create(pipeline("p9"))
    obj = await barn.get("Pipeline", "p4", "finance")
    await barn.update({**obj, "spec": {"x": 42}})
    while page.continue_token:
        page = await barn.list("Pipeline", limit=2, continue_token=page.continue_token)
        assert page.revision == rev
        names += [o["metadata"]["name"] for o in page.items]
        if page.items and page.items[-1]["metadata"]["name"] == "p4":
            assert page.items[-1]["spec"] == {"x": 1}
    assert names == ["p0", "p1", "p2", "p3", "p4"]


async def test_continue_at_compacted_revision_is_gone(barn: store.LocalBarn) -> None:
    for i in range(3):
        await barn.create(pipeline(f"p{i}"))
    page = await barn.list("Pipeline", limit=1)
    await barn.create(pipeline("late"))
    await barn.compact(barn.revision)
    assert page.continue_token is not None
    with pytest.raises(errors.Gone):
        await barn.list("Pipeline", limit=1, continue_token=page.continue_token)
    with pytest.raises(errors.Invalid):
        await barn.list("Pipeline", continue_token="not-a-token")


async def test_watch_is_ordered_and_resumable(barn: store.LocalBarn) -> None:
    start = barn.revision
    obj = await barn.create(pipeline())
    await barn.update({**obj, "spec": {"x": 2}})
    await barn.create(pipeline("other", herd="ops"))
    await barn.delete("Pipeline", "p", "finance")
    all_events = barn.watch("Pipeline", since=start)
    got = [await anext(all_events) for _ in range(4)]
    assert [(e.type, e.revision) for e in got] == [
        ("ADDED", 1),
        ("MODIFIED", 2),
        ("ADDED", 3),
        ("DELETED", 4),
    ]
    # Live events follow the replay without a gap.
    await barn.create(pipeline("live"))
    assert (await anext(all_events)).revision == 5
    await all_events.aclose()  # type: ignore[attr-defined]
    # Resume from the middle, filtered by herd.
    ops = barn.watch("Pipeline", "ops", since=store.Revision(2))
    assert (await anext(ops)).object["metadata"]["name"] == "other"
    await ops.aclose()  # type: ignore[attr-defined]


async def test_watch_since_compacted_is_gone_kept_misses_nothing(barn: store.LocalBarn) -> None:
    for i in range(10):
        await barn.create(pipeline(f"p{i}"))
    await barn.compact(store.Revision(6))
    with pytest.raises(errors.Gone):
        await anext(barn.watch(since=store.Revision(5)))
    kept = barn.watch(since=store.Revision(6))
    assert [(await anext(kept)).revision for _ in range(4)] == [7, 8, 9, 10]
    await kept.aclose()  # type: ignore[attr-defined]
    with pytest.raises(errors.Invalid):
        await barn.compact(store.Revision(99))


async def test_watch_selector_reports_objects_entering_and_leaving(barn: store.LocalBarn) -> None:
    obj = await barn.create(pipeline(labels={"env": "dev"}))
    w = barn.watch("Pipeline", selector="env=prod", since=barn.revision)
    obj = await barn.update({**obj, "metadata": {**obj["metadata"], "labels": {"env": "prod"}}})
    obj = await barn.update({**obj, "spec": {"x": 2}})
    await barn.update({**obj, "metadata": {**obj["metadata"], "labels": {"env": "dev"}}})
    assert [(await anext(w)).type for _ in range(3)] == ["ADDED", "MODIFIED", "DELETED"]
    await w.aclose()  # type: ignore[attr-defined]


async def test_bookmarks_tell_idle_watchers_the_revision(barn: store.LocalBarn) -> None:
    await barn.create(pipeline())
    w = barn.watch("Node", bookmark_interval=0.01)
    ev = await anext(w)
    assert ev.type == "BOOKMARK" and ev.revision == 1
    assert ev.object["metadata"]["resourceVersion"] == "1"
    await w.aclose()  # type: ignore[attr-defined]


async def test_slow_watcher_is_dropped_with_gone_writers_continue(tmp_path: Any) -> None:
    barn = store.open_memory(watch_buffer=5)
    try:
        slow = barn.watch("Pipeline", since=store.Revision(0))
        await barn.create(pipeline("p0"))
        assert (await anext(slow)).revision == 1  # the watcher is now registered
        for i in range(1, 20):  # never blocks, though nobody reads
            await barn.create(pipeline(f"p{i}"))
        assert barn.revision == 20
        with pytest.raises(errors.Gone, match="fell too far behind"):
            while True:
                await anext(slow)
    finally:
        await barn.close()


async def test_watch_ends_with_unavailable_when_barn_closes(barn: store.LocalBarn) -> None:
    w = barn.watch()

    async def consume() -> None:
        with pytest.raises(errors.Unavailable, match="closed"):
            await anext(w)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(consume())
        await asyncio.sleep(0)  # let the watcher register before closing
        await barn.close()


async def test_automatic_retention_bounds_the_log(tmp_path: Any) -> None:
    barn = store.open_local(tmp_path / "barn", retention=10)
    try:
        for i in range(40):
            await barn.create(pipeline(f"p{i}"))
        w = barn.watch(since=store.Revision(barn.revision - 10))
        assert (await anext(w)).revision == barn.revision - 9
        await w.aclose()  # type: ignore[attr-defined]
        with pytest.raises(errors.Gone):
            await anext(barn.watch(since=store.Revision(5)))
    finally:
        await barn.close()


async def test_returned_objects_are_copies(barn: store.LocalBarn) -> None:
    obj = await barn.create(pipeline())
    obj["spec"]["x"] = "mutated"
    assert (await barn.get("Pipeline", "p", "finance"))["spec"] == {"x": 1}
