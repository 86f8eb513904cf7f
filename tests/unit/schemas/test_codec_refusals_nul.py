"""A character YAML forbids is refused with the file and line, not a parser traceback."""

from __future__ import annotations

import pytest

from runink import schemas
from runink.schemas import errors


def test_a_nul_byte_is_refused_with_file_and_line() -> None:
    with pytest.raises(errors.Invalid) as ei:
        schemas.load_documents("kind: Herd\nmetadata:\n  name: a\x00b\n", "herds.yaml")
    fe = ei.value.errors[0]
    assert fe.file == "herds.yaml"
    assert fe.line == 3
    assert "not allowed" in fe.message
