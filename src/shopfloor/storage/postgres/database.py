"""A pooled PostgreSQL database, one schema per installation (or per test).

Every connection's ``search_path`` is the schema, so SQL names tables unqualified. Each component
(registry, historian, ...) applies its own numbered migrations under an advisory lock, so several
processes starting at once migrate once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from shopfloor.domain.errors import InvalidInput, StoreUnavailable

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_LOCK = 7_301_172  # advisory lock key for migrations


class PgDatabase:
    def __init__(self, dsn: str, schema: str = "shopfloor", *, min_size: int = 1, max_size: int = 8,
                 timeout: float = 30.0) -> None:
        if not _SCHEMA_RE.match(schema):
            raise InvalidInput(f"schema {schema!r} must be a lower-case SQL identifier")
        self.dsn = dsn
        self.schema = schema
        self._on_close: list[Callable[[], None]] = []
        try:
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                # several processes may start at once: IF NOT EXISTS alone races in the catalogue
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot reach PostgreSQL at {_safe(dsn)}: {exc}".strip()) from None
        self.pool = ConnectionPool(dsn, min_size=min_size, max_size=max_size, timeout=timeout, open=True,
                                   kwargs={"options": f"-c search_path={schema}"},
                                   name=f"shopfloor-{schema}")

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection; the block is one transaction (committed on success)."""
        try:
            with self.pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from None
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL unavailable: {exc}") from None

    def migrate(self, component: str, migrations: Sequence[str]) -> int:
        """Apply ``migrations[i]`` (SQL scripts) not yet applied for ``component``; return the version."""
        with self.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (component text, version int, "
                         "applied_at timestamptz DEFAULT now(), PRIMARY KEY (component, version))")
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component = %s",
                               [component]).fetchone()
            current = int(row[0]) if row else 0
            for version, script in enumerate(migrations, start=1):
                if version <= current:
                    continue
                conn.execute(script.encode())
                conn.execute("INSERT INTO schema_migrations (component, version) VALUES (%s, %s)",
                             [component, version])
        return len(migrations)

    def version(self, component: str) -> int:
        with self.connection() as conn:
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations WHERE component = %s",
                               [component]).fetchone()
            return int(row[0]) if row else 0

    def drop_schema(self) -> None:
        """Tests: remove everything of this schema."""
        self.close()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def on_close(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` when this database closes, before its pool goes (a component's
        background thread stops there)."""
        self._on_close.append(hook)

    def close(self) -> None:
        hooks, self._on_close = self._on_close, []
        for hook in hooks:
            hook()
        if not self.pool.closed:
            self.pool.close()


def _safe(dsn: str) -> str:
    return re.sub(r"(password=)\S+", r"\1***", re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", dsn))
