"""Shift calendars and time-of-use tariffs, expanded into UTC intervals for a window.

Shifts, breaks and tariff periods are written in local wall-clock time of an IANA zone; a shift
from 06:00 to 14:00 is 06:00-14:00 on the clock on the wall, whatever the offset that day. So a
24-hour shift (06:00-06:00) lasts 23 real hours on the day clocks go forward and 25 on the day they
go back (Europe/Berlin: last Sundays of March and October).

Rules, written down once:
- A shift instance belongs to the local date it starts on; it is worked when that date's ISO weekday
  is in ``weekdays`` and the date is not a holiday. A night shift that starts the evening before a
  holiday is worked to its end.
- An end at or before the start ends on the next day; so does a break whose start is before the
  shift's start (a 02:00 break of a 22:00-06:00 shift).
- A wall time that does not exist (inside the spring-forward gap) is read with the offset before the
  change: 02:30 becomes 03:30 summer time. An ambiguous one (in the repeated autumn hour) is its first
  occurrence. Both follow ``zoneinfo``'s ``fold=0``.
- A moment is *scheduled* when at least one shift is working then (inside its span, not on one of
  its own breaks). Overlapping shifts (a handover) therefore count once; a break of one shift does
  not stop a shift that overlaps it.
- Intervals are half-open ``[start, end)`` in epoch microseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.models import ShiftCalendar, Tariff, local_time
from shopfloor.domain.query import zone
from shopfloor.domain.timeutil import from_us, to_us

Span = tuple[int, int]


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """One worked shift: its name, the local date it starts on, its span and its breaks (UTC µs)."""

    name: str
    day: date
    start: int
    end: int
    breaks: tuple[Span, ...]

    def working(self) -> list[Span]:
        return subtract([(self.start, self.end)], self.breaks)


@dataclass(frozen=True, slots=True)
class TariffSpan:
    start: int
    end: int
    period: str
    price: float


def at(day: date, wall: time, tz: ZoneInfo) -> int:
    """Epoch µs of a local wall-clock time on a local date (fold=0 for gaps and repeats)."""
    return to_us(datetime.combine(day, wall, tzinfo=tz))


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted union of half-open spans; empty spans are dropped."""
    out: list[Span] = []
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if out and s <= out[-1][1]:
            if e > out[-1][1]:
                out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def subtract(spans: Iterable[Span], cut: Iterable[Span]) -> list[Span]:
    """The parts of ``spans`` not covered by ``cut`` (both any order; result merged and sorted)."""
    cuts = merge(cut)
    out: list[Span] = []
    for s, e in merge(spans):
        cur = s
        for cs, ce in cuts:
            if ce <= cur or cs >= e:
                continue
            if cs > cur:
                out.append((cur, cs))
            cur = max(cur, ce)
            if cur >= e:
                break
        if cur < e:
            out.append((cur, e))
    return out


def clip(spans: Iterable[Span], start: int, end: int) -> list[Span]:
    return [(max(s, start), min(e, end)) for s, e in spans if min(e, end) > max(s, start)]


def total(spans: Iterable[Span]) -> int:
    return sum(e - s for s, e in spans)


def _local_days(start: int, end: int, tz: ZoneInfo, back: int = 1) -> list[date]:
    """Local dates whose instances can touch [start, end): from ``back`` days before the start."""
    first = from_us(start).astimezone(tz).date() - timedelta(days=back)
    last = from_us(max(start, end - 1)).astimezone(tz).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def _holidays(cal: ShiftCalendar) -> frozenset[date]:
    out = set()
    for text in cal.holidays:
        try:
            out.add(date.fromisoformat(text))
        except ValueError:
            raise InvalidInput(f"holiday {text!r} is not a date like 2026-12-25") from None
    return frozenset(out)


def _check_window(start: int, end: int) -> None:
    if end < start:
        raise InvalidInput("the window ends before it starts")


def shift_instances(cal: ShiftCalendar, start: int, end: int) -> list[ShiftInstance]:
    """Every worked shift that overlaps [start, end), unclipped, in start order."""
    _check_window(start, end)
    tz = zone(cal.timezone)
    holidays = _holidays(cal)
    out = []
    for day in _local_days(start, end, tz):
        if day in holidays:
            continue
        for shift in cal.shifts:
            if day.isoweekday() not in shift.weekdays:
                continue
            s_wall, e_wall = local_time(shift.start, "shift start"), local_time(shift.end, "shift end")
            s = at(day, s_wall, tz)
            e = at(day + timedelta(days=1) if e_wall <= s_wall else day, e_wall, tz)
            if e <= start or s >= end:
                continue
            breaks = []
            for b in shift.breaks:
                b_s, b_e = local_time(b.start, "break start"), local_time(b.end, "break end")
                b_day = day + timedelta(days=1) if b_s < s_wall else day
                b_end_day = b_day + timedelta(days=1) if b_e <= b_s else b_day
                breaks.append((at(b_day, b_s, tz), at(b_end_day, b_e, tz)))
            out.append(ShiftInstance(shift.name, day, s, e, tuple(merge(breaks))))
    out.sort(key=lambda i: (i.start, i.name))
    return out


def scheduled(cal: ShiftCalendar | None, start: int, end: int) -> list[Span]:
    """The scheduled (working) time inside [start, end), merged. No calendar: all of it (24/7)."""
    _check_window(start, end)
    if cal is None:
        return [(start, end)] if end > start else []
    working: list[Span] = []
    for inst in shift_instances(cal, start, end):
        working.extend(inst.working())
    return clip(merge(working), start, end)


def planned_stops(cal: ShiftCalendar | None, start: int, end: int) -> list[Span]:
    """Calendar planned stops inside [start, end): off-shift time, breaks, holidays."""
    return subtract([(start, end)], scheduled(cal, start, end))


def shift_at(cal: ShiftCalendar, ts: int) -> ShiftInstance | None:
    """The shift an instant belongs to (for grouping by shift): the latest-starting one that spans it."""
    found = [i for i in shift_instances(cal, ts, ts + 1) if i.start <= ts < i.end]
    return found[-1] if found else None


def tariff_spans(tariff: Tariff, start: int, end: int) -> list[TariffSpan]:
    """[start, end) partitioned by time-of-use period; the first listed period wins an overlap and
    time in no period is ``default_name`` at ``default_price``."""
    _check_window(start, end)
    tz = zone(tariff.timezone)
    out: list[TariffSpan] = []
    taken: list[Span] = []
    for period in tariff.periods:
        p_s, p_e = local_time(period.start, "tariff start"), local_time(period.end, "tariff end")
        raw = []
        for day in _local_days(start, end, tz):
            if day.isoweekday() in period.weekdays:
                e_day = day + timedelta(days=1) if p_e <= p_s else day
                raw.append((at(day, p_s, tz), at(e_day, p_e, tz)))
        free = subtract(clip(raw, start, end), taken)
        out.extend(TariffSpan(s, e, period.name, period.price) for s, e in free)
        taken = merge([*taken, *free])
    rest = subtract([(start, end)], taken)
    out.extend(TariffSpan(s, e, tariff.default_name, tariff.default_price) for s, e in rest)
    out.sort(key=lambda t: t.start)
    return out


def spans_by_label(spans: Sequence[TariffSpan]) -> list[tuple[int, int, str]]:
    return [(t.start, t.end, t.period) for t in spans]
