"""Resource quantities: Kubernetes notation to integers and back."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from runink.schemas import errors, quantity


@pytest.mark.parametrize(
    ("q", "milli"),
    [
        ("500m", 500),
        ("2", 2000),
        (2, 2000),
        (1.5, 1500),
        ("0.5", 500),
        ("0.25", 250),
        ("1.5", 1500),
        ("0", 0),
        ("100m", 100),
        ("1k", 1_000_000),
        ("0.0001", 1),
    ],
)
def test_parse_cpu(q: str | int | float, milli: int) -> None:
    assert quantity.parse_cpu(q) == milli


@pytest.mark.parametrize(
    ("q", "nbytes"),
    [
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("100M", 100_000_000),
        ("1e3", 1000),
        ("1k", 1000),
        ("1Ki", 1024),
        (4096, 4096),
        ("4096", 4096),
        ("1.5Gi", 3 * 2**29),
        ("2Ti", 2 * 2**40),
        (1e3, 1000),
    ],
)
def test_parse_memory(q: str | int, nbytes: int) -> None:
    assert quantity.parse_memory(q) == nbytes


@pytest.mark.parametrize(
    "q", ["", "abc", "-1", "1x", "1.2.3", "m", "1 Gi x", True, -5, float("nan")]
)
def test_bad_cpu(q: object) -> None:
    with pytest.raises(errors.Invalid, match="invalid cpu quantity"):
        quantity.parse_cpu(q)  # type: ignore[arg-type]


@pytest.mark.parametrize("q", ["", "1GB", "-1Mi", "12m", "Mi", None, -1])
def test_bad_memory(q: object) -> None:
    with pytest.raises(errors.Invalid, match="invalid memory quantity"):
        quantity.parse_memory(q)  # type: ignore[arg-type]


def test_millibytes_hint() -> None:
    with pytest.raises(errors.Invalid, match="did you mean 'M' or 'Mi'"):
        quantity.parse_memory("512m")


def test_format() -> None:
    assert quantity.format_cpu(2000) == "2"
    assert quantity.format_cpu(1500) == "1500m"
    assert quantity.format_memory(512 * 2**20) == "512Mi"
    assert quantity.format_memory(2**30) == "1Gi"
    assert quantity.format_memory(1000) == "1000"
    assert quantity.format_memory(0) == "0"


@given(st.integers(min_value=0, max_value=10**12))
def test_cpu_round_trip(m: int) -> None:
    assert quantity.parse_cpu(quantity.format_cpu(m)) == m


@given(st.integers(min_value=0, max_value=2**62))
def test_memory_round_trip(b: int) -> None:
    assert quantity.parse_memory(quantity.format_memory(b)) == b
