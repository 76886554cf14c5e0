"""The reference implementation: raw event lists → ``PeriodInputs``, in plain Python.

This is what the SQL of DuckDB and PostgreSQL must reproduce (the contract suite compares them on
the same events); tests and small windows use it directly. It only sums — every ratio is left to
``formulas``.

Give each list from the last event *before* ``start`` (it sets the state, order, counter baseline,
clock-in or energy reading in force at the start); later events than ``end`` are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
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
