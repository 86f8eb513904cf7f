"""Cron schedules for Pipelines: parse a 5-field expression and find the next firing time.

Pure and clock-free: the pipeline controller passes ``now``. Times are UTC. Supports the classic
syntax (``*``, lists, ranges, steps, month and weekday names) and the ``@hourly``-style macros;
day-of-month and day-of-week combine with OR when both are restricted, as in Vixie cron.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from runink.schemas import errors

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


@dataclass(frozen=True, slots=True)
class Schedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    days_restricted: bool
    weekdays_restricted: bool

    def matches(self, t: dt.datetime) -> bool:
        return (
            t.minute in self.minutes
            and t.hour in self.hours
            and t.month in self.months
            and self._day_ok(t)
        )

    def next_after(self, now: float) -> float:
        """The first firing time strictly after ``now`` (epoch seconds, UTC)."""
        t = dt.datetime.fromtimestamp(now, dt.UTC).replace(second=0, microsecond=0)
        t += dt.timedelta(minutes=1)
        # Skip whole days/hours that cannot match, so even yearly schedules take few steps.
        for _ in range(366 * 24 * 60 * 5):
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_ok(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
                continue
            return t.timestamp()
        raise errors.Invalid(f"schedule {self.expression!r} never fires")

    def last_at_or_before(self, now: float, *, not_before: float) -> float | None:
        """The latest firing time in ``[not_before, now]``, or ``None``."""
        last = None
        t = self.next_after(not_before - 60)
        while t <= now:
            last = t
            t = self.next_after(t)
        return last

    def _day_ok(self, t: dt.datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow


def parse(expression: str) -> Schedule:
    """Parse a cron expression; errors name the field and the bad part."""
    text = _MACROS.get(expression.strip().lower(), expression.strip())
    parts = text.split()
    if len(parts) != 5:
        raise errors.Invalid(
            f"schedule {expression!r}: expected 5 fields (minute hour day-of-month month "
            f"day-of-week) or a macro such as @daily, got {len(parts)}"
        )
    sets: list[frozenset[int]] = []
    for part, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True):
        sets.append(_field(expression, part, name, lo, hi, names))
    weekdays = frozenset(d % 7 for d in sets[4])
    return Schedule(
        expression=expression,
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        days_restricted=parts[2] != "*",
        weekdays_restricted=parts[4] != "*",
    )


def _field(
    expr: str, part: str, name: str, lo: int, hi: int, names: dict[str, int]
) -> frozenset[int]:
    out: set[int] = set()
    for item in part.split(","):
        step = 1
        if "/" in item:
            item, step_text = item.split("/", 1)
            step = _int(expr, step_text, name, names)
            if step <= 0:
                raise errors.Invalid(f"schedule {expr!r}: {name} step must be positive")
        if item == "*":
            a, b = lo, hi
        elif "-" in item:
            a_text, b_text = item.split("-", 1)
            a, b = _int(expr, a_text, name, names), _int(expr, b_text, name, names)
        else:
            a = _int(expr, item, name, names)
            b = hi if step != 1 else a
        if not (lo <= a <= hi and lo <= b <= hi) or a > b:
            raise errors.Invalid(f"schedule {expr!r}: {name} {item!r} is outside {lo}-{hi}")
        out.update(range(a, b + 1, step))
    return frozenset(out)


def _int(expr: str, text: str, name: str, names: dict[str, int]) -> int:
    key = text.strip().lower()
    if key in names:
        return names[key]
    try:
        return int(key)
    except ValueError:
        raise errors.Invalid(f"schedule {expr!r}: {name} {text!r} is not a number") from None
