"""``KpiTileStore`` on PostgreSQL: kept KPI inputs of closed windows (see ``ports/kpi_tiles.py``).

A refresh and a store of one tenant run under its mark row's lock (``FOR UPDATE``), so processes
sharing the database never check the same rows against half-stored tiles. The tail of rows committed
after a mark is found through the ``seq`` indexes (B-tree on events, BRIN on samples).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.timeutil import from_us
from shopfloor.ports.kpi_tiles import ReadingProbe, Tile, TileKey
from shopfloor.storage.postgres.database import PgDatabase

MIGRATIONS: list[str] = [
    """
    CREATE TABLE kpi_tiles (
        tenant_id integer NOT NULL,
        asset_id integer NOT NULL,
        w0 bigint NOT NULL,
        w1 bigint NOT NULL,
        fp text NOT NULL,
        series_id integer,
        dep_hi bigint NOT NULL,
        seq bigint NOT NULL,
        inputs bytea NOT NULL,
        PRIMARY KEY (tenant_id, asset_id, w0, w1, fp)
    );
    CREATE INDEX kpi_tiles_series ON kpi_tiles (series_id) WHERE series_id IS NOT NULL;
    CREATE INDEX kpi_tiles_dep ON kpi_tiles (tenant_id, dep_hi) WHERE series_id IS NOT NULL;
    COMMENT ON TABLE kpi_tiles IS 'KPI inputs of closed windows (msgpack PeriodInputs); dropped when late data touches them';
    CREATE TABLE kpi_tile_marks (
        tenant_id integer PRIMARY KEY,
        seq bigint NOT NULL
    );
    COMMENT ON TABLE kpi_tile_marks IS 'Per tenant: rows committed up to this ingest seq have been checked against its KPI tiles';
    """,
]

_LAST_US = 253_402_214_400_000_000  # 9999-12-31: later bounds are "no bound"
# µs since the epoch of a timestamptz column, exactly
_US = "(extract(epoch FROM {c}) * 1000000)::int8"

# rows committed in (lo, hi] of the tenant's machines (per machine: earliest ts, latest seq), and the
# tiles (of one seq, when given) they may change; the same for its tiles' energy series. Two joins
# against the aggregated tail (materialised: a few rows per machine), never a subquery per tile.
_DROP_BY_EVENTS = f"""
WITH ev AS MATERIALIZED (
    SELECT asset_id, {_US.format(c="min(ts)")} AS m, max(seq) AS s FROM events
    WHERE tenant_id = %(tenant)s AND seq > %(lo)s AND seq <= %(hi)s GROUP BY asset_id
)
DELETE FROM kpi_tiles t USING ev
WHERE t.tenant_id = %(tenant)s AND (%(only)s::int8 IS NULL OR t.seq = %(only)s::int8)
  AND ev.asset_id = t.asset_id AND ev.m < t.w1 AND ev.s > t.seq
"""
_DROP_BY_SAMPLES = f"""
WITH sa AS MATERIALIZED (
    SELECT series_id, {_US.format(c="min(ts)")} AS m, max(seq) AS s FROM samples
    WHERE seq > %(lo)s AND seq <= %(hi)s AND ts <= %(cap)s
      AND series_id IN (SELECT DISTINCT series_id FROM kpi_tiles WHERE tenant_id = %(tenant)s AND series_id IS NOT NULL)
    GROUP BY series_id
)
DELETE FROM kpi_tiles t USING sa
WHERE t.tenant_id = %(tenant)s AND (%(only)s::int8 IS NULL OR t.seq = %(only)s::int8)
  AND sa.series_id = t.series_id AND sa.m <= t.dep_hi AND sa.s > t.seq
"""


class PostgresKpiTileStore:
    """``shopfloor.ports.kpi_tiles.KpiTileStore`` in the historian's PostgreSQL schema."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        try:
            db.migrate("kpi_tiles", MIGRATIONS)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"could not migrate the KPI tile tables: {exc}") from exc

    def refresh(self, tenant_id: int, upto_seq: int) -> int:
        with self._conn() as conn:
            mark = _lock_mark(conn, tenant_id)
            if mark is not None and mark >= upto_seq:
                return 0
            dropped = 0
            if mark is not None and conn.execute("SELECT 1 FROM kpi_tiles WHERE tenant_id = %s LIMIT 1",
                                                 [tenant_id]).fetchone():
                dropped = _drop_touched(conn, tenant_id, mark, upto_seq, None)
            _set_mark(conn, tenant_id, upto_seq)
            return dropped

    def lookup(self, tenant_id: int, keys: Sequence[TileKey]) -> list[bytes | None]:
        out: list[bytes | None] = [None] * len(keys)
        if not keys:
            return out
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT k.i, t.inputs FROM unnest(%s::int4[], %s::int4[], %s::int8[], %s::int8[], %s::text[]) "
                "AS k(i, asset_id, w0, w1, fp) JOIN kpi_tiles t ON t.tenant_id = %s AND t.asset_id = k.asset_id "
                "AND t.w0 = k.w0 AND t.w1 = k.w1 AND t.fp = k.fp",
                [list(range(len(keys))), [k.asset_id for k in keys], [k.w0 for k in keys], [k.w1 for k in keys],
                 [k.fp for k in keys], tenant_id]).fetchall()
        for i, blob in rows:
            out[i] = bytes(blob)
        return out

    def store(self, tenant_id: int, tiles: Sequence[Tile], seq: int) -> int:
        if not tiles:
            return 0
        with self._conn() as conn:
            mark = _lock_mark(conn, tenant_id)
            if mark is None:
                _set_mark(conn, tenant_id, seq)
            _staging(conn)
            with conn.cursor().copy("COPY _kt_new (asset_id, w0, w1, fp, series_id, dep_hi, inputs) FROM STDIN") as copy:
                for t in tiles:
                    k = t.key
                    copy.write_row((k.asset_id, k.w0, k.w1, k.fp, k.series_id, t.dep_hi, t.inputs))
            conn.execute(
                "INSERT INTO kpi_tiles (tenant_id, asset_id, w0, w1, fp, series_id, dep_hi, seq, inputs) "
                "SELECT %s, asset_id, w0, w1, fp, series_id, dep_hi, %s, inputs FROM _kt_new "
                "ON CONFLICT (tenant_id, asset_id, w0, w1, fp) DO UPDATE SET series_id = excluded.series_id, "
                "dep_hi = excluded.dep_hi, seq = excluded.seq, inputs = excluded.inputs", [tenant_id, seq])
            kept = len(tiles)
            if mark is not None and mark > seq:  # rows committed while they were computed: check those
                kept -= _drop_touched(conn, tenant_id, seq, mark, seq)
            return kept

    def first_readings(self, probes: Sequence[ReadingProbe]) -> list[int | None]:
        out: list[int | None] = [None] * len(probes)
        if not probes:
            return out
        ts = "timestamptz 'epoch' + (p.t0 / 1000000) * interval '1 second' + (p.t0 %% 1000000) * interval '1 microsecond'"
        with self._conn() as conn:  # per probe, one step along the (series_id, ts) key of the partitions
            rows = conn.execute(
                f"SELECT p.i, (SELECT {_US.format(c='s.ts')} FROM samples s WHERE s.series_id = p.series_id "
                f"AND s.ts >= {ts} AND s.quality < 2 AND s.value IS NOT NULL ORDER BY s.ts LIMIT 1) "
                "FROM unnest(%s::int4[], %s::int4[], %s::int8[]) AS p(i, series_id, t0)",
                [list(range(len(probes))), [p.series_id for p in probes], [p.ts for p in probes]]).fetchall()
        for i, first in rows:
            out[i] = None if first is None else int(first)
        return out

    def clear(self, tenant_id: int) -> int:
        with self._conn() as conn:
            return conn.execute("DELETE FROM kpi_tiles WHERE tenant_id = %s", [tenant_id]).rowcount

    def count(self, tenant_id: int) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT count(*) FROM kpi_tiles WHERE tenant_id = %s", [tenant_id]).fetchone()
        return int(row[0]) if row else 0

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._db.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreUnavailable(f"KPI tiles: {exc}") from exc


def _lock_mark(conn: psycopg.Connection, tenant_id: int) -> int | None:
    """The tenant's mark, its row locked until the transaction ends (created empty if missing)."""
    conn.execute("INSERT INTO kpi_tile_marks VALUES (%s, -1) ON CONFLICT (tenant_id) DO NOTHING", [tenant_id])
    row = conn.execute("SELECT seq FROM kpi_tile_marks WHERE tenant_id = %s FOR UPDATE", [tenant_id]).fetchone()
    return None if row is None or row[0] < 0 else int(row[0])


def _set_mark(conn: psycopg.Connection, tenant_id: int, seq: int) -> None:
    conn.execute("UPDATE kpi_tile_marks SET seq = %s WHERE tenant_id = %s", [seq, tenant_id])


def _staging(conn: psycopg.Connection) -> None:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _kt_new (asset_id int4, w0 int8, w1 int8, fp text, series_id int4, "
                 "dep_hi int8, inputs bytea) ON COMMIT DELETE ROWS")


def _drop_touched(conn: psycopg.Connection, tenant_id: int, lo: int, hi: int, only: int | None) -> int:
    params: dict[str, object] = {"tenant": tenant_id, "lo": lo, "hi": hi, "only": only}
    dropped = conn.execute(_DROP_BY_EVENTS, params).rowcount
    # samples stamped after every tile's dep_hi change none of them (live data): a bound on the
    # partition key leaves all but the partitions that can matter out of the scan
    row = conn.execute("SELECT max(dep_hi) FROM kpi_tiles WHERE tenant_id = %s AND series_id IS NOT NULL",
                       [tenant_id]).fetchone()
    if row is not None and row[0] is not None:
        cap = from_us(int(row[0])) if row[0] < _LAST_US else datetime(9999, 12, 31, tzinfo=UTC)
        dropped += conn.execute(_DROP_BY_SAMPLES, {**params, "cap": cap}).rowcount
    return dropped
