"""Manifest parsing and server-side decoding under hypothesis: only RuninkErrors escape."""

from __future__ import annotations

import contextlib
import json

from hypothesis import given, settings, strategies as st

from runink import schemas
from runink.api import _security, _wire
from runink.schemas import errors

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=2048))
def test_yaml_bytes_raise_only_invalid(data: bytes) -> None:
    with contextlib.suppress(errors.RuninkError):
        schemas.load_documents(data, "fuzz.yaml")


@settings(max_examples=8, deadline=None)
@given(st.integers(min_value=1, max_value=1200))
def test_deep_nesting_is_refused_not_a_recursion_error(depth: int) -> None:
    with contextlib.suppress(errors.RuninkError):
        schemas.load_documents("[" * depth + "]" * depth, "deep.yaml")


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_validate_of_arbitrary_objects_raises_only_runink_errors(value: object) -> None:
    obj = value if isinstance(value, dict) else {"kind": "Secret", "spec": value}
    with contextlib.suppress(errors.RuninkError):
        schemas.validate(obj)


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_wire_decode_and_present_never_crash(value: object) -> None:
    try:
        msg = _wire.decode(json.dumps(value).encode())
    except errors.RuninkError:
        return
    assert isinstance(_security.present(msg), dict)
