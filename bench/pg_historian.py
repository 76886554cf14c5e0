"""PostgreSQL historian write speed: 50,000-sample batches, against plain COPY into an indexed table.

Run with the project's interpreter: ``.venv/bin/python bench/pg_historian.py [--dsn DSN] [--batches N]``
(default DSN: ``SHOPFLOOR_TEST_PG`` or the local test database). Each case runs in its own schema,
dropped afterwards, and writes ``--batches`` consecutive batches of 500 series x 100 s at 1 Hz, so
the table grows to batches x 50k rows. Printed as a Markdown table (rows/s, median batch).

Cases:
* plain COPY: binary COPY into one unpartitioned table with PRIMARY KEY (series_id, ts) - the
  floor of what any PostgreSQL store with a unique key can do;
* historian COPY only: the historian's fast path alone (partitioned table, no rollups);
* historian commit: ``PostgresHistorian.commit`` - seq row lock, COPY, the rollup_pending row (the rollup
  follower runs on its own thread beside it, as in production);
* historian redelivery: the same batches committed again (COPY fails, staging + ON CONFLICT);
* two committers: two threads, each with its own pool, committing alternate batches;
* small batches: 500 samples (one second of the 500 series) per commit, 200 commits.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg

from shopfloor.domain.records import IngestBatch
from shopfloor.domain.timeutil import to_us
from shopfloor.storage.postgres import pg_copy
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian

SERIES = 500
SECONDS = 100
T0 = to_us(datetime(2026, 1, 5, tzinfo=UTC))


def make_batch(k: int) -> IngestBatch:
    batch = IngestBatch()
    base = T0 + k * SECONDS * 1_000_000
    for t in range(SECONDS):
        ts = base + t * 1_000_000 + 1_234
        for s in range(1, SERIES + 1):
            batch.samples.add(s, ts, float((s * 7 + t) % 1000) / 10.0)
    return batch


@contextmanager
def schema(dsn: str) -> Iterator[PgDatabase]:
    db = PgDatabase(dsn, f"bench_{uuid.uuid4().hex[:12]}", max_size=4)
    try:
        yield db
    finally:
        db.drop_schema()


def timed(batches: list[IngestBatch], write: Callable[[IngestBatch], object]) -> list[float]:
    out = []
    for b in batches:
        t = time.perf_counter()
        write(b)
        out.append(time.perf_counter() - t)
    return out


def plain_copy(dsn: str, batches: list[IngestBatch]) -> list[float]:
    with schema(dsn) as db:
        with db.connection() as conn:
            conn.execute("CREATE TABLE plain (series_id integer NOT NULL, ts timestamptz NOT NULL,"
                         " value double precision, text text, quality smallint NOT NULL, seq bigint NOT NULL,"
                         " PRIMARY KEY (series_id, ts))")

        def write(b: IngestBatch) -> None:
            s = b.samples
            with db.connection() as conn:
                pg_copy.write_all(conn, "plain", pg_copy.SAMPLE_COLUMNS, pg_copy.SAMPLE_TYPES,
                                  [s.series_id, s.ts_us, s.value, s.text, s.quality], 1)

        return timed(batches, write)


def historian_copy_only(dsn: str, batches: list[IngestBatch]) -> list[float]:
    with schema(dsn) as db:
        store = PostgresHistorian(db)

        def write(b: IngestBatch) -> None:
            s = b.samples
            store.partitions.ensure_timestamps(s.ts_us)
            with db.connection() as conn:
                pg_copy.write_idempotent(conn, "samples", pg_copy.SAMPLE_COLUMNS, pg_copy.SAMPLE_TYPES,
                                         [s.series_id, s.ts_us, s.value, s.text, s.quality], 1, "series_id, ts")

        return timed(batches, write)


def historian_commit(dsn: str, batches: list[IngestBatch]) -> tuple[list[float], list[float]]:
    with schema(dsn) as db:
        store = PostgresHistorian(db)
        first = timed(batches, store.commit)
        again = timed(batches, store.commit)  # every sample a duplicate: the staging path
        return first, again


def small_batches(dsn: str, commits: int = 200) -> list[float]:
    with schema(dsn) as db:
        store = PostgresHistorian(db)
        batches = []
        for k in range(commits):
            batch = IngestBatch()
            for s in range(1, SERIES + 1):
                batch.samples.add(s, T0 + k * 1_000_000 + 1_234, float((s * 7 + k) % 1000) / 10.0)
            batches.append(batch)
        return timed(batches, store.commit)


def two_committers(dsn: str, batches: list[IngestBatch]) -> float:
    """Total rows/s of two threads with separate pools, each committing every other batch."""
    with schema(dsn) as db:
        PostgresHistorian(db)
        dbs = [PgDatabase(dsn, db.schema, max_size=2) for _ in range(2)]
        stores = [PostgresHistorian(d) for d in dbs]

        def work(i: int) -> None:
            for b in batches[i::2]:
                stores[i].commit(b)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        for d in dbs:
            d.close()
        return len(batches) * SERIES * SECONDS / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("SHOPFLOOR_TEST_PG",
                                                        "host=127.0.0.1 port=5432 dbname=test user=postgres"))
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    batches = [make_batch(k) for k in range(args.batches)]
    n = SERIES * SECONDS

    def rate(times: list[float]) -> str:
        return f"{n * len(times) / sum(times):,.0f} | {statistics.median(times) * 1000:,.0f} ms"

    with psycopg.connect(args.dsn) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    print(f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} · {platform.machine()} · "
          f"{os.cpu_count()} cores · Python {platform.python_version()} · PostgreSQL {version[0] if version else '?'}; "
          f"{args.batches} batches of {n:,} samples ({SERIES} series x {SECONDS} s).\n")
    print("| case | rows/s | median batch |\n|---|---:|---:|")
    print(f"| plain binary COPY into a table with PRIMARY KEY (series_id, ts) | {rate(plain_copy(args.dsn, batches))} |")
    print(f"| historian fast path alone (partitioned, COPY, no rollups) | "
          f"{rate(historian_copy_only(args.dsn, batches))} |")
    first, again = historian_commit(args.dsn, batches)
    print(f"| historian commit (seq lock, COPY, pending row; follower beside it) | {rate(first)} |")
    print(f"| historian commit of a redelivered batch (staging, ON CONFLICT) | {rate(again)} |")
    print(f"| two committers, separate pools (total) | {two_committers(args.dsn, batches):,.0f} | |")
    small = small_batches(args.dsn)
    print(f"| historian commit, {SERIES}-sample batches (1 s of data each) | "
          f"{SERIES * len(small) / sum(small):,.0f} | {statistics.median(small) * 1000:,.0f} ms |")


if __name__ == "__main__":
    main()
