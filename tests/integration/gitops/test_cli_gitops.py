"""``runink gitops status|sync|suspend|resume|diff`` functions against a real server and repository."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from runink.cli import _gitops as cli_gitops, _output

from .conftest import Env, Repo, pipeline

pytestmark = pytest.mark.integration


def streams() -> tuple[_output.Streams, io.StringIO]:
    out = io.StringIO()
    return _output.Streams(Console(file=out, width=200), Console(file=io.StringIO())), out


async def _synced(env: Env, revision: str) -> None:
    async def check() -> bool:
        st = (await env.source("apps")).get("status") or {}
        return st.get("syncedRevision") == revision

    await env.wait_for(check, f"sync of {revision[:12]}")


async def test_status_suspend_resume_diff_and_sync(env: Env) -> None:
    repo = Repo(env.tmp / "repo")
    repo.write("p1.yaml", pipeline("p1", app="one"))
    first = repo.commit()
    await env.client.apply(
        {
            "apiVersion": "runink.io/v1",
            "kind": "GitSource",
            "metadata": {"name": "apps", "herd": "default"},
            "spec": {"url": str(repo.path), "intervalSeconds": 300, "prune": True},
        },
        "runink-cli",
    )
    await _synced(env, first)

    s, out = streams()
    assert await cli_gitops.status(env.client, "apps", "default", s) == 0
    table = out.getvalue().splitlines()
    assert table[0].split()[:4] == ["NAME", "READY", "REASON", "REVISION"]
    assert table[1].split()[:4] == ["apps", "True", "Synced", first[:12]]

    s, out = streams()
    assert await cli_gitops.suspend(env.client, "apps", "default", s) == 0
    src = await env.source("apps")
    assert src["spec"]["suspend"] is True
    # Suspending through its own field manager keeps the spec another manager wrote.
    assert src["spec"]["url"] == str(repo.path) and src["spec"]["prune"] is True

    # While suspended, a new commit is only visible through diff.
    repo.write("p1.yaml", pipeline("p1", app="two"))
    repo.write("p2.yaml", pipeline("p2"))
    second = repo.commit()
    s, out = streams()
    assert await cli_gitops.diff(env.client, "apps", "default", s, cache_dir=env.tmp / "c") == 1
    text = out.getvalue()
    assert "-    app: one" in text and "+    app: two" in text
    assert "git@" + second[:12] + "/pipeline/p2" in text

    s, out = streams()
    assert await cli_gitops.resume(env.client, "apps", "default", s) == 0
    await _synced(env, second)
    s, out = streams()
    code = await cli_gitops.diff(env.client, "apps", "default", s, cache_dir=env.tmp / "c")
    assert (code, out.getvalue()) == (0, "")

    s, out = streams()
    assert await cli_gitops.sync(env.client, "apps", "default", s) == 0
    assert out.getvalue() == "gitsource/apps sync requested\n"


def test_up_source_follows_the_checked_out_branch(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    repo.git("checkout", "--quiet", "-b", "prod")
    src = cli_gitops.source_for_path(repo.path)
    assert src["spec"]["ref"] == {"branch": "prod"}
    assert src["spec"]["clusterWide"] is True and src["spec"]["url"] == str(repo.path.resolve())
