"""``KpiSource`` on DuckDB: the historian's events and samples summed into ``PeriodInputs``.

The semantics are ``domain/kpi/reference.py``'s (see ``ports/kpi.py``); this is how DuckDB gets there
in a handful of statements for any number of (asset, window) groups:

1. **Anchors.** Every series starts from the last event before the request's first window: the state
   in force (and the last known one, for failure episodes), the last work-order start, each total
   counter field's baseline, the energy reading or power sample in force, and the first counter
   reading after the last window. They are looked for within ``lookback_us`` first and, for what is
   still missing, in all history (except counter baselines: a total counter field not reported
   within the lookback starts from a fresh baseline). Each later search asks only for the anchors
   still missing.
2. **Cells.** Per lane (windows of one request that do not overlap), one sweep over window bounds,
   calendar and tariff boundaries and work-order changes cuts every window into cells of constant
   (scheduled, tariff period, order open, product).
3. **Sums.** State segments (per-instant last event, ``lead`` to the next), count messages (total
   counters credited with ``lag .. IGNORE NULLS`` per field), energy (counter increments spread over
   the time between readings, or power holds) and clocked-in spans are joined to the cells they
   overlap. The joins are equi-joins on (request, hour bucket) with cells and segments cut at
   bucket bounds, so a range join never compares every segment with every cell.

**Small calls** (a few machines over a few days, ``SMALL_ASSET_DAYS``) first copy their assets'
rows from a day before the first window to the last one (samples to a day after it) into temp
tables, and every step reads those instead of scanning the historian's tables again: rows are in
arrival order with all machines interleaved, so a machine filter prunes no row group and every
statement would read (and decompress the JSON of) whole days. Anchors are looked for in the copy
first, then as above; a total counter field's baseline only when the window has totals with that
field. Rows an older anchor needs, and each operator's last clock event before the copy (however
old: the clock state in force), are added to the copy before the steps run.
What a small call then costs is mostly planning and starting each statement (measured at 10 to 30 ms of
CPU each for 6 machines over a shift), not reading rows: fewer statements is what makes it faster.

Timestamps are ``BIGINT`` µs; durations are summed as integers and divided once, so they equal the
reference's exactly. Ties at one instant are broken like ``DuckDBHistorian.events`` orders them:
(ts, seq, kind, type, data).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.kpi.models import Counts, PeriodInputs
from shopfloor.ports.kpi import FAR_FUTURE, FAR_PAST, KpiPlan, KpiRequest, Lap, Sums, assemble, paused_gc, plan
from shopfloor.storage.duckdb.database import Database

B = 3_600_000_000  # the bucket of the range joins: one hour
DAY_US = 86_400_000_000
DEFAULT_LOOKBACK_US = 7 * DAY_US
NEAR_US = DAY_US  # small calls: the first anchor search, in the copied rows (a day before / after)
SMALL_ASSET_DAYS = 64  # a call is small when distinct assets x (its span + 2 days) is at most this
BAD = 2
_COUNT_FIELDS = ("good", "reject", "rework")
_EVENT_KEYS = ("a_st", "a_known", "a_ord", *(f"a_{f}" for f in _COUNT_FIELDS))
_SAMPLE_KEYS = ("a_en", "a_after")
_EVENT_KINDS = "('state', 'status', 'event', 'count')"

_CATEGORY = """CASE e.type
    WHEN 'running' THEN 'run' WHEN 'run' THEN 'run' WHEN 'idle' THEN 'idle' WHEN 'setup' THEN 'setup'
    WHEN 'starved' THEN 'starved' WHEN 'blocked' THEN 'blocked' WHEN 'planned_stop' THEN 'planned_stop'
    WHEN 'unplanned_stop' THEN 'unplanned_stop' ELSE 'unknown' END"""
_STATE_STREAM = "(e.kind = 'state' OR (e.kind = 'status' AND e.type = 'offline'))"
# per field: its baseline (the last total before the request) and whether the request has totals with it
# (CASE: only a total's JSON is parsed)
_HAS = "CASE WHEN e.kind = 'count' AND e.type = 'total' THEN (e.data->>'{f}') IS NOT NULL ELSE false END"
_COUNT_ANCHORS = ",\n".join(
    f"    max(e.ts) FILTER (WHERE e.ts < q.lo AND {_HAS.format(f=f)}) AS a_{f},\n"
    f"    bool_or(e.ts >= q.lo AND {_HAS.format(f=f)}) AS n_{f}"
    for f in _COUNT_FIELDS)
_NO_COUNT_ANCHORS = ", ".join(f"NULL::BIGINT AS a_{f}, NULL::BOOLEAN AS n_{f}" for f in _COUNT_FIELDS)

# ``_k_ev`` / ``_k_sa`` are the historian's tables, or a small call's copy of its rows (``_on``);
# ``_k_look``: the requests still missing an anchor, where to look (NULL: nothing to look for)
_EVENT_ANCHORS = f"""
SELECT q.r,
    max(e.ts) FILTER (WHERE e.ts < q.lo AND {_STATE_STREAM}) AS a_st,
    max(e.ts) FILTER (WHERE e.ts < q.lo AND e.kind = 'state' AND {_CATEGORY} <> 'unknown') AS a_known,
    max(e.ts) FILTER (WHERE e.ts < q.lo AND q.orders AND e.kind = 'event' AND e.type = 'work_order_start') AS a_ord,
    {{counts}}
FROM _k_ev e JOIN _k_req q ON e.asset_id = q.asset_id JOIN _k_look k ON k.r = q.r
WHERE e.tenant_id = $tenant AND e.ts < k.until AND e.ts >= k.look AND e.kind IN {_EVENT_KINDS}
  AND e.ts >= $look_min AND e.ts < $until_max
GROUP BY q.r
"""

_SAMPLE_ANCHORS = f"""
SELECT r, max(a_en) AS a_en, min(a_after) AS a_after FROM (
    SELECT q.r, max(s.ts) AS a_en, NULL::BIGINT AS a_after
    FROM _k_sa s JOIN _k_req q ON s.series_id = q.series_id JOIN _k_look k ON k.r = q.r
    WHERE s.ts < q.lo AND s.ts >= k.sa_look AND s.ts >= $sa_look_min AND s.ts < $lo_max
      AND (q.power OR (s.quality < {BAD} AND s.value IS NOT NULL))
    GROUP BY q.r
    UNION ALL
    SELECT q.r, NULL, min(s.ts)
    FROM _k_sa s JOIN _k_req q ON s.series_id = q.series_id JOIN _k_look k ON k.r = q.r
    WHERE s.ts > q.hi AND s.ts <= k.ahead AND s.ts > $hi_min AND s.ts <= $ahead_max
      AND NOT q.power AND s.quality < {BAD} AND s.value IS NOT NULL
    GROUP BY q.r
) GROUP BY r
"""

# a small call's copy of its rows (the asset and series ids are integers written into the SQL, so the
# scan filters on them); more rows are inserted later for anchors older than the copy
_COPY_EVENTS = f"""
CREATE OR REPLACE TEMP TABLE _k_ev AS
SELECT seq, tenant_id, asset_id, ts, kind, type, data FROM events
WHERE tenant_id = $tenant AND asset_id IN ({{ids}}) AND ts >= $t0 AND ts < $t1 AND kind IN {_EVENT_KINDS}
UNION ALL (  -- each operator's last clock event before the copy, however old: the clock state in force
    SELECT seq, tenant_id, asset_id, ts, kind, type, data FROM events
    WHERE tenant_id = $tenant AND asset_id IN ({{ids}}) AND kind = 'event' AND type IN ('clock_in', 'clock_out')
      AND ts < $t0
    QUALIFY row_number() OVER (PARTITION BY asset_id, coalesce(data->>'operator', '')
                               ORDER BY ts DESC, seq DESC, type DESC, data::VARCHAR DESC) = 1)
"""
# what anchors older than the copy need before it: states from $st, work orders from $ord, totals from $cnt
_OLDER_EVENTS = f"""
INSERT INTO _k_ev
SELECT e.seq, e.tenant_id, e.asset_id, e.ts, e.kind, e.type, e.data FROM events e
WHERE e.tenant_id = $tenant AND e.asset_id IN ({{ids}}) AND e.ts >= least($st, $ord, $cnt) AND e.ts < $t1
  AND ((e.ts >= $st AND {_STATE_STREAM})
       OR (e.ts >= $ord AND e.kind = 'event' AND e.type IN ('work_order_start', 'work_order_end'))
       OR (e.ts >= $cnt AND e.kind = 'count' AND e.type = 'total'))
"""
_MORE_SAMPLES = """
INSERT INTO _k_sa
SELECT series_id, ts, value, quality FROM samples WHERE series_id IN ({ids}) AND ts >= $t0 AND ts < $t1
"""
_COPY_SAMPLES = """
CREATE OR REPLACE TEMP TABLE _k_sa AS
SELECT series_id, ts, value, quality FROM samples WHERE series_id IN ({ids}) AND ts >= $t0 AND ts < $t1
"""

# the order open after each instant: a start switches orders; an end closes only the open order
_ORDER_STATE = """
oev AS (
    SELECT q.r, e.ts, e.seq, e.type, e.data::VARCHAR AS d, e.type = 'work_order_start' AS is_start,
           e.data->>'order_id' AS oid,
           CASE WHEN json_type(e.data -> 'product') = 'VARCHAR' THEN e.data->>'product' END AS product
    FROM _k_ev e JOIN _k_req q ON e.asset_id = q.asset_id
    WHERE e.tenant_id = $tenant AND q.orders AND e.kind = 'event'
      AND e.type IN ('work_order_start', 'work_order_end') AND e.ts >= q.ord_from AND e.ts < q.hi
      AND e.ts >= $from AND e.ts < $to
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
    SELECT r, ts, soid IS NOT NULL AND closed IS NOT true AS open,
           CASE WHEN soid IS NOT NULL AND closed IS NOT true THEN coalesce(sprod, '') ELSE '' END AS product
    FROM o3 QUALIFY row_number() OVER (PARTITION BY r, ts ORDER BY p DESC) = 1
)"""

_CELLS = f"""
CREATE OR REPLACE TEMP TABLE _k_cb AS
WITH {_ORDER_STATE}, lanes AS (
    SELECT DISTINCT lane, r FROM _k_win
), tl AS (
    SELECT lane, r, w1 AS ts, 0 AS pri, -1 AS gid, NULL::BOOLEAN AS sched, NULL::VARCHAR AS period,
           NULL::BOOLEAN AS open, NULL::VARCHAR AS product FROM _k_win
    UNION ALL SELECT lane, r, w0, 1, gid, NULL, NULL, NULL, NULL FROM _k_win
    UNION ALL SELECT l.lane, l.r, least(c.s1, q.hi), 2, NULL, false, NULL, NULL, NULL
        FROM lanes l JOIN _k_req q ON q.r = l.r JOIN _k_cal c ON c.cal = q.cal AND c.s0 < q.hi AND c.s1 > q.lo
    UNION ALL SELECT l.lane, l.r, greatest(c.s0, q.lo), 3, NULL, true, NULL, NULL, NULL
        FROM lanes l JOIN _k_req q ON q.r = l.r JOIN _k_cal c ON c.cal = q.cal AND c.s0 < q.hi AND c.s1 > q.lo
    UNION ALL SELECT l.lane, l.r, greatest(t.t0, q.lo), 4, NULL, NULL, t.period, NULL, NULL
        FROM lanes l JOIN _k_req q ON q.r = l.r JOIN _k_tar t ON t.tar = q.tar AND t.t0 < q.hi AND t.t1 > q.lo
    UNION ALL SELECT l.lane, l.r, o.ts, 5, NULL, NULL, NULL, o.open, o.product FROM lanes l JOIN ost o ON o.r = l.r
), filled AS (
    SELECT lane, r, ts, lead(ts) OVER w AS nxt,
           last_value(gid IGNORE NULLS) OVER w AS gid,
           last_value(sched IGNORE NULLS) OVER w AS sched,
           last_value(period IGNORE NULLS) OVER w AS period,
           last_value(open IGNORE NULLS) OVER w AS open,
           last_value(product IGNORE NULLS) OVER w AS product
    FROM tl WINDOW w AS (PARTITION BY lane ORDER BY ts, pri ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
), cells AS (
    SELECT f.r, f.gid, f.ts AS c0, f.nxt AS c1, coalesce(f.sched, false) AS sched, f.period,
           CASE WHEN q.orders THEN coalesce(f.open, false) ELSE true END AS open,
           CASE WHEN q.orders THEN coalesce(f.product, '') ELSE '' END AS product
    FROM filled f JOIN _k_req q ON q.r = f.r
    WHERE f.gid >= 0 AND f.nxt > f.ts
)  -- each cell with the hour buckets it overlaps
SELECT *, unnest(range((c0 - $base) // {B}, (c1 - 1 - $base) // {B} + 1)) AS b FROM cells
"""


def _overlap(a0: str, a1: str) -> str:
    """µs of [a0, a1) ∩ cell ∩ bucket (the join's ``c`` and ``x.b``)."""
    return f"least({a1}, c.c1, $base + (x.b + 1) * {B}) - greatest({a0}, c.c0, $base + x.b * {B})"


def _bucketed(table: str) -> str:
    """``table``'s spans [t0, t1) with the hour buckets they overlap (most lie inside one)."""
    one, last = f"(t0 - $base) // {B}", f"(t1 - 1 - $base) // {B}"
    return (f"SELECT *, {one} AS b FROM {table} WHERE {one} = {last} UNION ALL "
            f"SELECT *, unnest(range({one}, {last} + 1)) AS b FROM {table} WHERE {one} < {last}")


_LOSSES = "('setup', 'starved', 'blocked', 'idle', 'unplanned_stop')"

_STATES = f"""
WITH ev AS (
    SELECT q.r, q.lo, q.hi, e.ts, e.seq, e.kind, e.type, e.data,
           CASE WHEN e.kind = 'state' THEN {_CATEGORY} ELSE 'unknown' END AS cat,
           CASE WHEN e.kind = 'state' THEN nullif(e.data->>'reason', '') END AS reason
    FROM _k_ev e JOIN _k_req q ON e.asset_id = q.asset_id
    WHERE e.tenant_id = $tenant AND {_STATE_STREAM} AND e.ts >= q.st_from AND e.ts < q.hi
      AND e.ts >= $from AND e.ts < $to
), dup AS (
    SELECT r, ts FROM ev GROUP BY r, ts HAVING count(*) > 1
), inst AS (  -- one row per instant: the last event of it
    SELECT r, lo, hi, ts, cat, reason FROM ev ANTI JOIN dup USING (r, ts)
    UNION ALL
    SELECT r, lo, hi, ts, v.cat, v.reason FROM (
        SELECT ev.r, any_value(ev.lo) AS lo, any_value(ev.hi) AS hi, ev.ts,
               arg_max({{'cat': cat, 'reason': reason}}, {{'s': seq, 'k': kind, 't': type, 'd': data::VARCHAR}}) AS v
        FROM ev SEMI JOIN dup USING (r, ts) GROUP BY ev.r, ev.ts)
    UNION ALL SELECT r, lo, hi, {FAR_PAST}, 'unknown', NULL FROM _k_req
), seg AS (
    SELECT r, lo, hi, ts, cat, reason, lead(ts) OVER w AS nxt,
           last_value(CASE WHEN cat <> 'unknown' THEN cat END IGNORE NULLS)
               OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_known
    FROM inst WINDOW w AS (PARTITION BY r ORDER BY ts)
), clipped AS (
    SELECT r, ts, greatest(ts, lo) AS t0, least(coalesce(nxt, hi), hi) AS t1, cat, reason,
           ts >= lo AND cat = 'unplanned_stop' AND prev_known IS DISTINCT FROM 'unplanned_stop' AS fail
    FROM seg WHERE least(coalesce(nxt, hi), hi) > greatest(ts, lo)
), x AS ({_bucketed("clipped")}
), pieces AS (
    SELECT c.gid, x.cat, c.sched, c.open,
           CASE WHEN x.cat IN {_LOSSES} AND c.sched AND c.open
                THEN CASE WHEN x.reason IS NOT NULL THEN x.cat || '/' || x.reason ELSE x.cat END END AS rk,
           {_overlap("x.t0", "x.t1")} AS us,
           x.fail AND c.c0 <= x.ts AND x.ts < c.c1 AND x.b = (x.ts - $base) // {B} AS fail
    FROM x JOIN _k_cb c ON c.r = x.r AND c.b = x.b
    WHERE x.t0 < c.c1 AND c.c0 < x.t1
)
SELECT gid, cat, sched, open, rk, sum(us)::BIGINT AS us, count(*) FILTER (WHERE fail) AS fails,
       grouping(cat, sched, open, rk) AS g
FROM pieces WHERE us > 0
GROUP BY GROUPING SETS ((gid, cat, sched, open), (gid, rk))
"""

_COUNTS = f"""
WITH cm0 AS (
    SELECT q.r, q.lo, e.ts, e.seq, e.type AS mode, CASE WHEN e.type = 'total' THEN e.data::VARCHAR END AS d,
           json_transform(e.data, '{{"good": "BIGINT", "reject": "BIGINT", "rework": "BIGINT"}}') AS j
    FROM _k_ev e JOIN _k_req q ON e.asset_id = q.asset_id
    WHERE e.tenant_id = $tenant AND e.kind = 'count' AND e.ts < q.hi
      AND (e.ts >= q.lo OR (e.type = 'total' AND e.ts >= q.cnt_from)) AND e.ts >= $from AND e.ts < $to
), cm AS (
    SELECT r, lo, ts, seq, mode, d, j.good AS good, j.reject AS reject, j.rework AS rework FROM cm0
), totals AS (
    SELECT r, lo, ts, good, reject, rework,
           lag(good IGNORE NULLS) OVER w AS pg, lag(reject IGNORE NULLS) OVER w AS pj,
           lag(rework IGNORE NULLS) OVER w AS pr
    FROM cm WHERE mode = 'total' WINDOW w AS (PARTITION BY r ORDER BY ts, seq, d)
), credited AS (
    SELECT r, ts, coalesce(good, 0) AS good, coalesce(reject, 0) AS reject, coalesce(rework, 0) AS rework
    FROM cm WHERE mode = 'delta' AND ts >= lo
    UNION ALL
    SELECT r, ts,
           CASE WHEN good IS NULL OR pg IS NULL THEN 0 WHEN good >= pg THEN good - pg ELSE good END,
           CASE WHEN reject IS NULL OR pj IS NULL THEN 0 WHEN reject >= pj THEN reject - pj ELSE reject END,
           CASE WHEN rework IS NULL OR pr IS NULL THEN 0 WHEN rework >= pr THEN rework - pr ELSE rework END
    FROM totals WHERE ts >= lo
)
SELECT c.gid, c.product, sum(m.good)::BIGINT AS good, sum(m.reject)::BIGINT AS reject,
       sum(m.rework)::BIGINT AS rework
FROM credited m JOIN _k_cb c ON c.r = m.r AND c.b = (m.ts - $base) // {B} AND c.c0 <= m.ts AND m.ts < c.c1
WHERE m.good + m.reject + m.rework > 0
GROUP BY c.gid, c.product
"""

_ENERGY = f"""
WITH rd AS (
    SELECT q.r, q.lo, q.hi, s.ts, s.value FROM _k_sa s JOIN _k_req q ON s.series_id = q.series_id
    WHERE NOT q.power AND s.ts >= q.en_from AND s.ts <= q.en_to AND s.quality < {BAD} AND s.value IS NOT NULL
      AND s.ts >= $from AND s.ts <= $to
), pairs AS (
    SELECT r, lo, hi, ts AS p0, lead(ts) OVER w AS p1, value AS v0, lead(value) OVER w AS v1
    FROM rd WINDOW w AS (PARTITION BY r ORDER BY ts)
), ps AS (
    SELECT q.r, q.lo, q.hi, s.ts, CASE WHEN s.quality < {BAD} THEN s.value END AS kw, q.staleness
    FROM _k_sa s JOIN _k_req q ON s.series_id = q.series_id
    WHERE q.power AND s.ts >= q.en_from AND s.ts < q.hi AND s.ts >= $from AND s.ts <= $to
), holds AS (
    SELECT r, lo, hi, ts AS p0, least(coalesce(lead(ts) OVER w, ts + staleness), ts + staleness) AS p1, kw
    FROM ps WINDOW w AS (PARTITION BY r ORDER BY ts)
), rates AS (
    SELECT r, lo, hi, p0, p1, (CASE WHEN v1 >= v0 THEN v1 - v0 ELSE v1 END) / (p1 - p0) AS rate, false AS power
    FROM pairs WHERE p1 IS NOT NULL
    UNION ALL
    SELECT r, lo, hi, p0, p1, kw / 3600000000, true FROM holds WHERE kw IS NOT NULL
), clipped AS (
    SELECT r, greatest(p0, lo) AS t0, least(p1, hi) AS t1, rate, power
    FROM rates WHERE least(p1, hi) > greatest(p0, lo)
), x AS ({_bucketed("clipped")}
), pieces AS (
    SELECT c.gid, c.period, x.rate, x.power, {_overlap("x.t0", "x.t1")} AS us
    FROM x JOIN _k_cb c ON c.r = x.r AND c.b = x.b
    WHERE x.t0 < c.c1 AND c.c0 < x.t1
)
SELECT gid, period, sum(rate * us) AS kwh, sum(us) FILTER (WHERE power)::BIGINT AS held, NULL::BIGINT AS covered
FROM pieces WHERE us > 0 GROUP BY gid, period
UNION ALL  -- a counter's coverage: the time between its first and last reading
SELECT w.gid, NULL, NULL, NULL, greatest(0, least(p.last, w.w1) - greatest(p.first, w.w0))
FROM _k_win w JOIN (SELECT r, min(ts) AS first, max(ts) AS last FROM rd GROUP BY r) p ON p.r = w.r
"""

_LABOUR = f"""
WITH ce AS (
    SELECT q.r, q.lo, e.ts, e.seq, e.type, e.data::VARCHAR AS d, coalesce(e.data->>'operator', '') AS op
    FROM _k_ev e JOIN _k_req q ON e.asset_id = q.asset_id
    WHERE e.tenant_id = $tenant AND e.kind = 'event' AND e.type IN ('clock_in', 'clock_out') AND e.ts < q.hi
      AND e.ts < $to
), rel AS (
    SELECT * FROM ce WHERE ts >= lo
    UNION ALL
    SELECT * FROM ce WHERE ts < lo
    QUALIFY row_number() OVER (PARTITION BY r, op ORDER BY ts DESC, seq DESC, type DESC, d DESC) = 1
), inst AS (
    SELECT r, op, ts, arg_max(type = 'clock_in', {{'s': seq, 't': type, 'd': d}}) AS is_in
    FROM rel GROUP BY r, op, ts
), seg AS (
    SELECT r, ts, lead(ts) OVER (PARTITION BY r, op ORDER BY ts) AS nxt, is_in FROM inst
), clipped AS (
    SELECT s.r, greatest(s.ts, q.lo) AS t0, least(coalesce(s.nxt, q.hi), q.hi) AS t1, q.lab_sched
    FROM seg s JOIN _k_req q ON q.r = s.r
    WHERE s.is_in AND least(coalesce(s.nxt, q.hi), q.hi) > greatest(s.ts, q.lo)
), x AS ({_bucketed("clipped")}
), pieces AS (
    SELECT c.gid, {_overlap("x.t0", "x.t1")} AS us
    FROM x JOIN _k_cb c ON c.r = x.r AND c.b = x.b
    WHERE x.t0 < c.c1 AND c.c0 < x.t1 AND (c.sched OR NOT x.lab_sched)
)
SELECT gid, sum(us)::BIGINT AS us FROM pieces WHERE us > 0 GROUP BY gid
"""


class DuckDBKpiSource:
    """``shopfloor.ports.kpi.KpiSource`` over the DuckDB historian's tables (read only)."""

    def __init__(self, db: Database, lookback_us: int = DEFAULT_LOOKBACK_US) -> None:
        self._db = db
        self.lookback_us = lookback_us
        self.timings: dict[str, float] = {}  # seconds per step of the last call (for benchmarks)

    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        p = plan(requests)
        if not p.groups:
            return []
        with self._cursor() as cur, paused_gc():
            try:
                return self._run(cur, tenant_id, requests, p)
            finally:
                for name in ("_k_req", "_k_win", "_k_cal", "_k_tar", "_k_look"):
                    with suppress(duckdb.Error):
                        cur.unregister(name)
                cur.execute("; ".join(f"DROP TABLE IF EXISTS {t}" for t in ("_k_cb", "_k_ev", "_k_sa")))

    def _run(self, cur: duckdb.DuckDBPyConnection, tenant_id: int, requests: Sequence[KpiRequest],
             p: KpiPlan) -> list[PeriodInputs]:
        lap = Lap(self.timings)
        _register(cur, "_k_req", pa.table(_req_columns(p.req, {}), schema=_REQ))
        _register(cur, "_k_win", pa.table(p.win, schema=_WIN))
        _register(cur, "_k_cal", pa.table(p.cal, schema=_CAL))
        _register(cur, "_k_tar", pa.table(p.tar, schema=_TAR))
        copy = _Copy.make(cur, tenant_id, p) if _small(p) else None
        req = _req_columns(p.req, self._anchors(cur, tenant_id, p, copy))
        if copy is not None:
            copy.complete(cur, tenant_id, req)
        _register(cur, "_k_req", pa.table(req, schema=_REQ))
        lap("anchors")
        small = copy is not None
        # constant bounds as well as the per-request ones, so DuckDB skips row groups by their zone maps
        to = max(req["hi"])
        t, b = {"tenant": tenant_id}, {"base": p.base}
        cur.execute(_on(_CELLS, small), {**t, **b, "from": min(req["ord_from"]), "to": to})
        lap("cells")
        sums = Sums(p.groups)
        for gid, cat, sched, open_, rk, us, fails, g in _rows(cur, _on(_STATES, small),
                                                                {**t, **b, "from": min(req["st_from"]), "to": to}):
            if g == 0b0001:  # the grouping set (gid, cat, sched, open)
                sums.time(gid, cat, sched, open_, us)
                sums.failures[gid] += fails
            elif rk is not None:
                sums.reasons[gid][rk] = us
        lap("states")
        for gid, product, good, reject, rework in _rows(cur, _on(_COUNTS, small),
                                                        {**t, **b, "from": min(req["cnt_from"]), "to": to}):
            sums.counts[gid][product] = Counts(good, reject, rework)
        lap("counts")
        if any(s is not None for s in p.req["series_id"]):
            span = {"from": min(req["en_from"]), "to": max(req["en_to"])}
            for gid, period, kwh, held, covered in _rows(cur, _on(_ENERGY, small), {**b, **span}):
                if covered is not None:
                    sums.spanned[gid] = covered
                else:
                    sums.kwh[gid][period] = kwh
                    sums.held[gid] += held or 0
        lap("energy")
        for gid, us in _rows(cur, _on(_LABOUR, small), {**t, **b, "to": to}):
            sums.labour[gid] = us
        lap("labour")
        out = assemble(sums, requests, p)
        lap("assemble")
        return out

    def _anchors(self, cur: duckdb.DuckDBPyConnection, tenant_id: int, p: KpiPlan,
                 copy: _Copy | None) -> dict[str, list[Any]]:
        """Per request, the timestamps the series start from (see the module docs): searched in
        widening spans before (and after) the request, each search only for what is still missing."""
        n = len(p.req["r"])
        found: dict[str, list[Any]] = {k: [None] * n for k in (*_EVENT_KEYS, *_SAMPLE_KEYS)}
        every = set(range(n))
        wanted = {"a_st": every, "a_known": every, "a_ord": {i for i in every if p.req["orders"][i]},
                  **{f"a_{f}": every for f in _COUNT_FIELDS},
                  "a_en": {i for i in every if p.req["series_id"][i] is not None}}
        wanted["a_after"] = {i for i in wanted["a_en"] if not p.req["power"][i]}
        spans: list[tuple[int | None, bool]] = []  # (how far to look, whether in the copy)
        if copy is not None:
            spans.append((min(NEAR_US, self.lookback_us), True))
        if copy is None or self.lookback_us > NEAR_US:
            spans.append((self.lookback_us, False))
        spans.append((None, False))
        for span, in_copy in spans:
            if span is None:  # a total counter field's baseline is looked for only within the lookback
                for f in _COUNT_FIELDS:
                    wanted[f"a_{f}"] = set()
            missing = {k: {i for i in rows if found[k][i] is None} for k, rows in wanted.items()}
            got = _search(cur, tenant_id, p, span, in_copy, missing)
            for k, rows in missing.items():
                for i in rows:
                    found[k][i] = got[k][i]
            if in_copy:  # a baseline only for the fields the request's windows have totals with
                for f in _COUNT_FIELDS:
                    wanted[f"a_{f}"] = {i for i in wanted[f"a_{f}"] if got[f"n_{f}"][i]}
        return found

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        try:
            yield self._db.cursor()
        except duckdb.Error as exc:
            raise StoreUnavailable(f"KPI query failed: {exc}") from exc



def _search(cur: duckdb.DuckDBPyConnection, tenant_id: int, p: KpiPlan, span: int | None, in_copy: bool,
            missing: dict[str, set[int]]) -> dict[str, list[Any]]:
    """The anchors of ``missing`` within ``span`` (None: all history) before each request (and after
    it, for the next counter reading); in the copy, also whether each request has totals per field."""
    n = len(p.req["r"])
    lo, hi = p.req["lo"], p.req["hi"]
    got: dict[str, list[Any]] = {k: [None] * n for k in (*_EVENT_KEYS, *_SAMPLE_KEYS)}
    got.update({f"n_{f}": [None] * n for f in _COUNT_FIELDS})
    events = set().union(*(missing[k] for k in _EVENT_KEYS))
    before, after = missing["a_en"], missing["a_after"]
    rows = sorted(events | before | after)
    if not rows:
        return got

    def back(i: int) -> int:
        return FAR_PAST if span is None else lo[i] - span

    def ahead(i: int) -> int:
        return FAR_FUTURE if span is None else hi[i] + span

    def until(i: int) -> int:  # in the copy also the request's own rows, for its totals
        return int(hi[i] if in_copy else lo[i])

    look = {"r": rows, "look": [back(i) if i in events else None for i in rows],
            "until": [until(i) if i in events else None for i in rows],
            "sa_look": [back(i) if i in before else None for i in rows],
            "ahead": [ahead(i) if i in after else None for i in rows]}
    _register(cur, "_k_look", pa.table(look, schema=_LOOK))
    parts: list[str] = []  # one statement: the event anchors and/or the sample anchors, joined on r
    params: dict[str, Any] = {}
    if events:
        counts = any(missing[f"a_{f}"] for f in _COUNT_FIELDS)
        parts.append(_EVENT_ANCHORS.format(counts=_COUNT_ANCHORS if counts else _NO_COUNT_ANCHORS))
        params.update(tenant=tenant_id, look_min=min(map(back, events)), until_max=max(map(until, events)))
    if before or after:  # an empty side gets an empty range
        parts.append(_SAMPLE_ANCHORS)
        params.update(sa_look_min=min(map(back, before), default=0), lo_max=max((lo[i] for i in before), default=0),
                      hi_min=min((hi[i] for i in after), default=0), ahead_max=max(map(ahead, after), default=0))
    sql = parts[0] if len(parts) == 1 else f"SELECT * FROM ({parts[0]}) FULL JOIN ({parts[1]}) USING (r)"
    got.update(_anchor_rows(cur, _on(sql, in_copy), params, n))
    return got


def _small(p: KpiPlan) -> bool:
    """Whether a call copies its rows first (see the module docs)."""
    days = (max(p.req["hi"]) - min(p.req["lo"]) + 2 * NEAR_US) / DAY_US
    return bool(len(set(p.req["asset_id"])) * days <= SMALL_ASSET_DAYS)


def _on(sql: str, copy: bool) -> str:
    """``sql`` over a small call's copy of its rows, or over the historian's tables."""
    return sql if copy else sql.replace("_k_ev ", "events ").replace("_k_sa ", "samples ")


@dataclass
class _Copy:
    """A small call's copy of its rows: events in [ev0, ev1) in ``_k_ev``, samples in [sa0, sa1) in ``_k_sa``."""

    assets: str  # the ids, written into the SQL
    series: str
    ev0: int
    ev1: int
    sa0: int
    sa1: int

    @classmethod
    def make(cls, cur: duckdb.DuckDBPyConnection, tenant_id: int, p: KpiPlan) -> _Copy:
        lo, hi = min(p.req["lo"]), max(p.req["hi"])
        copy = cls(", ".join(str(int(a)) for a in sorted(set(p.req["asset_id"]))),
                   ", ".join(str(int(s)) for s in sorted({s for s in p.req["series_id"] if s is not None})),
                   lo - NEAR_US, hi, lo - NEAR_US, hi + NEAR_US + 1)
        cur.execute(_COPY_EVENTS.format(ids=copy.assets),
                    {"tenant": tenant_id, "t0": copy.ev0, "t1": copy.ev1})
        if copy.series:
            cur.execute(_COPY_SAMPLES.format(ids=copy.series),
                        {"t0": copy.sa0, "t1": copy.sa1})
        return copy

    def complete(self, cur: duckdb.DuckDBPyConnection, tenant_id: int, req: dict[str, list[Any]]) -> None:
        """Add the rows that anchors older (or later) than the copy reach (of their own kinds only)."""
        older = {k: min(min(req[f"{k}_from"]), self.ev0) for k in ("st", "ord", "cnt")}
        if min(older.values()) < self.ev0:
            cur.execute(_OLDER_EVENTS.format(ids=self.assets), {"tenant": tenant_id, "t1": self.ev0, **older})
        if not self.series:
            return
        energy = [i for i, s in enumerate(req["series_id"]) if s is not None]
        first, last = min(req["en_from"][i] for i in energy), max(req["en_to"][i] for i in energy) + 1
        for t0, t1 in ((first, self.sa0), (self.sa1, last)):
            if t0 < t1:
                cur.execute(_MORE_SAMPLES.format(ids=self.series), {"t0": t0, "t1": t1})
        self.sa0, self.sa1 = min(first, self.sa0), max(last, self.sa1)


def _table(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> pa.Table:
    table = cur.sql(sql, params=params).to_arrow_table()
    if table is None:
        raise StoreUnavailable("a KPI query returned no result")
    return table


def _anchor_rows(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any], n: int) -> dict[str, list[Any]]:
    table = _table(cur, sql, params)
    out: dict[str, list[Any]] = {}
    rs = table.column("r").to_pylist()
    for name in table.column_names:
        if name == "r":
            continue
        col: list[Any] = [None] * n
        for r, v in zip(rs, table.column(name).to_pylist(), strict=True):
            col[r] = v
        out[name] = col
    return out


def _rows(cur: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    table = _table(cur, sql, params)
    return zip(*(c.to_pylist() for c in table.columns), strict=True)


def _first(*values: int | None, default: int) -> int:
    present = [v for v in values if v is not None]
    return min(present) if present else default


def _req_columns(req: dict[str, list[Any]], anchors: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The request columns with where each series starts (``*_from``) and the counter's end."""
    cols = dict(req)
    n = len(req["r"])

    def get(key: str, i: int) -> Any:
        return anchors[key][i] if anchors else None

    cols["st_from"] = [_first(get("a_st", i), get("a_known", i), default=req["lo"][i]) for i in range(n)]
    cols["ord_from"] = [_first(get("a_ord", i), default=req["lo"][i]) for i in range(n)]
    cols["cnt_from"] = [_first(get("a_good", i), get("a_reject", i), get("a_rework", i), req["lo"][i],
                               default=req["lo"][i]) for i in range(n)]
    cols["en_from"] = [_first(get("a_en", i), default=req["lo"][i]) for i in range(n)]
    cols["en_to"] = [get("a_after", i) if get("a_after", i) is not None else req["hi"][i] for i in range(n)]
    return cols


def _register(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    complete = getattr(cur, "complete", None)
    if complete is not None:
        complete()
    cur.register(name, table)


_I64, _I32 = pa.int64(), pa.int32()
_REQ = pa.schema([("r", _I32), ("asset_id", _I32), ("lo", _I64), ("hi", _I64), ("cal", _I32), ("tar", _I32),
                  ("series_id", _I32), ("power", pa.bool_()), ("staleness", _I64), ("orders", pa.bool_()),
                  ("lab_sched", pa.bool_()), ("st_from", _I64), ("ord_from", _I64), ("cnt_from", _I64),
                  ("en_from", _I64), ("en_to", _I64)])
_WIN = pa.schema([("gid", _I32), ("r", _I32), ("lane", _I32), ("w0", _I64), ("w1", _I64)])
_CAL = pa.schema([("cal", _I32), ("s0", _I64), ("s1", _I64)])
_TAR = pa.schema([("tar", _I32), ("t0", _I64), ("t1", _I64), ("period", pa.string())])
_LOOK = pa.schema([("r", _I32), ("look", _I64), ("until", _I64), ("sa_look", _I64), ("ahead", _I64)])
