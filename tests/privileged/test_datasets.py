"""Datasets shared between slices of one herd, and python: steps from a checkout slices can't reach.

Every slice runs as its own ephemeral host UID; these tests check for real that the per-herd GID,
the setgid herd directory and the 0002 umask let siblings exchange data, and that the runink
package reaches a step through its read-only bind mount rather than through the host path.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runink.agent import _cgroups, _datasets, _launcher, _logs, _runtime

pytestmark = pytest.mark.privileged
PY = "/usr/bin/python3"


def step(name: str, code: str, **kw: object) -> _runtime.SliceSpec:
    return _runtime.SliceSpec(
        name=name,
        herd="sales",
        uid=uuid.uuid4().hex,
        command=(PY, "-I", "-S", "-c", textwrap.dedent(code)),
        **kw,  # type: ignore[arg-type]
    )


async def run_ok(rt: _runtime.SliceRuntime, spec: _runtime.SliceSpec) -> list[str]:
    await rt.start(spec)
    o = await rt.wait(spec.id)
    lines = _logs.tail(rt.log_dir(spec.id))
    assert o.reason == "Completed", lines
    return [ln.split(" ", 3)[3] for ln in lines]


async def test_slices_of_a_herd_share_datasets(runtime: _runtime.SliceRuntime) -> None:
    write_raw = """
        import json, os
        ctx = json.load(open(os.environ["RUNINK_WORK_DIR"] + "/context.json"))
        with open(ctx["outputs"]["raw"], "w") as f:
            f.write("eu,3\\nus,4\\n")
        print(ctx["outputs"]["raw"])
    """
    add_region = """
        import json, os, sys
        ctx = json.load(open(os.environ["RUNINK_WORK_DIR"] + "/context.json"))
        rows = dict(line.split(",") for line in open(ctx["inputs"]["raw"]).read().split())
        out = ctx["outputs"]["regional"]
        os.makedirs(out, exist_ok=True)  # whichever sibling comes first creates it
        with open(os.path.join(out, REGION + ".txt"), "w") as f:
            f.write(rows[REGION])
        print("wrote", REGION)
    """
    a = step("extract", write_raw, outputs={"raw": "raw"})
    out_a = await run_ok(runtime, a)
    raw = runtime.datasets_root.resolve() / "sales" / "raw"
    assert out_a == [str(raw)]
    for region in ("eu", "us"):
        code = f"REGION = {region!r}\n" + textwrap.dedent(add_region)
        s = step(
            f"transform-{region}", code, inputs={"raw": "raw"}, outputs={"regional": "regional"}
        )
        assert await run_ok(runtime, s) == [f"wrote {region}"]
    regional = raw.parent / "regional"
    # Three different unprivileged host UIDs wrote them.
    uids = {p.stat().st_uid for p in (raw, regional / "eu.txt", regional / "us.txt")}
    assert len(uids) == 3 and 0 not in uids
    assert sorted(p.name for p in regional.iterdir()) == ["eu.txt", "us.txt"]
    assert (regional / "us.txt").read_text() == "4"
    herd_dir = raw.parent.stat()
    assert stat.S_IMODE(herd_dir.st_mode) == 0o2770 and herd_dir.st_uid == 0
    lo, hi = runtime.herd_gid_range
    assert lo <= herd_dir.st_gid < hi
    # Created by the first transform slice, group-writable for its siblings.
    reg = regional.stat()
    assert reg.st_gid == herd_dir.st_gid and reg.st_mode & 0o070 == 0o070


async def test_other_herds_cannot_read_a_herds_datasets(runtime: _runtime.SliceRuntime) -> None:
    a = step("owner", "open('/dev/null')", outputs={"raw": "raw"})
    await run_ok(runtime, a)
    (runtime.datasets_root / "sales" / "raw").write_text("secret rows")
    spy = _runtime.SliceSpec(
        name="spy",
        herd="other",
        uid=uuid.uuid4().hex,
        command=("cat", str(runtime.datasets_root / "sales" / "raw")),
    )
    await runtime.start(spy)
    o = await runtime.wait(spy.id)
    assert o.exit_code == 1
    assert any("Permission denied" in ln for ln in _logs.tail(runtime.log_dir(spy.id)))


async def test_file_uri_resolves_to_its_path(
    runtime: _runtime.SliceRuntime, shared_dir: Path
) -> None:
    target = shared_dir / "ledger.csv"
    target.write_text("x")
    os.chmod(target, 0o644)
    s = step(
        "reader",
        "import json,os; c=json.load(open(os.environ['RUNINK_WORK_DIR']+'/context.json'));"
        " print(c['inputs']['ledger'], open(c['inputs']['ledger']).read())",
        inputs={"ledger": f"file://{target}"},
    )
    assert await run_ok(runtime, s) == [f"{target} x"]


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A directory that the slices' UIDs cannot traverse (as /root is)."""
    d = Path(tempfile.mkdtemp(prefix="runink-private-", dir="/var/tmp"))
    os.chmod(d, 0o700)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("where", ["tmp", "private"])
async def test_bad_datasets_root_is_refused_clearly(
    launcher: _launcher.Launcher,
    shared_dir: Path,
    private_dir: Path,
    cgroup_parent: str,
    where: str,
) -> None:
    root = Path("/tmp/runink-datasets") if where == "tmp" else private_dir / "datasets"
    rt = _runtime.SliceRuntime(
        shared_dir / "state", launcher, cgroup_parent=cgroup_parent, datasets_root=root
    )
    async with rt:
        with pytest.raises(_datasets.DatasetError) as err:
            await rt.start(step("x", "pass", outputs={"raw": "raw"}))
        # A slice without named datasets still runs.
        plain = step("plain", "print('ok')")
        await rt.start(plain)
        assert (await rt.wait(plain.id)).reason == "Completed"
    msg = str(err.value)
    if where == "tmp":
        assert "/tmp" in msg and "private /tmp" in msg
    else:
        assert f"{private_dir} (mode 0700)" in msg and "chmod o+x" in msg
    assert _cgroups.list_slices(_cgroups.detect(), cgroup_parent) == set()


async def test_demo_steps_exchange_datasets(runtime: _runtime.SliceRuntime) -> None:
    """The demo pipeline's real step code (sdk/demo.py), run from the checkout's real location."""

    def demo(name: str, **kw: object) -> _runtime.SliceSpec:
        return _runtime.SliceSpec(
            name=name,
            herd="demo",
            uid=uuid.uuid4().hex,
            python=f"runink.sdk.demo:{name.split('-')[0]}",
            **kw,  # type: ignore[arg-type]
        )

    async def ok(spec: _runtime.SliceSpec) -> _runtime.Outcome:
        await runtime.start(spec)
        o = await runtime.wait(spec.id)
        assert o.reason == "Completed", _logs.tail(runtime.log_dir(spec.id))
        return o

    extract = await ok(demo("extract", outputs={"raw-sales": "raw-sales"}))
    assert extract.results["rows"] > 0
    orders = 0
    for region in ("eu", "us", "apac"):
        o = await ok(
            demo(
                f"transform-{region}",
                params={"region": region},
                inputs={"raw-sales": "raw-sales"},
                outputs={"regional-sales": "regional-sales"},
            )
        )
        orders += o.results["orders"]
    report = await ok(
        demo(
            "report",
            params={"title": "Test"},
            inputs={"regional-sales": "regional-sales"},
            outputs={"sales-report": "sales-report"},
            secrets={"report-signing/hmac-key": b"k3y"},
        )
    )
    doc = json.loads((runtime.datasets_root / "demo" / "sales-report").read_text())
    assert doc["report"]["orders"] == orders == extract.results["rows"]
    assert report.results["total_revenue"] == doc["report"]["total_revenue"] > 0


async def test_python_step_from_a_checkout_slices_cannot_traverse(
    launcher: _launcher.Launcher, shared_dir: Path, private_dir: Path, cgroup_parent: str
) -> None:
    # A copy of the package below a 0700 directory, as a CI clone under /root would be.
    pkg = private_dir / "checkout"
    pkg.mkdir()
    shutil.copy(_runtime.PACKAGE_DIR / "__init__.py", pkg)
    shutil.copytree(_runtime.PACKAGE_DIR / "sdk", pkg / "sdk")
    (pkg / "sdk" / "probe.py").write_text(
        "import runink\ndef run(ctx):\n    ctx.set_result('where', runink.__file__)\n"
    )
    rt = _runtime.SliceRuntime(
        shared_dir / "state", launcher, cgroup_parent=cgroup_parent, package_dir=pkg
    )
    async with rt:
        s = _runtime.SliceSpec(
            name="probe", herd="t", uid=uuid.uuid4().hex, python="runink.sdk.probe:run"
        )
        await rt.start(s)
        o = await rt.wait(s.id)
        assert o.reason == "Completed", _logs.tail(rt.log_dir(s.id))
        assert o.results["where"] == "/run/runink/lib/runink/__init__.py"


def test_an_interpreter_slices_cannot_run_is_refused(private_dir: Path) -> None:
    hidden = private_dir / "python3"
    os.symlink(PY, hidden)
    with pytest.raises(_launcher.LaunchError, match="cannot traverse"):
        _runtime.choose_python(str(hidden))
    assert _runtime.choose_python(PY) == PY
