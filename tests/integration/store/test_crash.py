"""SIGKILL a writer mid-stream: every acknowledged write survives, nothing is half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runink import store

pytestmark = pytest.mark.integration

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from runink import store

    async def client(barn, c):
        i = 0
        while True:
            name = f"c{c}-{i}"
            obj = {"kind": "Item", "metadata": {"name": name}, "spec": {"pad": "x" * 200, "i": i}}
            created = await barn.create(obj)
            # Then an update, so a crash can also land between the two writes of one object.
            created["spec"]["done"] = True
            await barn.update(created)
            print(name, flush=True)
            i += 1

    async def main():
        barn = store.open_local(sys.argv[1])
        async with asyncio.TaskGroup() as tg:
            for c in range(8):
                tg.create_task(client(barn, c))

    asyncio.run(main())
    """
)


async def test_acknowledged_writes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "barn"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    acked: list[str] = []
    try:
        assert proc.stdout is not None
        while len(acked) < 300:
            line = proc.stdout.readline()
            assert line, "the writer died before being killed"
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            acked += [line.strip() for line in proc.stdout.read().splitlines() if line.strip()]
            proc.stdout.close()
    barn = store.open_local(path)
    try:
        items = (await barn.list("Item")).items
        by_name = {o["metadata"]["name"]: o for o in items}
        missing = [n for n in acked if n not in by_name or not by_name[n]["spec"].get("done")]
        assert not missing, f"acknowledged writes lost: {missing[:5]}"
        # Nothing half-written: the revision counts exactly the writes the log holds, and each
        # object's resourceVersion points at the log entry that wrote it.
        events = barn.watch("Item", since=store.Revision(0))
        last: dict[str, int] = {}
        for rev in range(1, barn.revision + 1):
            ev = await anext(events)
            assert ev.revision == rev
            last[ev.object["metadata"]["name"]] = rev
        await events.aclose()  # type: ignore[attr-defined]
        assert {n: int(o["metadata"]["resourceVersion"]) for n, o in by_name.items()} == last
        # And the reopened Barn keeps counting from where it stopped.
        before = barn.revision
        await barn.create({"kind": "Item", "metadata": {"name": "after"}})
        assert barn.revision == before + 1
    finally:
        await barn.close()
