"""A sealed Secret (`runink seal`) lives in Git; GitOps syncs it, and only the cluster opens it."""

from __future__ import annotations

from runink import schemas
from runink.api import _secrets

from .conftest import Env, Repo
from .test_gitops import make_source, synced

VALUE = "gitops-sealed-value-91c2"


async def test_a_sealed_secret_in_git_becomes_a_secret_only_the_cluster_can_read(env: Env) -> None:
    secret = {
        "apiVersion": "runink.io/v1",
        "kind": "Secret",
        "metadata": {"name": "db", "herd": "default"},
        "spec": {"stringData": {"password": VALUE}},
    }
    key = await env.client.sealing_key()
    sealed = _secrets.seal_manifest(secret, str(key["publicKey"]).encode())
    text = schemas.dump_yaml(sealed)
    assert VALUE not in text, "the manifest in Git holds no clear value"
    repo = Repo(env.tmp / "repo")
    repo.write("secrets/db.yaml", text)
    rev = repo.commit("sealed db secret")
    await make_source(env, "secrets", repo)
    src = await synced(env, "secrets", rev)
    assert any(i["kind"] == "Secret" and i["name"] == "db" for i in src["status"]["inventory"])
    live = await env.client.get("Secret", "db", "default")
    assert VALUE not in str(live), "reads never return the value"
    assert (await env.client.reveal("default", "db", "password"))["password"] == VALUE.encode()
