"""The reference implementation: raw event lists → ``PeriodInputs``, in plain Python.

This is what the SQL of DuckDB and PostgreSQL must reproduce (a contract test should compare them
on the same events); tests and small windows use it directly. It only sums — every ratio is left to
``formulas``.

Give each list from the last event *before* ``start`` (it sets the state, order, counter baseline,
clock-in or energy reading in force at the start). Events from ``end`` on are ignored, except the
first energy reading after the window, which the counter's last increment is spread up to.
``from_records`` reads the ingest's ``EventRecord`` list (state, count, event and status records).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shopfloor.domain.kpi.calendar import Span, scheduled, spans_by_label, subtract, tariff_spans
from shopfloor.domain.kpi.counts import CountMessage, count_units
from shopfloor.domain.kpi.energy import EnergyReading, kwh_from_counter, kwh_from_power
from shopfloor.domain.kpi.labour import ClockEvent, labour_hours
from shopfloor.domain.kpi.models import PeriodInputs, ShiftCalendar, Tariff
from shopfloor.domain.kpi.timeline import (
    OrderEvent,
    ProductAt,
    StateEvent,
    breakdown,
    failures,
    order_spans,
    state_spans,
)
from shopfloor.domain.records import EventRecord


@dataclass(frozen=True, slots=True)
class RawEvents:
    """One machine's raw data around a window (µs timestamps; kWh counter or kW power samples)."""

    states: Sequence[StateEvent] = ()
    counts: Sequence[CountMessage] = ()
    orders: Sequence[OrderEvent] | None = None  # None: the machine does not report work orders
    clock: Sequence[ClockEvent] = ()
    energy_counter: Sequence[tuple[int, float]] | None = None
    power: Sequence[tuple[int, float | None]] | None = None
    power_max_gap_us: int = 300 * 1_000_000
    labour_scheduled_only: bool = False  # count clocked-in time only inside working shifts


def period_inputs(raw: RawEvents, start: int, end: int, calendar: ShiftCalendar | None = None,
                  tariff: Tariff | None = None) -> PeriodInputs:
    """Sum one machine's raw events over [start, end) into the inputs of ``formulas.compute``."""
    states = state_spans(raw.states, start, end)
    work = scheduled(calendar, start, end)
    orders = None if raw.orders is None else order_spans(raw.orders, start, end)
    parts = breakdown(states, work, None if orders is None else [(o.start, o.end) for o in orders], start, end)
    product_at = ProductAt.of(orders) if orders is not None else None
    counts = count_units(raw.counts, start, end, product_at)
    periods = spans_by_label(tariff_spans(tariff, start, end)) if tariff is not None else []
    energy: EnergyReading | None = None
    if raw.energy_counter is not None:
        energy = kwh_from_counter(raw.energy_counter, start, end, periods)
    elif raw.power is not None:
        energy = kwh_from_power(raw.power, start, end, periods, raw.power_max_gap_us)
    exclude: list[Span] = subtract([(start, end)], work) if raw.labour_scheduled_only else []
    return PeriodInputs(
        time=parts.time_buckets(),
        counts=counts,
        failures=failures(raw.states, start, end),
        downtime_by_reason=parts.downtime_by_reason(),
        energy_kwh=energy.kwh_by_period if energy else {},
        energy_coverage=energy.coverage if energy else None,
        labour_hours=labour_hours(raw.clock, start, end, exclude),
    )


def from_records(records: Iterable[EventRecord], energy_counter: Sequence[tuple[int, float]] | None = None,
                 power: Sequence[tuple[int, float | None]] | None = None, orders_reported: bool = True) -> RawEvents:
    """One machine's stored event records as ``RawEvents``: ``state`` records, ``count`` records,
    ``work_order_start``/``work_order_end`` and ``clock_in``/``clock_out`` events, and ``offline``
    status records (the state is unknown from then until the next state record)."""
    states: list[StateEvent] = []
    counts: list[CountMessage] = []
    orders: list[OrderEvent] = []
    clock: list[ClockEvent] = []
    for r in records:
        d = r.data
        if r.kind == "state":
            states.append(StateEvent(r.ts_us, str(d.get("state", r.type)), d.get("reason")))
        elif r.kind == "status" and r.type == "offline":
            states.append(StateEvent(r.ts_us, None))
        elif r.kind == "count":
            counts.append(CountMessage(r.ts_us, str(d.get("mode", r.type)), d.get("good"), d.get("reject"),
                                       d.get("rework")))
        elif r.kind == "event" and r.type in ("work_order_start", "work_order_end"):
            product = d.get("product")
            orders.append(OrderEvent(r.ts_us, "start" if r.type == "work_order_start" else "end",
                                     str(d.get("order_id", "")), product if isinstance(product, str) else None))
        elif r.kind == "event" and r.type in ("clock_in", "clock_out"):
            clock.append(ClockEvent(r.ts_us, str(d.get("operator", "")), "in" if r.type == "clock_in" else "out"))
    return RawEvents(states=states, counts=counts, orders=orders if orders_reported else None, clock=clock,
                     energy_counter=energy_counter, power=power)
