"""1-minute and 1-hour rollups of the DuckDB historian, and the retention marks that guard them.

What a rollup row holds, per (series, bucket): ``sample_count`` (good and uncertain samples,
text ones included, as raw ``count`` sees them), ``value_count`` (the numeric ones among them),
``value_sum``/``value_min``/``value_max``, the first and last of those samples (ts and value; the
value is NULL when that sample was text, as raw ``first``/``last`` answer), and the two sums of a
time-weighted average computed with the store's ``rollup_staleness_us``: ``twa_weighted_sum``
(Σ value * µs held inside the bucket) and ``twa_duration_us`` (Σ µs held), plus
``twa_carried_in``: whether a hold that began before the bucket reaches into it. A twa bucket of a
query made of consecutive rollup buckets then has the value Σ weighted / Σ duration and the count
Σ value_count + carried_in(first sub-bucket), exactly what raw gives. Rows exist only for buckets
with a good sample or a hold; bad samples count nowhere, and a text sample ends a hold.

How rows are kept current: the rollup follower (``rollup_follower.py``) merges committed samples
behind the commits, by the append path's deltas (``rollup_append.py``) when every series only moves
forward, else by ``refresh``. For each series of the rows it merges, the 1-minute buckets from the
bucket of a sample up to the end of its hold ([floor(ts), ts + staleness)) are merged into ranges; a new sample can only change the rows in
that span (it cuts the hold of the sample before it, and only after its own ts). Those rows are
deleted and recomputed from raw in one statement; the 1-hour rows of the hours around them are
then recomputed from the 1-minute rows (an hour is a merge of its sixty minutes, so it equals the
same computation from raw). Ranges far apart in time are handled in separate statements so that
zone maps can skip the row groups in between; ``rebuild`` works one week at a time. Cost: a batch
writes one 1-minute row per (series, minute) that its samples or their holds touch, so a batch of
many series with one sample each (sparse data) writes several times more rollup rows than samples;
``bench/historian_rollups.py`` measures it.

Retention marks (table ``rollup_marks``): every ``delete_before`` and ``delete_rollups_before``
records its cutoff, per series or for all (``series_id`` NULL). Recomputation never touches a
1-minute bucket that starts before raw cutoff + staleness (its raw data may be gone: recomputing
it would lose what the rollup still knows) nor before the 1-minute cutoff, nor an hour before
either or before the 1-hour cutoff. A query uses a rollup level only for a bucket that starts at
or after that level's cutoff, so after a level's retention the next finer level or raw answers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import Agg
from shopfloor.domain.records import Quality

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
LEVELS: tuple[tuple[str, int], ...] = (("1h", HOUR_US), ("1m", MINUTE_US))  # coarsest first
_WIDTH = dict(LEVELS)
_BAD = int(Quality.BAD)
_CLUSTER_GAP_US = 24 * HOUR_US  # ranges further apart than this are refreshed in separate statements
_NARROW_US = 6 * HOUR_US  # a series whose samples in a batch span less is refreshed as one range
_REBUILD_CHUNK_US = 7 * 24 * HOUR_US  # a rebuild recomputes one such stretch (whole hours) at a time

# Ranges are Arrow tables (series_id int32, lo int64, hi int64): for each row, the buckets whose
# start b has lo <= b < hi, lo and hi multiples of the level's width; disjoint within a series.
RANGE_SCHEMA = pa.schema([("series_id", pa.int32()), ("lo", pa.int64()), ("hi", pa.int64())])

MIGRATION = """
CREATE TABLE rollup_1m (
    series_id INTEGER NOT NULL,
    bucket_us BIGINT NOT NULL,
    sample_count BIGINT NOT NULL,
    value_count BIGINT NOT NULL,
    value_sum DOUBLE,
    value_min DOUBLE,
    value_max DOUBLE,
    first_ts BIGINT,
    first_value DOUBLE,
    last_ts BIGINT,
    last_value DOUBLE,
    twa_weighted_sum DOUBLE NOT NULL,
    twa_duration_us BIGINT NOT NULL,
    twa_carried_in BOOLEAN NOT NULL
);
CREATE TABLE rollup_1h AS SELECT * FROM rollup_1m WITH NO DATA;
CREATE TABLE rollup_marks (kind VARCHAR NOT NULL, series_id INTEGER, cutoff_us BIGINT NOT NULL);
CREATE TABLE rollup_state (rebuild_pending BOOLEAN NOT NULL, staleness_us BIGINT);
INSERT INTO rollup_state VALUES (true, NULL);
"""


def _floor(expr: str, width: int) -> str:
    """SQL for ``expr`` rounded down to a multiple of ``width`` (also for negative values)."""
    return f"(({expr}) - ((({expr}) % {width}) + {width}) % {width})"


def _floor_py(x: int, width: int) -> int:
    return x - x % width


def _ceil_py(x: int, width: int) -> int:
    return -((-x) // width) * width


# Merging rows of a rollup table ``m`` into coarser buckets; ``start`` is the SQL of the coarser
# bucket's start, for the carried-in flag of its first sub-bucket.
def _merge_columns(start: str) -> str:
    return f"""
        coalesce(sum(m.sample_count), 0), coalesce(sum(m.value_count), 0),
        sum(m.value_sum), min(m.value_min), max(m.value_max),
        min(m.first_ts), first(m.first_value ORDER BY m.first_ts) FILTER (WHERE m.sample_count > 0),
        max(m.last_ts), last(m.last_value ORDER BY m.last_ts) FILTER (WHERE m.sample_count > 0),
        coalesce(sum(m.twa_weighted_sum), 0), coalesce(sum(m.twa_duration_us), 0),
        coalesce(bool_or(m.twa_carried_in) FILTER (WHERE m.bucket_us = {start}), false)"""


_DELETE_MINUTES_SQL = """
DELETE FROM rollup_1m USING _sf_ranges r
WHERE rollup_1m.series_id = r.series_id AND rollup_1m.bucket_us >= r.lo AND rollup_1m.bucket_us < r.hi
  AND rollup_1m.bucket_us >= $tlo AND rollup_1m.bucket_us < $thi
"""

# Statistics per minute from the samples in it; twa sums from the pieces of every hold.
_MINUTES_FROM_RAW_SQL = f"""
INSERT INTO rollup_1m
WITH pts AS (
    SELECT s.series_id, r.lo, r.hi, s.ts, s.value, s.quality
    FROM samples s JOIN _sf_ranges r ON s.series_id = r.series_id AND s.ts >= r.lo - $st AND s.ts < r.hi
    WHERE s.ts >= $tlo - $st AND s.ts < $thi
), holds AS (
    SELECT series_id, lo, hi, ts, value, quality,
           least(coalesce(lead(ts) OVER (PARTITION BY series_id, lo ORDER BY ts), ts + $st), ts + $st) AS h1
    FROM pts
), stats AS (
    SELECT series_id, {_floor("ts", MINUTE_US)} AS bucket_us, count(*) AS n, count(value) AS nv,
           sum(value) AS vsum, min(value) AS vmin, max(value) AS vmax,
           min(ts) AS t_first, first(value ORDER BY ts) AS v_first,
           max(ts) AS t_last, last(value ORDER BY ts) AS v_last
    FROM holds WHERE quality < {_BAD} AND ts >= lo
    GROUP BY ALL
), pieces AS (
    SELECT h.series_id, b.bucket_us, h.value, h.ts < b.bucket_us AS carried,
           least(h.h1, b.bucket_us + {MINUTE_US}) - greatest(h.ts, b.bucket_us) AS dt
    FROM holds h, range({_floor("h.ts", MINUTE_US)}, h.h1, {MINUTE_US}) b(bucket_us)
    WHERE h.quality < {_BAD} AND h.value IS NOT NULL AND b.bucket_us >= h.lo AND b.bucket_us < h.hi
), twa AS (
    SELECT series_id, bucket_us, sum(value * dt) AS num, sum(dt) AS den, bool_or(carried) AS carried
    FROM pieces GROUP BY ALL
)
SELECT coalesce(s.series_id, t.series_id), coalesce(s.bucket_us, t.bucket_us),
       coalesce(s.n, 0), coalesce(s.nv, 0), s.vsum, s.vmin, s.vmax, s.t_first, s.v_first, s.t_last, s.v_last,
       coalesce(t.num, 0), coalesce(t.den, 0), coalesce(t.carried, false)
FROM stats s FULL JOIN twa t ON s.series_id = t.series_id AND s.bucket_us = t.bucket_us
"""

# hour ranges are single hours (hi = lo + 1 h), so both statements join on equality
_DELETE_HOURS_SQL = """
DELETE FROM rollup_1h USING _sf_ranges r
WHERE rollup_1h.series_id = r.series_id AND rollup_1h.bucket_us = r.lo
  AND rollup_1h.bucket_us >= $tlo AND rollup_1h.bucket_us < $thi
"""

_HOURS_FROM_MINUTES_SQL = f"""
INSERT INTO rollup_1h
SELECT m.series_id, r.lo, {_merge_columns("r.lo")}
FROM rollup_1m m JOIN _sf_ranges r ON m.series_id = r.series_id AND {_floor("m.bucket_us", HOUR_US)} = r.lo
WHERE m.bucket_us >= $tlo AND m.bucket_us < $thi
GROUP BY m.series_id, r.lo
"""

_HOURS_OF_MINUTES_SQL = f"""
SELECT DISTINCT series_id, h AS lo, h + {HOUR_US} AS hi
FROM _sf_ranges, range({_floor("lo", HOUR_US)}, hi, {HOUR_US}) t(h)
"""

_QUERY_SQL = """
SELECT b.i, {merge}
FROM _sf_buckets b LEFT JOIN (
    SELECT * FROM {table} WHERE series_id = $sid AND bucket_us >= $lo AND bucket_us < $hi
) m ON m.bucket_us >= b.b0 AND m.bucket_us < b.b1
GROUP BY b.i ORDER BY b.i
"""

# per series of the batch: the minute ranges [floor(ts), floor(ts + st - 1) + 1 min), merged;
# a series whose samples lie close together gets one range from its first to its last
_BATCH_RANGES_SQL = f"""
WITH per AS (
    SELECT series_id, min(ts) AS a, max(ts) AS z FROM _sf_samples GROUP BY series_id
), iv AS (
    SELECT DISTINCT s.series_id, {_floor("s.ts", MINUTE_US)} AS lo,
           {_floor("s.ts + $st - 1", MINUTE_US)} + {MINUTE_US} AS hi
    FROM _sf_samples s JOIN per p ON s.series_id = p.series_id AND p.z - p.a > {_NARROW_US}
), marked AS (
    SELECT series_id, lo, hi,
           coalesce(lo > max(hi) OVER (PARTITION BY series_id ORDER BY lo, hi
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), true) AS brk
    FROM iv
), numbered AS (
    SELECT series_id, lo, hi,
           sum(brk::INTEGER) OVER (PARTITION BY series_id ORDER BY lo, hi ROWS UNBOUNDED PRECEDING) AS k
    FROM marked
)
SELECT series_id, min(lo) AS lo, max(hi) AS hi FROM numbered GROUP BY series_id, k
UNION ALL
SELECT series_id, {_floor("a", MINUTE_US)}, {_floor("z + $st - 1", MINUTE_US)} + {MINUTE_US}
FROM per WHERE z - a <= {_NARROW_US}
"""


@dataclass
class Marks:
    """Retention cutoffs per kind ("raw", "1m", "1h"): one for all series and some per series."""

    every: dict[str, int] = field(default_factory=dict)
    per_series: dict[str, dict[int, int]] = field(default_factory=dict)
    _guards: dict[tuple[int, int], tuple[int | None, dict[int, int]]] = field(
        default_factory=dict, compare=False, repr=False)

    @classmethod
    def load(cls, cur: duckdb.DuckDBPyConnection) -> Marks:
        marks = cls()
        for kind, sid, cutoff in cur.execute("SELECT kind, series_id, cutoff_us FROM rollup_marks").fetchall():
            marks = marks.raised(str(kind), int(cutoff), None if sid is None else [int(sid)])
        return marks

    def horizon(self, kind: str, series_id: int | None) -> int | None:
        """The cutoff of ``kind`` for a series (None: for a series without marks of its own)."""
        own = None if series_id is None else self.per_series.get(kind, {}).get(series_id)
        found = [c for c in (self.every.get(kind), own) if c is not None]
        return max(found) if found else None

    def raised(self, kind: str, cutoff: int, series_ids: Sequence[int] | None) -> Marks:
        """A copy with ``cutoff`` recorded (marks only move forward)."""
        every = dict(self.every)
        per_series = {k: dict(v) for k, v in self.per_series.items()}
        mine = per_series.setdefault(kind, {})
        if series_ids is None:
            every[kind] = max(cutoff, every.get(kind, cutoff))
            for sid in [s for s, c in mine.items() if c <= every[kind]]:
                del mine[sid]  # covered by the mark for all series
        else:
            floor = every.get(kind)
            for sid in series_ids:
                if floor is None or cutoff > floor:
                    mine[sid] = max(cutoff, mine.get(sid, cutoff))
        return Marks(every, per_series)

    def write(self, cur: duckdb.DuckDBPyConnection) -> None:
        cur.execute("DELETE FROM rollup_marks")
        rows: list[tuple[str, int | None, int]] = [(k, None, c) for k, c in self.every.items()]
        rows += [(k, sid, c) for k, m in self.per_series.items() for sid, c in m.items()]
        if rows:
            cur.execute("INSERT INTO rollup_marks SELECT unnest($k::VARCHAR[]), unnest($s::INTEGER[]),"
                        " unnest($c::BIGINT[])",
                        {"k": [r[0] for r in rows], "s": [r[1] for r in rows], "c": [r[2] for r in rows]})

    def guards(self, width: int, staleness_us: int) -> tuple[int | None, dict[int, int]]:
        """For the level of ``width``: the guard of every series, and the higher guards of some."""
        key = (width, staleness_us)
        if key not in self._guards:
            guard = self.minute_guard if width == MINUTE_US else self.hour_guard
            kinds = ("raw", "1m") if width == MINUTE_US else ("raw", "1m", "1h")
            marked = {sid for kind in kinds for sid in self.per_series.get(kind, {})}
            per = {sid: g for sid in marked if (g := guard(sid, staleness_us)) is not None}
            self._guards[key] = guard(None, staleness_us), per
        return self._guards[key]

    def minute_guard(self, series_id: int | None, staleness_us: int) -> int | None:
        """The first 1-minute bucket start that may be recomputed from raw (None: any)."""
        raw = self.horizon("raw", series_id)
        found = [g for g in (None if raw is None else raw + staleness_us, self.horizon("1m", series_id))
                 if g is not None]
        return _ceil_py(max(found), MINUTE_US) if found else None

    def hour_guard(self, series_id: int | None, staleness_us: int) -> int | None:
        found = [g for g in (self.minute_guard(series_id, staleness_us), self.horizon("1h", series_id))
                 if g is not None]
        return _ceil_py(max(found), HOUR_US) if found else None


class Rollups:
    """The rollup maintenance and queries of one historian (plain functions of a cursor)."""

    def __init__(self, staleness_us: int) -> None:
        if staleness_us <= 0 or staleness_us > 2**60:
            raise InvalidInput("rollup staleness must be a positive number of microseconds")
        self.staleness_us = staleness_us
        self.marks = Marks()

    # ---- maintenance ---------------------------------------------------------------------

    def batch_ranges(self, cur: duckdb.DuckDBPyConnection) -> pa.Table:
        """The 1-minute ranges a batch registered as ``_sf_samples`` can change."""
        return _ranges(cur.sql(_BATCH_RANGES_SQL, params={"st": self.staleness_us}).to_arrow_table())

    def all_ranges(self, cur: duckdb.DuckDBPyConnection, series_ids: Sequence[int] | None,
                   start_us: int | None, end_us: int | None) -> pa.Table:
        """1-minute ranges covering raw and rollup rows of ``series_ids`` (all: None) in [start, end)."""
        where = ""
        params: dict[str, object] = {
            "st": self.staleness_us,
            "start": -(2**62) if start_us is None else _floor_py(start_us, MINUTE_US),
            "end": 2**62 if end_us is None else _ceil_py(end_us, MINUTE_US),
        }
        if series_ids is not None:
            where = " WHERE series_id IN (SELECT unnest($ids::INTEGER[]))"
            params["ids"] = list(series_ids)
        table = _ranges(cur.sql(
            f"SELECT series_id, greatest({_floor('min(lo)', MINUTE_US)}, $start) AS lo,"
            f" least({_floor('max(hi) - 1', MINUTE_US)} + {MINUTE_US}, $end) AS hi FROM ("
            f" SELECT series_id, min(ts) AS lo, max(ts) + $st AS hi FROM samples{where} GROUP BY series_id"
            " UNION ALL"
            f" SELECT series_id, min(bucket_us), max(bucket_us) + {MINUTE_US} FROM rollup_1m{where}"
            " GROUP BY series_id) GROUP BY series_id",
            params=params,
        ).to_arrow_table())
        return table.filter(pc.less(table["lo"], table["hi"]))

    def rebuild(self, cur: duckdb.DuckDBPyConnection, series_ids: Sequence[int] | None,
                start_us: int | None, end_us: int | None) -> None:
        """Recompute the rows of ``all_ranges`` from raw, one stretch of time at a time (only the
        stretches that hold samples, the holds of samples, or rollup rows), so that no statement
        has to hold all history at once."""
        ranges = self.all_ranges(cur, series_ids, start_us, end_us)
        if ranges.num_rows == 0:
            return
        chunk = _REBUILD_CHUNK_US
        where = ""
        params: dict[str, object] = {"st": self.staleness_us}
        if series_ids is not None:
            where = " WHERE series_id IN (SELECT unnest($ids::INTEGER[]))"
            params["ids"] = list(series_ids)
        rows = cur.execute(
            f"SELECT {_floor('ts', chunk)} AS w FROM samples{where}"
            f" UNION SELECT {_floor('ts + $st - 1', chunk)} FROM samples{where}"
            f" UNION SELECT {_floor('bucket_us', chunk)} FROM rollup_1m{where} ORDER BY w",
            params,
        ).fetchall()
        for (w0,) in rows:
            lo = pc.max_element_wise(ranges["lo"], pa.scalar(int(w0), pa.int64()))
            hi = pc.min_element_wise(ranges["hi"], pa.scalar(int(w0) + chunk, pa.int64()))
            part = ranges.set_column(1, "lo", lo).set_column(2, "hi", hi)
            self.refresh(cur, part.filter(pc.less(part["lo"], part["hi"])))

    def refresh(self, cur: duckdb.DuckDBPyConnection, minute_ranges: pa.Table) -> None:
        """Recompute the 1-minute rows of ``minute_ranges`` from raw, then the hours they touch."""
        st = self.staleness_us
        minutes = _clip(_ranges(minute_ranges), MINUTE_US, *self.marks.guards(MINUTE_US, st))
        if minutes.num_rows == 0:
            return
        for part in _clusters(minutes):
            with _registered(cur, part) as (tlo, thi):
                cur.execute(_DELETE_MINUTES_SQL, {"tlo": tlo, "thi": thi})
                cur.execute(_MINUTES_FROM_RAW_SQL, {"st": st, "tlo": tlo, "thi": thi})
        with _registered(cur, minutes):
            hours = _ranges(cur.sql(_HOURS_OF_MINUTES_SQL).to_arrow_table())
        hours = _clip(hours, HOUR_US, *self.marks.guards(HOUR_US, st))
        for part in _clusters(hours):
            with _registered(cur, part) as (tlo, thi):
                cur.execute(_DELETE_HOURS_SQL, {"tlo": tlo, "thi": thi})
                cur.execute(_HOURS_FROM_MINUTES_SQL, {"tlo": tlo, "thi": thi})

    def delete_before(self, cur: duckdb.DuckDBPyConnection, level: str, cutoff_us: int,
                      series_ids: Sequence[int] | None) -> int:
        sql = f"DELETE FROM rollup_{level} WHERE bucket_us < $cutoff"
        params: dict[str, object] = {"cutoff": cutoff_us}
        if series_ids is not None:
            sql += " AND series_id IN (SELECT unnest($ids::INTEGER[]))"
            params["ids"] = list(series_ids)
        rows = cur.execute(sql, params).fetchall()
        return int(rows[0][0])

    # ---- queries ---------------------------------------------------------------------------

    def sources(self, series_id: int, buckets: Sequence[tuple[int, int]], agg: Agg,
                staleness_us: int, pending_from: int | None = None) -> list[str | None]:
        """Per bucket, the coarsest level whose buckets tile it, that still holds it (its
        retention cutoff is not after the bucket's start) and that is not dirty; None: answer from
        raw. For twa only when the query's staleness is the one the rollups were built with.

        ``pending_from``: the oldest ts of the series' samples not merged into the rollups yet. Such
        a sample changes the statistics of its own bucket and the holds from its ts on, never
        before; and nothing before a level's retention guard is recomputed. So a bucket is dirty
        for a level when it ends after both ``pending_from`` and that level's guard."""
        if agg is Agg.TWA and staleness_us != self.staleness_us:
            return [None] * len(buckets)
        levels: list[tuple[str, int, int | None, int | None]] = []
        for name, width in LEVELS:
            dirty_after = None
            if pending_from is not None:
                guard = (self.marks.minute_guard if width == MINUTE_US else self.marks.hour_guard)(
                    series_id, self.staleness_us)
                dirty_after = pending_from if guard is None else max(pending_from, guard)
            levels.append((name, width, self.marks.horizon(name, series_id), dirty_after))
        out: list[str | None] = []
        for b0, b1 in buckets:
            out.append(next((name for name, width, horizon, dirty_after in levels
                             if b0 % width == 0 and b1 % width == 0 and (horizon is None or b0 >= horizon)
                             and (dirty_after is None or b1 <= dirty_after)),
                            None))
        return out

    @staticmethod
    def rows(cur: duckdb.DuckDBPyConnection, level: str, series_id: int, lo: int, hi: int,
             agg: Agg) -> list[tuple[float | None, int]]:
        """(value, count) per bucket of ``_sf_buckets`` from the rollup rows of ``level``."""
        sql = _QUERY_SQL.format(merge=_merge_columns("b.b0"), table=f"rollup_{level}")
        out: list[tuple[float | None, int]] = []
        for row in cur.execute(sql, {"sid": series_id, "lo": lo, "hi": hi}).fetchall():
            _, n, nv, vsum, vmin, vmax, _, vfirst, _, vlast, num, den, carried = row
            out.append(_value(agg, int(n), int(nv), vsum, vmin, vmax, vfirst, vlast, float(num), int(den),
                              bool(carried)))
        return out


def _value(agg: Agg, n: int, nv: int, vsum: float | None, vmin: float | None, vmax: float | None,
           vfirst: float | None, vlast: float | None, num: float, den: int,
           carried: bool) -> tuple[float | None, int]:
    if agg is Agg.TWA:
        return (num / den if den else None), nv + int(carried)
    if agg is Agg.COUNT:
        return (float(n) if n else None), n
    if agg in (Agg.FIRST, Agg.LAST):
        v = vfirst if agg is Agg.FIRST else vlast
        return (None if n == 0 or v is None else float(v)), n
    if nv == 0:
        return None, 0
    picked = {Agg.SUM: vsum, Agg.MIN: vmin, Agg.MAX: vmax, Agg.AVG: None if vsum is None else vsum / nv}[agg]
    return (None if picked is None else float(picked)), nv


def _ranges(table: pa.Table) -> pa.Table:
    return pa.table([table.column(i).cast(f.type) for i, f in enumerate(RANGE_SCHEMA)], schema=RANGE_SCHEMA)


def _clip(ranges: pa.Table, width: int, every: int | None, per_series: dict[int, int]) -> pa.Table:
    """Ranges cut to start at or after the guard of their series (a multiple of ``width``)."""
    if every is None and not per_series:
        return ranges
    lo = ranges["lo"]
    if every is not None:
        lo = pc.max_element_wise(lo, pa.scalar(_ceil_py(every, width), pa.int64()))
    ranges = ranges.set_column(1, "lo", lo)
    if per_series:
        guards = pa.table({"series_id": pa.array(list(per_series), pa.int32()),
                           "guard": pa.array([_ceil_py(g, width) for g in per_series.values()], pa.int64())})
        joined = ranges.join(guards, "series_id", join_type="left outer")
        lo = pc.max_element_wise(joined["lo"], joined["guard"], skip_nulls=True)
        ranges = _ranges(joined.set_column(1, "lo", lo).select(["series_id", "lo", "hi"]))
    return ranges.filter(pc.less(ranges["lo"], ranges["hi"]))


def _clusters(ranges: pa.Table) -> list[pa.Table]:
    """Ranges split into groups that lie close in time, so that each statement scans one stretch of
    the tables (zone maps skip the rest). Usually one group."""
    if ranges.num_rows == 0:
        return []
    if pc.max(ranges["hi"]).as_py() - pc.min(ranges["lo"]).as_py() <= _CLUSTER_GAP_US:
        return [ranges]
    ranges = ranges.sort_by("lo")
    out: list[pa.Table] = []
    start, end = 0, None
    for i, (lo, hi) in enumerate(zip(ranges["lo"].to_pylist(), ranges["hi"].to_pylist(), strict=True)):
        if end is not None and lo > end + _CLUSTER_GAP_US:
            out.append(ranges.slice(start, i - start))
            start, end = i, None
        end = hi if end is None else max(end, hi)
    out.append(ranges.slice(start))
    return out


@contextmanager
def _registered(cur: duckdb.DuckDBPyConnection, ranges: pa.Table) -> Iterator[tuple[int, int]]:
    """``ranges`` as ``_sf_ranges`` on the cursor; yields the smallest lo and the largest hi."""
    register(cur, "_sf_ranges", ranges)
    try:
        yield pc.min(ranges["lo"]).as_py(), pc.max(ranges["hi"]).as_py()
    finally:
        cur.unregister("_sf_ranges")


def register(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    """Register ``table`` on this cursor. DuckDB 2 refuses while a result of the cursor is unread
    (a ``fetchone`` elsewhere in this thread leaves one), so finish it; DuckDB 1.x has no ``complete``."""
    complete = getattr(cur, "complete", None)
    if complete is not None:
        complete()
    cur.register(name, table)


def check_level(level: str) -> int:
    if level not in _WIDTH:
        raise InvalidInput(f"unknown rollup level {level!r}; expected '1m' or '1h'")
    return _WIDTH[level]
