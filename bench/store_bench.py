"""Store-only write speed for ``bench/ingest.py``: the historians' ``commit`` against a bare append.

The same rows for both: 5,000 series, in order, in batches of
50,000 samples (10 timestamps a second apart per batch), handed over as the Python lists ingest
produces. Bare DuckDB: those lists into Arrow arrays, appended to a plain table in one transaction
per batch. Bare PostgreSQL: binary COPY into a table with PRIMARY KEY (series_id, ts).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from shopfloor.domain.records import IngestBatch
from shopfloor.domain.timeutil import to_us
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.postgres import pg_copy
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian

SERIES = 5_000
PER_BATCH = 50_000


def batches(rows: int) -> list[IngestBatch]:
    t0 = to_us(datetime.now(UTC)) - 86_400_000_000
    out = []
    per = max(1, min(PER_BATCH, rows) // SERIES)
    for b in range(max(1, rows // (per * SERIES))):
        batch = IngestBatch()
        for t in range(per):
            ts = t0 + (b * per + t) * 1_000_000
            for s in range(1, SERIES + 1):
                batch.samples.add(s, ts, float((s + t) % 997))
        out.append(batch)
    return out


def duckdb_pair(directory: Path, rows: int) -> tuple[float, float, float]:
    """(bare append rows/s, historian commit rows/s, historian commit and rollups rows/s).

    Batch by batch in turn (the order alternating), so that a busy machine slows all alike. The
    historian's rollup follower is switched to "when asked" and catches up after every 200,000 rows
    (what its thread does under load) in the same thread: the second figure counts the commits only
    (the follower's work runs beside them in production, on another core), the third the commits
    plus every catch-up, as if one core did both."""
    directory.mkdir(parents=True, exist_ok=True)
    work = batches(rows)
    n = sum(len(b.samples) for b in work)
    con = duckdb.connect(str(directory / "bare.duckdb"))
    con.execute("CREATE TABLE samples (series_id INTEGER NOT NULL, ts BIGINT NOT NULL, value DOUBLE, text VARCHAR,"
                " quality SMALLINT NOT NULL, seq BIGINT NOT NULL)")
    db = Database(directory / "historian.duckdb")
    historian = DuckDBHistorian(db, rollup_interval_s=None)

    def bare_append(seq: int, b: IngestBatch) -> None:
        s = b.samples
        table = pa.table({"series_id": pa.array(s.series_id, pa.int32()), "ts": pa.array(s.ts_us, pa.int64()),
                          "value": pa.array(s.value, pa.float64()), "text": pa.array(s.text, pa.string()),
                          "quality": pa.array(s.quality, pa.int16())})
        con.register("batch", table)
        con.execute("BEGIN")
        con.execute("INSERT INTO samples SELECT *, ? FROM batch", [seq])
        con.unregister("batch")
        con.execute("COMMIT")

    spent = _alternate(work, bare_append, historian)
    con.close()
    historian.close()
    db.close()
    return n / spent["bare"], n / spent["commit"], n / (spent["commit"] + spent["follow"])


def postgres_pair(dsn: str, rows: int) -> tuple[float, float, float]:
    """(bare COPY rows/s, historian commit rows/s, historian commit and rollups rows/s).

    As ``duckdb_pair``: batch by batch in turn, the order alternating; the rollup follower is
    switched to "when asked" and catches up after every 200,000 rows in the same thread, so the
    second figure counts the commits only (the follower runs beside them in production, on its own
    connection and core: PostgreSQL's work is in the server), the third the commits plus every
    catch-up."""
    work = batches(rows)
    n = sum(len(b.samples) for b in work)
    schema = f"bench_store_{uuid.uuid4().hex[:10]}"
    db = PgDatabase(dsn, schema, max_size=2)
    try:
        with db.connection() as conn:
            conn.execute("CREATE TABLE bare (series_id int4 NOT NULL, ts timestamptz NOT NULL, value float8,"
                         " text text, quality int2 NOT NULL, seq int8 NOT NULL, PRIMARY KEY (series_id, ts))")
        historian = PostgresHistorian(db, rollup_interval_s=None)

        def bare_copy(seq: int, b: IngestBatch) -> None:
            s = b.samples
            with db.connection() as conn:
                cur = pg_copy.copy_cursor(conn)
                with cur.copy("COPY bare (series_id, ts, value, text, quality, seq) FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["int4", "timestamptz", "float8", "text", "int2", "int8"])
                    for row in zip(s.series_id, s.ts_us, s.value, s.text, s.quality, [seq] * len(s.ts_us),
                                   strict=True):
                        cp.write_row(row)

        spent = _alternate(work, bare_copy, historian)
        historian.close()
    finally:
        db.drop_schema()
        db.close()
    return n / spent["bare"], n / spent["commit"], n / (spent["commit"] + spent["follow"])


def _alternate(work: list[IngestBatch], bare: Callable[[int, IngestBatch], None], historian: Any) -> dict[str, float]:
    """Seconds spent in the bare write, the historian's commit and its rollup catch-ups: batch by
    batch in turn, the order alternating, a catch-up after every 200,000 rows and at the end."""
    spent = {"bare": 0.0, "commit": 0.0, "follow": 0.0}
    since = 0
    for seq, b in enumerate(work, 1):
        for which in (("bare", "commit") if seq % 2 else ("commit", "bare")):
            t = time.perf_counter()
            if which == "bare":
                bare(seq, b)
            else:
                historian.commit(b)
            spent[which] += time.perf_counter() - t
        since += len(b.samples)
        if since >= 200_000 or seq == len(work):
            t = time.perf_counter()
            historian.catch_up_rollups()
            spent["follow"] += time.perf_counter() - t
            since = 0
    return spent
