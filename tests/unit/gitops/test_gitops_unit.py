"""GitOps pure logic (manifests -> desired objects, herd rules, predicates, diffs), the git wrapper
on a real repository, and the reconciler over an in-memory store with a fake server-side apply."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest

from runink.api import _apply
from runink.controllers import _git, _gitops, _types
from runink.controllers.testing import InMemoryClient
from runink.schemas import errors

Obj = dict[str, Any]

PIPELINE = """\
apiVersion: runink.io/v1
kind: Pipeline
metadata:
  name: {name}
{herd}spec:
  steps:
  - name: s
    command: [echo]
"""


def pipeline(name: str, herd: str | None = None) -> bytes:
    return PIPELINE.format(name=name, herd=f"  herd: {herd}\n" if herd else "").encode()


def source(herd: str | None = "team", **spec: Any) -> Obj:
    meta: Obj = {"name": "apps", "generation": 1}
    if herd:
        meta["herd"] = herd
    return {"kind": "GitSource", "metadata": meta, "spec": {"url": "/r", **spec}}


SEALED = b"""\
apiVersion: runink.io/v1
kind: SealedSecret
metadata:
  name: db
  herd: team
spec:
  algorithm: RSA-OAEP-256+A256GCM
  keyFingerprint: abc
  encryptedKey: a2V5
  nonce: bm9uY2U=
  ciphertext: Y3Q=
---
"""


# -- manifests -> desired objects ----------------------------------------------------------------


def test_every_broken_file_is_reported_with_file_and_line_and_nothing_returned() -> None:
    files = [
        _git.File("a/good.yaml", pipeline("good")),
        _git.File("a/bad.yaml", pipeline("bad").replace(b"command:", b"comand:")),
        _git.File("b/worse.yaml", b"kind: Pipeline\n  bad: [indent\n"),
    ]
    with pytest.raises(errors.Invalid) as info:
        _gitops.desired_objects(files, default_herd="team")
    where = {(e.file, e.line) for e in info.value.errors}
    assert ("a/bad.yaml", 8) in where
    assert any(f == "b/worse.yaml" for f, _ in where)
    assert "nothing of this revision was applied" in info.value.message


def test_defaults_herd_orders_herds_first_and_keeps_intent_undefaulted() -> None:
    herd = b"apiVersion: runink.io/v1\nkind: Herd\nmetadata:\n  name: zz\n"
    desired = _gitops.desired_objects(
        [_git.File("p.yaml", pipeline("p")), _git.File("h.yaml", herd)], default_herd="team"
    )
    assert [d.key for d in desired] == [("Herd", None, "zz"), ("Pipeline", "team", "p")]
    # Only what the file says is applied (field ownership of defaults stays with the server).
    assert "historyLimit" not in desired[1].obj["spec"]


def test_the_same_object_in_two_files_is_an_error() -> None:
    with pytest.raises(errors.Invalid, match=r"also defined in one\.yaml"):
        _gitops.desired_objects(
            [_git.File("one.yaml", pipeline("p")), _git.File("two.yaml", pipeline("p", "team"))],
            default_herd="team",
        )


def test_sealed_secrets_pass_through_unchanged_and_are_shape_checked() -> None:
    desired = _gitops.desired_objects(
        [_git.File("s.yaml", SEALED + pipeline("p"))], default_herd="team"
    )
    sealed = next(d for d in desired if d.sealed)
    assert sealed.key == ("Secret", "team", "db")
    assert sealed.obj["kind"] == "SealedSecret" and sealed.obj["spec"]["ciphertext"] == "Y3Q="
    broken = SEALED.replace(b"  ciphertext: Y3Q=\n", b"")
    with pytest.raises(errors.Invalid, match=r"spec\.ciphertext"):
        _gitops.desired_objects([_git.File("s.yaml", broken)], default_herd="team")


# -- herds --------------------------------------------------------------------------------------


def test_a_herd_source_may_not_write_elsewhere_nor_cluster_scoped_objects() -> None:
    desired = _gitops.desired_objects(
        [_git.File("x.yaml", pipeline("x", "other")), _git.File("p.yaml", pipeline("p"))],
        default_herd="team",
    )
    with pytest.raises(errors.Forbidden, match=r"x.yaml\) is in herd 'other'"):
        _gitops.check_targets(source(), desired)
    _gitops.check_targets(source(targetHerds=["team", "other"]), desired)

    herd = _gitops.desired_objects(
        [_git.File("h.yaml", b"apiVersion: runink.io/v1\nkind: Herd\nmetadata:\n  name: h\n")],
        default_herd="team",
    )
    with pytest.raises(errors.Forbidden, match=r"needs spec\.clusterWide"):
        _gitops.check_targets(source(), herd)
    _gitops.check_targets(source(clusterWide=True), herd)
    assert _gitops.allowed_herds(source(clusterWide=True)) is None
    assert _gitops.allowed_herds(source(clusterWide=True, targetHerds=["a"])) == {"a"}


# -- predicates and diffs -------------------------------------------------------------------------


def test_only_spec_changes_and_sync_requests_trigger_a_reconcile() -> None:
    old = source()
    status_only = {**copy.deepcopy(old), "status": {"syncedRevision": "abc"}}
    assert not _gitops.sync_wanted(old, status_only)
    bumped = copy.deepcopy(old)
    bumped["metadata"]["generation"] = 2
    assert _gitops.sync_wanted(old, bumped)
    asked = copy.deepcopy(old)
    asked["metadata"]["annotations"] = {_gitops.SYNC_ANNOTATION: "now"}
    assert _gitops.sync_wanted(old, asked)


def test_changed_fields_lists_owned_paths_only() -> None:
    live = {"metadata": {"labels": {"a": "1"}, "resourceVersion": "5"}, "spec": {"x": {"y": 1}}}
    would = {"metadata": {"labels": {"a": "2"}, "resourceVersion": "9"}, "spec": {"x": {"y": 1}}}
    assert _gitops.changed_fields(live, would) == ["metadata.labels.a"]
    assert _gitops.changed_fields(live, copy.deepcopy(live)) == []


# -- git ------------------------------------------------------------------------------------------


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "apps").mkdir(parents=True)
    git(r, "init", "--quiet", "-b", "main")
    git(r, "config", "user.email", "t@example.invalid")
    git(r, "config", "user.name", "t")
    (r / "apps" / "p.yaml").write_bytes(pipeline("p"))
    (r / "apps" / "notes.txt").write_text("not a manifest")
    (r / "top.yaml").write_bytes(pipeline("top"))
    git(r, "add", "-A")
    git(r, "commit", "--quiet", "-m", "one")
    return r


async def test_read_tree_reads_the_commit_not_the_working_tree(repo: Path) -> None:
    commit = await _git.resolve(repo, _git.Ref(branch="main"))
    assert commit == git(repo, "rev-parse", "HEAD")
    (repo / "apps" / "p.yaml").write_bytes(pipeline("edited"))  # uncommitted
    (repo / "apps" / "new.yaml").write_bytes(pipeline("new"))  # untracked
    files = await _git.read_tree(repo, commit, "apps")
    assert [(f.path, f.data) for f in files] == [("apps/p.yaml", pipeline("p"))]
    everything = await _git.read_tree(repo, commit, ".")
    assert [f.path for f in everything] == ["apps/p.yaml", "top.yaml"]
    worktree, digest = _git.read_worktree(repo, "apps")
    assert [f.path for f in worktree] == ["apps/new.yaml", "apps/p.yaml"]
    assert len(digest) == 64


async def test_missing_branch_and_path_are_not_found(repo: Path) -> None:
    with pytest.raises(errors.NotFound, match="branch nope"):
        await _git.resolve(repo, _git.Ref(branch="nope"))
    commit = await _git.resolve(repo, _git.Ref())
    with pytest.raises(errors.NotFound, match="'missing' does not exist"):
        await _git.read_tree(repo, commit, "missing")
    git(repo, "tag", "v1")
    assert await _git.resolve(repo, _git.Ref(tag="v1")) == commit
    assert _git.local_path("file:///srv/repo") == Path("/srv/repo")
    assert _git.local_path("git@example.com:org/repo.git") is None


# -- the reconciler over an in-memory store ------------------------------------------------------


class ApplyingClient(InMemoryClient):
    """The testing kit's store plus server-side apply computed by the API's own pure function."""

    def __init__(self, fail: set[str] | None = None) -> None:
        super().__init__()
        self.fail = fail or set()
        self.applies = 0

    async def apply(
        self, obj: Obj, manager: str | None = None, *, force: bool = False, dry_run: bool = False
    ) -> Obj:
        meta = obj["metadata"]
        if meta["name"] in self.fail:
            raise errors.Invalid(f"admission refused {meta['name']}")
        self.applies += 1
        try:
            live: Obj | None = await self.get(obj["kind"], meta["name"], meta.get("herd"))
        except errors.NotFound:
            live = None
        merged = _apply.apply(live, obj, str(manager), force=force)
        if dry_run:
            return merged
        return await (self.create(merged) if live is None else self.update(merged))


async def put_source(client: ApplyingClient, repo: Path, **spec: Any) -> None:
    await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "GitSource",
            "metadata": {"name": "apps", "herd": "default"},
            "spec": {"url": str(repo), "prune": True, "selfHeal": False, **spec},
        }
    )
    await client.create(
        {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": "default"}}
    )


async def test_a_partly_failed_apply_prunes_nothing_and_keeps_the_old_revision(
    repo: Path, tmp_path: Path
) -> None:
    client = ApplyingClient()
    await put_source(client, repo)
    rec = _gitops.GitSourceReconciler(client, cache_dir=tmp_path / "cache")
    req = _types.Request("GitSource", "default", "apps")
    result = await rec.reconcile(req)
    assert result.requeue_after is not None and 120 <= result.requeue_after <= 132
    first = (await client.get("GitSource", "apps", "default"))["status"]
    assert [e["name"] for e in first["inventory"]] == ["p", "top"]

    # Next commit drops "top" (would be pruned) and adds "q", which the server refuses.
    (repo / "top.yaml").unlink()
    (repo / "apps" / "q.yaml").write_bytes(pipeline("q"))
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "two")
    client.fail = {"q"}
    await rec.reconcile(req)
    st = (await client.get("GitSource", "apps", "default"))["status"]
    assert st["syncedRevision"] == first["syncedRevision"]
    assert "admission refused q" in st["lastError"]
    assert await client.get("Pipeline", "top", "default")  # not pruned
    assert [e["name"] for e in st["inventory"]] == ["p", "top"]

    client.fail = set()
    await rec.reconcile(req)
    st = (await client.get("GitSource", "apps", "default"))["status"]
    assert st["syncedRevision"] == git(repo, "rev-parse", "HEAD")
    assert [e["name"] for e in st["inventory"]] == ["p", "q"]
    with pytest.raises(errors.NotFound):
        await client.get("Pipeline", "top", "default")
