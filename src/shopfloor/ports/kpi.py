"""The KPI query port: the store sums raw events and samples into ``PeriodInputs`` per group.

A group is one asset over one window ``[start, end)`` (epoch µs). The store only sums (durations,
counts, energy, labour hours, see ``domain/kpi/models.PeriodInputs`` and docs/kpis.md); every ratio
is computed by ``domain/kpi/formulas``. ``domain/kpi/reference.period_inputs`` is the oracle: on the
same stored events a store's answer equals it (counts exactly, durations within 1e-6 s).

The shift calendar and the tariff are expanded to UTC spans by the caller
(``domain/kpi/calendar.scheduled`` and ``tariff_spans``) and passed in; the store never reads a
time zone. One call may carry thousands of requests (every shift of a month for every machine):
an implementation answers it in one or a few SQL round trips, never one per group.

Events read (as ingest stores them): ``state`` records (the state is the record's type, where
ingest writes it besides ``data``; the reason is ``data.reason``) and ``offline`` ``status`` records
(the state timeline), ``count`` records, ``work_order_start``/``work_order_end`` and
``clock_in``/``clock_out`` ``event`` records. Energy comes from one numeric series per asset: a
cumulative kWh counter, or power samples in kW held up to ``staleness_us`` (bad quality ends a
hold; bad counter readings are skipped). Several events at one instant: the store's event order
decides (``Historian.events``: ts, seq, kind, type, data); the later one wins.

Every series starts from its last event before a request's first window, however old, with one
exception an implementation may make: the baseline of a running-total count field may be looked
for only within a lookback (7 days by default); a field not reported in that time starts from a
new baseline (its first total in the window credits nothing).
"""

from __future__ import annotations

import bisect
import enum
import gc
import itertools
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.models import Category, Counts, PeriodInputs, TimeBucket

Span = tuple[int, int]  # half-open [start, end), epoch µs
LabelledSpan = tuple[int, int, str]  # a span and the tariff period it belongs to
US = 1_000_000
US_PER_HOUR = 3_600_000_000


class EnergyKind(enum.StrEnum):
    COUNTER = "counter"  # cumulative kWh readings (a drop is a meter reset)
    POWER = "power"  # kW samples, each held until the next one for at most ``staleness_us``


@dataclass(frozen=True, slots=True)
class EnergySeries:
    series_id: int
    kind: EnergyKind = EnergyKind.COUNTER
    staleness_us: int = 300 * 1_000_000  # power: the longest a sample holds

    def __post_init__(self) -> None:
        if self.staleness_us <= 0:
            raise InvalidInput("energy staleness must be a positive number of microseconds")


@dataclass(frozen=True, slots=True)
class KpiRequest:
    """One asset, its windows, and what the caller expanded for them.

    - ``windows``: any number of half-open windows (shifts, days ...); they may touch or overlap.
    - ``scheduled``: the calendar's working spans (``calendar.scheduled``), merged, covering at least
      the windows; ``None`` means no calendar: every moment is scheduled.
    - ``tariff``: labelled spans (``calendar.spans_by_label(calendar.tariff_spans(...))``) that
      partition each window; ``None`` means one period named ``"standard"``.
    - ``energy``: the asset's energy series, or ``None`` (then ``energy_kwh`` is empty and
      ``energy_coverage`` None).
    - ``reports_orders``: False for a machine that reports no work orders (all its time is with an
      order, every count has product ``""``).
    - ``labour_scheduled_only``: count clocked-in time only inside ``scheduled``.

    Share one ``scheduled`` / ``tariff`` tuple between the requests of a site: implementations send
    each distinct one to the database once.
    """

    asset_id: int
    windows: Sequence[Span]
    scheduled: Sequence[Span] | None = None
    tariff: Sequence[LabelledSpan] | None = None
    energy: EnergySeries | None = None
    reports_orders: bool = True
    labour_scheduled_only: bool = False

    def __post_init__(self) -> None:
        if any(e <= s for s, e in self.windows):
            raise InvalidInput("a KPI window must end after it starts")


class KpiSource(Protocol):
    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        """``PeriodInputs`` of every (request, window): flat, in request order and, within a
        request, in window order (``len == sum(len(r.windows) for r in requests)``).

        Raises ``InvalidInput`` for malformed requests and ``StoreUnavailable`` when the store fails.
        """
        ...


# ---- shared by the implementations: the requests as columns -------------------------------

FAR_PAST = -(2**62)  # "no calendar" / "no tariff": one span over all time
FAR_FUTURE = 2**62


@dataclass(frozen=True, slots=True)
class KpiPlan:
    """Requests as plain columns, the way both stores send them to the database.

    ``req``: r, asset_id, lo, hi (the request's span), cal, tar (ids into ``cal`` / ``tar``),
    series_id, power, staleness, orders, lab_sched. ``win``: gid (the output position), r, lane, w0,
    w1; windows of one lane never overlap, so each lane is one sweep of the request's timeline.
    ``cal``: cal, s0, s1 (merged working spans; id 0 is all time). ``tar``: tar, t0, t1, period
    (id 0 is all time, ``standard``). Each distinct calendar or tariff appears once.
    """

    req: dict[str, list[Any]]
    win: dict[str, list[Any]]
    cal: dict[str, list[Any]]
    tar: dict[str, list[Any]]
    groups: int

    @property
    def base(self) -> int:
        """The earliest request start: the origin of the stores' time buckets."""
        return min(self.req["lo"]) if self.req["lo"] else 0


def plan(requests: Sequence[KpiRequest]) -> KpiPlan:
    """Check and flatten ``requests`` (a loop over requests, windows and calendar spans only)."""
    req: dict[str, list[Any]] = {k: [] for k in ("r", "asset_id", "lo", "hi", "cal", "tar", "series_id", "power",
                                                 "staleness", "orders", "lab_sched")}
    win: dict[str, list[Any]] = {k: [] for k in ("gid", "r", "lane", "w0", "w1")}
    cal: dict[str, list[Any]] = {"cal": [0], "s0": [FAR_PAST], "s1": [FAR_FUTURE]}
    tar: dict[str, list[Any]] = {"tar": [0], "t0": [FAR_PAST], "t1": [FAR_FUTURE], "period": ["standard"]}
    cal_ids: dict[tuple[Span, ...], int] = {}
    tar_ids: dict[tuple[LabelledSpan, ...], tuple[int, list[Span]]] = {}
    gid = lane = 0
    for r, rq in enumerate(requests):
        if not rq.windows:
            continue
        lo, hi = min(s for s, _ in rq.windows), max(e for _, e in rq.windows)
        cal_id = 0
        if rq.scheduled is not None:
            key = tuple(rq.scheduled)
            if key not in cal_ids:
                cal_ids[key] = len(cal_ids) + 1
                for s, e in _merge(key):
                    cal["cal"].append(cal_ids[key])
                    cal["s0"].append(s)
                    cal["s1"].append(e)
            cal_id = cal_ids[key]
        tar_id = 0
        if rq.tariff is not None:
            tkey = tuple(rq.tariff)
            if tkey not in tar_ids:
                tar_ids[tkey] = (len(tar_ids) + 1, _check_tariff(tkey))
                for s, e, name in sorted(tkey):
                    tar["tar"].append(tar_ids[tkey][0])
                    tar["t0"].append(s)
                    tar["t1"].append(e)
                    tar["period"].append(name)
            tar_id, covered = tar_ids[tkey]
            _check_covered(rq.windows, covered)
        energy = rq.energy
        for k, v in (("r", r), ("asset_id", rq.asset_id), ("lo", lo), ("hi", hi), ("cal", cal_id), ("tar", tar_id),
                     ("series_id", energy.series_id if energy else None),
                     ("power", energy is not None and energy.kind is EnergyKind.POWER),
                     ("staleness", energy.staleness_us if energy else 0), ("orders", rq.reports_orders),
                     ("lab_sched", rq.labour_scheduled_only)):
            req[k].append(v)
        lane_ends: list[int] = []  # lanes of this request: the end of each one's last window
        lanes: list[int] = [0] * len(rq.windows)
        for i in sorted(range(len(rq.windows)), key=lambda j: rq.windows[j]):
            s, e = rq.windows[i]
            free = next((k for k, end in enumerate(lane_ends) if end <= s), None)
            if free is None:
                lane_ends.append(e)
                free = len(lane_ends) - 1
            else:
                lane_ends[free] = e
            lanes[i] = lane + free
        for (s, e), ln in zip(rq.windows, lanes, strict=True):
            for k, v in (("gid", gid), ("r", r), ("lane", ln), ("w0", s), ("w1", e)):
                win[k].append(v)
            gid += 1
        lane += len(lane_ends)
    return KpiPlan(req, win, cal, tar, gid)


def _merge(spans: Sequence[Span]) -> list[Span]:
    out: list[Span] = []
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


def _check_tariff(spans: Sequence[LabelledSpan]) -> list[Span]:
    ordered = sorted(spans)
    for (_, e0, _), (s1, _, _) in itertools.pairwise(ordered):
        if s1 < e0:
            raise InvalidInput("tariff spans overlap; expand the tariff with calendar.tariff_spans")
    if any(e <= s for s, e, _ in ordered):
        raise InvalidInput("a tariff span must end after it starts")
    return _merge([(s, e) for s, e, _ in ordered])


def _check_covered(windows: Sequence[Span], covered: list[Span]) -> None:
    starts = [s for s, _ in covered]
    for s, e in windows:
        i = bisect.bisect_right(starts, s) - 1
        if i < 0 or covered[i][1] < e:
            raise InvalidInput("the tariff spans must cover every window (calendar.tariff_spans over the "
                               "request's whole span does)")


class Sums:
    """What a store's queries return, per group (gid), before it becomes ``PeriodInputs``:
    durations and labour in integer µs, counts in units, energy in kWh."""

    def __init__(self, groups: int) -> None:
        self.times: list[dict[tuple[str, bool, bool], int]] = [{} for _ in range(groups)]
        self.reasons: list[dict[str, int]] = [{} for _ in range(groups)]
        self.failures = [0] * groups
        self.counts: list[dict[str, Counts]] = [{} for _ in range(groups)]
        self.kwh: list[dict[str, float]] = [{} for _ in range(groups)]
        self.held = [0] * groups  # power: µs some sample held
        self.spanned = [0] * groups  # counter: µs between the first and the last reading
        self.labour = [0] * groups

    def time(self, gid: int, category: str, scheduled: bool, with_order: bool, us: int) -> None:
        key = (category, scheduled, with_order)
        self.times[gid][key] = self.times[gid].get(key, 0) + us


def assemble(sums: Sums, requests: Sequence[KpiRequest], p: KpiPlan) -> list[PeriodInputs]:
    """``PeriodInputs`` per group, exactly as ``reference.period_inputs`` builds them.

    Call it (and read the query results) inside ``paused_gc()``.
    """
    return [_inputs(sums, requests[p.win["r"][gid]], p.win["w1"][gid] - p.win["w0"][gid], gid)
            for gid in range(p.groups)]


class Lap:
    """Adds the seconds since the previous lap to a step's entry of ``into`` (cleared at the start):
    the per-step timings the KPI sources expose for benchmarks."""

    def __init__(self, into: dict[str, float]) -> None:
        into.clear()
        self._into = into
        self._t = time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self._into[step] = self._into.get(step, 0.0) + now - self._t
        self._t = now


@contextmanager
def paused_gc() -> Iterator[None]:
    """A month of shifts makes millions of small objects (result rows, buckets, structs), none of
    which can form a cycle: pausing the cyclic garbage collector while they are made halves the
    time it takes."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_CATEGORY = {c.value: c for c in Category}


def _inputs(sums: Sums, rq: KpiRequest, span: int, gid: int) -> PeriodInputs:
    buckets = sorted(((_CATEGORY[c], s, o), us) for (c, s, o), us in sums.times[gid].items())
    coverage: float | None = None
    if rq.energy is not None:
        covered = sums.held[gid] if rq.energy.kind is EnergyKind.POWER else sums.spanned[gid]
        coverage = covered / span
    return PeriodInputs(
        time=[TimeBucket(c, us / US, s, o) for (c, s, o), us in buckets if us],
        counts=dict(sorted(sums.counts[gid].items())),
        failures=sums.failures[gid],
        downtime_by_reason={r: us / US for r, us in sorted(sums.reasons[gid].items())},
        energy_kwh=dict(sorted(sums.kwh[gid].items())) if rq.energy is not None else {},
        energy_coverage=coverage,
        labour_hours=sums.labour[gid] / US_PER_HOUR,
    )
