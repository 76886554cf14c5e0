"""The analytics model store contract on DuckDB, PostgreSQL and the in-memory fake."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.ports.analytics import AnalyticsModelStore
from shopfloor.storage.duckdb.analytics import DuckDBAnalyticsStore
from shopfloor.storage.duckdb.database import Database
from shopfloor.testing.analytics import AnalyticsStoreContract, InMemoryAnalyticsStore, spec, trained


class TestDuckDBAnalyticsStore(AnalyticsStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[AnalyticsModelStore]:
        db = Database(tmp_path / "shopfloor.duckdb")
        yield DuckDBAnalyticsStore(db)
        db.close()


class TestPostgresAnalyticsStore(AnalyticsStoreContract):
    @pytest.fixture
    def store(self, pg_schema: tuple[str, str]) -> Iterator[AnalyticsModelStore]:
        from shopfloor.storage.postgres.analytics import PostgresAnalyticsStore
        from shopfloor.storage.postgres.database import PgDatabase

        dsn, schema = pg_schema
        db = PgDatabase(dsn, schema)
        yield PostgresAnalyticsStore(db)
        db.close()


class TestInMemoryAnalyticsStore(AnalyticsStoreContract):
    @pytest.fixture
    def store(self) -> AnalyticsModelStore:
        return InMemoryAnalyticsStore()


def test_duckdb_models_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "shopfloor.duckdb"
    db = Database(path)
    DuckDBAnalyticsStore(db).put_spec(spec())
    DuckDBAnalyticsStore(db).save_trained(1, "press-rul", trained())
    db.close()
    db = Database(path)
    try:
        got = DuckDBAnalyticsStore(db).get(1, "press-rul")  # migrating again is a no-op
        assert got is not None and got.spec == spec() and got.trained == trained()
    finally:
        db.close()
