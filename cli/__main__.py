"""``python -m runink.cli`` and the ``runink`` console script."""

from __future__ import annotations

import sys

from runink.cli._app import main

if __name__ == "__main__":
    sys.exit(main())
