"""The reference summing, end to end on one night shift across the spring daylight-saving change:
a window that cuts states, a run through a break, a work-order change with product cycle times,
counter totals with a reset, an outage (coverage < 1), an energy meter reset, time-of-use prices."""

from __future__ import annotations

import pytest

from shopfloor.domain.kpi.counts import CountMessage
from shopfloor.domain.kpi.formulas import compute, downtime_pareto
from shopfloor.domain.kpi.labour import ClockEvent
from shopfloor.domain.kpi.models import (
    Break,
    Category,
    CostModel,
    Counts,
    CycleTimes,
    Shift,
    ShiftCalendar,
    Tariff,
    TariffPeriod,
)
from shopfloor.domain.kpi.reference import RawEvents, from_records, period_inputs
from shopfloor.domain.kpi.timeline import OrderEvent, StateEvent
from shopfloor.domain.payloads import Decoder, MachineInfo
from shopfloor.domain.records import EventRecord
from shopfloor.domain.timeutil import parse_ts
from shopfloor.domain.topics import Kind

H = 3600.0


def z(hhmm: str, day: str = "2024-03-31") -> int:
    return parse_ts(f"{day}T{hhmm}:00Z")


def prev(hhmm: str) -> int:
    return z(hhmm, "2024-03-30")


# Saturday 22:00 CET to Sunday 06:00 CEST: 8 hours on the wall clock, 7 real hours
CAL = ShiftCalendar("Europe/Berlin", [Shift("night", "22:00", "06:00", breaks=[Break("00:00", "00:30")])])
START, END = prev("21:00"), z("04:00")

RAW = RawEvents(
    states=[
        StateEvent(prev("20:30"), "running"),  # before the window: running at its start
        StateEvent(prev("22:00"), "unplanned_stop", "jam"),
        StateEvent(prev("22:30"), "running"),  # runs through the 23:00-23:30Z break
        StateEvent(z("00:00"), "setup"),
        StateEvent(z("00:30"), "running"),
        StateEvent(z("01:30"), None),  # device offline: unknown
        StateEvent(z("02:00"), "running"),
        StateEvent(z("04:00"), "idle"),  # at the end: outside
    ],
    orders=[OrderEvent(prev("20:00"), "start", "o1", "small"), OrderEvent(z("00:00"), "start", "o2", "large")],
    counts=[
        CountMessage(prev("20:59"), "total", good=1000),  # the baseline before the window
        CountMessage(prev("22:00"), "total", good=1160),
        CountMessage(prev("23:00"), "delta", reject=10),
        CountMessage(z("00:00") - 1, "total", good=1400),
        CountMessage(z("01:30"), "total", good=90),  # the PLC zeroed the counter at the order change
        CountMessage(z("03:00"), "delta", rework=6),
        CountMessage(z("03:59"), "total", good=240),
        CountMessage(z("04:00"), "total", good=250),  # at the end: outside
    ],
    clock=[ClockEvent(prev("20:55"), "ann", "in"), ClockEvent(z("04:05"), "ann", "out"),
           ClockEvent(prev("23:30"), "bob", "in"), ClockEvent(z("02:30"), "bob", "out")],
    energy_counter=[(prev("20:00"), 5000.0), (prev("22:00"), 5060.0), (z("02:00"), 5180.0),
                    (z("03:00"), 10.0), (z("05:00"), 70.0)],  # meter reset before 03:00Z
)
TARIFF = Tariff("Europe/Berlin", default_price=0.12, default_name="night",
                periods=[TariffPeriod("late", 0.2, "22:00", "00:00")])
COST = CostModel(tariff=TARIFF, labour_rate=35.0, overhead_per_hour=40.0, material_cost={"small": 1.0, "large": 3.0})
CT = CycleTimes(default=20.0, by_product={"large": 40.0})


def test_the_inputs_by_hand() -> None:
    inputs = period_inputs(RAW, START, END, CAL, TARIFF)
    buckets = {(b.category, b.scheduled, b.with_order): b.seconds / H for b in inputs.time}
    assert buckets == {
        (Category.RUN, True, True): 5.0,  # 21-22, 22:30-23, 23:30-00, 00:30-01:30, 02-04
        (Category.RUN, False, True): 0.5,  # the break, running through
        (Category.UNPLANNED_STOP, True, True): 0.5,
        (Category.SETUP, True, True): 0.5,
        (Category.UNKNOWN, True, True): 0.5,
    }
    assert sum(buckets.values()) == 7.0  # the night of the change is 7 real hours
    assert inputs.counts == {"small": Counts(good=400, reject=10), "large": Counts(good=240, rework=6)}
    assert inputs.failures == 1
    assert inputs.downtime_by_reason == {"setup": 1800.0, "unplanned_stop/jam": 1800.0}
    # 30 kWh/h except the hour cut by the meter reset (10 kWh): 22:00-00:00 local is "late"
    assert inputs.energy_kwh == pytest.approx({"late": 60.0, "night": 130.0})
    assert inputs.energy_coverage == 1.0
    assert inputs.labour_hours == 10.0  # ann 7 h (to the end), bob 3 h


def test_the_kpis_by_hand() -> None:
    k = compute(period_inputs(RAW, START, END, CAL, TARIFF), CT, COST)
    ideal_h = (410 * 20 + 246 * 40) / H
    assert k.value("availability") == pytest.approx(5.5 / 6.5)
    assert k.value("effectiveness") == pytest.approx(ideal_h / 5.5)
    assert k.value("quality_ratio") == pytest.approx(640 / 656)
    assert k.value("oee") == pytest.approx(ideal_h / 6.5 * 640 / 656)
    assert k.value("teep") == pytest.approx(k.value("oee"))  # all known time was planned
    assert k["oee"].coverage == pytest.approx(6.5 / 7.0)
    assert k.value("allocation_efficiency") == pytest.approx(1.0)
    assert k.value("utilisation_efficiency") == pytest.approx(5.5 / 6.5)
    assert k.value("technical_efficiency") == pytest.approx(5.5 / 6.0)
    assert k.value("setup_ratio") == pytest.approx(0.5 / 6.0)
    assert k.value("throughput_rate") == pytest.approx(656 / 7.0)
    assert (k.value("mtbf"), k.value("mttr")) == pytest.approx((5.5, 0.5))
    assert (k.value("scrap_ratio"), k.value("rework_ratio")) == pytest.approx((10 / 656, 6 / 656))
    assert k.value("energy_efficiency") == pytest.approx(640 / 190)
    assert k.value("labour_productivity") == pytest.approx(64.0)
    energy, labour, material, overhead = 60 * 0.2 + 130 * 0.12, 10 * 35.0, 410 * 1.0 + 246 * 3.0, 6.5 * 40.0
    assert k.value("unit_cost") == pytest.approx((energy + labour + material + overhead) / 640)
    assert [r.reason for r in downtime_pareto(period_inputs(RAW, START, END, CAL).downtime_by_reason)] == [
        "setup", "unplanned_stop/jam"]


def test_power_samples_and_machines_without_orders() -> None:
    raw = RawEvents(states=RAW.states, counts=RAW.counts, power=[(START, 30.0), (z("01:00"), 60.0)],
                    power_max_gap_us=int(2 * H * 1e6))
    inputs = period_inputs(raw, START, END)  # no calendar, no tariff, no orders
    assert all(b.scheduled and b.with_order for b in inputs.time)
    # each sample holds for at most 2 h: 30 kW 21-23Z, nothing 23-01Z, 60 kW 01-03Z, nothing 03-04Z
    assert inputs.energy_kwh == pytest.approx({"standard": 2 * 30 + 2 * 60})
    assert inputs.energy_coverage == pytest.approx(4 / 7)
    assert list(inputs.counts) == [""]


def test_labour_can_be_limited_to_working_shifts() -> None:
    raw = RawEvents(clock=RAW.clock, labour_scheduled_only=True)
    assert period_inputs(raw, START, END, CAL).labour_hours == 10.0 - 0.5  # ann's break half hour


def test_stored_event_records_read_as_raw_events() -> None:
    """The payloads of the core issue, decoded by ingest's decoder, feed the reference unchanged."""
    now = z("05:00")
    machine = MachineInfo(tenant_id=1, asset_id=7, measurements={})
    messages = [
        (Kind.STATE, '[{"ts": "2024-03-31T00:00:00Z", "state": "running"},'
                     ' {"ts": "2024-03-31T01:00:00Z", "state": "unplanned_stop", "reason": "jam"}]'),
        (Kind.COUNT, '[{"ts": "2024-03-31T00:00:00Z", "good": 10, "mode": "total"},'
                     ' {"ts": "2024-03-31T00:30:00Z", "good": 70, "reject": 2, "mode": "total"}]'),
        (Kind.EVENT, '[{"ts": "2024-03-31T00:00:00Z", "type": "work_order_start", "order_id": "o1",'
                     ' "product": "small"}, {"ts": "2024-03-31T00:00:00Z", "type": "clock_in", "operator": "ann"}]'),
        (Kind.STATUS, '{"status": "offline", "ts": "2024-03-31T01:30:00Z"}'),
    ]
    records: list[EventRecord] = []
    for kind, payload in messages:
        batch = Decoder().decode(kind, payload.encode(), machine, device="d", topic="t", now_us=now)
        assert batch.dead_letters == []
        records.extend(batch.events)
    inputs = period_inputs(from_records(records), z("00:00"), z("02:00"))
    assert {(b.category, b.seconds / H) for b in inputs.time} == {
        (Category.RUN, 1.0), (Category.UNPLANNED_STOP, 0.5), (Category.UNKNOWN, 0.5)}
    assert inputs.counts == {"small": Counts(good=60)}  # reject: first total, a baseline only
    assert inputs.failures == 1 and inputs.labour_hours == 2.0
