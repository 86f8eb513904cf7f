"""GitOps end to end: real git repositories, a real mTLS API server, the controller over gRPC."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from runink.schemas import errors

from .conftest import Env, Repo, pipeline

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


async def make_source(env: Env, name: str, repo: Repo, **spec: Any) -> Obj:
    obj = {
        "apiVersion": "runink.io/v1",
        "kind": "GitSource",
        "metadata": {"name": name, "herd": "default"},
        # A long interval: anything seen within seconds came from the repository watch.
        "spec": {"url": str(repo.path), "intervalSeconds": 300, "prune": False, **spec},
    }
    return await env.client.apply(obj, "test")


def cond(obj: Obj, type_: str) -> Obj:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


async def synced(env: Env, name: str, revision: str) -> Obj:
    async def check() -> Obj | None:
        src = await env.source(name)
        st = src.get("status") or {}
        ok = st.get("syncedRevision") == revision and cond(src, "Ready").get("status") == "True"
        if not ok:
            env.last_status = st
        return src if ok else None

    src: Obj = await env.wait_for(check, f"{name} synced at {revision[:12]}")
    return src


async def exists(env: Env, kind: str, name: str, herd: str | None = "default") -> bool:
    try:
        await env.client.get(kind, name, herd)
    except errors.NotFound:
        return False
    return True


async def test_commit_appears_and_removal_keeps_object_without_prune(env: Env) -> None:
    repo = Repo(env.tmp / "repo")
    repo.write("apps/p1.yaml", pipeline("p1"))
    first = repo.commit("p1")
    await make_source(env, "apps", repo)
    src = await synced(env, "apps", first)
    assert src["status"]["inventory"] == [{"kind": "Pipeline", "herd": "default", "name": "p1"}]
    assert src["status"]["appliedAs"] == "system:controller:gitops"
    live = await env.client.get("Pipeline", "p1", "default")
    managers = [m["manager"] for m in live["metadata"]["managedFields"]]
    assert managers == ["gitops:apps"]

    # A commit is picked up by the .git watch (the interval is 300 s).
    repo.write("apps/p2.yaml", pipeline("p2"))
    second = repo.commit("p2")
    async with asyncio.timeout(5):
        src = await synced(env, "apps", second)
    assert await exists(env, "Pipeline", "p2")
    assert src["status"]["diffSummary"]["created"] == 1

    repo.remove("apps/p2.yaml")
    third = repo.commit("drop p2")
    src = await synced(env, "apps", third)
    assert await exists(env, "Pipeline", "p2"), "prune is off: p2 must stay"
    assert src["status"]["inventory"] == [{"kind": "Pipeline", "herd": "default", "name": "p1"}]


async def test_removal_is_pruned_with_prune_on_and_empty_set_refused(env: Env) -> None:
    repo = Repo(env.tmp / "repo")
    repo.write("p1.yaml", pipeline("p1"))
    repo.write("p2.yaml", pipeline("p2"))
    two = repo.commit("two")
    await make_source(env, "apps", repo, prune=True)
    await synced(env, "apps", two)

    repo.remove("p2.yaml")
    src = await synced(env, "apps", repo.commit("drop p2"))
    assert not await exists(env, "Pipeline", "p2")
    assert await exists(env, "Pipeline", "p1")
    assert src["status"]["diffSummary"]["deleted"] == 1

    # Emptying the path would prune everything: refused unless allowEmpty.
    repo.remove("p1.yaml")
    empty = repo.commit("empty")

    async def refused() -> Obj | None:
        s = await env.source("apps")
        return s if (s.get("status") or {}).get("lastAttemptedRevision") == empty else None

    src = await env.wait_for(refused, "the empty revision to be refused")
    assert "allowEmpty" in src["status"]["lastError"]
    assert cond(src, "Stalled")["status"] == "True"
    assert await exists(env, "Pipeline", "p1")


async def test_broken_manifest_leaves_previous_revision_with_file_and_line(env: Env) -> None:
    repo = Repo(env.tmp / "repo")
    repo.write("p1.yaml", pipeline("p1", app="v1"))
    good = repo.commit("good")
    await make_source(env, "apps", repo)
    await synced(env, "apps", good)

    # One good change and one broken file in the same commit: neither is applied.
    repo.write("p1.yaml", pipeline("p1", app="v2"))
    repo.write("bad.yaml", pipeline("bad") + "  bogusField: 1\n")
    bad = repo.commit("broken")

    async def failed() -> Obj | None:
        s = await env.source("apps")
        return s if (s.get("status") or {}).get("lastAttemptedRevision") == bad else None

    src = await env.wait_for(failed, "the broken revision to fail")
    st = src["status"]
    assert st["syncedRevision"] == good
    assert "bad.yaml" in st["lastError"] and "line 11" in st["lastError"]
    assert "bogusField" in st["lastError"]
    assert cond(src, "Ready")["status"] == "False"
    stalled = cond(src, "Stalled")
    assert (stalled["status"], stalled["reason"]) == ("True", "ValidationFailed")
    live = await env.client.get("Pipeline", "p1", "default")
    assert live["metadata"]["labels"]["app"] == "v1"
    assert not await exists(env, "Pipeline", "bad")
    events = await env.client.list("Event", "default")
    assert any(e["spec"]["reason"] == "ValidationFailed" for e in events.items)

    repo.write("bad.yaml", pipeline("bad"))
    fixed = repo.commit("fix")
    await synced(env, "apps", fixed)
    live = await env.client.get("Pipeline", "p1", "default")
    assert live["metadata"]["labels"]["app"] == "v2"


@pytest.mark.parametrize("self_heal", [True, False])
async def test_edit_outside_git_is_reverted_only_with_self_heal(env: Env, self_heal: bool) -> None:
    repo = Repo(env.tmp / "repo")
    repo.write("p1.yaml", pipeline("p1", app="from-git"))
    rev = repo.commit("p1")
    await make_source(env, "apps", repo, selfHeal=self_heal, intervalSeconds=1)
    await synced(env, "apps", rev)

    edited = env.tmp / "edited.yaml"
    edited.write_text(pipeline("p1", herd="default", app="by-hand"))
    r = await env.run("apply", "-f", str(edited))
    assert r.code == 0, r.err

    async def drift_seen() -> Obj | None:
        s = await env.source("apps")
        rows = (s.get("status") or {}).get("objects") or []
        return s if any(o["action"] in ("drifted", "healed") for o in rows) else None

    src = await env.wait_for(drift_seen, "drift to be noticed")
    row = next(o for o in src["status"]["objects"] if o["name"] == "p1")
    assert row["fields"] == ["metadata.labels.app"]
    live = await env.client.get("Pipeline", "p1", "default")
    if self_heal:
        assert row["action"] == "healed"
        assert live["metadata"]["labels"]["app"] == "from-git"
        reason = "DriftReverted"
    else:
        assert row["action"] == "drifted"
        assert live["metadata"]["labels"]["app"] == "by-hand"
        reason = "DriftDetected"
    events = await env.client.list("Event", "default")
    assert any(e["spec"]["reason"] == reason for e in events.items)


async def test_source_cannot_write_into_a_herd_it_is_not_allowed(env: Env) -> None:
    await env.client.apply(
        {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": "other"}}, "test"
    )
    repo = Repo(env.tmp / "repo")
    repo.write("mine.yaml", pipeline("mine"))
    repo.write("theirs.yaml", pipeline("theirs", herd="other"))
    rev = repo.commit("cross-herd")
    await make_source(env, "apps", repo)

    async def failed() -> Obj | None:
        s = await env.source("apps")
        return s if (s.get("status") or {}).get("lastAttemptedRevision") == rev else None

    src = await env.wait_for(failed, "the cross-herd revision to fail")
    assert "theirs.yaml" in src["status"]["lastError"]
    assert "may only write into default" in src["status"]["lastError"]
    assert cond(src, "Stalled")["reason"] == "HerdNotAllowed"
    # The whole revision failed: not even the allowed object was applied.
    assert not await exists(env, "Pipeline", "mine")
    assert not await exists(env, "Pipeline", "theirs", "other")

    # Allowing the herd makes the same revision sync.
    await make_source(env, "apps", repo, targetHerds=["default", "other"])
    await synced(env, "apps", rev)
    assert await exists(env, "Pipeline", "theirs", "other")


async def test_suspend_stops_syncing_and_resume_catches_up(env: Env) -> None:
    repo = Repo(env.tmp / "repo")
    repo.write("p1.yaml", pipeline("p1"))
    first = repo.commit("p1")
    await make_source(env, "apps", repo)
    await synced(env, "apps", first)

    await make_source(env, "apps", repo, suspend=True)

    async def suspended() -> bool:
        return cond(await env.source("apps"), "Reconciling").get("reason") == "Suspended"

    await env.wait_for(suspended, "the source to report Suspended")
    repo.write("p2.yaml", pipeline("p2"))
    second = repo.commit("p2")
    # A negative check needs a wait: 1.5 s is three times what an unsuspended sync takes here.
    await asyncio.sleep(1.5)
    assert not await exists(env, "Pipeline", "p2")
    assert (await env.source("apps"))["status"]["syncedRevision"] == first

    await make_source(env, "apps", repo, suspend=False)
    await synced(env, "apps", second)
    assert await exists(env, "Pipeline", "p2")


async def test_depends_on_waits_for_the_dependency(env: Env) -> None:
    base = Repo(env.tmp / "base")
    base.write(
        "herd.yaml",
        "apiVersion: runink.io/v1\nkind: Pipeline\nmetadata:\n  name: base\n"
        "spec:\n  steps:\n  - name: s\n    command: [echo]\n",
    )
    base_rev = base.commit("base")
    apps = Repo(env.tmp / "apps")
    apps.write("p.yaml", pipeline("app"))
    apps_rev = apps.commit("app")
    await make_source(env, "apps", apps, dependsOn=["base"])

    async def waiting() -> bool:
        return cond(await env.source("apps"), "Ready").get("reason") == "DependencyNotReady"

    await env.wait_for(waiting, "apps to wait for base")
    assert not await exists(env, "Pipeline", "app")
    await make_source(env, "base", base)
    await synced(env, "base", base_rev)
    await synced(env, "apps", apps_rev)
    assert await exists(env, "Pipeline", "app")


async def test_worktree_mode_syncs_uncommitted_files(env: Env) -> None:
    repo = Repo(env.tmp / "repo")
    repo.write("p1.yaml", pipeline("p1"))
    repo.commit("p1")
    await make_source(env, "dev", repo, watch="worktree")

    async def synced_p1() -> bool:
        st = (await env.source("dev")).get("status") or {}
        return "+worktree." in str(st.get("syncedRevision"))

    await env.wait_for(synced_p1, "the worktree sync")
    repo.write("p2.yaml", pipeline("p2"))  # never committed

    async def p2() -> bool:
        return await exists(env, "Pipeline", "p2")

    await env.wait_for(p2, "an uncommitted manifest to be applied", timeout=5)
