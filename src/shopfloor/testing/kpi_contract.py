"""The contract every ``KpiSource`` must pass: its ``PeriodInputs`` equal the reference's.

Subclass ``KpiContract`` in a test module (name starting with ``Test``) and give it a ``kpi_store``
fixture that yields ``(historian, kpi_source)``: an empty historian and a ``KpiSource`` reading the
same store. Events and samples are written through ``historian.commit`` in several batches, as
ingest would store them; the reference (``domain/kpi/reference.py``) is given the same events, read
back with ``historian.events`` (whose order breaks ties at one instant: ts, seq, kind, type, data)
and the same samples. Counts, failures and the keys of every mapping must be equal; durations may
differ by 1e-6 s, energy and labour by a relative 1e-9.

The generated histories (seeded, so a failure replays) have: states with reasons, ``offline``
statuses, several events at one instant in one commit and across commits, work orders that switch,
end with a wrong id or never end, products, delta and total counts with resets and missing fields,
an energy counter with resets and bad readings, power samples with gaps longer than the staleness
and bad samples, clock-in/out with repeats and strays; windows are the shifts (with breaks) and
the local days of a shift calendar in Europe/Berlin over both daylight-saving changes of 2024, plus
a window that cuts states anywhere, all asked for in one call for several machines.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi import reference
from shopfloor.domain.kpi.calendar import at, scheduled, shift_instances, spans_by_label, tariff_spans
from shopfloor.domain.kpi.models import Break, PeriodInputs, Shift, ShiftCalendar, Tariff, TariffPeriod
from shopfloor.domain.query import zone
from shopfloor.domain.records import EventRecord, IngestBatch, Quality, SampleBatch
from shopfloor.ports.kpi import EnergyKind, EnergySeries, KpiRequest, KpiSource
from shopfloor.ports.store import Historian

S = 1_000_000
MIN = 60 * S
H = 60 * MIN
DAY = 24 * H
TENANT = 1
TZ = "Europe/Berlin"
STATES = ("running", "idle", "setup", "starved", "blocked", "planned_stop", "unplanned_stop")
REASONS = (None, None, "jam", "tool change", "no material", "")

CALENDAR = ShiftCalendar(
    timezone=TZ,
    shifts=[
        Shift("early", "06:00", "14:00", breaks=[Break("09:00", "09:30")]),
        Shift("late", "13:45", "22:00", weekdays=[1, 2, 3, 4, 5], breaks=[Break("18:00", "18:20")]),
        Shift("night", "22:00", "06:00", weekdays=[1, 2, 3, 4, 5, 6, 7], breaks=[Break("02:00", "02:20")]),
    ],
    holidays=["2024-03-29", "2024-10-26"],
)
TARIFF = Tariff(timezone=TZ, default_name="off_peak", default_price=0.18, periods=[
    TariffPeriod("peak", 0.30, "08:00", "20:00", [1, 2, 3, 4, 5]),
    TariffPeriod("shoulder", 0.22, "06:00", "22:00"),
])
# three local days around each daylight-saving change of 2024 (clocks forward 31 March, back 27 October)
STARTS = {"spring": date(2024, 3, 30), "autumn": date(2024, 10, 26)}


@dataclasses.dataclass(frozen=True)
class Machine:
    asset_id: int
    orders: bool
    counts: str  # "delta", "total" or "mixed"
    energy: EnergySeries | None
    labour_scheduled_only: bool = False


MACHINES = (
    Machine(11, orders=True, counts="delta", energy=EnergySeries(901, EnergyKind.COUNTER)),
    Machine(12, orders=False, counts="total", energy=EnergySeries(902, EnergyKind.POWER, staleness_us=5 * MIN)),
    Machine(13, orders=True, counts="mixed", energy=None, labour_scheduled_only=True),
    Machine(14, orders=True, counts="total", energy=EnergySeries(904, EnergyKind.COUNTER)),
)


def local_start(day: date) -> int:
    return at(day, datetime.min.time(), zone(TZ))


class History:
    """One seeded history of several machines, split into commits."""

    def __init__(self, seed: int, lo: int, hi: int) -> None:
        self.rng = random.Random(seed)
        self.lo, self.hi = lo, hi
        self.events: list[EventRecord] = []
        self.samples: list[tuple[int, int, float | None, int]] = []  # series, ts, value, quality
        for m in MACHINES:
            self._states(m.asset_id)
            if m.orders:
                self._orders(m.asset_id)
            self._counts(m.asset_id, m.counts)
            self._clock(m.asset_id)
            if m.energy is not None and m.energy.kind is EnergyKind.COUNTER:
                self._counter(m.energy.series_id)
            elif m.energy is not None:
                self._power(m.energy.series_id)
        # another tenant's machine with the same id: must not leak into tenant 1's sums
        self.events.extend(EventRecord(2, 11, ts, "state", "unplanned_stop", {"state": "unplanned_stop"})
                           for ts in range(lo, hi, 7 * MIN))

    def _times(self, mean_gap_us: int) -> Iterator[int]:
        t = self.lo - DAY + self.rng.randrange(H)
        while t < self.hi + H:
            yield t
            roll = self.rng.random()
            if roll < 0.05:
                continue  # the same instant again
            gap = int(self.rng.expovariate(1 / mean_gap_us)) + 1
            t += gap if roll > 0.2 else gap // S * S  # mostly odd microseconds, some whole seconds

    def _ev(self, asset: int, ts: int, kind: str, type_: str, data: dict[str, Any]) -> None:
        self.events.append(EventRecord(TENANT, asset, ts, kind, type_, data))

    def _states(self, asset: int) -> None:
        for ts in self._times(12 * MIN):
            if self.rng.random() < 0.06:
                self._ev(asset, ts, "status", "offline", {"status": "offline"})
                continue
            state = self.rng.choice(STATES)
            data: dict[str, Any] = {"state": state}
            reason = self.rng.choice(REASONS)
            if reason is not None and state != "running":
                data["reason"] = reason
            self._ev(asset, ts, "state", state, data)

    def _orders(self, asset: int) -> None:
        n = 0
        open_id: str | None = None
        for ts in self._times(2 * H):
            roll = self.rng.random()
            if open_id is not None and roll < 0.45:
                wrong = self.rng.random() < 0.15
                self._ev(asset, ts, "event", "work_order_end", {"order_id": "x-9" if wrong else open_id})
                open_id = None if not wrong else open_id
            elif roll < 0.9:
                n += 1
                open_id = f"o-{asset}-{n}"
                data: dict[str, Any] = {"order_id": open_id}
                product = self.rng.choice(["housing-a", "housing-b", "lid", None])
                if product is not None:
                    data["product"] = product
                self._ev(asset, ts, "event", "work_order_start", data)
            else:
                self._ev(asset, ts, "event", "work_order_end", {"order_id": f"o-{asset}-{n + 5}"})

    def _counts(self, asset: int, mode: str) -> None:
        totals = {"good": 0, "reject": 0, "rework": 0}
        for ts in self._times(4 * MIN):
            this = mode if mode != "mixed" else ("total" if self.rng.random() < 0.5 else "delta")
            data: dict[str, Any] = {"mode": this}
            for name in totals:
                if self.rng.random() < 0.15 and name != "good":
                    continue
                if this == "delta":
                    data[name] = self.rng.randrange(0, 6)
                else:
                    totals[name] = (self.rng.randrange(0, 4) if self.rng.random() < 0.04
                                    else totals[name] + self.rng.randrange(0, 6))
                    data[name] = totals[name]
            self._ev(asset, ts, "count", this, data)

    def _clock(self, asset: int) -> None:
        for ts in self._times(90 * MIN):
            who = self.rng.choice(["ann", "bob", "cem"])
            self._ev(asset, ts, "event", "clock_in" if self.rng.random() < 0.55 else "clock_out", {"operator": who})

    def _counter(self, series: int) -> None:
        value = self.rng.uniform(0, 1e4)
        for ts in self._times(6 * MIN):
            if self.rng.random() < 0.04:
                self.samples.append((series, ts, -1.0, int(Quality.BAD)))
                continue
            value = self.rng.uniform(0, 5) if self.rng.random() < 0.03 else value + self.rng.uniform(0, 20)
            quality = Quality.UNCERTAIN if self.rng.random() < 0.05 else Quality.GOOD
            self.samples.append((series, ts, value, int(quality)))

    def _power(self, series: int) -> None:
        for ts in self._times(4 * MIN):
            if self.rng.random() < 0.06:
                self.samples.append((series, ts, None if self.rng.random() < 0.5 else 3.0, int(Quality.BAD)))
            else:
                self.samples.append((series, ts, self.rng.uniform(0, 80), int(Quality.GOOD)))

    def batches(self, n: int = 5) -> list[IngestBatch]:
        """The history as ``n`` commits in random order; some events are delivered twice."""
        out = [IngestBatch() for _ in range(n)]
        for ev in self.events:
            out[self.rng.randrange(n)].events.append(ev)
            if self.rng.random() < 0.02:
                out[self.rng.randrange(n)].events.append(ev)
        seen: set[tuple[int, int]] = set()
        for series, ts, value, quality in self.samples:
            if (series, ts) in seen:
                continue  # one sample per (series, ts): a second one is a duplicate delivery
            seen.add((series, ts))
            out[self.rng.randrange(n)].samples.add(series, ts, value, None, quality)
        return [b for b in out if len(b)]


def windows(lo: int, hi: int) -> list[tuple[int, int]]:
    """The worked shifts and local days in [lo, hi), and windows that cut states anywhere."""
    out = [(max(i.start, lo), min(i.end, hi)) for i in shift_instances(CALENDAR, lo, hi)]
    tz = zone(TZ)
    day = datetime.fromtimestamp(lo / S, tz).date()
    while (start := at(day, datetime.min.time(), tz)) < hi:
        end = at(day + timedelta(days=1), datetime.min.time(), tz)
        out.append((max(start, lo), min(end, hi)))
        day += timedelta(days=1)
    out.append((lo + 7 * H + 13 * MIN + 7 * S + 123, lo + 29 * H + 1))
    out.append((lo + 31 * H + 17, lo + 31 * H + 18))  # one microsecond
    return [w for w in out if w[1] > w[0]]


def request(m: Machine, wins: Sequence[tuple[int, int]]) -> KpiRequest:
    lo, hi = min(s for s, _ in wins), max(e for _, e in wins)
    return KpiRequest(m.asset_id, wins, scheduled=scheduled(CALENDAR, lo, hi),
                      tariff=spans_by_label(tariff_spans(TARIFF, lo, hi)), energy=m.energy,
                      reports_orders=m.orders, labour_scheduled_only=m.labour_scheduled_only)


def expected(historian: Historian, m: Machine, wins: Sequence[tuple[int, int]],
             calendar: ShiftCalendar | None = CALENDAR, tariff: Tariff | None = TARIFF) -> list[PeriodInputs]:
    """The reference's answer on what the historian stores."""
    stored = historian.events(TENANT, asset_ids=[m.asset_id], limit=10**9)
    records = [EventRecord(e.tenant_id, e.asset_id, e.ts_us, e.kind, e.type, e.data) for e in stored]
    counter = power = None
    if m.energy is not None:
        rows = historian.raw(m.energy.series_id, -(2**62), 2**62, limit=10**9)
        if m.energy.kind is EnergyKind.COUNTER:
            counter = [(s.ts_us, s.value) for s in rows if s.quality < Quality.BAD and s.value is not None]
        else:
            power = [(s.ts_us, s.value if s.quality < Quality.BAD else None) for s in rows]
    raw = reference.from_records(records, energy_counter=counter, power=power, orders_reported=m.orders)
    raw = dataclasses.replace(raw, power_max_gap_us=m.energy.staleness_us if m.energy else 300 * S,
                              labour_scheduled_only=m.labour_scheduled_only)
    return [reference.period_inputs(raw, s, e, calendar, tariff) for s, e in wins]


def assert_same(got: PeriodInputs, want: PeriodInputs, where: str) -> None:
    """Equal as the contract says: exact counts and keys, durations within 1e-6 s."""
    g_time = {(b.category, b.scheduled, b.with_order): b.seconds for b in got.time}
    w_time = {(b.category, b.scheduled, b.with_order): b.seconds for b in want.time}
    assert g_time.keys() == w_time.keys(), f"{where}: time buckets {sorted(g_time)} != {sorted(w_time)}"
    for k, v in w_time.items():
        assert abs(g_time[k] - v) <= 1e-6, f"{where}: time {k}: {g_time[k]} != {v}"
    assert [(b.category, b.scheduled, b.with_order) for b in got.time] == \
        [(b.category, b.scheduled, b.with_order) for b in want.time], f"{where}: time bucket order"
    assert got.counts == want.counts, f"{where}: counts {got.counts} != {want.counts}"
    assert got.failures == want.failures, f"{where}: failures {got.failures} != {want.failures}"
    assert got.downtime_by_reason.keys() == want.downtime_by_reason.keys(), \
        f"{where}: reasons {got.downtime_by_reason} != {want.downtime_by_reason}"
    for reason, v in want.downtime_by_reason.items():
        assert abs(got.downtime_by_reason[reason] - v) <= 1e-6, f"{where}: reason {reason}"
    assert got.energy_kwh.keys() == want.energy_kwh.keys(), f"{where}: energy {got.energy_kwh} != {want.energy_kwh}"
    for period, v in want.energy_kwh.items():
        assert math.isclose(got.energy_kwh[period], v, rel_tol=1e-9, abs_tol=1e-9), \
            f"{where}: energy {period}: {got.energy_kwh[period]} != {v}"
    if want.energy_coverage is None:
        assert got.energy_coverage is None, f"{where}: energy coverage {got.energy_coverage} != None"
    else:
        assert got.energy_coverage is not None and math.isclose(got.energy_coverage, want.energy_coverage,
                                                                abs_tol=1e-12), \
            f"{where}: energy coverage {got.energy_coverage} != {want.energy_coverage}"
    assert math.isclose(got.labour_hours, want.labour_hours, rel_tol=1e-9, abs_tol=1e-12), \
        f"{where}: labour {got.labour_hours} != {want.labour_hours}"


def _commit(historian: Historian, batches: Sequence[IngestBatch]) -> None:
    for batch in batches:
        historian.commit(batch)


KpiStore = tuple[Historian, KpiSource]


class KpiContract:
    """The contract; the subclass provides the ``kpi_store`` fixture."""

    @pytest.mark.parametrize("season", sorted(STARTS))
    @pytest.mark.parametrize("seed", range(4))
    def test_generated_histories_equal_the_reference(self, kpi_store: KpiStore, season: str, seed: int) -> None:
        historian, source = kpi_store
        lo = local_start(STARTS[season])
        hi = local_start(STARTS[season] + timedelta(days=3))
        history = History(seed * 7919 + len(season), lo, hi)
        _commit(historian, history.batches())
        wins = windows(lo, hi)
        got = source.period_inputs(TENANT, [request(m, wins) for m in MACHINES])
        assert len(got) == len(MACHINES) * len(wins)
        for i, m in enumerate(MACHINES):
            want = expected(historian, m, wins)
            for j, w in enumerate(wins):
                assert_same(got[i * len(wins) + j], want[j], f"seed {seed} {season} asset {m.asset_id} window {w}")

    def test_no_calendar_no_tariff_no_energy(self, kpi_store: KpiStore) -> None:
        """Without a calendar all time is scheduled; without a tariff energy is ``standard``."""
        historian, source = kpi_store
        lo = local_start(STARTS["spring"])
        hi = lo + DAY
        history = History(99, lo, hi)
        _commit(historian, history.batches(2))
        wins = [(lo, lo + 8 * H), (lo + 8 * H, hi), (lo + 3 * H + 1, lo + 20 * H)]
        reqs = [KpiRequest(m.asset_id, wins, energy=m.energy, reports_orders=m.orders) for m in MACHINES]
        got = source.period_inputs(TENANT, reqs)
        for i, m in enumerate(MACHINES):
            plain = dataclasses.replace(m, labour_scheduled_only=False)
            for j, want in enumerate(expected(historian, plain, wins, calendar=None, tariff=None)):
                assert_same(got[i * len(wins) + j], want, f"asset {m.asset_id} window {wins[j]}")

    def test_history_long_before_the_window(self, kpi_store: KpiStore) -> None:
        """The state, the open order, the clock-in and the energy reading in force at the window
        start come from weeks before it (past any lookback); the next reading is weeks after."""
        historian, source = kpi_store
        lo = local_start(STARTS["autumn"])
        m = Machine(21, orders=True, counts="total", energy=EnergySeries(921))
        ev = [
            EventRecord(TENANT, 21, lo - 30 * DAY, "state", "unplanned_stop", {"state": "unplanned_stop"}),
            EventRecord(TENANT, 21, lo - 25 * DAY, "status", "offline", {"status": "offline"}),
            EventRecord(TENANT, 21, lo - 20 * DAY, "event", "work_order_start", {"order_id": "w1", "product": "lid"}),
            EventRecord(TENANT, 21, lo - 19 * DAY, "event", "clock_in", {"operator": "ann"}),
            EventRecord(TENANT, 21, lo + 2 * H, "state", "unplanned_stop", {"state": "unplanned_stop"}),
            EventRecord(TENANT, 21, lo + 3 * H, "state", "running", {"state": "running"}),
            EventRecord(TENANT, 21, lo + 4 * H, "count", "total", {"mode": "total", "good": 5}),
            EventRecord(TENANT, 21, lo + 5 * H, "count", "total", {"mode": "total", "good": 9}),
        ]
        samples = SampleBatch()
        samples.add(921, lo - 40 * DAY, 100.0)
        samples.add(921, lo + 30 * DAY, 820.0)
        historian.commit(IngestBatch(samples=samples, events=ev))
        wins = [(lo, lo + 8 * H), (lo + 8 * H, lo + DAY)]
        got = source.period_inputs(TENANT, [request(m, wins)])
        want = expected(historian, m, wins)
        for j, w in enumerate(wins):
            assert_same(got[j], want[j], f"window {w}")
        assert got[0].failures == 0  # the stop at +2 h continues the episode begun 30 days before
        assert got[0].counts == {"lid": want[0].counts["lid"]}

    def test_later_event_of_an_instant_wins(self, kpi_store: KpiStore) -> None:
        historian, source = kpi_store
        lo = local_start(STARTS["spring"])
        m = Machine(31, orders=False, counts="delta", energy=None)
        historian.commit(IngestBatch(events=[
            EventRecord(TENANT, 31, lo, "state", "running", {"state": "running"}),
            EventRecord(TENANT, 31, lo + H, "state", "unplanned_stop", {"state": "unplanned_stop", "reason": "jam"}),
        ]))
        historian.commit(IngestBatch(events=[  # a later commit, same instant: it wins
            EventRecord(TENANT, 31, lo + H, "state", "idle", {"state": "idle"}),
        ]))
        wins = [(lo, lo + 2 * H)]
        got = source.period_inputs(TENANT, [KpiRequest(31, wins, reports_orders=False)])
        assert_same(got[0], expected(historian, m, wins, calendar=None, tariff=None)[0], "tie")
        assert got[0].failures == 0
        assert {b.category.value: b.seconds for b in got[0].time} == {"run": 3600.0, "idle": 3600.0}

    def test_empty_store_and_empty_requests(self, kpi_store: KpiStore) -> None:
        _, source = kpi_store
        lo = local_start(STARTS["spring"])
        assert source.period_inputs(TENANT, []) == []
        got = source.period_inputs(TENANT, [KpiRequest(41, [(lo, lo + H)], energy=EnergySeries(941)),
                                            KpiRequest(42, [])])
        assert len(got) == 1
        assert [(b.category.value, b.seconds, b.scheduled, b.with_order) for b in got[0].time] == \
            [("unknown", 3600.0, True, False)]
        assert got[0].energy_kwh == {} and got[0].energy_coverage == 0.0
        assert got[0].counts == {} and got[0].labour_hours == 0.0

    def test_tariff_spans_must_partition_the_windows(self, kpi_store: KpiStore) -> None:
        _, source = kpi_store
        lo = local_start(STARTS["spring"])
        gap = [(lo, lo + H, "peak"), (lo + 2 * H, lo + 3 * H, "off_peak")]
        overlap = [(lo, lo + 2 * H, "peak"), (lo + H, lo + 3 * H, "off_peak")]
        for spans in (gap, overlap):
            with pytest.raises(InvalidInput):
                source.period_inputs(TENANT, [KpiRequest(61, [(lo, lo + 3 * H)], tariff=spans)])
        with pytest.raises(InvalidInput):
            KpiRequest(61, [(lo, lo)])

    def test_a_total_counter_older_than_the_lookback_starts_a_new_baseline(self, kpi_store: KpiStore) -> None:
        """The one place a store may differ from the reference, documented in ``ports/kpi.py``."""
        historian, source = kpi_store
        lo = local_start(STARTS["spring"])
        historian.commit(IngestBatch(events=[
            EventRecord(TENANT, 51, lo - 60 * DAY, "count", "total", {"mode": "total", "good": 100}),
            EventRecord(TENANT, 51, lo + H, "count", "total", {"mode": "total", "good": 130}),
            EventRecord(TENANT, 51, lo + 2 * H, "count", "total", {"mode": "total", "good": 135}),
        ]))
        got = source.period_inputs(TENANT, [KpiRequest(51, [(lo, lo + 3 * H)], reports_orders=False)])
        assert got[0].counts[""].good in (5, 35)  # 35 with the baseline of 60 days ago, 5 without it

