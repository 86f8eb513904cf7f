"""Resource quantities in Kubernetes notation, converted to integers.

CPU is counted in millicores ("500m" -> 500, "2" -> 2000, 1.5 -> 1500) and memory in bytes
("512Mi", "1Gi", "100M", "1e3"). Herd quotas, Slice requests, Node capacity and the scheduler
all compare these integers, never the strings. Pure functions; invalid input -> errors.Invalid.
"""

from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

from runink.schemas import errors

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QTY_RE = re.compile(
    r"^\s*(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?P<suffix>[A-Za-z]{0,2}|[eE][+-]?[0-9]+)\s*$"
)


def _invalid(what: str, q: object, why: str) -> errors.Invalid:
    return errors.Invalid(
        f"invalid {what} quantity {q!r}", errors=[errors.FieldError(path="", message=why)]
    )


def _split(what: str, q: str) -> tuple[Decimal, str]:
    m = _QTY_RE.match(q)
    if m is None:
        raise _invalid(what, q, "expected a non-negative number with an optional suffix")
    try:
        return Decimal(m.group("num")), m.group("suffix")
    except InvalidOperation as e:  # pragma: no cover - the regex admits only valid decimals
        raise _invalid(what, q, "not a number") from e


def _ceil(d: Decimal) -> int:
    # Round partial units up: a request of 0.1m must not become "free".
    return int(d.to_integral_value(rounding=ROUND_CEILING))


def parse_cpu(q: str | int | float) -> int:
    """CPU quantity -> millicores. Accepts "250m", "2", "0.5", "1e1", 2, 1.5."""
    if isinstance(q, bool):
        raise _invalid("cpu", q, "a boolean is not a quantity")
    if isinstance(q, int):
        if q < 0:
            raise _invalid("cpu", q, "must not be negative")
        return q * 1000
    if isinstance(q, float):
        if not math.isfinite(q) or q < 0:
            raise _invalid("cpu", q, "must be a finite, non-negative number")
        return _ceil(Decimal(repr(q)) * 1000)
    if not isinstance(q, str):
        raise _invalid("cpu", q, "expected a string or a number")
    num, suffix = _split("cpu", q)
    if suffix == "m":
        return _ceil(num)
    if suffix == "":
        return _ceil(num * 1000)
    if suffix[0] in "eE":
        return _ceil(num * (Decimal(10) ** int(suffix[1:])) * 1000)
    if suffix in _DECIMAL:
        return _ceil(num * _DECIMAL[suffix] * 1000)
    raise _invalid(
        "cpu", q, f"unknown suffix {suffix!r} (use 'm' for millicores or none for cores)"
    )


def parse_memory(q: str | int | float) -> int:
    """Memory quantity -> bytes. Accepts "512Mi", "1Gi", "100M", "1k", "1e3", "1024", 1024."""
    if isinstance(q, bool):
        raise _invalid("memory", q, "a boolean is not a quantity")
    if isinstance(q, int):
        if q < 0:
            raise _invalid("memory", q, "must not be negative")
        return q
    if isinstance(q, float):
        # YAML turns "1e3" into a float; accept it when it is a finite non-negative number.
        if not math.isfinite(q) or q < 0:
            raise _invalid("memory", q, "must be a finite, non-negative number")
        return _ceil(Decimal(repr(q)))
    if not isinstance(q, str):
        raise _invalid("memory", q, "expected a string or an integer")
    num, suffix = _split("memory", q)
    if suffix == "":
        return _ceil(num)
    if suffix in _BINARY:
        return _ceil(num * _BINARY[suffix])
    if suffix in _DECIMAL:
        return _ceil(num * _DECIMAL[suffix])
    if suffix[0] in "eE" and suffix[1:].lstrip("+-").isdigit():
        return _ceil(num * (Decimal(10) ** int(suffix[1:])))
    if suffix == "m":
        raise _invalid("memory", q, "millibytes are not a memory unit (did you mean 'M' or 'Mi'?)")
    raise _invalid("memory", q, f"unknown suffix {suffix!r} (use Ki, Mi, Gi, Ti or k, M, G, T)")


def format_cpu(m: int) -> str:
    """Millicores -> the shortest exact form: 2000 -> "2", 1500 -> "1500m"."""
    if m < 0:
        raise _invalid("cpu", m, "must not be negative")
    if m % 1000 == 0:
        return str(m // 1000)
    return f"{m}m"


def format_memory(b: int) -> str:
    """Bytes -> the largest exact binary unit: 536870912 -> "512Mi", 1000 -> "1000"."""
    if b < 0:
        raise _invalid("memory", b, "must not be negative")
    if b == 0:
        return "0"
    for suffix, factor in reversed(_BINARY.items()):
        if b % factor == 0:
            return f"{b // factor}{suffix}"
    return str(b)


__all__ = ["format_cpu", "format_memory", "parse_cpu", "parse_memory"]
