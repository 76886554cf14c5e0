"""The append path's per-minute deltas (``rollup_append.py``), worked out in numpy.

The rollup follower merges up to a million rows at a time. On the shape of the ingest bench's
50-point messages the delta query in SQL (``rollup_append._DELTA_SQL``) cost ~0.15 µs a row there,
its summary and the hold ends another ~0.15: most of the follower's time. Here the batch is put in order once (by series, each series' rows by ts: a stable sort by series,
which leaves rows that came in time order where they are, else a sort by both), and everything
else is a pass over sorted arrays: the statistics of each (series, minute) are runs of adjacent
rows, a hold's pieces come out in the same order, so both reduce with ``reduceat``; only the
previous newest samples' pieces (a few per series) need a sort of their own. The whole follower
then spends 0.1-0.2 µs a row on that shape (see bench/ingest_limits.md).

The rows it returns are the SQL delta's, column for column (the tests compare both on generated
streams, and the whole follower with a rebuild); sums may differ in the last bits (another order).
A batch with NaN values or a (series, ts) twice goes the SQL way (its ordering and NULL rules are
DuckDB's there), and so does one whose holds make more than ``MAX_PIECES`` minute pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from shopfloor.domain.records import Quality
from shopfloor.storage.duckdb.rollups import MINUTE_US

_BAD = int(Quality.BAD)
_M = MINUTE_US
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
# Pieces (a hold's share of one minute) held in memory at once, ~70 bytes each while they are
# worked out: a dense stream makes about one per sample, a sparse one up to staleness/minute + 1.
MAX_PIECES = 2_000_000

DELTA_SCHEMA = pa.schema([
    ("series_id", pa.int32()), ("bucket_us", pa.int64()), ("n", pa.int64()), ("nv", pa.int64()),
    ("vsum", pa.float64()), ("vmin", pa.float64()), ("vmax", pa.float64()), ("t_first", pa.int64()),
    ("v_first", pa.float64()), ("t_last", pa.int64()), ("v_last", pa.float64()), ("w", pa.float64()),
    ("dt", pa.int64()), ("carried", pa.bool_()),
])


@dataclass(slots=True)
class Ordered:
    """A batch's rows by series, each series' rows in strictly ascending ts."""

    sid: I64
    ts: I64
    value: F64  # 0 where the value is NULL
    has_value: Bools
    quality: I64
    first: I64  # each series' first row
    last: I64  # and last

    def summary(self) -> list[tuple[int, int, int, float | None, int]]:
        """Per series: (series_id, first ts, last ts, last value, last quality)."""
        last = self.last
        values: list[float | None] = [v if ok else None for v, ok in
                                      zip(self.value[last].tolist(), self.has_value[last].tolist(), strict=True)]
        return list(zip(self.sid[self.first].tolist(), self.ts[self.first].tolist(), self.ts[last].tolist(),
                        values, self.quality[last].tolist(), strict=True))


def ordered(new: pa.Table) -> Ordered | None:
    """``new`` (series_id, ts, value, quality) in order; None if a (series, ts) repeats or a value is NaN."""
    n = new.num_rows
    if n == 0:
        return None
    sid = new["series_id"].to_numpy().astype(np.int64)
    ts = new["ts"].to_numpy().astype(np.int64, copy=False)
    order = np.argsort(sid, kind="stable")  # rows that came in time order stay in it
    s, t = sid[order], ts[order]
    same = s[1:] == s[:-1]
    if bool(np.any((t[1:] <= t[:-1]) & same)):
        order = np.lexsort((ts, sid))
        s, t = sid[order], ts[order]
        if bool(np.any((t[1:] == t[:-1]) & same)):
            return None
    column = new["value"]
    value = column.fill_null(0.0).to_numpy().astype(np.float64, copy=False)[order]
    if bool(np.isnan(value).any()):
        return None
    has_value = column.is_valid().to_numpy(zero_copy_only=False)[order]
    quality = new["quality"].to_numpy().astype(np.int64)[order]
    first = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    last = np.concatenate((first[1:] - 1, [n - 1]))
    return Ordered(s, t, value, has_value, quality, first, last)


def _runs(*keys: npt.NDArray[np.int64]) -> I64:
    """Where each run of equal adjacent keys begins."""
    n = len(keys[0])
    change = np.zeros(n, bool)
    if n:
        change[0] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def _reduce(ufunc: np.ufunc, values: npt.NDArray[Any], at: I64) -> npt.NDArray[Any]:
    """``ufunc`` over each run of ``values`` beginning at ``at`` (sorted; empty gives empty)."""
    return ufunc.reduceat(values, at) if len(at) else values[:0]


def _place(values: npt.NDArray[Any], slots: I64, k: int) -> npt.NDArray[Any]:
    """An array of ``k`` zeros of ``values``' type with ``values`` at ``slots``."""
    out: npt.NDArray[Any] = np.zeros(k, values.dtype)
    out[slots] = values
    return out


def _floor(x: I64) -> I64:
    return x - x % _M  # numpy's % takes the divisor's sign: a floor also below zero


def _minutes(t0: I64, t1: I64) -> I64:
    """How many minutes each span [t0, t1) touches."""
    minutes: I64 = np.maximum(0, (t1 - _floor(t0) + _M - 1) // _M)
    return minutes


def _spread(t0: I64, k: I64) -> tuple[I64, I64]:
    """The ``k`` minutes each span from ``t0`` touches (``_minutes``): (row of each piece, its minute)."""
    b0 = _floor(t0)
    row = np.repeat(np.arange(len(t0)), k)
    offset = np.arange(len(row)) - np.repeat(np.cumsum(k) - k, k)
    return row, b0[row] + offset * _M


def delta(rows: Ordered, prev: pa.Table, staleness_us: int, max_pieces: int = MAX_PIECES) -> pa.Table | None:
    """The SQL delta's rows (see ``rollup_append._DELTA_SQL``) for ``rows`` and the newest stored
    samples ``prev`` (series_id, ts, value, quality, next_ts); None when the new samples' holds
    would make more than ``max_pieces`` (series, minute) pieces, which are all held in memory here
    (the SQL query streams them). Sums and products beyond the range of a double become infinite
    (or NaN), as in DuckDB."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _delta(rows, prev, staleness_us, max_pieces)


def _delta(rows: Ordered, prev: pa.Table, staleness_us: int, max_pieces: int) -> pa.Table | None:
    s, t, v, ok, q = rows.sid, rows.ts, rows.value, rows.has_value, rows.quality
    st = staleness_us
    # statistics of the good samples, per (series, minute): runs of adjacent rows
    good = q < _BAD
    gs, gt, gv, gok = s[good], t[good], v[good], ok[good]
    gb = _floor(gt)
    at = _runs(gs, gb)
    ends = np.concatenate((at[1:], [len(gs)]))[:len(at)] - 1
    n = np.diff(np.concatenate((at, [len(gs)])))
    nv = _reduce(np.add, gok.astype(np.int64), at)
    vsum = _reduce(np.add, np.where(gok, gv, 0.0), at)
    vmin = _reduce(np.minimum, np.where(gok, gv, np.inf), at)
    vmax = _reduce(np.maximum, np.where(gok, gv, -np.inf), at)
    stats_s, stats_b = gs[at], gb[at]

    # hold pieces of the new samples: a hold ends at the series' next sample or after the staleness
    end = t + st
    h1 = end.copy()
    same = s[1:] == s[:-1]
    h1[:-1] = np.where(same, np.minimum(t[1:], end[:-1]), end[:-1])
    holding = good & ok
    hs, ht, hv, hh1 = s[holding], t[holding], v[holding], h1[holding]
    minutes = _minutes(ht, hh1)
    if int(minutes.sum()) > max_pieces:
        return None
    row, pb = _spread(ht, minutes)
    pdt = np.minimum(hh1[row], pb + _M) - np.maximum(ht[row], pb)
    ps = hs[row]
    pw = hv[row] * pdt
    pcar = ht[row] < pb
    at2 = _runs(ps, pb)  # the pieces come by series and minute already
    new_s, new_b = ps[at2], pb[at2]
    new_w = _reduce(np.add, pw, at2)
    new_dt = _reduce(np.add, pdt, at2)
    new_car = _reduce(np.logical_or, pcar, at2)

    # what the previous newest samples no longer hold (their hold now ends at the next_ts)
    prev = prev.take(np.argsort(prev["series_id"].to_numpy(), kind="stable"))
    p_sid = prev["series_id"].to_numpy().astype(np.int64)
    p_ts = prev["ts"].to_numpy().astype(np.int64)
    p_value = prev["value"].fill_null(0.0).to_numpy().astype(np.float64, copy=False)
    p_holds = (prev["value"].is_valid().to_numpy(zero_copy_only=False)
               & (prev["quality"].to_numpy().astype(np.int64) < _BAD))
    p_end = p_ts + st
    p_h1 = np.minimum(prev["next_ts"].to_numpy().astype(np.int64), p_end)
    cut = p_holds & (p_h1 < p_end)
    row, cb = _spread(p_h1[cut], _minutes(p_h1[cut], p_end[cut]))
    cdt = -(np.minimum(p_end[cut][row], cb + _M) - np.maximum(p_h1[cut][row], cb))
    cs = p_sid[cut][row]
    cw = p_value[cut][row] * cdt

    # twa per (series, minute): the new pieces' runs and the cut pieces, summed by key
    tw_s = np.concatenate((new_s, cs))
    tw_b = np.concatenate((new_b, cb))
    tw_w = np.concatenate((new_w, cw))
    tw_dt = np.concatenate((new_dt, cdt))
    tw_car = np.concatenate((new_car, np.zeros(len(cs), bool)))
    if len(cs):
        o = np.lexsort((tw_b, tw_s))
        tw_s, tw_b, tw_w, tw_dt, tw_car = tw_s[o], tw_b[o], tw_w[o], tw_dt[o], tw_car[o]
        at3 = _runs(tw_s, tw_b)
        tw_s, tw_b = tw_s[at3], tw_b[at3]
        tw_w, tw_dt = np.add.reduceat(tw_w, at3), np.add.reduceat(tw_dt, at3)
        tw_car = np.logical_or.reduceat(tw_car, at3)

    # the keys: both sets of (series, minute), each row placed by its key
    all_s = np.concatenate((stats_s, tw_s))
    all_b = np.concatenate((stats_b, tw_b))
    o = np.lexsort((all_b, all_s))
    starts = _runs(all_s[o], all_b[o])
    mark = np.zeros(len(o), np.int64)
    mark[starts] = 1
    group = np.cumsum(mark) - 1
    slot = np.empty(len(o), np.int64)
    slot[o] = group
    k = len(starts)
    key_s, key_b = all_s[o][starts], all_b[o][starts]
    si, ti = slot[:len(stats_s)], slot[len(stats_s):]

    out_n = np.zeros(k, np.int64)
    out_nv = np.zeros(k, np.int64)
    has_stats = np.zeros(k, bool)
    out_n[si], out_nv[si], has_stats[si] = n, nv, True
    some = np.zeros(k, bool)
    some[si] = nv > 0

    def at_stats(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return _place(values, si, k)

    w = np.zeros(k)
    dt = np.zeros(k, np.int64)
    car = np.zeros(k, bool)
    w[ti], dt[ti], car[ti] = tw_w, tw_dt, tw_car
    # the carried-in flag: stays as it is up to the previous newest sample's minute
    keep_flag, carried = np.zeros(k, bool), car
    if len(p_sid):
        pi = np.minimum(np.searchsorted(p_sid, key_s), len(p_sid) - 1)
        has_prev = p_sid[pi] == key_s
        keep_flag = has_prev & (key_b <= p_ts[pi])
        carried = car | (has_prev & p_holds[pi] & (key_b < p_h1[pi]))

    first_ok, last_ok = at_stats(gok[at]), at_stats(gok[ends])
    columns = [
        pa.array(key_s.astype(np.int32)), pa.array(key_b), pa.array(out_n), pa.array(out_nv),
        pa.array(at_stats(vsum), mask=~some), pa.array(at_stats(vmin), mask=~some),
        pa.array(at_stats(vmax), mask=~some), pa.array(at_stats(gt[at]), mask=~has_stats),
        pa.array(at_stats(gv[at]), mask=~first_ok), pa.array(at_stats(gt[ends]), mask=~has_stats),
        pa.array(at_stats(gv[ends]), mask=~last_ok), pa.array(w), pa.array(dt), pa.array(carried, mask=keep_flag),
    ]
    return pa.Table.from_arrays(columns, schema=DELTA_SCHEMA)
