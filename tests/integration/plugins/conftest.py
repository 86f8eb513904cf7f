"""Plugins installed as a user would (pip), and a real ``runink up`` process that loads them.

Plugins go into a ``pip install --target`` directory that only the subprocesses see (PYTHONPATH),
so the shared venv is never touched; importlib.metadata finds their dist-info, hence their
``runink.controllers`` entry points, on that path. Sources are copied first because setuptools
builds in the source tree (build/, *.egg-info) and the example's tree must stay clean. Data dirs
live under /var/tmp: slices get a private /tmp, so an agent state dir there would be invisible.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_PLUGIN = REPO / "examples" / "runink-example-plugin"

# Run the real CLI in a process that has imported the plugin's module first (see test_example_plugin).
CLI_WITH_PLUGIN_IMPORTED = (
    "import sys, runink_example_plugin\n"
    "from runink.cli import _app\n"
    "sys.exit(_app.main(sys.argv[1:]))\n"
)


def pip_install(src: Path, target: Path) -> None:
    """``pip install --no-deps --target`` from a copy of ``src`` (offline, no build isolation)."""
    with tempfile.TemporaryDirectory(prefix="runink-plugin-src-", dir="/var/tmp") as tmp:
        copy = Path(tmp) / src.name
        shutil.copytree(src, copy, ignore=shutil.ignore_patterns("tests", "build", "*.egg-info"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-index",
                "--no-build-isolation",
                "--disable-pip-version-check",
                "--target",
                str(target),
                str(copy),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def write_broken_plugins(root: Path) -> Path:
    """A distribution with two bad entry points: one raises at import, one in every reconcile."""
    src = root / "runink-broken-plugins"
    src.mkdir()
    (src / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools>=69"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "runink-broken-plugins"
            version = "0.0.1"

            [project.entry-points."runink.controllers"]
            boom-at-import = "boom_at_import:controllers"
            boom-in-reconcile = "boom_in_reconcile:controllers"

            [tool.setuptools]
            py-modules = ["boom_at_import", "boom_in_reconcile"]
            """
        )
    )
    (src / "boom_at_import.py").write_text(
        'raise RuntimeError("boom_at_import is broken on purpose")\n'
    )
    (src / "boom_in_reconcile.py").write_text(
        textwrap.dedent(
            """\
            from runink.controllers import Controller, PluginContext, Request, Result


            class Exploding:
                async def reconcile(self, request: Request) -> Result:
                    raise RuntimeError(f"boom_in_reconcile cannot handle {request.name}")


            def controllers(ctx: PluginContext) -> list[Controller]:
                # Watches a built-in kind, beside the run controller, on purpose.
                return [Controller.builder("exploding").for_kind("PipelineRun").build(Exploding())]
            """
        )
    )
    return src


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UpProcess:
    """One ``runink up`` subprocess with plugins on its path, and CLI helpers against it."""

    def __init__(self, root: Path, site: Path, *, agent: bool) -> None:
        self.root = root
        self.site = site
        self.config = root / "config"
        self.controller_port = free_port()
        self.env = {**os.environ, "PYTHONPATH": str(site), "NO_COLOR": "1", "COLUMNS": "200"}
        ready = root / "ready"
        argv = [
            sys.executable,
            "-m",
            "runink.cli",
            "--config",
            str(self.config),
            "up",
            "--data-dir",
            str(root / "data"),
            "--port",
            "0",
            "--controller-port",
            str(self.controller_port),
            "--ready-file",
            str(ready),
        ]
        if not agent:
            argv.append("--no-agent")
        self.log = (root / "up.log").open("wb")
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"runink up exited {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"runink up not ready in 60 s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.root / "up.log").read_text(errors="replace")

    def cli(self, *argv: str, plugin_imported: bool = False) -> subprocess.CompletedProcess[str]:
        """The real CLI as a subprocess (optionally after importing the example plugin)."""
        head = ["-c", CLI_WITH_PLUGIN_IMPORTED] if plugin_imported else ["-m", "runink.cli"]
        return subprocess.run(
            [sys.executable, *head, "--config", str(self.config), *argv],
            capture_output=True,
            text=True,
            timeout=90,
            env=self.env,
            cwd=self.root,
        )

    def controllers(self) -> dict[str, dict[str, Any]]:
        out = self.cli("controllers", "--url", self.url, "-o", "json")
        assert out.returncode == 0, out.stderr
        return {row["name"]: row for row in json.loads(out.stdout)}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    def stop(self) -> None:
        """SIGTERM (graceful: the agent stops its slices), then SIGKILL the whole group."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=10)
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="runink-plugins-", dir="/var/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def example_site(workdir: Path) -> Path:
    site = workdir / "site-example"
    pip_install(EXAMPLE_PLUGIN, site)
    return site


@pytest.fixture(scope="module")
def example_up(workdir: Path, example_site: Path) -> Iterator[UpProcess]:
    """``runink up`` (no agent: the Greeting kind needs none) with the example plugin installed."""
    root = workdir / "example"
    root.mkdir()
    up = UpProcess(root, example_site, agent=False)
    try:
        yield up
    finally:
        up.stop()


@pytest.fixture(scope="module")
def broken_up(workdir: Path) -> Iterator[UpProcess]:
    """``runink up`` with a local agent, the example plugin and two broken plugins installed."""
    if os.geteuid() != 0:
        pytest.skip("slices need root for cgroups and namespaces")
    site = workdir / "site-broken"
    pip_install(EXAMPLE_PLUGIN, site)
    pip_install(write_broken_plugins(workdir), site)
    root = workdir / "broken"
    root.mkdir()
    up = UpProcess(root, site, agent=True)
    try:
        yield up
    finally:
        up.stop()
