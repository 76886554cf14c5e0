"""1-minute and 1-hour rollups of the PostgreSQL historian (migration 2), and their retention marks.

The same rows and rules as the DuckDB rollups (storage/duckdb/rollups.py), in PostgreSQL terms:

* ``rollup_1m`` / ``rollup_1h``: per (series_id, bucket) the good and uncertain samples
  (``sample_count``, text ones included), the numeric ones among them (``value_count``, sum, min,
  max), the first and last of them (ts and value, the value NULL for a text sample), and the two
  sums of a time-weighted average with the store's rollup staleness: ``twa_weighted_sum``
  (Σ value x µs held in the bucket), ``twa_duration_us`` and ``twa_carried_in`` (a hold from before
  the bucket reaches into it). A twa over consecutive rollup buckets is Σ weighted / Σ duration
  with count Σ value_count + carried_in of the first one: what raw gives.
* Maintenance is the rollup follower's (``pg_follower.py``), behind the commits: a sample can
  change only the minutes from its own to the end of its hold, so those minute ranges (merged per
  series, over all the commits merged at once) are deleted and recomputed from raw in one
  statement, then the hours around them from the minutes.
* Retention marks (``rollup_marks``): ``delete_before`` and ``delete_rollups_before`` record their
  cutoffs. A minute is never recomputed before raw cutoff + staleness or the 1-minute cutoff, an
  hour not before either or the 1-hour cutoff; a query uses a level only for windows starting at or
  after its cutoff.

Several processes: marks are written, and rollups maintained or rebuilt, under the lock of the
follower's mark row (``rollup_follow``), so the follower always sees the marks of every retention
run that started before it, and a raw cutoff is recorded before any raw row goes (retention first
merges what is pending, under the ``historian_seq`` row lock too). Maintenance uses the
staleness stored in ``rollup_state`` (set by the last full rebuild), so processes configured
differently still write consistent rows; a process whose configured staleness differs rebuilds on
start, and while a rebuild is pending queries answer from raw.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import Agg
from shopfloor.domain.records import Quality
from shopfloor.domain.timeutil import MAX_US, MIN_US, to_us
from shopfloor.storage.postgres.partitions import DAY_US, to_datetime

MINUTE_US = 60_000_000
HOUR_US = 60 * MINUTE_US
LEVELS: tuple[tuple[str, int], ...] = (("1h", HOUR_US), ("1m", MINUTE_US))  # coarsest first
_WIDTH = dict(LEVELS)
_BAD = int(Quality.BAD)
MAX_ROLLUP_STALENESS_US = 366 * DAY_US
_REBUILD_SPAN_US = DAY_US      # a rebuild recomputes at most a day of a series per range ...
_REBUILD_RANGES = 500          # ... and this many ranges per transaction

Range = tuple[int, int, int]  # (series_id, lo, hi) in µs, aligned to the level

MIGRATION = """
CREATE TABLE rollup_1m (
    series_id integer NOT NULL,
    bucket timestamptz NOT NULL,
    sample_count bigint NOT NULL,
    value_count bigint NOT NULL,
    value_sum double precision,
    value_min double precision,
    value_max double precision,
    first_ts timestamptz,
    first_value double precision,
    last_ts timestamptz,
    last_value double precision,
    twa_weighted_sum double precision NOT NULL,
    twa_duration_us bigint NOT NULL,
    twa_carried_in boolean NOT NULL,
    PRIMARY KEY (series_id, bucket)
);
CREATE TABLE rollup_1h (LIKE rollup_1m INCLUDING ALL);
COMMENT ON TABLE rollup_1m IS 'Per series and minute: counts, sum, min, max, first, last, time-weighted sums';
COMMENT ON TABLE rollup_1h IS 'Per series and hour: counts, sum, min, max, first, last, time-weighted sums';
CREATE TABLE rollup_marks (
    kind text NOT NULL CHECK (kind IN ('raw', '1m', '1h')),
    series_id integer,
    cutoff timestamptz NOT NULL
);
CREATE UNIQUE INDEX rollup_marks_series ON rollup_marks (kind, series_id);
CREATE UNIQUE INDEX rollup_marks_every ON rollup_marks (kind) WHERE series_id IS NULL;
COMMENT ON TABLE rollup_marks IS 'Retention cutoffs (NULL series: all); data before them is gone';
CREATE TABLE rollup_state (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    rebuild_pending boolean NOT NULL,
    staleness_us bigint
);
INSERT INTO rollup_state (rebuild_pending, staleness_us) VALUES (true, NULL);
CREATE FUNCTION rollup_float8(x numeric) RETURNS double precision LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x = 'NaN'::numeric THEN 'NaN'::float8
                WHEN x > 1.7976931348623157e308 THEN 'Infinity'::float8
                WHEN x < -1.7976931348623157e308 THEN '-Infinity'::float8
                ELSE x::float8 END
$$;
COMMENT ON FUNCTION rollup_float8(numeric) IS 'numeric to double precision, out of range to +-Infinity';
"""

_ST = "(%(st_s)s::int8 * interval '1 second' + %(st_us)s::int8 * interval '1 microsecond')"
# µs of an interval of at most a year: date_part's double precision (extract's numeric is several
# times slower per row) holds it to far below a microsecond, and the cast rounds to the nearest
_US = "(date_part('epoch', {}) * 1000000)::int8"
_RANGES = ("unnest(%(sid)s::int4[], %(lo)s::timestamptz[], %(hi)s::timestamptz[], %(back)s::timestamptz[])"
           " AS r(series_id, lo, hi, back)")
_COLUMNS = ("series_id, bucket, sample_count, value_count, value_sum, value_min, value_max, first_ts, first_value,"
            " last_ts, last_value, twa_weighted_sum, twa_duration_us, twa_carried_in")

_DELETE_SQL = ("DELETE FROM {table} m USING " + _RANGES +
               " WHERE m.series_id = r.series_id AND m.bucket >= r.lo AND m.bucket < r.hi")

# Per range: the sample in force at its start (only the newest before it can be), then its
# samples; each holds until the next one or its staleness. One sorted pass (the window) gives each
# sample its hold's end and its rank; then every good sample yields a piece per minute its hold
# touches in the range (its own minute first; a text sample only its own), and one hash
# aggregation per (series, minute) takes the statistics from the own-minute pieces (first and last
# by rank, no sort per minute) and the time-weighted sums from all of them.
_MINUTE = "interval '1 minute'"
_MINUTES_FROM_RAW = f"""
INSERT INTO rollup_1m ({_COLUMNS})
SELECT series_id, bucket, count(*) FILTER (WHERE NOT carried), count(value) FILTER (WHERE NOT carried),
       {{sum_value}}, min(value) FILTER (WHERE NOT carried), max(value) FILTER (WHERE NOT carried),
       min(ts) FILTER (WHERE NOT carried), (min(ARRAY[rn, value]) FILTER (WHERE NOT carried))[2],
       max(ts) FILTER (WHERE NOT carried), (max(ARRAY[rn, value]) FILTER (WHERE NOT carried))[2],
       coalesce({{sum_weighted}}, 0), coalesce(sum(dt) FILTER (WHERE value IS NOT NULL), 0), bool_or(carried)
FROM (
    SELECT series_id, bucket, ts, value, rn, bucket > m0 AS carried,
           {_US.format(f"least(h1, bucket + {_MINUTE}) - greatest(ts, bucket)")} AS dt
    FROM (
    SELECT h.series_id, h.ts, h.value, h.rn, h.m0, h.h1, generate_series(
        greatest(h.m0, h.lo), CASE WHEN h.value IS NULL THEN h.m0 ELSE least(h.h1, h.hi) - interval '1 microsecond' END,
        {_MINUTE}) AS bucket
    FROM (
        SELECT series_id, lo, hi, ts, value, quality, date_bin({_MINUTE}, ts, timestamptz 'epoch') AS m0,
               least(lead(ts) OVER w, ts + {_ST}) AS h1, (row_number() OVER w)::float8 AS rn
        FROM (
            SELECT r.series_id, r.lo, r.hi, c.ts, c.value, c.quality FROM {_RANGES} CROSS JOIN LATERAL (
                SELECT s.ts, s.value, s.quality FROM samples s
                WHERE s.series_id = r.series_id AND s.ts < r.lo AND s.ts >= r.back ORDER BY s.ts DESC LIMIT 1
            ) c
            UNION ALL
            SELECT r.series_id, r.lo, r.hi, s.ts, s.value, s.quality
            FROM {_RANGES} JOIN samples s ON s.series_id = r.series_id AND s.ts >= r.lo AND s.ts < r.hi
        ) pts
        WINDOW w AS (PARTITION BY series_id, lo ORDER BY ts)
    ) h WHERE h.quality < {_BAD}
    ) b
) p
GROUP BY series_id, bucket
"""


def _merge(start: str, sum_value: str = "sum(m.value_sum)",
           sum_weighted: str = "sum(m.twa_weighted_sum)") -> str:
    """Aggregates merging rows ``m`` of a finer level; ``start`` is the coarser bucket's start. The
    first and last values are those of the first and last row with samples, by bucket (a row's
    samples lie in its bucket; whole seconds since the epoch are exact in double precision)."""
    return f"""coalesce(sum(m.sample_count), 0), coalesce(sum(m.value_count), 0),
        {sum_value}, min(m.value_min), max(m.value_max),
        min(m.first_ts), (min(ARRAY[date_part('epoch', m.bucket), m.first_value]) FILTER (WHERE m.sample_count > 0))[2],
        max(m.last_ts), (max(ARRAY[date_part('epoch', m.bucket), m.last_value]) FILTER (WHERE m.sample_count > 0))[2],
        coalesce({sum_weighted}, 0), coalesce(sum(m.twa_duration_us), 0),
        coalesce(bool_or(m.twa_carried_in) FILTER (WHERE m.bucket = {start}), false)"""


_HOUR = "date_bin('1 hour', m.bucket, timestamptz 'epoch')"
_HOURS_FROM_MINUTES = f"""
INSERT INTO rollup_1h ({_COLUMNS})
SELECT m.series_id, {_HOUR}, {{merge}}
FROM {_RANGES} JOIN rollup_1m m ON m.series_id = r.series_id AND m.bucket >= r.lo AND m.bucket < r.hi
GROUP BY m.series_id, {_HOUR}
"""

# Two forms of each maintenance statement: double precision sums (fast), and, should one of them
# overflow (finite values near 1e308), numeric sums turned into +-Infinity where out of range, so
# that no finite value can make a commit fail.
_MINUTES_FROM_RAW_SQL = (
    _MINUTES_FROM_RAW.format(sum_value="sum(value) FILTER (WHERE NOT carried)", sum_weighted="sum(value * dt)"),
    _MINUTES_FROM_RAW.format(sum_value="rollup_float8(sum(value::numeric) FILTER (WHERE NOT carried))",
                             sum_weighted="rollup_float8(sum(value::numeric * dt))"),
)
_HOURS_FROM_MINUTES_SQL = (
    _HOURS_FROM_MINUTES.format(merge=_merge(_HOUR)),
    _HOURS_FROM_MINUTES.format(merge=_merge(_HOUR, "rollup_float8(sum(m.value_sum::numeric))",
                                            "rollup_float8(sum(m.twa_weighted_sum::numeric))")),
)

_QUERY_SQL = """
SELECT b.i, a.* FROM unnest(%(b0)s::timestamptz[], %(b1)s::timestamptz[]) WITH ORDINALITY AS b(b0, b1, i)
CROSS JOIN LATERAL (
    SELECT {merge} FROM {table} m WHERE m.series_id = %(sid)s AND m.bucket >= b.b0 AND m.bucket < b.b1
) a ORDER BY b.i
"""


def _floor(x: int, width: int) -> int:
    return x - x % width


def _ceil(x: int, width: int) -> int:
    return -((-x) // width) * width


def check_level(level: str) -> int:
    if level not in _WIDTH:
        raise InvalidInput(f"unknown rollup level {level!r}; expected '1m' or '1h'")
    return _WIDTH[level]


def check_staleness(staleness_us: int) -> int:
    if not 0 < staleness_us <= MAX_ROLLUP_STALENESS_US:
        raise InvalidInput("rollup staleness must be a positive number of microseconds, at most 366 days")
    return staleness_us


@dataclass
class Marks:
    """Retention cutoffs per kind ("raw", "1m", "1h"): one for all series and some per series."""

    every: dict[str, int] = field(default_factory=dict)
    per_series: dict[tuple[str, int], int] = field(default_factory=dict)

    def horizon(self, kind: str, series_id: int) -> int | None:
        found = [c for c in (self.every.get(kind), self.per_series.get((kind, series_id))) if c is not None]
        return max(found) if found else None

    def minute_guard(self, series_id: int, staleness_us: int) -> int | None:
        """The first 1-minute bucket that may be recomputed from raw (None: any)."""
        raw = self.horizon("raw", series_id)
        found = [g for g in (None if raw is None else raw + staleness_us, self.horizon("1m", series_id))
                 if g is not None]
        return _ceil(max(found), MINUTE_US) if found else None

    def hour_guard(self, series_id: int, staleness_us: int) -> int | None:
        found = [g for g in (self.minute_guard(series_id, staleness_us), self.horizon("1h", series_id))
                 if g is not None]
        return _ceil(max(found), HOUR_US) if found else None


@dataclass(frozen=True)
class RollupState:
    staleness_us: int | None
    rebuild_pending: bool
    marks: Marks


# Set for the transactions that maintain rollups: JIT compilation would cost far more than it saves
# on these short statements (the planner's row estimates for unnest/generate_series are far too
# high), and the window sort of a 50k-sample batch should stay in memory.
SESSION_SETTINGS = "set_config('jit', 'off', true), set_config('work_mem', '64MB', true)"
# the rollup follower's catch-ups sort up to a few hundred thousand samples at once
FOLLOWER_SETTINGS = "set_config('jit', 'off', true), set_config('work_mem', '256MB', true)"


def lock_and_read(conn: psycopg.Connection, series_ids: Sequence[int] | None, *, lock: bool) -> RollupState:
    """The stored staleness, the pending flag and the marks of ``series_ids`` (None: all).

    With ``lock`` the ``historian_seq`` row is locked first (a commit has it already), so that
    marks and rollups change in the same order as commits.
    """
    if lock:
        conn.execute(f"SELECT last_seq, {SESSION_SETTINGS} FROM historian_seq FOR UPDATE")
    state = conn.execute("SELECT staleness_us, rebuild_pending FROM rollup_state").fetchone()
    if series_ids is None:
        rows = conn.execute("SELECT kind, series_id, cutoff FROM rollup_marks").fetchall()
    else:
        rows = conn.execute("SELECT kind, series_id, cutoff FROM rollup_marks"
                            " WHERE series_id IS NULL OR series_id = ANY(%s::int8[])", [list(series_ids)]).fetchall()
    marks = Marks()
    for kind, sid, cutoff in rows:
        if sid is None:
            marks.every[str(kind)] = to_us(cutoff)
        else:
            marks.per_series[(str(kind), int(sid))] = to_us(cutoff)
    if state is None:
        return RollupState(None, True, marks)
    return RollupState(None if state[0] is None else int(state[0]), bool(state[1]), marks)


def raise_mark(conn: psycopg.Connection, kind: str, cutoff_us: int, series_ids: Sequence[int] | None) -> None:
    """Record a retention cutoff (marks only move forward). Call with the seq row locked."""
    cutoff = to_datetime(cutoff_us)
    if series_ids is None:
        conn.execute("INSERT INTO rollup_marks (kind, series_id, cutoff) VALUES (%s, NULL, %s)"
                     " ON CONFLICT (kind) WHERE series_id IS NULL"
                     " DO UPDATE SET cutoff = greatest(rollup_marks.cutoff, excluded.cutoff)", [kind, cutoff])
        conn.execute("DELETE FROM rollup_marks WHERE kind = %s AND series_id IS NOT NULL AND cutoff <= %s",
                     [kind, cutoff])
    else:
        conn.execute("INSERT INTO rollup_marks (kind, series_id, cutoff)"
                     " SELECT %s, s, %s FROM (SELECT DISTINCT unnest(%s::int4[]) AS s) ids"
                     " ON CONFLICT (kind, series_id)"
                     " DO UPDATE SET cutoff = greatest(rollup_marks.cutoff, excluded.cutoff)",
                     [kind, cutoff, list(series_ids)])


def batch_ranges(series_ids: Sequence[int], ts_us: Sequence[int], staleness_us: int) -> list[Range]:
    """The 1-minute ranges a batch can change: per sample [its minute, end of its hold), merged."""
    out: list[Range] = []
    for sid, minute in sorted(set(zip(series_ids, [t // MINUTE_US for t in ts_us], strict=True))):
        lo = minute * MINUTE_US
        hi = min(_ceil(lo + MINUTE_US - 1 + staleness_us, MINUTE_US), _ceil(MAX_US, MINUTE_US) + MINUTE_US)
        if out and out[-1][0] == sid and lo <= out[-1][2]:
            out[-1] = (sid, out[-1][1], max(hi, out[-1][2]))
        else:
            out.append((sid, lo, hi))
    return out


def all_ranges(conn: psycopg.Connection, series_ids: Sequence[int] | None, start_us: int | None,
               end_us: int | None, staleness_us: int) -> list[Range]:
    """1-minute ranges covering raw and 1-minute rows of ``series_ids`` (None: all) in [start, end)."""
    where, params = "", []
    if series_ids is not None:
        where = " WHERE series_id = ANY(%s::int8[])"
        params = [list(series_ids)]
    rows = conn.execute(
        "SELECT series_id, min(lo), max(hi) FROM ("
        f" SELECT series_id, min(ts) AS lo, max(ts) AS hi FROM samples{where} GROUP BY series_id"
        " UNION ALL"
        f" SELECT series_id, min(bucket), max(bucket) FROM rollup_1m{where} GROUP BY series_id"
        ") x GROUP BY series_id ORDER BY series_id", params * 2).fetchall()
    out: list[Range] = []
    for sid, lo_ts, hi_ts in rows:
        lo = _floor(to_us(lo_ts), MINUTE_US)
        hi = _ceil(to_us(hi_ts) + staleness_us, MINUTE_US) + MINUTE_US
        if start_us is not None:
            lo = max(lo, _floor(start_us, MINUTE_US))
        if end_us is not None:
            hi = min(hi, _ceil(end_us, MINUTE_US))
        if lo < hi:
            out.append((int(sid), lo, hi))
    return out


def rebuild_chunks(ranges: Iterable[Range]) -> list[list[Range]]:
    """Ranges cut into day-sized pieces (aligned to days) and grouped, one group per transaction."""
    pieces: list[Range] = []
    for sid, lo, hi in ranges:
        cur = lo
        while cur < hi:
            nxt = min(_floor(cur, _REBUILD_SPAN_US) + _REBUILD_SPAN_US, hi)
            pieces.append((sid, cur, nxt))
            cur = nxt
    pieces.sort(key=lambda r: (r[1], r[0]))
    return [pieces[i:i + _REBUILD_RANGES] for i in range(0, len(pieces), _REBUILD_RANGES)]


def refresh(conn: psycopg.Connection, minute_ranges: Iterable[Range], state: RollupState,
            staleness_us: int) -> None:
    """Recompute the 1-minute rows of ``minute_ranges`` from raw, then the hours around them."""
    marks = state.marks
    minutes = _clip(minute_ranges, MINUTE_US, lambda s: marks.minute_guard(s, staleness_us))
    if not minutes:
        return
    hours = _clip(((s, _floor(lo, HOUR_US), _ceil(hi, HOUR_US)) for s, lo, hi in minutes), HOUR_US,
                  lambda s: marks.hour_guard(s, staleness_us))
    st = {"st_s": staleness_us // 1_000_000, "st_us": staleness_us % 1_000_000}
    minute_params = {**_range_params(minutes, staleness_us), **st}
    conn.execute(_DELETE_SQL.format(table="rollup_1m"), minute_params)
    _insert(conn, _MINUTES_FROM_RAW_SQL, minute_params)
    if hours:
        hour_params = _range_params(hours, 0)
        conn.execute(_DELETE_SQL.format(table="rollup_1h"), hour_params)
        _insert(conn, _HOURS_FROM_MINUTES_SQL, hour_params)


def _insert(conn: psycopg.Connection, forms: tuple[str, str], params: dict[str, Any]) -> None:
    try:
        with conn.transaction():
            conn.execute(forms[0], params)
    except psycopg.errors.NumericValueOutOfRange:
        conn.execute(forms[1], params)


def _range_params(ranges: list[Range], lookback_us: int) -> dict[str, Any]:
    return {"sid": [r[0] for r in ranges], "lo": [to_datetime(r[1]) for r in ranges],
            "hi": [to_datetime(r[2]) for r in ranges],
            "back": [to_datetime(max(r[1] - lookback_us, MIN_US)) for r in ranges]}


def _clip(ranges: Iterable[Range], width: int, guard: Any) -> list[Range]:
    """Ranges cut to start at or after the guard of their series, then merged where they overlap."""
    out: list[Range] = []
    for sid, lo, hi in sorted(ranges):
        g = guard(sid)
        if g is not None:
            lo = max(lo, _ceil(g, width))
        if lo >= hi:
            continue
        if out and out[-1][0] == sid and lo <= out[-1][2]:
            out[-1] = (sid, out[-1][1], max(hi, out[-1][2]))
        else:
            out.append((sid, lo, hi))
    return out


def sources(buckets: Sequence[tuple[int, int]], agg: Agg, staleness_us: int, state: RollupState,
            series_id: int, pending_from: int | None = None) -> list[str | None]:
    """Per bucket, the coarsest level whose buckets tile it, that still holds it (its retention
    cutoff is not after the bucket's start) and that is not dirty; None: answer from raw. For twa
    only when the query's staleness is the one the rollups were built with, and never while a
    rebuild is pending.

    ``pending_from``: the oldest ts of the series' samples the follower has not merged yet. Such a
    sample changes its own bucket and the holds from its ts on, never before, and nothing before a
    level's retention guard is recomputed: a bucket is dirty for a level when it ends after both."""
    st = state.staleness_us
    if state.rebuild_pending or st is None or (agg is Agg.TWA and staleness_us != st):
        return [None] * len(buckets)
    levels: list[tuple[str, int, int | None, int | None]] = []
    for name, width in LEVELS:
        dirty_after = None
        if pending_from is not None:
            guard = (state.marks.minute_guard if width == MINUTE_US else state.marks.hour_guard)(series_id, st)
            dirty_after = pending_from if guard is None else max(pending_from, guard)
        levels.append((name, width, state.marks.horizon(name, series_id), dirty_after))
    return [next((name for name, width, horizon, dirty_after in levels
                  if b0 % width == 0 and b1 % width == 0 and (horizon is None or b0 >= horizon)
                  and (dirty_after is None or b1 <= dirty_after)), None)
            for b0, b1 in buckets]


def tiles_any(buckets: Sequence[tuple[int, int]]) -> bool:
    """Whether the finest level tiles some bucket (else no need to look at rollups at all)."""
    return any(b0 % MINUTE_US == 0 and b1 % MINUTE_US == 0 for b0, b1 in buckets)


def query(conn: psycopg.Connection, level: str, series_id: int, b0: list[Any], b1: list[Any],
          agg: Agg) -> list[tuple[float | None, int]]:
    """(value, count) per bucket from the rows of ``level``."""
    sql = _QUERY_SQL.format(merge=_merge("b.b0"), table=f"rollup_{level}")
    out: list[tuple[float | None, int]] = []
    for row in conn.execute(sql, {"sid": series_id, "b0": b0, "b1": b1}).fetchall():
        _, n, nv, vsum, vmin, vmax, _, vfirst, _, vlast, num, den, carried = row
        out.append(_value(agg, int(n), int(nv), vsum, vmin, vmax, vfirst, vlast, float(num), int(den),
                          bool(carried)))
    return out


def delete_before(conn: psycopg.Connection, level: str, cutoff_us: int, series_ids: Sequence[int] | None) -> int:
    sql = f"DELETE FROM rollup_{level} WHERE bucket < %s"
    params: list[Any] = [to_datetime(cutoff_us)]
    if series_ids is not None:
        sql += " AND series_id = ANY(%s::int8[])"
        params.append(list(series_ids))
    return max(conn.execute(sql, params).rowcount, 0)


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
