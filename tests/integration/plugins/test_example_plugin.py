"""Issue 4's first Done-when: pip-install the example plugin, restart ``runink up``, use its kind.

A real ``runink up`` subprocess loads the plugin through its entry point; the user drives it with
the real CLI (subprocesses), which loads the installed plugins' kinds itself ("plain-cli"); the
other variant also imports the plugin module explicitly, as a script embedding the client would.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = pytest.mark.integration

GREETING = """\
apiVersion: example.runink.io/v1
kind: Greeting
metadata:
  name: hi
spec:
  name: Ada
  excited: {excited}
"""

cli_variants = pytest.mark.parametrize(
    "plugin_imported",
    [
        pytest.param(False, id="plain-cli"),
        pytest.param(True, id="cli-with-plugin-imported"),
    ],
)


def _wait_reply(up: Any, want: str, plugin_imported: bool, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = up.cli(
            "get",
            "greeting",
            "hi",
            "-o",
            "jsonpath={.status.reply}",
            plugin_imported=plugin_imported,
        )
        assert out.returncode == 0, out.stderr
        if out.stdout.strip() == want or time.monotonic() > deadline:
            return str(out.stdout.strip())
        time.sleep(0.1)


@cli_variants
def test_the_plugin_kind_is_applied_listed_described_explained_and_reconciled(
    example_up: Any, plugin_imported: bool
) -> None:
    up = example_up
    manifest = up.root / f"greeting-{plugin_imported}.yaml"
    manifest.write_text(GREETING.format(excited="false"))
    applied = up.cli("apply", "-f", str(manifest), plugin_imported=plugin_imported)
    assert applied.returncode == 0, applied.stderr
    assert "greeting/hi" in applied.stdout

    # The controller runs in the `runink up` process: status appears without any client help.
    assert _wait_reply(up, "Hello, Ada.", plugin_imported) == "Hello, Ada."

    listed = up.cli("get", "greetings", plugin_imported=plugin_imported)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:2] == ["NAME", "REPLY"]
    assert row.split()[:3] == ["hi", "Hello,", "Ada."]
    # The short name the plugin declared works too.
    assert up.cli("get", "gr", "hi", plugin_imported=plugin_imported).returncode == 0

    described = up.cli("describe", "greeting", "hi", plugin_imported=plugin_imported)
    assert described.returncode == 0, described.stderr
    assert "Kind:         Greeting" in described.stdout
    assert "API Version:  example.runink.io/v1" in described.stdout
    ready = [
        line.split() for line in described.stdout.splitlines() if line.strip().startswith("Ready")
    ]
    assert ready and ready[0][:3] == ["Ready", "True", "Replied"]

    explained = up.cli("explain", "greeting.spec", plugin_imported=plugin_imported)
    assert explained.returncode == 0, explained.stderr
    assert "Who is greeted." in explained.stdout  # the plugin's field docstring
    assert "excited" in explained.stdout

    kinds = up.cli("api-resources", plugin_imported=plugin_imported)
    assert kinds.returncode == 0, kinds.stderr
    rows = [line.split() for line in kinds.stdout.splitlines()]
    assert ["greetings", "gr", "example.runink.io/v1", "true", "Greeting"] in rows

    # A spec change is reconciled again (level-triggered), and the reply follows it.
    manifest.write_text(GREETING.format(excited="true"))
    assert up.cli("apply", "-f", str(manifest), plugin_imported=plugin_imported).returncode == 0
    assert _wait_reply(up, "Hello, Ada!", plugin_imported) == "Hello, Ada!"

    deleted = up.cli("delete", "greeting", "hi", plugin_imported=plugin_imported)
    assert deleted.returncode == 0, deleted.stderr


def test_runink_controllers_lists_the_plugin_controller_as_healthy(example_up: Any) -> None:
    rows = example_up.controllers()
    assert rows["greetings"]["plugin"] == "greetings"
    assert rows["greetings"]["kind"] == "Greeting"
    assert rows["greetings"]["healthy"] and rows["greetings"]["running"]
    # The built-ins run beside it.
    assert {"runs", "scheduler", "pipelines"} <= rows.keys()
    table = example_up.cli("controllers", "--url", example_up.url)
    assert table.returncode == 0, table.stderr  # exit 0 means every controller is healthy
    line = next(r for r in table.stdout.splitlines() if r.startswith("greetings"))
    assert line.split()[:4] == ["greetings", "Greeting", "greetings", "yes"]


def test_the_plugin_loaded_without_warnings(example_up: Any) -> None:
    assert "warning" not in example_up.output()
