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

How rows are kept current: ``refresh`` runs inside the ingest transaction. For each series of the
batch, the 1-minute buckets from the bucket of a sample up to the end of its hold
([floor(ts), ts + staleness)) are merged into ranges; a new sample can only change the rows in
that span (it cuts the hold of the sample before it, and only after its own ts). Those rows are
deleted and recomputed from raw in one statement; the 1-hour rows of the hours around them are
then recomputed from the 1-minute rows (an hour is a merge of its sixty minutes, so it equals the
same computation from raw). Ranges far apart in time are handled in separate statements so that
zone maps can skip the row groups in between.

Retention marks (table ``rollup_marks``): every ``delete_before`` and ``delete_rollups_before``
records its cutoff, per series or for all (``series_id`` NULL). Recomputation never touches a
1-minute bucket that starts before raw cutoff + staleness (its raw data may be gone: recomputing
it would lose what the rollup still knows) nor before the 1-minute cutoff, nor an hour before
either or before the 1-hour cutoff. A query uses a rollup level only for a window that starts at
or after that level's cutoff, so after a level's retention the next finer level or raw answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import Agg
from shopfloor.domain.records import Quality

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
LEVELS: tuple[tuple[str, int], ...] = (("1h", HOUR_US), ("1m", MINUTE_US))  # coarsest first
_WIDTH = dict(LEVELS)
_BAD = int(Quality.BAD)
_CLUSTER_GAP_US = 24 * HOUR_US  # ranges further apart than this are refreshed in separate statements

Range = tuple[int, int, int]  # (series_id, lo, hi): bucket starts lo <= b < hi, aligned to the level

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


_DELETE_SQL = """
DELETE FROM {table} USING _sf_ranges r
WHERE {table}.series_id = r.series_id AND {table}.bucket_us >= r.lo AND {table}.bucket_us < r.hi
  AND {table}.bucket_us >= $tlo AND {table}.bucket_us < $thi
"""

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

_HOURS_FROM_MINUTES_SQL = f"""
INSERT INTO rollup_1h
SELECT m.series_id, {_floor("m.bucket_us", HOUR_US)} AS hour_us, {_merge_columns(_floor("m.bucket_us", HOUR_US))}
FROM rollup_1m m JOIN _sf_ranges r ON m.series_id = r.series_id AND m.bucket_us >= r.lo AND m.bucket_us < r.hi
WHERE m.bucket_us >= $tlo AND m.bucket_us < $thi
GROUP BY 1, 2
"""

_QUERY_SQL = """
SELECT b.i, {merge}
FROM _sf_buckets b LEFT JOIN (
    SELECT * FROM {table} WHERE series_id = $sid AND bucket_us >= $lo AND bucket_us < $hi
) m ON m.bucket_us >= b.b0 AND m.bucket_us < b.b1
GROUP BY b.i ORDER BY b.i
"""

# per series of the batch: the minute ranges [floor(ts), floor(ts + st - 1) + 1 min), merged
_BATCH_RANGES_SQL = f"""
WITH iv AS (
    SELECT DISTINCT series_id, {_floor("ts", MINUTE_US)} AS lo,
           {_floor("ts + $st - 1", MINUTE_US)} + {MINUTE_US} AS hi
    FROM _sf_samples
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
SELECT series_id, min(lo), max(hi) FROM numbered GROUP BY series_id, k
"""


@dataclass
class Marks:
    """Retention cutoffs per kind ("raw", "1m", "1h"): one for all series and some per series."""

    every: dict[str, int] = field(default_factory=dict)
    per_series: dict[str, dict[int, int]] = field(default_factory=dict)

    @classmethod
    def load(cls, cur: duckdb.DuckDBPyConnection) -> Marks:
        marks = cls()
        for kind, sid, cutoff in cur.execute("SELECT kind, series_id, cutoff_us FROM rollup_marks").fetchall():
            marks = marks.raised(str(kind), int(cutoff), None if sid is None else [int(sid)])
        return marks

    def horizon(self, kind: str, series_id: int) -> int | None:
        found = [c for c in (self.every.get(kind), self.per_series.get(kind, {}).get(series_id)) if c is not None]
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

    def minute_guard(self, series_id: int, staleness_us: int) -> int | None:
        """The first 1-minute bucket start that may be recomputed from raw (None: any)."""
        raw = self.horizon("raw", series_id)
        found = [g for g in (None if raw is None else raw + staleness_us, self.horizon("1m", series_id))
                 if g is not None]
        return _ceil_py(max(found), MINUTE_US) if found else None

    def hour_guard(self, series_id: int, staleness_us: int) -> int | None:
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

    def batch_ranges(self, cur: duckdb.DuckDBPyConnection) -> list[Range]:
        """The 1-minute ranges a batch registered as ``_sf_samples`` can change."""
        rows = cur.execute(_BATCH_RANGES_SQL, {"st": self.staleness_us}).fetchall()
        return [(int(s), int(lo), int(hi)) for s, lo, hi in rows]

    def all_ranges(self, cur: duckdb.DuckDBPyConnection, series_ids: Sequence[int] | None,
                   start_us: int | None, end_us: int | None) -> list[Range]:
        """1-minute ranges covering raw and rollup rows of ``series_ids`` (all: None) in [start, end)."""
        where = ""
        params: dict[str, object] = {"st": self.staleness_us}
        if series_ids is not None:
            where = " WHERE series_id IN (SELECT unnest($ids::INTEGER[]))"
            params["ids"] = list(series_ids)
        rows = cur.execute(
            "SELECT series_id, min(lo), max(hi) FROM ("
            f" SELECT series_id, min(ts) AS lo, max(ts) + $st AS hi FROM samples{where} GROUP BY series_id"
            " UNION ALL"
            f" SELECT series_id, min(bucket_us), max(bucket_us) + {MINUTE_US} FROM rollup_1m{where}"
            " GROUP BY series_id) GROUP BY series_id",
            params,
        ).fetchall()
        out: list[Range] = []
        for sid, lo, hi in rows:
            lo, hi = _floor_py(int(lo), MINUTE_US), _ceil_py(int(hi), MINUTE_US)
            if start_us is not None:
                lo = max(lo, _floor_py(start_us, MINUTE_US))
            if end_us is not None:
                hi = min(hi, _ceil_py(end_us, MINUTE_US))
            if lo < hi:
                out.append((int(sid), lo, hi))
        return out

    def refresh(self, cur: duckdb.DuckDBPyConnection, minute_ranges: Iterable[Range]) -> None:
        """Recompute the 1-minute rows of ``minute_ranges`` from raw, then the hours around them."""
        st = self.staleness_us
        minutes = _clip(minute_ranges, MINUTE_US, lambda s: self.marks.minute_guard(s, st))
        if not minutes:
            return
        hours = _clip(((s, _floor_py(lo, HOUR_US), _ceil_py(hi, HOUR_US)) for s, lo, hi in minutes),
                      HOUR_US, lambda s: self.marks.hour_guard(s, st))
        for cluster in _clusters(minutes):
            self._run(cur, cluster, "rollup_1m", _MINUTES_FROM_RAW_SQL, {"st": st})
        for cluster in _clusters(hours):
            self._run(cur, cluster, "rollup_1h", _HOURS_FROM_MINUTES_SQL, {})

    @staticmethod
    def _run(cur: duckdb.DuckDBPyConnection, ranges: list[Range], table: str, insert_sql: str,
             params: dict[str, int]) -> None:
        tlo, thi = min(r[1] for r in ranges), max(r[2] for r in ranges)
        register(cur, "_sf_ranges", pa.table({
            "series_id": pa.array([r[0] for r in ranges], pa.int32()),
            "lo": pa.array([r[1] for r in ranges], pa.int64()),
            "hi": pa.array([r[2] for r in ranges], pa.int64()),
        }))
        try:
            cur.execute(_DELETE_SQL.format(table=table), {"tlo": tlo, "thi": thi})
            cur.execute(insert_sql, {**params, "tlo": tlo, "thi": thi})
        finally:
            cur.unregister("_sf_ranges")

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

    def level_for(self, series_id: int, buckets: Sequence[tuple[int, int]], agg: Agg,
                  staleness_us: int) -> str | None:
        """The coarsest level whose buckets tile every requested bucket and that still holds the
        window; None: answer from raw."""
        if agg is Agg.TWA and staleness_us != self.staleness_us:
            return None
        lo = min(b[0] for b in buckets)
        for name, width in LEVELS:
            if all(b0 % width == 0 and b1 % width == 0 for b0, b1 in buckets):
                horizon = self.marks.horizon(name, series_id)
                if horizon is None or lo >= horizon:
                    return name
        return None

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


def _clip(ranges: Iterable[Range], width: int, guard: Callable[[int], int | None]) -> list[Range]:
    """Ranges cut to start at or after the guard of their series, then merged where they overlap."""
    out: list[Range] = []
    for sid, lo, hi in sorted(ranges):
        g = guard(sid)
        if g is not None:
            lo = max(lo, _ceil_py(g, width))
        if lo >= hi:
            continue
        if out and out[-1][0] == sid and lo <= out[-1][2]:
            out[-1] = (sid, out[-1][1], max(hi, out[-1][2]))
        else:
            out.append((sid, lo, hi))
    return out


def _clusters(ranges: list[Range]) -> list[list[Range]]:
    """Group ranges that lie close in time, so each statement scans one stretch of the tables."""
    out: list[list[Range]] = []
    end = None
    for r in sorted(ranges, key=lambda r: (r[1], r[0])):
        if end is None or r[1] > end + _CLUSTER_GAP_US:
            out.append([])
            end = r[2]
        out[-1].append(r)
        end = max(end, r[2])
    return out


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
