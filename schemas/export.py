"""Write the JSON Schema of every built-in kind to schemas/jsonschema/<plural>.json.

Run ``python -m runink.schemas.export`` after changing a model; a unit test fails while the
committed files differ from the models (editors and API discovery read these files).
"""

from __future__ import annotations

import json
import pathlib
import sys

from runink.schemas import _base, _explain, registry

OUT_DIR = pathlib.Path(__file__).parent / "jsonschema"


def render() -> dict[str, str]:
    """File name -> content for every built-in kind."""
    return {
        f"{info.plural}.json": json.dumps(
            _explain.json_schema(info.plural), indent=2, sort_keys=True
        )
        + "\n"
        for info in registry.all_kinds()
        if info.api_version == _base.API_VERSION
    }


def main(argv: list[str] | None = None) -> int:
    out = pathlib.Path(argv[0]) if argv else OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    files = render()
    for name, text in files.items():
        (out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(files)} schemas to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
