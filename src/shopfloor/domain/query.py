"""Aggregation vocabulary and bucket boundaries (time-zone aware for calendar intervals)."""

from __future__ import annotations

import bisect
import enum
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.timeutil import MAX_US, MIN_US, from_us, to_us

MAX_BUCKETS = 20_000


class Agg(enum.StrEnum):
    AVG = "avg"
    MIN = "min"
    MAX = "max"
    SUM = "sum"
    COUNT = "count"
    FIRST = "first"
    LAST = "last"
    TWA = "twa"  # time-weighted average


_INTERVAL_RE = re.compile(r"^(\d+)\s*(s|m|min|h|d|w|mo)$")
_UNITS_US = {"s": 1_000_000, "m": 60_000_000, "min": 60_000_000, "h": 3_600_000_000}


@dataclass(frozen=True, slots=True)
class Interval:
    count: int
    unit: str  # s, m, h (fixed) or d, w, mo (calendar, in the site's zone)

    @property
    def calendar(self) -> bool:
        return self.unit in ("d", "w", "mo")

    @property
    def fixed_us(self) -> int:
        return self.count * _UNITS_US[self.unit]


def parse_interval(text: str) -> Interval:
    m = _INTERVAL_RE.match(text.strip().lower())
    if not m or int(m.group(1)) <= 0:
        raise InvalidInput(f"interval {text!r} is not understood; use e.g. 10s, 5m, 1h, 1d, 1w, 1mo")
    unit = "m" if m.group(2) == "min" else m.group(2)
    return Interval(int(m.group(1)), unit)


def zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "America" is a directory, too long
        raise InvalidInput(f"{name!r} is not an IANA time zone (for example Europe/Berlin)") from None


def buckets(start_us: int, end_us: int, interval: Interval, tz: str | None = None) -> list[tuple[int, int]]:
    """Consecutive [start, end) buckets covering [start_us, end_us).

    Fixed intervals are aligned to the epoch; days, weeks (Monday) and months start at local
    midnight of ``tz``, so a day bucket across a DST change lasts 23 or 25 hours.
    """
    if end_us <= start_us:
        raise InvalidInput("'to' must be after 'from'")
    if start_us < MIN_US or end_us > MAX_US:
        raise InvalidInput("'from' and 'to' must lie between 0001-01-02 and 9999-12-30")
    out: list[tuple[int, int]] = []
    if not interval.calendar:
        step = interval.fixed_us
        b = start_us - (start_us % step)
        if -(-(end_us - b) // step) > MAX_BUCKETS:
            raise InvalidInput(f"that is more than {MAX_BUCKETS} buckets; choose a coarser interval")
        while b < end_us:
            out.append((b, b + step))
            b += step
        if out[0][0] < MIN_US or out[-1][1] > MAX_US:  # a huge interval: buckets no calendar can show
            raise InvalidInput(f"interval {interval.count}{interval.unit} reaches outside the years 1 to 9999")
        return out
    z = zone(tz)
    local = from_us(start_us).astimezone(z)
    first = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if interval.unit == "w":
        first -= timedelta(days=first.weekday())
    elif interval.unit == "mo":
        first = first.replace(day=1)
    cur = first
    while True:
        try:
            nxt = _advance(cur, interval)
        except (OverflowError, ValueError):
            raise InvalidInput(f"interval {interval.count}{interval.unit} reaches past the year 9999") from None
        b0, b1 = to_us(cur.replace(tzinfo=z)), to_us(nxt.replace(tzinfo=z))
        out.append((b0, b1))
        if b1 >= end_us:
            return out
        if len(out) >= MAX_BUCKETS:
            raise InvalidInput(f"that is more than {MAX_BUCKETS} buckets; choose a coarser interval")
        cur = nxt


def _advance(naive_local: datetime, interval: Interval) -> datetime:
    if interval.unit == "d":
        return naive_local + timedelta(days=interval.count)
    if interval.unit == "w":
        return naive_local + timedelta(weeks=interval.count)
    months = naive_local.month - 1 + interval.count
    return naive_local.replace(year=naive_local.year + months // 12, month=months % 12 + 1)


@dataclass(frozen=True, slots=True)
class AggRow:
    start_us: int
    end_us: int
    value: float | None
    count: int


@dataclass(slots=True)
class SampleChanges:
    """Committed samples as columns, in (seq, series, ts) order: what a consumer reads by ingest
    sequence (columns, because it reads them by the hundred thousand)."""

    seq: list[int] = field(default_factory=list)
    series_id: list[int] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    text: list[str | None] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.seq)

    def cut(self, upto_seq: int) -> SampleChanges:
        """The rows with seq <= ``upto_seq``."""
        n = bisect.bisect_right(self.seq, upto_seq)
        if n == len(self.seq):
            return self
        return SampleChanges(self.seq[:n], self.series_id[:n], self.ts_us[:n], self.value[:n], self.text[:n],
                             self.quality[:n])


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    tenant_id: int
    asset_id: int
    ts_us: int
    kind: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    id: int
    tenant_id: int | None
    device: str
    topic: str
    reason: str
    detail: str
    payload: bytes
    received_us: int
