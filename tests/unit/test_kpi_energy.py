"""Energy: cumulative counters with resets, power integration, time-of-use split and cost; labour."""

from __future__ import annotations

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.calendar import spans_by_label, tariff_spans
from shopfloor.domain.kpi.energy import energy_cost, kwh_from_counter, kwh_from_power
from shopfloor.domain.kpi.labour import ClockEvent, attendance, labour_hours
from shopfloor.domain.kpi.models import Tariff, TariffPeriod

H = 3_600_000_000
MIN = 60_000_000


def test_counter_increments_spread_over_the_window_cut_with_a_reset() -> None:
    readings = [(-H, 100.0), (H, 110.0), (2 * H, 5.0), (3 * H, 15.0)]
    r = kwh_from_counter(readings, 0, 3 * H)
    # [-1h, 1h): 10 kWh, half of it inside; [1h, 2h): reset, 5 counted since; [2h, 3h): 10
    assert r.kwh == pytest.approx(5 + 5 + 10)
    assert r.coverage == 1.0
    assert kwh_from_counter(readings[1:], 0, 3 * H).coverage == pytest.approx(2 / 3)
    assert kwh_from_counter([], 0, H).kwh == 0 and kwh_from_counter([], 0, H).coverage == 0


def test_counter_energy_is_split_by_tariff_period() -> None:
    tariff = Tariff("UTC", default_price=0.1, default_name="off", periods=[TariffPeriod("peak", 0.3, "08:00", "20:00")])
    start, end = 6 * H, 10 * H
    periods = spans_by_label(tariff_spans(tariff, start, end))
    r = kwh_from_counter([(6 * H, 0.0), (10 * H, 40.0)], start, end, periods)
    assert r.kwh_by_period == pytest.approx({"off": 20.0, "peak": 20.0})
    assert energy_cost(r.kwh_by_period, tariff) == pytest.approx(20 * 0.1 + 20 * 0.3)


def test_power_samples_hold_until_the_next_for_at_most_the_gap() -> None:
    samples: list[tuple[int, float | None]] = [
        (-10 * MIN, 6.0),  # holds into the window: 10 minutes of it
        (10 * MIN, 12.0),  # holds 20 min
        (30 * MIN, None),  # bad: ends the hold, holds nothing
        (40 * MIN, 30.0),  # holds 5 min only (gap limit), then nothing until the end
    ]
    r = kwh_from_power(samples, 0, H, max_gap_us=20 * MIN)
    assert r.kwh == pytest.approx(6 * 10 / 60 + 12 * 20 / 60 + 30 * 20 / 60)
    assert r.coverage == pytest.approx(50 / 60)


def test_energy_cost_needs_known_periods() -> None:
    with pytest.raises(InvalidInput, match="tariff period"):
        energy_cost({"weekend": 1.0}, Tariff())
    with pytest.raises(InvalidInput):
        kwh_from_power([], H, H)


def test_labour_hours_per_operator_from_clock_events() -> None:
    events = [
        ClockEvent(-H, "ann", "in"),  # in before the window
        ClockEvent(2 * H, "ann", "out"),
        ClockEvent(H, "bob", "in"), ClockEvent(90 * MIN, "bob", "in"),  # a second clock_in changes nothing
        ClockEvent(3 * H, "bob", "out"),
        ClockEvent(H, "cem", "out"),  # out without in: ignored
        ClockEvent(3 * H, "dan", "in"),  # still in at the end
    ]
    spans = attendance(events, 0, 4 * H)
    assert spans == {"ann": [(0, 2 * H)], "bob": [(H, 3 * H)], "dan": [(3 * H, 4 * H)]}
    assert labour_hours(events, 0, 4 * H) == 5.0
    assert labour_hours(events, 0, 4 * H, exclude=[(H, H + 30 * MIN)]) == 4.0  # ann's and bob's half hour
    with pytest.raises(InvalidInput):
        labour_hours([ClockEvent(0, "x", "lunch")], 0, H)
