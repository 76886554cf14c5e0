"""What the ingest-worker tests run in each worker process: ``run_worker`` over a PostgreSQL sink.

The sink stands in for the ingest service in server mode: it takes (topic, ts, value) from each
message and commits it to ``received`` (primary key topic + ts, so a redelivered message is stored
once, as the historian does with (series, ts)), and counts every delivery in ``deliveries``. A lost
connection is ``StoreUnavailable``: the worker keeps the batch and retries.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg

from shopfloor.connectors.mqtt.worker_main import WorkerSettings, run_worker
from shopfloor.domain.errors import StoreUnavailable
from shopfloor.ports.ingest import RawMessage

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS received (topic text NOT NULL, ts bigint NOT NULL, value double precision,
                                     worker int NOT NULL, PRIMARY KEY (topic, ts));
CREATE TABLE IF NOT EXISTS deliveries (worker int NOT NULL, pid int NOT NULL, messages int NOT NULL,
                                       stored int NOT NULL);
"""


class PgTestSink:
    """A ``MessageSink`` that commits straight to PostgreSQL, one transaction per batch."""

    def __init__(self, dsn: str, schema: str, worker: int) -> None:
        self._dsn = dsn
        self._schema = schema
        self._worker = worker
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    async def submit_messages(self, messages: list[RawMessage]) -> None:
        await asyncio.to_thread(self._commit, messages)

    def _commit(self, messages: list[RawMessage]) -> None:
        rows = []
        for m in messages:
            doc = json.loads(m.payload)
            rows.append((m.topic, int(doc["ts"]), float(doc["values"]["temperature"]), self._worker))
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (topic text, ts bigint, "
                                "value double precision, worker int) ON COMMIT DELETE ROWS")
                    with cur.copy("COPY incoming (topic, ts, value, worker) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
                    cur.execute("INSERT INTO received SELECT * FROM incoming ON CONFLICT DO NOTHING")
                    stored = cur.rowcount
                    cur.execute("INSERT INTO deliveries VALUES (%s, %s, %s, %s)",
                                (self._worker, os.getpid(), len(rows), stored))
            except psycopg.OperationalError as exc:
                self.close()
                raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self._dsn, connect_timeout=3, autocommit=True,
                                         options=f"-c search_path={self._schema}")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@asynccontextmanager
async def pg_sink(dsn: str, schema: str, worker: int) -> AsyncIterator[PgTestSink]:
    sink = PgTestSink(dsn, schema, worker)
    try:
        yield sink
    finally:
        sink.close()


@dataclass(frozen=True)
class WorkerTarget:
    """The supervisor's per-process target (picklable): ``target(index)`` runs worker ``index``."""

    settings: WorkerSettings
    dsn: str
    schema: str
    ready_dir: str  # ``{ready_dir}/ingest-{i}`` appears when worker i has subscribed

    def __call__(self, index: int) -> None:
        ready = Path(self.ready_dir) / f"ingest-{index}"

        def subscribed() -> None:
            ready.write_text(str(os.getpid()))

        run_worker(index, self.settings, lambda: pg_sink(self.dsn, self.schema, index), on_subscribed=subscribed)
