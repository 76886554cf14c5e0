"""``KpiTileStore`` on DuckDB: kept KPI inputs of closed windows (see ``ports/kpi_tiles.py``).

Writes take this store's own lock, so a refresh and a store never interleave; they touch only the
tile tables, so they do not wait for (or hold up) the historian's commits. The tail of rows committed after a mark is found through the zone maps on
``seq`` (rows are appended in commit order), aggregated per machine and per energy series.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import duckdb
import pyarrow as pa

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.ports.kpi_tiles import ReadingProbe, Tile, TileKey
from shopfloor.storage.duckdb.database import Database

MIGRATIONS: list[str] = [
    """
    CREATE TABLE kpi_tiles (
        tenant_id INTEGER NOT NULL,
        asset_id INTEGER NOT NULL,
        w0 BIGINT NOT NULL,
        w1 BIGINT NOT NULL,
        fp VARCHAR NOT NULL,
        series_id INTEGER,
        dep_hi BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        inputs BLOB NOT NULL
    );
    CREATE TABLE kpi_tile_marks (
        tenant_id INTEGER PRIMARY KEY,
        seq BIGINT NOT NULL
    );
    """,
]

_KEYS = pa.schema([("i", pa.int32()), ("asset_id", pa.int32()), ("w0", pa.int64()), ("w1", pa.int64()),
                   ("fp", pa.string())])
_TILES = pa.schema([("asset_id", pa.int32()), ("w0", pa.int64()), ("w1", pa.int64()), ("fp", pa.string()),
                    ("series_id", pa.int32()), ("dep_hi", pa.int64()), ("seq", pa.int64()),
                    ("inputs", pa.binary())])
_PROBES = pa.schema([("i", pa.int32()), ("series_id", pa.int32()), ("t0", pa.int64())])
NEAR = 2 * 3_600_000_000  # first_readings: how far the cheap search looks

# the rows committed in ($lo, $hi], per machine and per energy series: earliest ts, latest seq
_EVENT_TAIL = """
SELECT asset_id, min(ts) AS m, max(seq) AS s FROM events
WHERE tenant_id = $tenant AND seq > $lo AND seq <= $hi GROUP BY asset_id
"""
# samples stamped after every tile's dep_hi change none of them (live data): the bound skips them
_SAMPLE_TAIL = """
SELECT series_id, min(ts) AS m, max(seq) AS s FROM samples
WHERE seq > $lo AND seq <= $hi AND ts <= $cap
  AND series_id IN (SELECT DISTINCT series_id FROM kpi_tiles WHERE tenant_id = $tenant AND series_id IS NOT NULL)
GROUP BY series_id
"""
_DROP_TOUCHED = """
DELETE FROM kpi_tiles t WHERE t.tenant_id = $tenant AND (
    EXISTS (SELECT 1 FROM _kt_ev e WHERE e.asset_id = t.asset_id AND e.m < t.w1 AND e.s > t.seq)
    OR EXISTS (SELECT 1 FROM _kt_sa s WHERE s.series_id = t.series_id AND s.m <= t.dep_hi AND s.s > t.seq))
"""


class DuckDBKpiTileStore:
    """``shopfloor.ports.kpi_tiles.KpiTileStore`` in the historian's DuckDB file."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._lock = threading.Lock()
        db.migrate("kpi_tiles", MIGRATIONS)

    def refresh(self, tenant_id: int, upto_seq: int) -> int:
        with self._lock, self._tx() as cur:
            mark = _mark(cur, tenant_id)
            if mark is not None and mark >= upto_seq:
                return 0
            dropped = 0
            if mark is not None and _has_tiles(cur, tenant_id):
                dropped = _drop_touched(cur, tenant_id, mark, upto_seq)
            _set_mark(cur, tenant_id, upto_seq)
            return dropped

    def lookup(self, tenant_id: int, keys: Sequence[TileKey]) -> list[bytes | None]:
        if not keys:
            return []
        out: list[bytes | None] = [None] * len(keys)
        table = pa.table({"i": list(range(len(keys))), "asset_id": [k.asset_id for k in keys],
                          "w0": [k.w0 for k in keys], "w1": [k.w1 for k in keys], "fp": [k.fp for k in keys]},
                         schema=_KEYS)
        with self._cursor() as cur:
            _register(cur, "_kt_keys", table)
            try:
                found = cur.sql("SELECT k.i, t.inputs FROM _kt_keys k JOIN kpi_tiles t ON t.tenant_id = $tenant "
                                "AND t.asset_id = k.asset_id AND t.w0 = k.w0 AND t.w1 = k.w1 AND t.fp = k.fp",
                                params={"tenant": tenant_id}).to_arrow_table()
            finally:
                cur.unregister("_kt_keys")
        for i, blob in zip(found.column("i").to_pylist(), found.column("inputs").to_pylist(), strict=True):
            out[i] = blob
        return out

    def store(self, tenant_id: int, tiles: Sequence[Tile], seq: int) -> int:
        if not tiles:
            return 0
        with self._lock, self._tx() as cur:
            mark = _mark(cur, tenant_id)
            if mark is None:
                _set_mark(cur, tenant_id, seq)
            table = pa.table({"asset_id": [t.key.asset_id for t in tiles], "w0": [t.key.w0 for t in tiles],
                              "w1": [t.key.w1 for t in tiles], "fp": [t.key.fp for t in tiles],
                              "series_id": [t.key.series_id for t in tiles], "dep_hi": [t.dep_hi for t in tiles],
                              "seq": [seq] * len(tiles), "inputs": [t.inputs for t in tiles]}, schema=_TILES)
            _register(cur, "_kt_new", table)
            try:
                cur.execute("DELETE FROM kpi_tiles t WHERE t.tenant_id = $tenant AND EXISTS (SELECT 1 FROM _kt_new n "
                            "WHERE n.asset_id = t.asset_id AND n.w0 = t.w0 AND n.w1 = t.w1 AND n.fp = t.fp)",
                            {"tenant": tenant_id}).fetchall()
                cur.execute("INSERT INTO kpi_tiles SELECT $tenant, asset_id, w0, w1, fp, series_id, dep_hi, seq, "
                            "inputs FROM _kt_new", {"tenant": tenant_id}).fetchall()
            finally:
                cur.unregister("_kt_new")
            kept = len(tiles)
            if mark is not None and mark > seq:  # rows committed while they were computed: check those
                kept -= _drop_touched(cur, tenant_id, seq, mark, only_seq=seq)
            return kept

    def first_readings(self, probes: Sequence[ReadingProbe]) -> list[int | None]:
        out: list[int | None] = [None] * len(probes)
        if not probes:
            return out
        table = pa.table({"i": list(range(len(probes))), "series_id": [p.series_id for p in probes],
                          "t0": [p.ts for p in probes]}, schema=_PROBES)
        good = "s.quality < 2 AND s.value IS NOT NULL"
        # most readings follow soon: an equi-join on (series, NEAR-wide bucket) finds those, each reading
        # meeting at most two probes of its series; the rest by an ASOF join over the series' later rows
        near = f"""
            WITH pk AS (SELECT i, series_id, t0, t0 // {NEAR} + k AS bb FROM _kt_probes, range(0, 2) r(k))
            SELECT pk.i, min(s.ts) AS first FROM samples s JOIN pk ON s.series_id = pk.series_id
                AND s.ts // {NEAR} = pk.bb
            WHERE s.ts >= pk.t0 AND s.ts < pk.t0 + {NEAR} AND {good} AND s.ts >= $lo AND s.ts < $hi
            GROUP BY pk.i
        """
        far = f"""
            SELECT p.i, s.ts AS first FROM _kt_probes p ASOF JOIN (
                SELECT series_id, ts FROM samples s WHERE {good} AND s.ts >= $lo
                  AND s.series_id IN (SELECT series_id FROM _kt_probes)) s
            ON p.series_id = s.series_id AND s.ts >= p.t0
        """
        lo = min(p.ts for p in probes)
        with self._cursor() as cur:
            _register(cur, "_kt_probes", table)
            try:
                found = cur.sql(near, params={"lo": lo, "hi": max(p.ts for p in probes) + NEAR}).to_arrow_table()
                for i, first in zip(found.column("i").to_pylist(), found.column("first").to_pylist(), strict=True):
                    out[i] = first
                rest = [i for i, v in enumerate(out) if v is None]
                if rest:
                    _register(cur, "_kt_probes", table.take(rest))
                    found = cur.sql(far, params={"lo": min(probes[i].ts for i in rest)}).to_arrow_table()
                    for i, first in zip(found.column("i").to_pylist(), found.column("first").to_pylist(),
                                        strict=True):
                        out[i] = first
            finally:
                cur.unregister("_kt_probes")
        return out

    def clear(self, tenant_id: int) -> int:
        with self._lock, self._tx() as cur:
            rows = cur.execute("DELETE FROM kpi_tiles WHERE tenant_id = ?", [tenant_id]).fetchall()
            return int(rows[0][0]) if rows else 0

    def count(self, tenant_id: int) -> int:
        with self._cursor() as cur:
            rows = cur.execute("SELECT count(*) FROM kpi_tiles WHERE tenant_id = ?", [tenant_id]).fetchall()
        return int(rows[0][0]) if rows else 0

    def _cursor(self) -> _Guard:
        return _Guard(self._db.cursor(), tx=False)

    def _tx(self) -> _Guard:
        return _Guard(self._db.cursor(), tx=True)


def _register(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> None:
    complete = getattr(cur, "complete", None)  # DuckDB 2: no result may be pending on the connection
    if complete is not None:
        complete()
    cur.register(name, table)


class _Guard:
    """A cursor (optionally one transaction) whose DuckDB errors become ``StoreUnavailable``."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, tx: bool) -> None:
        self._cur, self._tx = cur, tx

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        if self._tx:
            self._cur.begin()
        return self._cur

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if self._tx:
            if kind is None:
                self._cur.commit()
            else:
                with suppress(duckdb.Error):
                    self._cur.rollback()
        if isinstance(exc, duckdb.Error):
            raise StoreUnavailable(f"KPI tiles: {exc}") from exc


def _mark(cur: duckdb.DuckDBPyConnection, tenant_id: int) -> int | None:
    rows = cur.execute("SELECT seq FROM kpi_tile_marks WHERE tenant_id = ?", [tenant_id]).fetchall()
    return int(rows[0][0]) if rows else None


def _set_mark(cur: duckdb.DuckDBPyConnection, tenant_id: int, seq: int) -> None:
    cur.execute("INSERT INTO kpi_tile_marks VALUES (?, ?) ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq",
                [tenant_id, seq]).fetchall()


def _has_tiles(cur: duckdb.DuckDBPyConnection, tenant_id: int) -> bool:
    return bool(cur.execute("SELECT 1 FROM kpi_tiles WHERE tenant_id = ? LIMIT 1", [tenant_id]).fetchall())


def _drop_touched(cur: duckdb.DuckDBPyConnection, tenant_id: int, lo: int, hi: int, only_seq: int | None = None) -> int:
    """Drop the tenant's tiles (those stored at ``only_seq``, if given) that rows in (lo, hi] may change."""
    params = {"tenant": tenant_id, "lo": lo, "hi": hi}
    ev = cur.sql(_EVENT_TAIL, params=params).to_arrow_table()
    cap = cur.execute("SELECT max(dep_hi) FROM kpi_tiles WHERE tenant_id = ? AND series_id IS NOT NULL",
                      [tenant_id]).fetchall()[0][0]
    sa = cur.sql(_SAMPLE_TAIL, params={**params, "cap": int(cap) if cap is not None else -(2**62)}).to_arrow_table()
    if ev.num_rows == 0 and sa.num_rows == 0:
        return 0
    _register(cur, "_kt_ev", ev)
    _register(cur, "_kt_sa", sa)
    try:
        sql = _DROP_TOUCHED if only_seq is None else _DROP_TOUCHED + f" AND t.seq = {int(only_seq)}"
        rows = cur.execute(sql, {"tenant": tenant_id}).fetchall()
    finally:
        cur.unregister("_kt_ev")
        cur.unregister("_kt_sa")
    return int(rows[0][0]) if rows else 0
