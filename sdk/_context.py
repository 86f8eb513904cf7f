"""The step-side view of a slice: `Context`, built from what the agent put in the slice's work dir.

The agent (runink.agent._runtime) writes ``$RUNINK_WORK_DIR/context.json`` (params, dataset paths,
secret names) before launch; the work dir is private to the slice (mode 0700, owned by its
ephemeral uid). Results and metrics go back the same way: `Context.set_result` and
`Context.metric` rewrite ``results.json`` / ``metrics.json`` there atomically (temp file + rename),
and the agent reads them when the step exits (results) or while it runs (metrics).
Secrets are files under ``$RUNINK_SECRETS_DIR`` (a tmpfs only this slice sees), or env vars when
the step asked for that.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MAX_RESULT_BYTES = 64 * 1024


class Context:
    """What a ``python: module:function`` step receives; also usable from a ``command`` step."""

    def __init__(self, work_dir: str | os.PathLike[str] | None = None) -> None:
        wd = work_dir or os.environ.get("RUNINK_WORK_DIR")
        if not wd:
            raise RuntimeError("not inside a Runink slice: RUNINK_WORK_DIR is not set")
        self.work_dir = Path(wd)
        try:
            raw = json.loads((self.work_dir / "context.json").read_text())
        except FileNotFoundError:
            raw = {}
        self.params: Mapping[str, Any] = raw.get("params", {})
        self.inputs: Mapping[str, str] = raw.get("inputs", {})
        self.outputs: Mapping[str, str] = raw.get("outputs", {})
        self._secret_env: Mapping[str, str] = raw.get("secret_env", {})
        self.secrets_dir = Path(os.environ.get("RUNINK_SECRETS_DIR", "/run/runink/secrets"))
        self.slice = os.environ.get("RUNINK_SLICE", "")
        self.herd = os.environ.get("RUNINK_HERD", "")
        self.logger = logging.getLogger(f"runink.step.{self.slice or 'local'}")
        self._results: dict[str, Any] = {}
        self._metrics: dict[str, float] = {}

    def secret(self, name: str) -> bytes:
        """A secret's value: from its file, or from the env var the step mapped it to.

        *name* is a file under the secrets dir (``report-signing/hmac-key``), or just a key
        (``hmac-key``) when exactly one of the step's secrets has that key.
        """
        path = self.secrets_dir / name
        if path.exists():
            return path.read_bytes()
        if "/" not in name and self.secrets_dir.is_dir():
            matches = sorted(self.secrets_dir.glob(f"*/{name}"))
            if len(matches) == 1:
                return matches[0].read_bytes()
            if len(matches) > 1:
                found = ", ".join(str(m.relative_to(self.secrets_dir)) for m in matches)
                raise KeyError(f"secret key {name!r} is ambiguous ({found}); name the secret too")
        for var, secret in self._secret_env.items():
            if secret == name and var in os.environ:
                return os.environ[var].encode()
        raise KeyError(f"secret {name!r} is not available to this step")

    def set_result(self, name: str, value: Any) -> None:
        """Record a small JSON-serialisable result, visible in the Slice's status."""
        self._results[name] = value
        data = json.dumps(self._results).encode()
        if len(data) > MAX_RESULT_BYTES:
            del self._results[name]
            raise ValueError(f"results exceed {MAX_RESULT_BYTES} bytes")
        self._write("results.json", data)

    def metric(self, name: str, value: float) -> None:
        """Publish a gauge; the agent re-exposes it on /metrics with slice and herd labels."""
        self._metrics[name] = float(value)
        self._write("metrics.json", json.dumps(self._metrics).encode())

    def _write(self, fname: str, data: bytes) -> None:
        tmp = self.work_dir / f".{fname}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.work_dir / fname)
