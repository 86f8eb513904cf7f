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


def test_a_step_sets_exactly_one_of_python_command_and_llm() -> None:
    doc = """apiVersion: runink.io/v1
kind: Pipeline
metadata: {name: p, herd: h}
spec:
  steps:
    - name: ask
      command: ["true"]
      llm: {model: m, endpoint: "http://x/v1", prompt: "{value}", field: f, annotationType: t}
"""
    with pytest.raises(errors.Invalid) as ei:
        schemas.parse_manifests(doc, "p.yaml")
    fe = ei.value.errors[0]
    assert fe.path == "spec.steps[0]"
    assert "command and llm" in fe.message
    ok = doc.replace('      command: ["true"]\n', "")
    [m] = schemas.parse_manifests(ok, "p.yaml")
    assert m.obj["spec"]["steps"][0]["llm"]["annotationType"] == "t"
