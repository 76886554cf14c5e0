"""The historian's aggregate semantics in plain Python: the yardstick of the rollup contract.

Slow and obvious on purpose. ``reference_aggregate(samples, buckets, agg, staleness_us)`` gives
the (value, count) per bucket that ``TimeSeriesStore.aggregate`` must return for those samples:

* bad-quality samples are left out; avg/min/max/sum use numeric samples, count/first/last
  every good or uncertain one (first/last of a text sample is None, with its count);
* twa: each sample holds from its ts until the next sample of the series (of any quality, text
  included) or for at most ``staleness_us``; only good or uncertain numeric samples contribute;
  the count is the number of holds overlapping the bucket.

``irregular_samples`` makes a reproducible, unfriendly series for it: uneven gaps (some longer
than any staleness in the contract), µs jitter, samples on minute and hour boundaries, bad,
uncertain and text samples.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

from shopfloor.domain.query import Agg
from shopfloor.domain.records import Quality, Sample

_S = 1_000_000
_MIN = 60 * _S


def reference_aggregate(samples: Sequence[Sample], buckets: Sequence[tuple[int, int]], agg: Agg,
                        staleness_us: int) -> list[tuple[float | None, int]]:
    ordered = sorted(samples, key=lambda s: s.ts_us)
    if agg is Agg.TWA:
        return _twa(ordered, buckets, staleness_us)
    good = [s for s in ordered if s.quality < Quality.BAD]
    good_ts = [s.ts_us for s in good]
    out: list[tuple[float | None, int]] = []
    for b0, b1 in buckets:
        inside = good[bisect.bisect_left(good_ts, b0):bisect.bisect_left(good_ts, b1)]
        numbers = [s.value for s in inside if s.value is not None]
        if agg is Agg.COUNT:
            out.append((float(len(inside)) if inside else None, len(inside)))
        elif agg in (Agg.FIRST, Agg.LAST):
            picked = inside[0 if agg is Agg.FIRST else -1].value if inside else None
            out.append((picked, len(inside)))
        elif not numbers:
            out.append((None, 0))
        else:
            value = {Agg.AVG: sum(numbers) / len(numbers), Agg.SUM: sum(numbers),
                     Agg.MIN: min(numbers), Agg.MAX: max(numbers)}[agg]
            out.append((value, len(numbers)))
    return out


def _twa(ordered: list[Sample], buckets: Sequence[tuple[int, int]],
         staleness_us: int) -> list[tuple[float | None, int]]:
    holds: list[tuple[int, int, float]] = []
    for i, s in enumerate(ordered):
        if s.quality >= Quality.BAD or s.value is None:
            continue
        end = s.ts_us + staleness_us
        if i + 1 < len(ordered):
            end = min(end, ordered[i + 1].ts_us)
        holds.append((s.ts_us, end, s.value))
    starts = [h[0] for h in holds]
    ends = [h[1] for h in holds]  # holds do not overlap, so ends are sorted too
    out: list[tuple[float | None, int]] = []
    for b0, b1 in buckets:
        num = 0.0
        den = 0
        touching = holds[bisect.bisect_right(ends, b0):bisect.bisect_left(starts, b1)]
        for h0, h1, value in touching:
            dt = min(h1, b1) - max(h0, b0)
            num += value * dt
            den += dt
        out.append((num / den if den else None, len(touching)))
    return out


def irregular_samples(series_id: int, start_us: int, end_us: int, seed: int) -> list[Sample]:
    """A reproducible irregular series in [start, end): about one sample per 3.5 minutes."""
    rnd = random.Random(seed)
    out: list[Sample] = []
    ts = start_us
    while True:
        roll = rnd.random()
        if roll < 0.06:
            ts += rnd.randint(20, 70) * _MIN                   # a gap longer than any hold
        elif roll < 0.12:
            ts = (ts // _MIN + rnd.randint(1, 3)) * _MIN       # exactly on a minute boundary
        else:
            ts += rnd.randint(1, 300) * _S + rnd.randint(0, _S - 1)
        if ts >= end_us:
            return out
        kind = rnd.random()
        quality = Quality.BAD if kind < 0.1 else Quality.UNCERTAIN if kind < 0.25 else Quality.GOOD
        if rnd.random() < 0.05:
            out.append(Sample(series_id, ts, None, rnd.choice(["open", "closed"]), int(quality)))
        else:
            out.append(Sample(series_id, ts, round(rnd.uniform(-40.0, 160.0), 3), None, int(quality)))
