"""Shift calendars and tariffs → UTC intervals: DST days, breaks, overlaps, holidays, weekdays."""

from __future__ import annotations

import itertools

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.calendar import (
    merge,
    planned_stops,
    scheduled,
    shift_at,
    shift_instances,
    subtract,
    tariff_spans,
    total,
)
from shopfloor.domain.kpi.models import Break, Shift, ShiftCalendar, Tariff, TariffPeriod
from shopfloor.domain.timeutil import parse_ts

H = 3_600_000_000
MIN = 60_000_000
BERLIN = "Europe/Berlin"


def t(text: str) -> int:
    return parse_ts(text)


def hours(spans: list[tuple[int, int]]) -> float:
    return total(spans) / H


def test_a_24_hour_shift_lasts_23_hours_in_march_and_25_in_october() -> None:
    cal = ShiftCalendar(BERLIN, [Shift("day", "06:00", "06:00")])
    march = shift_instances(cal, t("2024-03-30T12:00:00Z"), t("2024-03-30T13:00:00Z"))
    assert [(i.start, i.end) for i in march] == [(t("2024-03-30T05:00:00Z"), t("2024-03-31T04:00:00Z"))]
    assert (march[0].end - march[0].start) / H == 23
    october = shift_instances(cal, t("2024-10-26T12:00:00Z"), t("2024-10-26T13:00:00Z"))
    assert (october[0].end - october[0].start) / H == 25


def test_three_shifts_cover_a_local_day_of_23_or_25_hours() -> None:
    cal = ShiftCalendar(BERLIN, [Shift("early", "06:00", "14:00"), Shift("late", "14:00", "22:00"),
                                 Shift("night", "22:00", "06:00")])
    # the local day 2024-03-31 00:00 CET .. 2024-04-01 00:00 CEST is 23 hours long
    day = (t("2024-03-31T00:00:00+01:00"), t("2024-04-01T00:00:00+02:00"))
    assert (day[1] - day[0]) / H == 23
    assert hours(scheduled(cal, *day)) == 23
    assert planned_stops(cal, *day) == []
    # the night shift into the autumn change is 9 real hours, 22:00 CEST to 06:00 CET
    nights = [i for i in shift_instances(cal, t("2024-10-26T20:00:00Z"), t("2024-10-27T06:00:00Z"))
              if i.name == "night"]
    assert [(i.end - i.start) / H for i in nights] == [9]


def test_breaks_are_planned_stops_and_night_breaks_fall_after_midnight() -> None:
    cal = ShiftCalendar(BERLIN, [
        Shift("early", "06:00", "14:00", breaks=[Break("10:00", "10:30")]),
        Shift("night", "22:00", "06:00", breaks=[Break("02:00", "02:30"), Break("23:50", "00:10")]),
    ])
    start, end = t("2024-06-03T00:00:00+02:00"), t("2024-06-04T00:00:00+02:00")
    insts = shift_instances(cal, start, end)
    early = next(i for i in insts if i.name == "early" and i.start >= start)
    assert early.breaks == ((t("2024-06-03T10:00:00+02:00"), t("2024-06-03T10:30:00+02:00")),)
    night = next(i for i in insts if i.name == "night" and i.start >= start)
    assert night.breaks == (
        (t("2024-06-03T23:50:00+02:00"), t("2024-06-04T00:10:00+02:00")),
        (t("2024-06-04T02:00:00+02:00"), t("2024-06-04T02:30:00+02:00")),
    )
    assert (total(night.working())) / MIN == 8 * 60 - 50
    # in the local day: the night shift of the 2nd until 06:00 minus its 02:00 break (5.5 h, the
    # 00:00-00:10 tail of its first break included), the early shift 7.5 h, the 3rd's night from 22:00 to
    # 23:50 (1 h 50)
    assert hours(scheduled(cal, start, end)) == pytest.approx(6 - 0.5 - 10 / 60 + 7.5 + 110 / 60)


def test_overlapping_shifts_count_once_and_one_shifts_break_does_not_stop_the_other() -> None:
    cal = ShiftCalendar("UTC", [
        Shift("a", "06:00", "14:15", breaks=[Break("13:50", "14:15")]),
        Shift("b", "13:45", "22:00", breaks=[Break("18:00", "18:30")]),
    ])
    start, end = t("2024-06-03T00:00:00Z"), t("2024-06-04T00:00:00Z")
    work = scheduled(cal, start, end)
    assert work == [(t("2024-06-03T06:00:00Z"), t("2024-06-03T18:00:00Z")),
                    (t("2024-06-03T18:30:00Z"), t("2024-06-03T22:00:00Z"))]
    assert hours(work) == 15.5
    assert hours(planned_stops(cal, start, end)) == 8.5


def test_holidays_cancel_shifts_that_start_on_them_not_the_night_before() -> None:
    cal = ShiftCalendar(BERLIN, [Shift("early", "06:00", "14:00"), Shift("night", "22:00", "06:00")],
                        holidays=["2024-12-25"])
    start, end = t("2024-12-25T00:00:00+01:00"), t("2024-12-26T00:00:00+01:00")
    assert scheduled(cal, start, end) == [(start, t("2024-12-25T06:00:00+01:00"))]
    with pytest.raises(InvalidInput, match="holiday"):
        scheduled(ShiftCalendar("UTC", [Shift("x", "06:00", "14:00")], holidays=["25.12."]), start, end)


def test_weekdays_limit_shifts_to_their_start_day() -> None:
    cal = ShiftCalendar(BERLIN, [Shift("night", "22:00", "06:00", weekdays=[1, 2, 3, 4, 5])])
    # Thursday's night runs into Friday, Friday's into Saturday; no shift starts Saturday or Sunday
    start, end = t("2024-06-07T00:00:00+02:00"), t("2024-06-10T00:00:00+02:00")
    assert scheduled(cal, start, end) == [(start, t("2024-06-07T06:00:00+02:00")),
                                          (t("2024-06-07T22:00:00+02:00"), t("2024-06-08T06:00:00+02:00"))]
    assert shift_at(cal, t("2024-06-08T03:00:00+02:00")) is not None
    assert shift_at(cal, t("2024-06-08T12:00:00+02:00")) is None


def test_a_wall_time_in_the_spring_gap_starts_with_the_offset_before_the_change() -> None:
    cal = ShiftCalendar(BERLIN, [Shift("odd", "02:30", "10:00")])
    inst = shift_instances(cal, t("2024-03-31T00:00:00Z"), t("2024-03-31T12:00:00Z"))
    assert inst[0].start == t("2024-03-31T01:30:00Z")  # = 03:30 summer time
    assert (inst[0].end - inst[0].start) / H == 6.5


def test_no_calendar_means_all_the_window_is_scheduled() -> None:
    start, end = t("2024-06-03T00:00:00Z"), t("2024-06-03T05:00:00Z")
    assert scheduled(None, start, end) == [(start, end)]
    assert planned_stops(None, start, end) == []


def test_tariff_spans_partition_the_window_first_period_wins() -> None:
    tariff = Tariff(BERLIN, default_price=0.1, default_name="night", periods=[
        TariffPeriod("peak", 0.4, "17:00", "19:00", weekdays=[1, 2, 3, 4, 5]),
        TariffPeriod("day", 0.25, "07:00", "22:00"),
    ])
    start, end = t("2024-06-07T00:00:00+02:00"), t("2024-06-09T00:00:00+02:00")  # Friday, Saturday
    spans = tariff_spans(tariff, start, end)
    assert spans[0].start == start and spans[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    by: dict[str, float] = {}
    for s in spans:
        by[s.period] = by.get(s.period, 0) + (s.end - s.start) / H
    assert by == {"peak": 2, "day": 13 + 15, "night": 9 + 9}
    assert tariff.price("peak") == 0.4 and tariff.price("night") == 0.1
    with pytest.raises(InvalidInput, match="tariff period 'weekend'"):
        tariff.price("weekend")


def test_interval_helpers() -> None:
    assert merge([(5, 7), (1, 3), (2, 4), (9, 9)]) == [(1, 4), (5, 7)]
    assert subtract([(0, 10)], [(2, 3), (5, 12)]) == [(0, 2), (3, 5)]
    assert subtract([(0, 10)], []) == [(0, 10)]


@pytest.mark.parametrize("bad", [
    lambda: Shift("x", "6 o'clock", "14:00"),
    lambda: Shift("x", "06:00", "14:00", weekdays=[0]),
    lambda: Shift("x", "06:00+01:00", "14:00"),
    lambda: Break("10:00", "25:00"),
    lambda: TariffPeriod("p", -1.0, "06:00", "07:00"),
])
def test_bad_calendar_input_is_refused(bad: object) -> None:
    with pytest.raises(InvalidInput):
        bad()  # type: ignore[operator]


def test_unknown_zone_and_reversed_window_are_refused() -> None:
    with pytest.raises(InvalidInput, match="IANA"):
        scheduled(ShiftCalendar("Mars/Base", [Shift("x", "06:00", "14:00")]), 0, H)
    with pytest.raises(InvalidInput):
        scheduled(None, H, 0)
