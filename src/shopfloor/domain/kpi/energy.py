"""kWh from a cumulative energy counter or from power samples, split by time-of-use period, and
what it costs.

Counter (kWh, cumulative): between two readings the increment is spread evenly over the time
between them (constant power), so a window or a tariff boundary between two readings takes its
share by overlap. The reset rule is the count rule: a reading below the previous one means the
meter restarted from zero and the new reading is the increment (what was used between the last
reading and the reset is lost). Counter coverage is the part of the window between the first and the
last reading: give the last reading before the window and the first after it for full coverage. A
long gap between readings loses no energy (the meter kept counting), only the split is approximate.

Power (kW): each sample holds its value from its timestamp until the next sample, for at most
``max_gap_us`` — the historian's time-weighted-average rule. A sample with value None (bad quality)
ends the hold of the one before and holds nothing itself. Time nothing holds is not covered: no
energy is credited for it and the coverage falls.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.calendar import Span, clip, merge, total
from shopfloor.domain.kpi.models import Tariff

US_PER_HOUR = 3_600_000_000

Labelled = tuple[int, int, str]  # a half-open span and the tariff period it belongs to


@dataclass(frozen=True, slots=True)
class EnergyReading:
    kwh_by_period: dict[str, float]
    coverage: float

    @property
    def kwh(self) -> float:
        return sum(self.kwh_by_period.values())


def _check(start: int, end: int, periods: Sequence[Labelled]) -> list[Labelled]:
    """The tariff periods, which must partition the window (as ``calendar.tariff_spans`` does)."""
    if end <= start:
        raise InvalidInput("a KPI window must end after it starts")
    if not periods:
        return [(start, end, "standard")]
    out = sorted(periods)
    bounds = [start] + [b for s, e, _ in out for b in (s, e)] + [end]
    if any(bounds[i] != bounds[i + 1] for i in range(0, len(bounds), 2)):
        raise InvalidInput("tariff periods must cover the window without gaps or overlaps")
    return out


def _spread(acc: dict[str, float], periods: Sequence[Labelled], starts: Sequence[int],
            a: int, b: int, per_us: float, lo: int, hi: int) -> None:
    """Credit ``per_us`` kWh for each µs of [a, b) ∩ [lo, hi), to the periods it overlaps."""
    a, b = max(a, lo), min(b, hi)
    if b <= a:
        return
    i = max(bisect.bisect_right(starts, a) - 1, 0)
    while i < len(periods) and periods[i][0] < b:
        ps, pe, name = periods[i]
        overlap = min(b, pe) - max(a, ps)
        if overlap > 0:
            acc[name] = acc.get(name, 0.0) + per_us * overlap
        i += 1


def kwh_from_counter(readings: Sequence[tuple[int, float]], start: int, end: int,
                     periods: Sequence[Labelled] = ()) -> EnergyReading:
    """kWh used in [start, end) from cumulative counter readings (ts µs, kWh), by tariff period."""
    spans = _check(start, end, periods)
    starts = [s for s, _, _ in spans]
    by_ts: dict[int, float] = {}
    for ts, v in sorted(readings, key=lambda r: r[0]):
        by_ts[ts] = v  # the later reading of one instant wins
    points = sorted(by_ts.items())
    acc: dict[str, float] = {}
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        increment = v1 - v0 if v1 >= v0 else v1
        _spread(acc, spans, starts, t0, t1, increment / (t1 - t0), start, end)
    covered = clip([(points[0][0], points[-1][0])], start, end) if points else []
    return EnergyReading(acc, total(covered) / (end - start))


def kwh_from_power(samples: Sequence[tuple[int, float | None]], start: int, end: int,
                   periods: Sequence[Labelled] = (), max_gap_us: int = 300 * 1_000_000) -> EnergyReading:
    """kWh used in [start, end) from power samples (ts µs, kW or None for a bad sample)."""
    spans = _check(start, end, periods)
    starts = [s for s, _, _ in spans]
    by_ts: dict[int, float | None] = {}
    for ts, v in sorted(samples, key=lambda r: r[0]):
        by_ts[ts] = v
    points = sorted(by_ts.items())
    acc: dict[str, float] = {}
    held: list[Span] = []
    for i, (t0, kw) in enumerate(points):
        if kw is None:
            continue
        t1 = min(points[i + 1][0] if i + 1 < len(points) else t0 + max_gap_us, t0 + max_gap_us)
        _spread(acc, spans, starts, t0, t1, kw / US_PER_HOUR, start, end)
        held.append((t0, t1))
    return EnergyReading(acc, total(clip(merge(held), start, end)) / (end - start))


def energy_cost(kwh_by_period: Mapping[str, float], tariff: Tariff) -> float:
    """Σ kWh * price over the time-of-use periods."""
    return sum([kwh * tariff.price(period) for period, kwh in kwh_by_period.items()])
