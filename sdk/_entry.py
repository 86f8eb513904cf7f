"""``python -m runink.sdk._entry module:function``: how the agent runs a ``python:`` step.

Imports *module*, builds a `runink.sdk.Context` from the slice's work dir and calls
``function(ctx)``. A non-None return value is stored as the result ``return``. Exit status: 0 on
success, 1 when the function raised (traceback on stderr, which goes to the slice's log, and
``error.json`` {type, message} in the work dir, which the agent puts in the Slice's status
message), 2 for a bad ``module:function`` reference.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from runink.sdk import _context


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or ":" not in args[0]:
        print("usage: python -m runink.sdk._entry module:function", file=sys.stderr)
        return 2
    modname, _, funcname = args[0].partition(":")
    try:
        func = getattr(importlib.import_module(modname), funcname)
    except (ImportError, AttributeError) as e:
        print(f"runink: cannot load {args[0]!r}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = _context.Context()
    try:
        ret = func(ctx)
    except Exception as e:  # noqa: BLE001 - any step failure becomes exit 1 with its traceback
        traceback.print_exc()
        _write_error(ctx.work_dir, e)
        return 1
    if ret is not None:
        ctx.set_result("return", ret)
    return 0


MAX_ERROR_CHARS = 2000


def _write_error(work_dir: Path, e: Exception) -> None:
    """Leave the failure's type and message for the agent (a traceback is only in the log)."""
    doc = {"type": type(e).__name__, "message": str(e)[:MAX_ERROR_CHARS]}
    tmp = work_dir / ".error.json.tmp"
    try:
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, work_dir / "error.json")
    except OSError:
        pass  # a read-only or vanished work dir: the exit code and the log still say it


if __name__ == "__main__":
    sys.exit(main())
