"""A ``KpiSource`` in plain Python over the store ports: the reference summing of ``domain/kpi``.

It reads one asset's stored events (``EventLog.events``) and its energy series
(``TimeSeriesStore.raw``) and sums them with the same functions as ``domain/kpi/reference.py``,
taking the calendar and the tariff as the UTC spans a ``KpiRequest`` carries. Unit tests of the KPI
service run on it without SQL; it is also the oracle a store's SQL can be compared with. It reads
every event of the asset up to the window's end, so it is for tests and small plants, not a month
of a thousand machines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from shopfloor.domain.kpi.calendar import Span, clip, merge, subtract
from shopfloor.domain.kpi.counts import count_units
from shopfloor.domain.kpi.energy import EnergyReading, kwh_from_counter, kwh_from_power
from shopfloor.domain.kpi.labour import labour_hours
from shopfloor.domain.kpi.models import PeriodInputs
from shopfloor.domain.kpi.reference import RawEvents, from_records
from shopfloor.domain.kpi.timeline import ProductAt, breakdown, failures, order_spans, state_spans
from shopfloor.domain.records import EventRecord, Quality
from shopfloor.ports.kpi import EnergyKind, KpiRequest, LabelledSpan
from shopfloor.ports.store import EventLog, TimeSeriesStore

KINDS = ("state", "count", "event", "status")
DAY_US = 86_400 * 1_000_000


class ReferenceKpiSource:
    def __init__(self, events: EventLog, series: TimeSeriesStore, *, energy_lookback_us: int = 7 * DAY_US,
                 max_rows: int = 5_000_000) -> None:
        self._events = events
        self._series = series
        self._lookback = energy_lookback_us
        self._max_rows = max_rows

    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        out: list[PeriodInputs] = []
        for r in requests:
            if not r.windows:
                continue
            out.extend(self._request(tenant_id, r))
        return out

    def _request(self, tenant_id: int, r: KpiRequest) -> list[PeriodInputs]:
        lo = min(s for s, _ in r.windows)
        hi = max(e for _, e in r.windows)
        stored = self._events.events(tenant_id, asset_ids=[r.asset_id], kinds=list(KINDS), end_us=hi,
                                     limit=self._max_rows)
        records = [EventRecord(e.tenant_id, e.asset_id, e.ts_us, e.kind, e.type, e.data) for e in stored]
        counter: list[tuple[int, float]] | None = None
        power: list[tuple[int, float | None]] | None = None
        if r.energy is not None:
            samples = self._series.raw(r.energy.series_id, lo - self._lookback, hi + self._lookback, self._max_rows)
            if r.energy.kind is EnergyKind.COUNTER:
                counter = [(s.ts_us, s.value) for s in samples if s.value is not None and s.quality != Quality.BAD]
            else:
                power = [(s.ts_us, s.value if s.quality != Quality.BAD else None) for s in samples]
        raw = from_records(records, counter, power, r.reports_orders)
        if r.energy is not None:
            raw = dataclasses.replace(raw, power_max_gap_us=r.energy.staleness_us)
        raw = dataclasses.replace(raw, labour_scheduled_only=r.labour_scheduled_only)
        return [window_inputs(raw, s, e, r.scheduled, r.tariff) for s, e in r.windows]


def window_inputs(raw: RawEvents, start: int, end: int, scheduled: Sequence[Span] | None,
                  tariff: Sequence[LabelledSpan] | None) -> PeriodInputs:
    """``reference.period_inputs`` with the calendar and tariff already expanded to UTC spans."""
    states = state_spans(raw.states, start, end)
    work = [(start, end)] if scheduled is None else clip(merge(scheduled), start, end)
    orders = None if raw.orders is None else order_spans(raw.orders, start, end)
    parts = breakdown(states, work, None if orders is None else [(o.start, o.end) for o in orders], start, end)
    counts = count_units(raw.counts, start, end, ProductAt.of(orders) if orders is not None else None)
    periods = [] if tariff is None else [(max(s, start), min(e, end), name) for s, e, name in tariff
                                         if min(e, end) > max(s, start)]
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
