"""python: steps import the agent's own environment inside a real slice (pydantic, runink.schemas),
and the built-in quality step runs there on a CSV dataset, failing with the rule's message."""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path

import pydantic
import pytest

from runink.agent import _logs, _runtime

pytestmark = pytest.mark.privileged


async def test_python_step_imports_pydantic_and_schemas(
    runtime: _runtime.SliceRuntime, shared_dir: Path
) -> None:
    (shared_dir / "schemastep.py").write_text(
        "import os, sys, pydantic\n"
        "from runink.schemas import errors\n"
        "def run(ctx):\n"
        "    ctx.set_result('pydantic', [pydantic.VERSION, pydantic.__file__])\n"
        "    ctx.set_result('uid', os.getuid())\n"
        "    return errors.Invalid('x').reason\n"
    )
    s = _runtime.SliceSpec(
        name="schemastep",
        herd="test",
        uid=uuid.uuid4().hex,
        python="schemastep:run",
        env={"PYTHONPATH": str(shared_dir)},
    )
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.reason == "Completed", _logs.tail(runtime.log_dir(s.id))
    version, where = o.results["pydantic"]
    # The agent's own pydantic, read through the read-only bind mount, not a system copy.
    assert version == pydantic.VERSION
    assert where.startswith(_runtime.SITE_DIR + "/")
    assert o.results["return"] == "Invalid"
    assert o.results["uid"] == 0  # root of its user namespace only (mapped to an ephemeral UID)


async def test_site_packages_are_read_only_in_the_slice(
    runtime: _runtime.SliceRuntime, shared_dir: Path
) -> None:
    (shared_dir / "writer.py").write_text(
        "import os, pydantic\n"
        "def run(ctx):\n"
        "    try:\n"
        "        open(os.path.join(os.path.dirname(pydantic.__file__), 'x'), 'w')\n"
        "    except OSError as e:\n"
        "        return e.errno\n"
        "    return 0\n"
    )
    s = _runtime.SliceSpec(
        name="writer",
        herd="test",
        uid=uuid.uuid4().hex,
        python="writer:run",
        env={"PYTHONPATH": str(shared_dir)},
    )
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.reason == "Completed", _logs.tail(runtime.log_dir(s.id))
    assert o.results["return"] in (errno.EROFS, errno.EACCES)


def _quality_spec(csv: Path, checks: list[dict[str, object]]) -> _runtime.SliceSpec:
    return _runtime.SliceSpec(
        name=f"quality-{uuid.uuid4().hex[:6]}",
        herd="test",
        uid=uuid.uuid4().hex,
        python="runink.sdk.quality:check",
        params={"rules": json.dumps({"metadata": {"name": "orders-rules"}, "spec": {
            "checks": checks, "blocking": True}})},
        inputs={"orders": f"file://{csv}"},
    )  # fmt: skip


@pytest.fixture
def orders_csv(shared_dir: Path) -> Path:
    csv = shared_dir / "orders.csv"
    csv.write_text("id,amount\n1,10.5\n2,\n3,7\n")
    os.chmod(csv, 0o644)
    return csv


async def test_quality_step_passes_on_a_csv_dataset(
    runtime: _runtime.SliceRuntime, orders_csv: Path
) -> None:
    s = _quality_spec(
        orders_csv,
        [{"type": "row_count", "min": 3}, {"type": "unique", "column": "id"}],
    )
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.reason == "Completed", _logs.tail(runtime.log_dir(s.id))
    assert o.results["return"] == {"passed": True, "rowCount": 3}
    assert o.results["quality"]["passed"] is True


async def test_quality_step_fails_with_the_rules_message(
    runtime: _runtime.SliceRuntime, orders_csv: Path
) -> None:
    s = _quality_spec(orders_csv, [{"type": "not_null", "column": "amount"}])
    await runtime.start(s)
    o = await runtime.wait(s.id)
    assert o.reason == "Error" and o.exit_code == 1, _logs.tail(runtime.log_dir(s.id))
    assert "QualityFailed" in o.message
    assert "orders-rules[0]" in o.message and "amount" in o.message, o.message
    assert o.results["quality"]["passed"] is False
