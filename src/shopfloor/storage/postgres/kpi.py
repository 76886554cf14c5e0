"""``KpiSource`` on PostgreSQL: the historian's events and samples summed into ``PeriodInputs``.

The same plan as the DuckDB source (see ``storage/duckdb/kpi.py`` for the steps: anchors, cells
per lane, sums joined on hour buckets); what differs here:

* ``OFFSET 0`` keeps a LATERAL read from being pulled up into a join, which with nested loops off
  would become a scan of the whole table.
* One transaction on one connection: the requests, windows, calendars and tariffs go in as arrays
  (``unnest``) into temporary tables (``ON COMMIT DROP``), then one statement per kind of sum.
* Time stays ``timestamptz`` (the column type): durations are intervals, summed exactly and turned
  into µs once per group; buckets are ``date_bin('1 hour', ..)``.
* Anchors are index lookups (``events_kind`` on (tenant, kind, asset, ts), the samples primary key),
  newest first, so they look back through all history; only total counter baselines stop at
  ``lookback_us``, because finding "the last message with this field" reads every row's data.
* PostgreSQL has no ``IGNORE NULLS``: the last work-order change, tariff period and window marker
  before a row are found as the latest timestamp of their kind (a running ``max``) and joined back;
  failure episodes compare the latest known state's and the latest unplanned stop's timestamps;
  counter baselines come from ``lag`` over the total counts unpivoted to one row per field.
* Ties at one instant are broken like ``PostgresHistorian.events`` orders them: (ts, seq, kind,
  type, data::text).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.kpi.models import Counts, PeriodInputs
from shopfloor.domain.timeutil import MAX_US, MIN_US
from shopfloor.ports.kpi import FAR_FUTURE, FAR_PAST, KpiPlan, KpiRequest, Lap, Sums, assemble, paused_gc, plan
from shopfloor.storage.postgres.database import PgDatabase

DEFAULT_LOOKBACK_US = 7 * 86_400_000_000
BAD = 2
HOUR = "interval '1 hour'"


def _ts(col: str) -> str:
    """An int8 epoch-µs column as timestamptz, exactly (seconds and microseconds apart)."""
    return (f"(timestamptz 'epoch' + ({col} / 1000000) * interval '1 second'"
            f" + ({col} %% 1000000) * interval '1 microsecond')")


def _us(interval: str) -> str:
    return f"(extract(epoch FROM {interval}) * 1000000)::int8"


_CATEGORY = """CASE coalesce(e.data->>'state', e.type)
    WHEN 'running' THEN 'run' WHEN 'run' THEN 'run' WHEN 'idle' THEN 'idle' WHEN 'setup' THEN 'setup'
    WHEN 'starved' THEN 'starved' WHEN 'blocked' THEN 'blocked' WHEN 'planned_stop' THEN 'planned_stop'
    WHEN 'unplanned_stop' THEN 'unplanned_stop' ELSE 'unknown' END"""


def _last(where: str, table: str = "events e", tenant: bool = True) -> str:
    """The newest ts before the request's start matching ``where`` (an index lookup)."""
    scope = "e.tenant_id = %(tenant)s AND e.asset_id = u.asset_id AND " if tenant else ""
    return f"(SELECT e.ts FROM {table} WHERE {scope}{where} AND e.ts < u.lo ORDER BY e.ts DESC LIMIT 1)"


_COUNT_BASE = "e.kind = 'count' AND e.type = 'total' AND e.ts >= u.lo - %(lookback)s * interval '1 microsecond'"
_READING = f"e.quality < {BAD} AND e.value IS NOT NULL"

_REQ = f"""
CREATE TEMP TABLE _k_req ON COMMIT DROP AS
WITH u AS (
    SELECT r, asset_id, {_ts("lo")} AS lo, {_ts("hi")} AS hi, cal, tar, series_id, power,
           staleness * interval '1 microsecond' AS staleness, orders, lab_sched
    FROM unnest(%(r)s::int4[], %(asset_id)s::int4[], %(lo)s::int8[], %(hi)s::int8[], %(cal)s::int4[],
                %(tar)s::int4[], %(series_id)s::int4[], %(power)s::bool[], %(staleness)s::int8[],
                %(orders)s::bool[], %(lab_sched)s::bool[])
         AS x(r, asset_id, lo, hi, cal, tar, series_id, power, staleness, orders, lab_sched)
)
SELECT u.*,
    least(u.lo, {_last("e.kind = 'state'")},
          {_last("e.kind = 'status' AND e.type = 'offline'")},
          {_last(f"e.kind = 'state' AND {_CATEGORY} <> 'unknown'")}) AS st_from,
    CASE WHEN u.orders THEN least(u.lo, {_last("e.kind = 'event' AND e.type = 'work_order_start'")})
         ELSE u.lo END AS ord_from,
    least(u.lo, {_last(f"{_COUNT_BASE} AND e.data ? 'good'")}, {_last(f"{_COUNT_BASE} AND e.data ? 'reject'")},
          {_last(f"{_COUNT_BASE} AND e.data ? 'rework'")}) AS cnt_from,
    CASE WHEN u.series_id IS NULL THEN u.lo
         WHEN u.power THEN least(u.lo, {_last("e.series_id = u.series_id", "samples e", tenant=False)})
         ELSE least(u.lo, {_last(f"e.series_id = u.series_id AND {_READING}", "samples e", tenant=False)})
    END AS en_from,
    CASE WHEN u.series_id IS NULL OR u.power THEN u.hi
         ELSE coalesce((SELECT e.ts FROM samples e WHERE e.series_id = u.series_id AND e.ts > u.hi AND {_READING}
                        ORDER BY e.ts LIMIT 1), u.hi)
    END AS en_to
FROM u
"""

_WIN = f"""
CREATE TEMP TABLE _k_win ON COMMIT DROP AS
SELECT gid, r, lane, {_ts("w0")} AS w0, {_ts("w1")} AS w1
FROM unnest(%(gid)s::int4[], %(r)s::int4[], %(lane)s::int4[], %(w0)s::int8[], %(w1)s::int8[])
     AS x(gid, r, lane, w0, w1)
"""
_CAL = f"""
CREATE TEMP TABLE _k_cal ON COMMIT DROP AS
SELECT cal, {_ts("s0")} AS s0, {_ts("s1")} AS s1
FROM unnest(%(cal)s::int4[], %(s0)s::int8[], %(s1)s::int8[]) AS x(cal, s0, s1)
"""
_TAR = f"""
CREATE TEMP TABLE _k_tar ON COMMIT DROP AS
SELECT tar, {_ts("t0")} AS t0, {_ts("t1")} AS t1, period
FROM unnest(%(tar)s::int4[], %(t0)s::int8[], %(t1)s::int8[], %(period)s::text[]) AS x(tar, t0, t1, period)
"""

_CELLS = """
CREATE TEMP TABLE _k_cells ON COMMIT DROP AS
WITH oev AS (
    SELECT q.r, e.ts, e.seq, e.type, e.data::text AS d, e.type = 'work_order_start' AS is_start,
           e.data->>'order_id' AS oid,
           CASE WHEN jsonb_typeof(e.data -> 'product') = 'string' THEN e.data->>'product' END AS product
    FROM _k_req q CROSS JOIN LATERAL (
        SELECT * FROM events e WHERE e.tenant_id = %(tenant)s AND e.kind = 'event' AND e.asset_id = q.asset_id
          AND e.ts >= q.ord_from AND e.ts < q.hi AND e.type IN ('work_order_start', 'work_order_end')
        OFFSET 0) e
    WHERE q.orders
), o1 AS (
    SELECT *, row_number() OVER (PARTITION BY r ORDER BY ts, seq, type, d) AS p FROM oev
), o2 AS (
    SELECT *, max(CASE WHEN is_start THEN p END) OVER (PARTITION BY r ORDER BY p ROWS UNBOUNDED PRECEDING) AS sp
    FROM o1
), o3 AS (
    SELECT o.r, o.ts, o.p, s.oid AS soid, s.product AS sprod,
           bool_or(NOT o.is_start AND o.oid = s.oid)
               OVER (PARTITION BY o.r, o.sp ORDER BY o.p ROWS UNBOUNDED PRECEDING) AS closed
    FROM o2 o LEFT JOIN o2 s ON s.r = o.r AND s.p = o.sp
), ost AS (
    SELECT DISTINCT ON (r, ts) r, ts, soid IS NOT NULL AND closed IS NOT true AS open,
           CASE WHEN soid IS NOT NULL AND closed IS NOT true THEN coalesce(sprod, '') ELSE '' END AS product
    FROM o3 ORDER BY r, ts, p DESC
), lanes AS (
    SELECT DISTINCT lane, r FROM _k_win
), tars AS (
    SELECT q.r, greatest(t.t0, q.lo) AS ts, t.period
    FROM _k_req q JOIN _k_tar t ON t.tar = q.tar AND t.t0 < q.hi AND t.t1 > q.lo
), tl AS (
    SELECT lane, r, w1 AS ts, 0 AS pri FROM _k_win
    UNION ALL SELECT lane, r, w0, 1 FROM _k_win
    UNION ALL SELECT l.lane, l.r, least(c.s1, q.hi), 2
        FROM lanes l JOIN _k_req q ON q.r = l.r JOIN _k_cal c ON c.cal = q.cal AND c.s0 < q.hi AND c.s1 > q.lo
    UNION ALL SELECT l.lane, l.r, greatest(c.s0, q.lo), 3
        FROM lanes l JOIN _k_req q ON q.r = l.r JOIN _k_cal c ON c.cal = q.cal AND c.s0 < q.hi AND c.s1 > q.lo
    UNION ALL SELECT l.lane, l.r, t.ts, 4 FROM lanes l JOIN tars t ON t.r = l.r
    UNION ALL SELECT l.lane, l.r, o.ts, 5 FROM lanes l JOIN ost o ON o.r = l.r
), filled AS (
    SELECT lane, r, ts, pri, lead(ts) OVER w AS nxt,
           max(ts) FILTER (WHERE pri <= 1) OVER w AS w_ts,
           max(ts) FILTER (WHERE pri = 2) OVER w AS cal_end,
           max(ts) FILTER (WHERE pri = 3) OVER w AS cal_start,
           max(ts) FILTER (WHERE pri = 4) OVER w AS tar_ts,
           max(ts) FILTER (WHERE pri = 5) OVER w AS ord_ts
    FROM tl WINDOW w AS (PARTITION BY lane ORDER BY ts, pri ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
)
SELECT f.r, w.gid, f.ts AS c0, f.nxt AS c1,
       f.cal_start IS NOT NULL AND (f.cal_end IS NULL OR f.cal_start > f.cal_end) AS sched, t.period,
       CASE WHEN q.orders THEN coalesce(o.open, false) ELSE true END AS open,
       CASE WHEN q.orders THEN coalesce(o.product, '') ELSE '' END AS product
FROM filled f
JOIN _k_req q ON q.r = f.r
JOIN _k_win w ON w.lane = f.lane AND w.w0 = f.w_ts
LEFT JOIN tars t ON t.r = f.r AND t.ts = f.tar_ts
LEFT JOIN ost o ON o.r = f.r AND o.ts = f.ord_ts
WHERE f.nxt > f.ts AND f.nxt <= w.w1
"""

_CELL_BUCKETS = f"""
CREATE TEMP TABLE _k_cb ON COMMIT DROP AS
SELECT c.*, b FROM _k_cells c,
    generate_series(date_bin({HOUR}, c.c0, %(base)s), c.c1 - interval '1 microsecond', {HOUR}) AS b
"""


def _bucketed(table: str) -> str:
    """``table``'s spans [t0, t1) with the hour buckets they overlap (most lie inside one)."""
    return (f"SELECT t.*, generate_series(date_bin({HOUR}, t.t0, %(base)s), "
            f"date_bin({HOUR}, t.t1 - interval '1 microsecond', %(base)s), {HOUR}) AS b FROM {table} t")


def _overlap(a0: str, a1: str) -> str:
    return f"least({a1}, c.c1, x.b + {HOUR}) - greatest({a0}, c.c0, x.b)"


_LOSSES = "('setup', 'starved', 'blocked', 'idle', 'unplanned_stop')"

_STATE_ROW = f"""CASE WHEN e.kind = 'state' THEN {_CATEGORY} ELSE 'unknown' END AS cat,
               CASE WHEN e.kind = 'state' THEN nullif(e.data->>'reason', '') END AS reason"""

_STATES = f"""
WITH seg AS (  -- per request: the last event of each instant, then each one's end and failure
    SELECT q.r, q.lo, q.hi, s.* FROM _k_req q CROSS JOIN LATERAL (
        SELECT ts, cat, reason, lead(ts) OVER w AS nxt,
               max(ts) FILTER (WHERE cat <> 'unknown') OVER p AS known_ts,
               max(ts) FILTER (WHERE cat = 'unplanned_stop') OVER p AS stop_ts
        FROM (
            (SELECT DISTINCT ON (e.ts) e.ts, {_STATE_ROW}
             FROM events e
             WHERE e.tenant_id = %(tenant)s AND e.asset_id = q.asset_id AND e.kind IN ('state', 'status')
               AND e.ts >= q.st_from AND e.ts < q.hi AND (e.kind = 'state' OR e.type = 'offline')
             ORDER BY e.ts, e.seq DESC, e.kind DESC, e.type DESC, e.data::text DESC)
            UNION ALL SELECT '-infinity'::timestamptz, 'unknown', NULL
        ) d
        WINDOW w AS (ORDER BY ts), p AS (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
    ) s
), clipped AS (
    SELECT r, ts, greatest(ts, lo) AS t0, least(coalesce(nxt, hi), hi) AS t1, cat, reason,
           ts >= lo AND cat = 'unplanned_stop' AND (stop_ts IS NULL OR stop_ts <> known_ts) AS fail
    FROM seg WHERE least(coalesce(nxt, hi), hi) > greatest(ts, lo)
), x AS MATERIALIZED ({_bucketed("clipped")}
), pieces AS (
    SELECT c.gid, x.cat, c.sched, c.open,
           CASE WHEN x.cat IN {_LOSSES} AND c.sched AND c.open
                THEN CASE WHEN x.reason IS NOT NULL THEN x.cat || '/' || x.reason ELSE x.cat END END AS rk,
           {_overlap("x.t0", "x.t1")} AS span,
           x.fail AND c.c0 <= x.ts AND x.ts < c.c1 AND x.b = date_bin({HOUR}, x.ts, %(base)s) AS fail
    FROM x JOIN _k_cb c ON c.r = x.r AND c.b = x.b
    WHERE x.t0 < c.c1 AND c.c0 < x.t1
)
SELECT gid, cat, sched, open, rk, {_us("sum(span)")} AS us, count(*) FILTER (WHERE fail) AS fails,
       grouping(cat, sched, open, rk) AS g
FROM pieces WHERE span > interval '0'
GROUP BY GROUPING SETS ((gid, cat, sched, open), (gid, rk))
"""

_COUNTS = f"""
WITH credited AS (
    SELECT q.r, e.ts, coalesce((e.data->>'good')::int8, 0) AS good,
           coalesce((e.data->>'reject')::int8, 0) AS reject, coalesce((e.data->>'rework')::int8, 0) AS rework
    FROM _k_req q CROSS JOIN LATERAL (
        SELECT e.ts, e.data FROM events e
        WHERE e.tenant_id = %(tenant)s AND e.kind = 'count' AND e.asset_id = q.asset_id
          AND e.ts >= q.lo AND e.ts < q.hi AND e.type = 'delta'
        OFFSET 0) e
    UNION ALL
    SELECT q.r, t.ts, CASE WHEN t.name = 'good' THEN t.c ELSE 0 END, CASE WHEN t.name = 'reject' THEN t.c ELSE 0 END,
           CASE WHEN t.name = 'rework' THEN t.c ELSE 0 END
    FROM _k_req q CROSS JOIN LATERAL (  -- each field of a running total is its own counter
        SELECT ts, name, CASE WHEN prev IS NULL THEN 0 WHEN v >= prev THEN v - prev ELSE v END AS c FROM (
            SELECT e.ts, f.name, f.v, lag(f.v) OVER (PARTITION BY f.name ORDER BY e.ts, e.seq, e.data::text) AS prev
            FROM events e, LATERAL (VALUES ('good', (e.data->>'good')::int8), ('reject', (e.data->>'reject')::int8),
                                           ('rework', (e.data->>'rework')::int8)) AS f(name, v)
            WHERE e.tenant_id = %(tenant)s AND e.kind = 'count' AND e.asset_id = q.asset_id
              AND e.ts >= q.cnt_from AND e.ts < q.hi AND e.type = 'total' AND f.v IS NOT NULL
        ) z WHERE ts >= q.lo
    ) t
)
SELECT c.gid, c.product, sum(m.good)::int8 AS good, sum(m.reject)::int8 AS reject, sum(m.rework)::int8 AS rework
FROM credited m JOIN _k_cb c ON c.r = m.r AND c.b = date_bin({HOUR}, m.ts, %(base)s) AND c.c0 <= m.ts AND m.ts < c.c1
WHERE m.good + m.reject + m.rework > 0
GROUP BY c.gid, c.product
"""

_ENERGY = f"""
WITH rates AS (
    SELECT q.r, q.lo, q.hi, p.p0, p.p1,
           (CASE WHEN p.v1 >= p.v0 THEN p.v1 - p.v0 ELSE p.v1 END) / date_part('epoch', p.p1 - p.p0) AS rate,
           false AS power
    FROM _k_req q CROSS JOIN LATERAL (  -- per request, so the index order feeds the window: no sort
        SELECT s.ts AS p0, lead(s.ts) OVER w AS p1, s.value AS v0, lead(s.value) OVER w AS v1
        FROM samples s
        WHERE s.series_id = q.series_id AND s.ts >= q.en_from AND s.ts <= q.en_to
          AND s.quality < {BAD} AND s.value IS NOT NULL
        WINDOW w AS (ORDER BY s.ts)
    ) p
    WHERE NOT q.power AND p.p1 IS NOT NULL
    UNION ALL
    SELECT q.r, q.lo, q.hi, h.p0, h.p1, h.kw / 3600.0, true
    FROM _k_req q CROSS JOIN LATERAL (
        SELECT s.ts AS p0, least(coalesce(lead(s.ts) OVER w, s.ts + q.staleness), s.ts + q.staleness) AS p1,
               CASE WHEN s.quality < {BAD} THEN s.value END AS kw
        FROM samples s WHERE s.series_id = q.series_id AND s.ts >= q.en_from AND s.ts < q.hi
        WINDOW w AS (ORDER BY s.ts)
    ) h
    WHERE q.power AND h.kw IS NOT NULL
), clipped AS (
    SELECT r, greatest(p0, lo) AS t0, least(p1, hi) AS t1, rate, power
    FROM rates WHERE least(p1, hi) > greatest(p0, lo)
), x AS MATERIALIZED ({_bucketed("clipped")}
), pieces AS (
    SELECT c.gid, c.period, x.rate, x.power, {_overlap("x.t0", "x.t1")} AS span
    FROM x JOIN _k_cb c ON c.r = x.r AND c.b = x.b
    WHERE x.t0 < c.c1 AND c.c0 < x.t1
)
SELECT gid, period, sum(rate * date_part('epoch', span)) AS kwh,
       {_us("sum(span) FILTER (WHERE power)")} AS held
FROM pieces WHERE span > interval '0' GROUP BY gid, period
"""

_COUNTER_SPAN = f"""
SELECT w.gid, {_us("greatest(interval '0', least(p.last, w.w1) - greatest(p.first, w.w0))")} AS covered
FROM _k_win w JOIN (
    SELECT q.r, s.first, s.last FROM _k_req q CROSS JOIN LATERAL (
        SELECT min(s.ts) AS first, max(s.ts) AS last FROM samples s
        WHERE s.series_id = q.series_id AND s.ts >= q.en_from AND s.ts <= q.en_to
          AND s.quality < {BAD} AND s.value IS NOT NULL
        OFFSET 0) s
    WHERE NOT q.power AND q.series_id IS NOT NULL AND s.first IS NOT NULL
) p ON p.r = w.r
"""

_LABOUR = f"""
WITH ce AS (
    SELECT q.r, q.lo, e.ts, e.seq, e.type, e.data::text AS d, coalesce(e.data->>'operator', '') AS op
    FROM _k_req q CROSS JOIN LATERAL (
        SELECT * FROM events e WHERE e.tenant_id = %(tenant)s AND e.kind = 'event' AND e.asset_id = q.asset_id
          AND e.ts < q.hi AND e.type IN ('clock_in', 'clock_out')
        OFFSET 0) e
), rel AS (
    SELECT * FROM ce WHERE ts >= lo
    UNION ALL
    (SELECT DISTINCT ON (r, op) * FROM ce WHERE ts < lo ORDER BY r, op, ts DESC, seq DESC, type DESC, d DESC)
), inst AS (
    SELECT DISTINCT ON (r, op, ts) r, op, ts, type = 'clock_in' AS is_in
    FROM rel ORDER BY r, op, ts, seq DESC, type DESC, d DESC
), seg AS (
    SELECT r, ts, lead(ts) OVER (PARTITION BY r, op ORDER BY ts) AS nxt, is_in FROM inst
), clipped AS (
    SELECT s.r, greatest(s.ts, q.lo) AS t0, least(coalesce(s.nxt, q.hi), q.hi) AS t1, q.lab_sched
    FROM seg s JOIN _k_req q ON q.r = s.r
    WHERE s.is_in AND least(coalesce(s.nxt, q.hi), q.hi) > greatest(s.ts, q.lo)
), x AS MATERIALIZED ({_bucketed("clipped")}
), pieces AS (
    SELECT c.gid, {_overlap("x.t0", "x.t1")} AS span
    FROM x JOIN _k_cb c ON c.r = x.r AND c.b = x.b
    WHERE x.t0 < c.c1 AND c.c0 < x.t1 AND (c.sched OR NOT x.lab_sched)
)
SELECT gid, {_us("sum(span)")} AS us FROM pieces WHERE span > interval '0' GROUP BY gid
"""


SPLIT_MIN_WINDOWS = 2_000  # below this many windows one transaction is quicker than several


def _split(requests: Sequence[KpiRequest], parts: int) -> list[Sequence[KpiRequest]]:
    """Contiguous runs of requests with about the same number of windows each (order kept)."""
    total = sum(len(r.windows) for r in requests)
    if parts <= 1 or total < SPLIT_MIN_WINDOWS or len(requests) < parts:
        return [requests]
    out: list[Sequence[KpiRequest]] = []
    start = seen = 0
    for i, r in enumerate(requests):
        seen += len(r.windows)
        if seen * parts >= total * (len(out) + 1) and len(out) < parts - 1:
            out.append(requests[start:i + 1])
            start = i + 1
    out.append(requests[start:])
    return [o for o in out if o]



class PostgresKpiSource:
    """``shopfloor.ports.kpi.KpiSource`` over the PostgreSQL historian's tables (read only)."""

    def __init__(self, db: PgDatabase, lookback_us: int = DEFAULT_LOOKBACK_US, work_mem_mb: int = 256,
                 workers: int = 2) -> None:
        self._db = db
        self.lookback_us = lookback_us
        self.work_mem_mb = int(work_mem_mb)  # for this transaction's sorts and hashes (SET LOCAL)
        # PostgreSQL runs a window function on one core: a big call is split into this many runs of
        # whole requests, each in its own transaction on its own pooled connection, at once
        self.workers = max(1, workers)
        self.timings: dict[str, float] = {}  # seconds per step of the last call (for benchmarks)

    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        parts = _split(requests, self.workers)
        with paused_gc():
            if len(parts) <= 1:
                return self._part(tenant_id, requests, self.timings)
            laps: list[dict[str, float]] = [{} for _ in parts]
            with ThreadPoolExecutor(len(parts), thread_name_prefix="kpi-sql") as pool:
                done = list(pool.map(lambda i: self._part(tenant_id, parts[i], laps[i]), range(len(parts))))
            self.timings = {k: max(lap.get(k, 0.0) for lap in laps) for k in laps[0]}
            return [x for part in done for x in part]

    def _part(self, tenant_id: int, requests: Sequence[KpiRequest], laps: dict[str, float]) -> list[PeriodInputs]:
        p = plan(requests)
        if not p.groups:
            return []
        with self._conn() as conn:
            sums = self._sums(conn, tenant_id, p, laps)
        t = time.perf_counter()
        out = assemble(sums, requests, p)
        laps["assemble"] = time.perf_counter() - t
        return out

    def _sums(self, conn: psycopg.Connection, tenant_id: int, p: KpiPlan, laps: dict[str, float]) -> Sums:
        clamp = {FAR_PAST: MIN_US, FAR_FUTURE: MAX_US}
        cal = dict(p.cal, s0=[clamp.get(v, v) for v in p.cal["s0"]], s1=[clamp.get(v, v) for v in p.cal["s1"]])
        tar = dict(p.tar, t0=[clamp.get(v, v) for v in p.tar["t0"]], t1=[clamp.get(v, v) for v in p.tar["t1"]])
        params: dict[str, Any] = {"tenant": tenant_id, "lookback": self.lookback_us}
        lap = Lap(laps)
        # JIT compiles these statements for seconds and gains nothing; sorts and hashes get memory
        # Every read of events and samples is a LATERAL index scan per request, so the joins left are
        # the ones with the cells, which must hash the cells (the planner misestimates the other
        # side by orders of magnitude and would loop or sort instead); JIT
        # compiles these statements for seconds and gains nothing; sorts and hashes get memory.
        conn.execute("SET LOCAL enable_nestloop = off; SET LOCAL enable_mergejoin = off; SET LOCAL jit = off")
        conn.execute(f"SET LOCAL work_mem = '{self.work_mem_mb}MB'")
        conn.execute(_REQ, {**p.req, **params})
        conn.execute(_WIN, p.win)
        conn.execute(_CAL, cal)
        conn.execute(_TAR, tar)
        conn.execute("ANALYZE _k_req; ANALYZE _k_win; ANALYZE _k_cal; ANALYZE _k_tar")
        lap("anchors")
        conn.execute(_CELLS, params)
        base = conn.execute("SELECT min(lo) FROM _k_req").fetchone()
        params["base"] = base[0] if base else None
        conn.execute(_CELL_BUCKETS, params)
        conn.execute("CREATE INDEX ON _k_cb (r, b); ANALYZE _k_cb")
        lap("cells")
        sums = Sums(p.groups)
        for gid, cat, sched, open_, rk, us, fails, g in conn.execute(_STATES, params):
            if g == 0b0001:  # the grouping set (gid, cat, sched, open)
                sums.time(gid, cat, sched, open_, us)
                sums.failures[gid] += fails
            elif rk is not None:
                sums.reasons[gid][rk] = us
        lap("states")
        for gid, product, good, reject, rework in conn.execute(_COUNTS, params):
            sums.counts[gid][product] = Counts(good, reject, rework)
        lap("counts")
        if any(s is not None for s in p.req["series_id"]):
            for gid, period, kwh, held in conn.execute(_ENERGY, params):
                sums.kwh[gid][period] = kwh
                sums.held[gid] += held or 0
            for gid, covered in conn.execute(_COUNTER_SPAN):
                sums.spanned[gid] = covered
        lap("energy")
        for gid, us in conn.execute(_LABOUR, params):
            sums.labour[gid] = us
        lap("labour")
        return sums

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._db.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreUnavailable(f"KPI query failed: {exc}") from exc
