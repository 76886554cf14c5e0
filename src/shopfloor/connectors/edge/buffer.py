"""The edge agent's store-and-forward buffer: MQTT messages on disk (SQLite in WAL mode) until acknowledged.

Messages are appended in order and get increasing sequence numbers; the forwarder publishes them in
that order and deletes each only after the broker's PUBACK. The buffer is bounded by ``max_bytes``
(topic plus payload of the messages it holds): when an append would go over, the oldest messages
are dropped, and counted (``dropped``, kept in the file). A restarted agent finds every message it
had not yet seen acknowledged, and sends it again (the platform stores a repeated sample once).

``synchronous=NORMAL`` in WAL mode: an appended message survives the agent's crash or restart; a
power cut may lose the last moments of appends (``durable=True`` syncs every append).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class DiskBuffer:
    """Ordered, bounded, persistent queue of (topic, payload). Not thread-safe: one event loop uses it."""

    def __init__(self, path: str | Path, max_bytes: int, *, durable: bool = False) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM outbox")
        self._count, self._bytes = row.fetchone()
        self.dropped = self._counter("dropped")
        self.appended = 0

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    @property
    def size_bytes(self) -> int:
        return int(self._bytes)

    def __len__(self) -> int:
        return int(self._count)

    def append(self, messages: Sequence[tuple[str, bytes]]) -> int:
        """Store ``messages`` in order (one transaction); returns how many old ones were dropped to fit."""
        if not messages:
            return 0
        rows = [(t, p, len(t.encode()) + len(p)) for t, p in messages]
        size = sum(r[2] for r in rows)
        with self._tx():
            self._db.executemany("INSERT INTO outbox (topic, payload, size) VALUES (?, ?, ?)", rows)
            self._count += len(messages)
            self._bytes += size
            dropped = self._trim() if self._bytes > self.max_bytes else 0
        self.appended += len(messages)
        return dropped

    def _trim(self) -> int:
        """Delete the oldest messages until the rest fit (inside the caller's transaction)."""
        over = self._bytes - self.max_bytes
        freed = n = 0
        last = None
        cur = self._db.execute("SELECT seq, size FROM outbox ORDER BY seq")
        for seq, size in cur:
            if freed >= over:
                break
            freed += size
            n += 1
            last = seq
        cur.close()
        if last is None:
            return 0
        self._db.execute("DELETE FROM outbox WHERE seq <= ?", (last,))
        self._count -= n
        self._bytes -= freed
        self.dropped += n
        self._db.execute("INSERT INTO counters (name, value) VALUES ('dropped', ?) "
                         "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (self.dropped,))
        return n

    def after(self, seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Up to ``limit`` messages with a sequence number above ``seq``, oldest first."""
        cur = self._db.execute("SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                               (seq, limit))
        return [(int(s), str(t), bytes(p)) for s, t, p in cur]

    def delete(self, seqs: Iterable[int]) -> None:
        """Forget acknowledged messages (sequence numbers already dropped are ignored)."""
        ids = [(s,) for s in seqs]
        if not ids:
            return
        with self._tx():
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS acked (seq INTEGER PRIMARY KEY)")
            self._db.executemany("INSERT OR IGNORE INTO acked (seq) VALUES (?)", ids)
            n, size = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM outbox "
                "WHERE seq IN (SELECT seq FROM acked)").fetchone()
            self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM acked)")
            self._db.execute("DELETE FROM acked")
            self._count -= n
            self._bytes -= size

    def _tx(self) -> _Tx:
        return _Tx(self._db)

    def close(self) -> None:
        self._db.close()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
