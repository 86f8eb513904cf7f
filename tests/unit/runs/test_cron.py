"""Cron schedules: parsing errors a person can act on, and next firing times."""

from __future__ import annotations

import datetime as dt

import pytest

from runink.controllers import _cron
from runink.schemas import errors


def _ts(s: str) -> float:
    return dt.datetime.fromisoformat(s).replace(tzinfo=dt.UTC).timestamp()


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


@pytest.mark.parametrize(
    ("expr", "now", "expected"),
    [
        ("*/15 * * * *", "2026-11-27 10:07", "2026-11-27 10:15"),
        ("0 2 * * *", "2026-11-27 02:00", "2026-11-28 02:00"),
        ("@hourly", "2026-11-27 10:59", "2026-11-27 11:00"),
        ("30 9 * * mon-fri", "2026-11-27 10:00", "2026-11-30 09:30"),  # Fri -> Mon
        ("0 0 1 jan *", "2026-11-27 00:00", "2027-01-01 00:00"),
        ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00"),
        ("0 12 1 * 0", "2026-11-27 00:00", "2026-11-29 12:00"),  # day 1 OR Sunday
        ("5,10 1-2 * * 7", "2026-11-28 00:00", "2026-11-29 01:05"),  # 7 is Sunday too
    ],
)
def test_next_after(expr: str, now: str, expected: str) -> None:
    assert _iso(_cron.parse(expr).next_after(_ts(now))) == expected


@pytest.mark.parametrize(
    ("expr", "fragment"),
    [
        ("* * * *", "expected 5 fields"),
        ("61 * * * *", "minute '61' is outside 0-59"),
        ("* * * foo *", "month 'foo' is not a number"),
        ("*/0 * * * *", "step must be positive"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expr: str, fragment: str) -> None:
    with pytest.raises(errors.Invalid, match=fragment):
        _cron.parse(expr)


def test_last_firing_in_window_for_missed_schedules() -> None:
    s = _cron.parse("0 * * * *")
    last = s.last_at_or_before(_ts("2026-11-27 10:30"), not_before=_ts("2026-11-27 07:10"))
    assert last is not None
    assert _iso(last) == "2026-11-27 10:00"
    assert s.last_at_or_before(_ts("2026-11-27 10:30"), not_before=_ts("2026-11-27 10:01")) is None
