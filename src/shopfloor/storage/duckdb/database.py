"""One DuckDB database file shared by the registry and the historian.

DuckDB allows a single read-write process per file. Within the process each thread gets its own
cursor (a DuckDB connection object is not safe to share between threads); writes that must not
interleave take ``write_lock``. Each component applies its own numbered migrations.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb

from shopfloor.domain.errors import ShopfloorError, StoreUnavailable


class DatabaseLocked(ShopfloorError):
    status = 503
    title = "Database in use"


class Database:
    def __init__(self, path: str | Path, *, threads: int | None = None) -> None:
        """``threads``: how many threads DuckDB works with (None: its default, one per core)."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._root = duckdb.connect(self.path)
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise DatabaseLocked(
                    f"{self.path} is open in another shopfloor process (DuckDB allows one); stop it, "
                    "or talk to it through its API with --url"
                ) from None
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from None
        if threads is not None:
            self._root.execute(f"SET threads = {int(threads)}")
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self.write_lock = threading.RLock()
        self._closed = False
        self._on_close: list[Callable[[], None]] = []
        self._root.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (component VARCHAR, version INTEGER, "
            "applied_at TIMESTAMPTZ DEFAULT now(), PRIMARY KEY (component, version))"
        )

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's own cursor."""
        if self._closed:
            raise StoreUnavailable("the database is closed")
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._root.cursor()
            self._local.cur = cur
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self.cursor()
        cur.begin()
        try:
            yield cur
        except BaseException:
            cur.rollback()
            raise
        else:
            cur.commit()

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply ``migrations[i]`` (SQL scripts) not yet applied for ``component``; return the version."""
        with self.write_lock:
            cur = self.cursor()
            rows = cur.execute(
                "SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component = ?", [component]
            ).fetchall()
            current = int(rows[0][0]) if rows else 0
            for version, script in enumerate(migrations, start=1):
                if version <= current:
                    continue
                with self.transaction() as tx:
                    tx.execute(script)
                    tx.execute("INSERT INTO schema_migrations (component, version) VALUES (?, ?)",
                               [component, version])
            return len(migrations)

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when this database closes, before its connections go (a component's
        background thread stops there)."""
        self._on_close.append(hook)

    def close(self) -> None:
        if self._closed:
            return
        for hook in self._on_close:
            hook()
        self._on_close.clear()
        self._closed = True
        with self._cursors_lock:
            for cur in self._cursors:
                with suppress(duckdb.Error):
                    cur.close()
            self._cursors.clear()
        self._root.close()
