"""The append fast path of the DuckDB rollups: samples newer than everything rolled up of their series.

That is what a live plant sends nearly always, and recomputing rollups from raw for it (what
``rollups.Rollups.refresh`` does) rereads the minutes around every sample plus a staleness before
them. The rollup follower (``rollup_follower.py``) hands this class the rows committed since its
mark as one batch. For a batch in which every series only moves forward, the rollup rows change in
a way that can be computed from the batch alone and the newest rolled-up sample of each series:

* the new samples add to the statistics of their minutes (count, sum, min, max, first, last merge);
* each new sample's hold adds its pieces to the minutes it spans;
* the hold of the series' newest stored sample (``prev``), which ran to ``ts + staleness`` because
  nothing came after it, now ends at the first new sample: the pieces beyond are subtracted;
* the carried-in flag of a minute after ``prev``'s own changes with that (only ``prev``'s hold could
  reach there from before); of earlier minutes it stays.

The deltas per minute are merged into the existing 1-minute rows, and summed per hour into the
1-hour rows, with the same rules (an hour is a merge of its minutes). A row that ends with neither
samples nor hold duration is removed, as a recomputation would not write it. The results equal a
recomputation up to floating-point rounding of the sums.

``prev`` comes from a cache of each series' newest rolled-up sample, kept by this object (one
follower per historian, under its lock). It is filled from the table for series it has not seen
(the newest sample with seq up to the follower's mark), updated after each catch-up that committed,
and dropped by retention, rebuilds and failed catch-ups. A batch takes this path only when every
series in it is newer than its cached newest sample and no retention guard lies in the way;
otherwise the follower recomputes the touched minutes from raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from shopfloor.domain.records import Quality
from shopfloor.storage.duckdb import rollup_delta
from shopfloor.storage.duckdb.rollup_delta import Ordered, ordered
from shopfloor.storage.duckdb.rollups import HOUR_US, MINUTE_US, Marks, register

_BAD = int(Quality.BAD)
_M = MINUTE_US

Newest = tuple[int, float | None, int] | None  # (ts, value, quality) of the newest stored sample; None: none stored

_DEDUP_SQL = """
SELECT series_id, ts, value, text, quality FROM _sf_samples
QUALIFY row_number() OVER (PARTITION BY series_id, ts ORDER BY i) = 1
"""

_SUMMARY_SQL = """
SELECT series_id, min(ts), max(ts), last(value ORDER BY ts), last(quality ORDER BY ts)
FROM _sf_new GROUP BY series_id
"""

_SEED_SQL = """
WITH newest AS (
    SELECT series_id, max(ts) AS ts FROM samples WHERE series_id IN (SELECT unnest($ids::INTEGER[]))
      AND seq <= $upto
    GROUP BY series_id
)
SELECT s.series_id, s.ts, s.value, s.quality FROM samples s JOIN newest USING (series_id, ts)
"""

# Per (series, minute): what the batch adds (statistics, hold pieces) and what the previous newest
# sample no longer holds; ``carried`` NULL means the minute's carried-in flag stays as it is.
# A new sample holds until the next one of its series (of any quality) or for the staleness; the
# previous newest sample (one per series, older than every new one) now holds only until the
# batch's first sample of its series (``next_ts``). ``holds`` has one reader, so it is not
# materialised. The follower works this out in numpy (``rollup_delta.py``, several times faster);
# this query takes the batches it does not order (a (series, ts) twice, NaN values); the tests
# compare the two.
_DELTA_SQL = f"""
WITH holds AS (
    SELECT series_id, ts, value, quality,
           least(coalesce(lead(ts) OVER (PARTITION BY series_id ORDER BY ts), ts + $st), ts + $st) AS h1
    FROM _sf_new
), prev AS (
    SELECT series_id, ts, value, least(next_ts, ts + $st) AS h1, quality < {_BAD} AND value IS NOT NULL AS holds
    FROM _sf_prev
), stats AS (
    SELECT series_id, ts - ts % {_M} AS b, count(*) AS n, count(value) AS nv, sum(value) AS vsum,
           min(value) AS vmin, max(value) AS vmax, min(ts) AS t_first, first(value ORDER BY ts) AS v_first,
           max(ts) AS t_last, last(value ORDER BY ts) AS v_last
    FROM _sf_new WHERE quality < {_BAD}
    GROUP BY ALL
), pieces AS (
    SELECT h.series_id, r.b, least(h.h1, r.b + {_M}) - greatest(h.ts, r.b) AS dt, h.value, h.ts < r.b AS carried
    FROM holds h, range(h.ts - h.ts % {_M}, h.h1, {_M}) r(b)
    WHERE h.quality < {_BAD} AND h.value IS NOT NULL
    UNION ALL
    SELECT p.series_id, r.b, -(least(p.ts + $st, r.b + {_M}) - greatest(p.h1, r.b)), p.value, false
    FROM prev p, range(p.h1 - p.h1 % {_M}, p.ts + $st, {_M}) r(b)
    WHERE p.holds AND p.h1 < p.ts + $st
), twa AS (
    SELECT series_id, b, sum(value * dt) AS w, sum(dt) AS dt,
           coalesce(bool_or(carried) FILTER (WHERE dt > 0), false) AS carried
    FROM pieces GROUP BY ALL
), keys AS (
    SELECT series_id, b FROM stats UNION SELECT series_id, b FROM twa
)
SELECT k.series_id, k.b AS bucket_us, coalesce(s.n, 0) AS n, coalesce(s.nv, 0) AS nv, s.vsum, s.vmin, s.vmax,
       s.t_first, s.v_first, s.t_last, s.v_last, coalesce(t.w, 0) AS w, coalesce(t.dt, 0) AS dt,
       CASE WHEN p.ts IS NULL THEN coalesce(t.carried, false)
            WHEN k.b <= p.ts THEN NULL
            ELSE coalesce(t.carried, false) OR (p.holds AND k.b < p.h1) END AS carried
FROM keys k LEFT JOIN stats s USING (series_id, b) LEFT JOIN twa t USING (series_id, b)
LEFT JOIN prev p USING (series_id)
"""

_HOUR_DELTA_SQL = f"""
SELECT series_id, bucket_us - bucket_us % {HOUR_US} AS bucket_us, sum(n) AS n, sum(nv) AS nv, sum(vsum) AS vsum,
       min(vmin) AS vmin, max(vmax) AS vmax, min(t_first) AS t_first,
       first(v_first ORDER BY t_first) FILTER (WHERE n > 0) AS v_first, max(t_last) AS t_last,
       last(v_last ORDER BY t_last) FILTER (WHERE n > 0) AS v_last, sum(w) AS w, sum(dt) AS dt,
       any_value(carried) FILTER (WHERE bucket_us % {HOUR_US} = 0) AS carried
FROM _sf_delta GROUP BY ALL
"""


def _merge_sql(table: str) -> str:
    """The rows of ``table`` that ``_sf_delta`` touches, merged with it (old rows read before the delete)."""
    return f"""
    SELECT d.series_id, d.bucket_us,
           coalesce(o.sample_count, 0) + d.n AS sample_count, coalesce(o.value_count, 0) + d.nv AS value_count,
           CASE WHEN o.value_sum IS NULL THEN d.vsum WHEN d.vsum IS NULL THEN o.value_sum
                ELSE o.value_sum + d.vsum END,
           least(o.value_min, d.vmin), greatest(o.value_max, d.vmax),
           CASE WHEN coalesce(o.sample_count, 0) > 0 THEN o.first_ts ELSE d.t_first END,
           CASE WHEN coalesce(o.sample_count, 0) > 0 THEN o.first_value ELSE d.v_first END,
           CASE WHEN d.n > 0 THEN d.t_last ELSE o.last_ts END,
           CASE WHEN d.n > 0 THEN d.v_last ELSE o.last_value END,
           coalesce(o.twa_weighted_sum, 0) + d.w, coalesce(o.twa_duration_us, 0) + d.dt AS duration,
           coalesce(d.carried, o.twa_carried_in, false)
    FROM _sf_delta d LEFT JOIN (
        SELECT * FROM {table} WHERE bucket_us >= $lo AND bucket_us <= $hi
    ) o ON o.series_id = d.series_id AND o.bucket_us = d.bucket_us
    """


_DELETE_SQL = """
DELETE FROM {table} USING _sf_delta d
WHERE {table}.series_id = d.series_id AND {table}.bucket_us = d.bucket_us
  AND {table}.bucket_us >= $lo AND {table}.bucket_us <= $hi
"""


@dataclass(slots=True)
class Plan:
    """A batch that may take the append path: its deduplicated samples and each series' newest."""

    new: pa.Table  # series_id, ts, value, text, quality: the rows to insert
    newest: dict[int, Newest]  # per series, its newest sample once this batch is committed
    prev: pa.Table  # series_id, ts, value, quality, next_ts: the newest stored sample of series that have
    # one, and the ts of the batch's first sample of that series
    ordered: Ordered | None  # the rows in order, for the numpy delta (None: the SQL delta)


_PREV_SCHEMA = pa.schema([("series_id", pa.int32()), ("ts", pa.int64()), ("value", pa.float64()),
                          ("quality", pa.int16()), ("next_ts", pa.int64())])


class AppendPath:
    def __init__(self) -> None:
        self._newest: dict[int, Newest] = {}

    def forget(self) -> None:
        """Drop everything known (after retention or a rebuild: the newest samples may have gone)."""
        self._newest.clear()

    def plan(self, cur: duckdb.DuckDBPyConnection, marks: Marks, staleness_us: int,
             upto_seq: int | None = None, rows: pa.Table | None = None) -> Plan | None:
        """For the batch registered as ``_sf_samples`` (with its position ``i``): a Plan if every
        series in it only moves forward and no retention guard is in the way, else None.

        ``upto_seq``: the newest samples looked up are those with seq up to it (default: all).
        ``rows``: the batch's rows, already free of duplicates (series_id, ts, value, text,
        quality; then ``_sf_samples`` is not read)."""
        new = cur.sql(_DEDUP_SQL).to_arrow_table() if rows is None else rows
        in_order = ordered(new)
        summary: list[tuple[int, int, int, float | None, int]]
        if in_order is not None:
            summary = in_order.summary()
        else:
            register(cur, "_sf_new", new)
            try:
                summary = cur.execute(_SUMMARY_SQL).fetchall()
            finally:
                cur.unregister("_sf_new")
        unknown = [int(r[0]) for r in summary if int(r[0]) not in self._newest]
        if unknown:
            self._seed(cur, unknown, 2**62 if upto_seq is None else upto_seq)
        every_m, per_m = marks.guards(MINUTE_US, staleness_us)
        every_h, per_h = marks.guards(HOUR_US, staleness_us)
        newest: dict[int, Newest] = {}
        prev_rows: list[tuple[int, int, float | None, int, int]] = []
        for sid, lo, hi, value, quality in summary:
            sid, lo = int(sid), int(lo)
            known = self._newest[sid]
            if known is not None:
                if lo <= known[0]:
                    return None  # late data, or a redelivery: recompute from raw
                prev_rows.append((sid, *known, lo))
            minute, hour = lo - lo % MINUTE_US, lo - lo % HOUR_US
            for guard in (every_m, per_m.get(sid)):
                if guard is not None and minute < guard:
                    return None
            for guard in (every_h, per_h.get(sid)):
                if guard is not None and hour < guard:
                    return None
            newest[sid] = (int(hi), value, int(quality))
        cols: list[Sequence[object]] = [[r[k] for r in prev_rows] for k in range(5)]
        prev = pa.table([pa.array(c, f.type) for c, f in zip(cols, _PREV_SCHEMA, strict=True)], schema=_PREV_SCHEMA)
        return Plan(new, newest, prev, in_order)

    def _seed(self, cur: duckdb.DuckDBPyConnection, series_ids: Sequence[int], upto_seq: int) -> None:
        found = {int(r[0]): (int(r[1]), r[2], int(r[3]))
                 for r in cur.execute(_SEED_SQL, {"ids": list(series_ids), "upto": upto_seq}).fetchall()}
        for sid in series_ids:
            self._newest[sid] = found.get(sid)

    @staticmethod
    def apply(cur: duckdb.DuckDBPyConnection, plan: Plan, staleness_us: int) -> None:
        """Update the rollup rows for ``plan`` (its samples already stored), inside the caller's transaction."""
        delta = None if plan.ordered is None else rollup_delta.delta(plan.ordered, plan.prev, staleness_us)
        if delta is None:
            register(cur, "_sf_new", plan.new)
            register(cur, "_sf_prev", plan.prev)
            try:
                delta = cur.sql(_DELTA_SQL, params={"st": staleness_us}).to_arrow_table()
            finally:
                cur.unregister("_sf_new")
                cur.unregister("_sf_prev")
        if delta.num_rows == 0:
            return
        _merge(cur, "rollup_1m", delta)
        register(cur, "_sf_delta", delta)
        try:
            hours = cur.sql(_HOUR_DELTA_SQL).to_arrow_table()
        finally:
            cur.unregister("_sf_delta")
        _merge(cur, "rollup_1h", hours)

    def committed(self, plan: Plan) -> None:
        self._newest.update(plan.newest)

    def after_recompute(self, samples: pa.Table) -> None:
        """After a batch took the slow path and committed: a series whose batch reached its known
        newest sample (or that had none) has another newest one now; forget those (the next batch
        looks them up again) and keep the rest."""
        newest = samples.group_by("series_id").aggregate([("ts", "max")])
        for sid, hi in zip(newest["series_id"].to_pylist(), newest["ts_max"].to_pylist(), strict=True):
            known = self._newest.get(sid)
            if known is None or hi >= known[0]:
                self._newest.pop(sid, None)


def _merge(cur: duckdb.DuckDBPyConnection, table: str, delta: pa.Table) -> None:
    register(cur, "_sf_delta", delta)
    try:
        bounds = cur.execute("SELECT min(bucket_us), max(bucket_us) FROM _sf_delta").fetchall()[0]
        params = {"lo": int(bounds[0]), "hi": int(bounds[1])}
        merged = cur.sql(_merge_sql(table), params=params).to_arrow_table()
        cur.execute(_DELETE_SQL.format(table=table), params)
        register(cur, "_sf_merged", merged)
        try:
            cur.execute(f"INSERT INTO {table} SELECT * FROM _sf_merged WHERE sample_count > 0 OR duration > 0")
        finally:
            cur.unregister("_sf_merged")
    finally:
        cur.unregister("_sf_delta")
