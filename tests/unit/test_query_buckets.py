"""Bucket boundaries: fixed intervals on the epoch grid, calendar intervals at local midnight."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import MAX_BUCKETS, Interval, buckets, parse_interval
from shopfloor.domain.timeutil import from_us, to_us

S = 1_000_000
H = 3600 * S
BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return to_us(datetime(year, month, day, hour, minute, second, tzinfo=UTC))


def local(us: int, tz: str = BERLIN) -> datetime:
    return from_us(us).astimezone(ZoneInfo(tz))


def hours(bs: list[tuple[int, int]]) -> list[float]:
    return [(b1 - b0) / H for b0, b1 in bs]


def assert_contiguous(bs: list[tuple[int, int]], start: int, end: int) -> None:
    assert bs[0][0] <= start < bs[0][1]
    assert bs[-1][0] < end <= bs[-1][1]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bs))


# -- parse_interval ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("10s", Interval(10, "s")), ("5m", Interval(5, "m")), ("5min", Interval(5, "m")),
    (" 2H ", Interval(2, "h")), ("1d", Interval(1, "d")), ("1w", Interval(1, "w")),
    ("3mo", Interval(3, "mo")), ("15 min", Interval(15, "m")),
])
def test_parse_interval(text: str, expected: Interval) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize("text", ["", "h", "0h", "-1h", "1.5h", "1y", "1 hour", "mo1"])
def test_parse_interval_rejects(text: str) -> None:
    with pytest.raises(InvalidInput, match="not understood"):
        parse_interval(text)


def test_interval_kinds() -> None:
    assert parse_interval("15m").fixed_us == 15 * 60 * S
    assert not parse_interval("15m").calendar
    assert parse_interval("1mo").calendar and parse_interval("2w").calendar


# -- fixed intervals --------------------------------------------------------------------------

def test_fixed_buckets_are_aligned_to_the_epoch() -> None:
    start, end = utc(2024, 5, 1, 10, 17), utc(2024, 5, 1, 12, 0)
    bs = buckets(start, end, parse_interval("1h"))
    assert bs == [(utc(2024, 5, 1, 10), utc(2024, 5, 1, 11)), (utc(2024, 5, 1, 11), utc(2024, 5, 1, 12))]


def test_fixed_buckets_ignore_the_time_zone() -> None:
    start, end = utc(2024, 3, 31, 0), utc(2024, 3, 31, 4)
    bs = buckets(start, end, parse_interval("1h"), BERLIN)
    assert hours(bs) == [1.0] * 4
    assert bs[0][0] == start


def test_fixed_buckets_cover_a_ragged_window() -> None:
    start, end = utc(2024, 5, 1, 0, 0, 7), utc(2024, 5, 1, 0, 1, 3)
    bs = buckets(start, end, parse_interval("10s"))
    assert len(bs) == 7
    assert_contiguous(bs, start, end)


def test_exactly_max_buckets_is_allowed_and_more_is_not() -> None:
    assert len(buckets(0, MAX_BUCKETS * S, parse_interval("1s"))) == MAX_BUCKETS
    with pytest.raises(InvalidInput, match="more than"):
        buckets(0, (MAX_BUCKETS + 1) * S, parse_interval("1s"))
    with pytest.raises(InvalidInput, match="more than"):
        buckets(utc(2024, 1, 1), utc(2024, 1, 2), parse_interval("1s"))


def test_one_microsecond_past_max_buckets_is_refused() -> None:
    with pytest.raises(InvalidInput):
        buckets(0, MAX_BUCKETS * S + 1, parse_interval("1s"))


def test_end_must_be_after_start() -> None:
    with pytest.raises(InvalidInput, match="after"):
        buckets(10 * S, 10 * S, parse_interval("1s"))


# -- days across DST --------------------------------------------------------------------------

def test_days_start_at_local_midnight_and_last_23_or_25_hours_on_dst_days() -> None:
    spring = buckets(utc(2024, 3, 30, 12), utc(2024, 4, 1, 12), parse_interval("1d"), BERLIN)
    assert hours(spring) == [24.0, 23.0, 24.0]
    assert [local(b0).replace(tzinfo=None) for b0, _ in spring] == [
        datetime(2024, 3, 30), datetime(2024, 3, 31), datetime(2024, 4, 1)]
    autumn = buckets(utc(2024, 10, 27, 1), utc(2024, 10, 27, 2), parse_interval("1d"), BERLIN)
    assert hours(autumn) == [25.0]
    assert autumn[0][0] == utc(2024, 10, 26, 22)  # 00:00 CEST


def test_a_start_before_local_midnight_in_utc_belongs_to_the_local_day() -> None:
    # 23:30 UTC on 14 Jan is 00:30 on 15 Jan in Berlin
    bs = buckets(utc(2024, 1, 14, 23, 30), utc(2024, 1, 15, 1), parse_interval("1d"), BERLIN)
    assert bs == [(utc(2024, 1, 14, 23), utc(2024, 1, 15, 23))]


def test_days_in_utc_without_a_zone() -> None:
    bs = buckets(utc(2024, 3, 30, 12), utc(2024, 4, 1), parse_interval("1d"))
    assert bs == [(utc(2024, 3, 30), utc(2024, 3, 31)), (utc(2024, 3, 31), utc(2024, 4, 1))]


def test_multi_day_buckets() -> None:
    # from 29 March to 1 April 23:00 local: 29-30 (48 h), 31 March-1 April (47 h)
    bs = buckets(utc(2024, 3, 29, 12), utc(2024, 4, 1, 21), parse_interval("2d"), BERLIN)
    assert hours(bs) == [48.0, 47.0]


# -- weeks and months -------------------------------------------------------------------------

def test_weeks_start_on_monday_at_local_midnight() -> None:
    # Wednesday 27 March 2024 .. Wednesday 3 April; the DST change falls into the first week
    bs = buckets(utc(2024, 3, 27, 12), utc(2024, 4, 3, 12), parse_interval("1w"), BERLIN)
    starts = [local(b0) for b0, _ in bs]
    assert [(d.date().isoformat(), d.weekday(), d.hour) for d in starts] == [
        ("2024-03-25", 0, 0), ("2024-04-01", 0, 0)]
    assert hours(bs) == [7 * 24 - 1, 7 * 24]


def test_a_monday_start_is_its_own_week() -> None:
    bs = buckets(utc(2024, 4, 7, 22), utc(2024, 4, 8, 1), parse_interval("1w"), BERLIN)  # Mon 00:00 CEST
    assert bs[0][0] == utc(2024, 4, 7, 22) and len(bs) == 1


def test_months_start_on_the_first_at_local_midnight() -> None:
    end = utc(2024, 3, 31, 22)  # 1 April 00:00 CEST: the last bucket ends exactly there
    bs = buckets(utc(2024, 1, 15), end, parse_interval("1mo"), BERLIN)
    assert [local(b0).date().isoformat() for b0, _ in bs] == ["2024-01-01", "2024-02-01", "2024-03-01"]
    assert hours(bs) == [31 * 24, 29 * 24, 31 * 24 - 1]  # leap February, March loses an hour
    assert bs[0][0] == utc(2023, 12, 31, 23) and bs[-1][1] == end


def test_months_roll_over_the_year() -> None:
    bs = buckets(utc(2023, 11, 10), utc(2024, 2, 10), parse_interval("2mo"), "UTC")
    assert bs == [(utc(2023, 11, 1), utc(2024, 1, 1)), (utc(2024, 1, 1), utc(2024, 3, 1))]


def test_too_many_calendar_buckets() -> None:
    with pytest.raises(InvalidInput, match="more than"):
        buckets(utc(1950, 1, 1), utc(2024, 1, 1), parse_interval("1d"), BERLIN)


def test_unknown_time_zone() -> None:
    with pytest.raises(InvalidInput, match="IANA"):
        buckets(utc(2024, 1, 1), utc(2024, 1, 2), parse_interval("1d"), "Europe/Nowhere")


@pytest.mark.parametrize("text", ["100000000d", "99999999999mo"])
def test_absurd_calendar_interval_is_invalid_input(text: str) -> None:
    with pytest.raises(InvalidInput):
        buckets(utc(2024, 1, 1), utc(2024, 1, 2), parse_interval(text), BERLIN)
