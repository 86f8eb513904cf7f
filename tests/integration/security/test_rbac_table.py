"""The authorization table through the real gRPC server: users (certificates), groups, OIDC
users, API keys, service accounts and agents x verbs x kinds x herds, escalation included."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from runink import api
from runink.schemas import errors

from .conftest import Cluster, Issuer

pytestmark = pytest.mark.integration

Obj = dict[str, Any]


def pipeline(herd: str, name: str = "p1") -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Pipeline",
        "metadata": {"name": name, "herd": herd},
        "spec": {"steps": [{"name": "a", "command": ["true"]}]},
    }


def secret(herd: str, name: str = "s1") -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Secret",
        "metadata": {"name": name, "herd": herd},
        "spec": {"stringData": {"password": "hunter2-table"}},
    }


def binding(herd: str, name: str, role: str, subject: Obj, kind: str = "ClusterRole") -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "herd": herd},
        "spec": {"subjects": [subject], "roleRef": {"kind": kind, "name": role}},
    }


def role(herd: str | None, name: str, rules: list[Obj]) -> Obj:
    meta: Obj = {"name": name, **({"herd": herd} if herd else {})}
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Role" if herd else "ClusterRole",
        "metadata": meta,
        "spec": {"rules": rules},
    }


def slice_obj(herd: str, name: str, node: str, secret_name: str) -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Slice",
        "metadata": {"name": name, "herd": herd},
        "spec": {
            "pipeline": "p1",
            "run": "r1",
            "step": "a",
            "command": ["true"],
            "nodeName": node,
            "secrets": [{"secret": secret_name}],
        },
    }


@pytest.fixture
async def world(
    cluster: Cluster, issuer: Issuer
) -> AsyncIterator[dict[str, Callable[[], api.Client]]]:
    async with cluster.cert_client("admin") as admin:
        for herd in ("alpha", "beta"):
            await admin.create(pipeline(herd))
            await admin.create(secret(herd))
            await admin.create(secret(herd, "s2"))
        for obj in (
            binding("alpha", "alice-edit", "edit", {"kind": "User", "name": "alice"}),
            binding("alpha", "bob-view", "view", {"kind": "User", "name": "bob"}),
            binding("alpha", "team-a-admin", "admin", {"kind": "Group", "name": "team-a"}),
            binding("beta", "etl-edit", "edit", {"kind": "ServiceAccount", "name": "etl"}),
            binding("beta", "data-eng-view", "view", {"kind": "Group", "name": "oidc:data-eng"}),
            binding("alpha", "keyuser-view", "view", {"kind": "User", "name": "keyuser"}),
        ):
            await admin.create(obj)
        await admin.create(slice_obj("alpha", "sl-1", "node-1", "s1"))
        await admin.create(slice_obj("alpha", "sl-2", "node-2", "s2"))
    async with cluster.cert_client("keyuser") as k:
        key = (await k.create_api_key(ttl_seconds=600))["token"]
    clients: dict[str, Callable[[], api.Client]] = {
        "admin": lambda: cluster.cert_client("admin"),
        "alice": lambda: cluster.cert_client("alice"),
        "bob": lambda: cluster.cert_client("bob"),
        "carol": lambda: cluster.cert_client("carol", "team-a"),
        "mallory": lambda: cluster.cert_client("mallory"),
        "forged-node": lambda: cluster.cert_client("system:node:node-1"),  # no system:nodes group
        "node-1": lambda: cluster.cert_client("system:node:node-1", "system:nodes"),
        "sa-etl": lambda: cluster.sa_client("beta", "etl"),
        "sa-other": lambda: cluster.sa_client("beta", "other"),
        "oidc-dave": lambda: cluster.token_client(issuer.token()),
        "apikey": lambda: cluster.token_client(key),
    }
    yield clients


def _update_pipeline(herd: str) -> Callable[[api.Client], Awaitable[Any]]:
    async def run(c: api.Client) -> Any:
        live = pipeline(herd)
        live["metadata"]["labels"] = {"touched": "yes"}
        return await c.update(live, dry_run=True)

    return run


OPS: dict[str, Callable[[api.Client], Awaitable[Any]]] = {
    "get-pipeline-alpha": lambda c: c.get("Pipeline", "p1", "alpha"),
    "get-pipeline-beta": lambda c: c.get("Pipeline", "p1", "beta"),
    "list-pipelines-alpha": lambda c: c.list("Pipeline", "alpha"),
    "list-pipelines-all-herds": lambda c: c.list("Pipeline"),
    "create-pipeline-alpha": lambda c: c.create(pipeline("alpha", "new"), dry_run=True),
    "create-pipeline-beta": lambda c: c.create(pipeline("beta", "new"), dry_run=True),
    "update-pipeline-alpha": _update_pipeline("alpha"),
    "delete-pipeline-alpha": lambda c: c.delete("Pipeline", "p1", "alpha", dry_run=True),
    "get-secret-alpha": lambda c: c.get("Secret", "s1", "alpha"),
    "reveal-secret-alpha": lambda c: c.reveal("alpha", "s1"),
    "reveal-secret-beta": lambda c: c.reveal("beta", "s1"),
    "create-secret-beta": lambda c: c.create(secret("beta", "new"), dry_run=True),
    "list-herds": lambda c: c.list("Herd"),
    "create-herd": lambda c: c.create(
        {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": "h-new"}},
        dry_run=True,
    ),
    "list-nodes": lambda c: c.list("Node"),
    # Escalation: bind admin / cluster-admin, or write a role granting what one does not hold.
    "bind-admin-alpha": lambda c: c.create(
        binding("alpha", "esc", "admin", {"kind": "User", "name": "mallory"}), dry_run=True
    ),
    "bind-view-alpha": lambda c: c.create(
        binding("alpha", "v2", "view", {"kind": "User", "name": "mallory"}), dry_run=True
    ),
    "bind-cluster-admin-alpha": lambda c: c.create(
        binding("alpha", "esc2", "cluster-admin", {"kind": "User", "name": "mallory"}),
        dry_run=True,
    ),
    "role-with-star-alpha": lambda c: c.create(
        role("alpha", "star", [{"verbs": ["*"], "resources": ["*"]}]), dry_run=True
    ),
    "role-reveal-secrets-alpha": lambda c: c.create(
        role("alpha", "rev", [{"verbs": ["reveal"], "resources": ["secrets"]}]), dry_run=True
    ),
    "clusterrole-create": lambda c: c.create(
        role(None, "cr", [{"verbs": ["get"], "resources": ["pipelines"]}]), dry_run=True
    ),
    "get-slice-own-node": lambda c: c.get("Slice", "sl-1", "alpha"),
    "get-slice-other-node": lambda c: c.get("Slice", "sl-2", "alpha"),
    "reveal-secret-own-slice": lambda c: c.reveal("alpha", "s1"),
    "reveal-secret-other-slice": lambda c: c.reveal("alpha", "s2"),
    "get-secret-other-slice": lambda c: c.get("Secret", "s2", "alpha"),
    "delete-slice-own-node": lambda c: c.delete("Slice", "sl-1", "alpha", dry_run=True),
}

ALLOW, DENY = True, False
TABLE: list[tuple[str, str, bool]] = [
    # cluster admin (system:masters certificate): everything
    ("admin", "get-pipeline-beta", ALLOW),
    ("admin", "list-pipelines-all-herds", ALLOW),
    ("admin", "create-herd", ALLOW),
    ("admin", "reveal-secret-beta", ALLOW),
    ("admin", "bind-cluster-admin-alpha", ALLOW),
    ("admin", "clusterrole-create", ALLOW),
    # alice: edit in alpha only
    ("alice", "get-pipeline-alpha", ALLOW),
    ("alice", "list-pipelines-alpha", ALLOW),
    ("alice", "create-pipeline-alpha", ALLOW),
    ("alice", "update-pipeline-alpha", ALLOW),
    ("alice", "delete-pipeline-alpha", ALLOW),
    ("alice", "get-secret-alpha", ALLOW),
    ("alice", "reveal-secret-alpha", DENY),
    ("alice", "get-pipeline-beta", DENY),
    ("alice", "create-pipeline-beta", DENY),
    ("alice", "list-pipelines-all-herds", DENY),
    ("alice", "list-herds", DENY),
    ("alice", "bind-view-alpha", DENY),
    ("alice", "bind-admin-alpha", DENY),
    ("alice", "role-with-star-alpha", DENY),
    # bob: view in alpha
    ("bob", "get-pipeline-alpha", ALLOW),
    ("bob", "list-pipelines-alpha", ALLOW),
    ("bob", "create-pipeline-alpha", DENY),
    ("bob", "delete-pipeline-alpha", DENY),
    ("bob", "get-secret-alpha", DENY),
    ("bob", "reveal-secret-alpha", DENY),
    ("bob", "get-pipeline-beta", DENY),
    # carol: group team-a is admin of alpha
    ("carol", "create-pipeline-alpha", ALLOW),
    ("carol", "reveal-secret-alpha", ALLOW),
    ("carol", "reveal-secret-beta", DENY),
    ("carol", "bind-view-alpha", ALLOW),
    ("carol", "bind-admin-alpha", ALLOW),
    ("carol", "role-reveal-secrets-alpha", ALLOW),
    ("carol", "bind-cluster-admin-alpha", DENY),
    ("carol", "role-with-star-alpha", DENY),
    ("carol", "clusterrole-create", DENY),
    ("carol", "create-herd", DENY),
    ("carol", "get-pipeline-beta", DENY),
    # mallory: nothing bound
    ("mallory", "get-pipeline-alpha", DENY),
    ("mallory", "list-herds", DENY),
    ("mallory", "reveal-secret-alpha", DENY),
    ("mallory", "bind-admin-alpha", DENY),
    ("mallory", "create-herd", DENY),
    # service accounts (tokens on the token port)
    ("sa-etl", "get-pipeline-beta", ALLOW),
    ("sa-etl", "create-secret-beta", ALLOW),
    ("sa-etl", "create-pipeline-beta", ALLOW),
    ("sa-etl", "reveal-secret-beta", DENY),
    ("sa-etl", "get-pipeline-alpha", DENY),
    ("sa-other", "get-pipeline-beta", DENY),
    # OIDC user dave, group oidc:data-eng views beta
    ("oidc-dave", "get-pipeline-beta", ALLOW),
    ("oidc-dave", "list-pipelines-alpha", DENY),
    ("oidc-dave", "create-pipeline-beta", DENY),
    # API key of keyuser (view in alpha)
    ("apikey", "get-pipeline-alpha", ALLOW),
    ("apikey", "create-pipeline-alpha", DENY),
    # agent certificate of node-1 (node authorizer)
    ("node-1", "get-slice-own-node", ALLOW),
    ("node-1", "get-slice-other-node", DENY),
    ("node-1", "reveal-secret-own-slice", ALLOW),
    ("node-1", "reveal-secret-other-slice", DENY),
    ("node-1", "get-secret-other-slice", DENY),
    ("node-1", "delete-slice-own-node", DENY),
    ("node-1", "get-pipeline-alpha", DENY),
    ("node-1", "list-pipelines-alpha", DENY),
    ("node-1", "list-nodes", DENY),
    # CN=system:node:node-1 without O=system:nodes is just a user with no bindings
    ("forged-node", "get-slice-own-node", DENY),
]


@pytest.mark.parametrize(("who", "op", "allowed"), TABLE, ids=[f"{w}:{o}" for w, o, _ in TABLE])
async def test_authorization_table(
    world: dict[str, Callable[[], api.Client]], who: str, op: str, allowed: bool
) -> None:
    async with world[who]() as c:
        try:
            await OPS[op](c)
            outcome = True
        except errors.Forbidden:
            outcome = False
    assert outcome is allowed


def test_table_is_big_enough() -> None:
    assert len(TABLE) >= 60
    assert set(OPS) == {op for _, op, _ in TABLE}
