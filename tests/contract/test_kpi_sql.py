"""The KPI SQL of both stores against ``domain/kpi/reference.py`` (``testing/kpi_contract.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shopfloor.storage.duckdb import kpi as duck_kpi
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.kpi import DuckDBKpiSource
from shopfloor.storage.postgres import kpi as pg_kpi
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.kpi import PostgresKpiSource
from shopfloor.testing.kpi_contract import KpiContract, KpiStore


class TestDuckDBKpiSql(KpiContract):
    @pytest.fixture
    def kpi_store(self) -> Iterator[KpiStore]:
        db = Database(":memory:")
        historian = DuckDBHistorian(db)
        yield historian, DuckDBKpiSource(db)
        historian.close()
        db.close()


class TestDuckDBKpiSqlLarge(KpiContract):
    """The same with every call taken as a large one: each step reads the historian's tables."""

    @pytest.fixture
    def kpi_store(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[KpiStore]:
        monkeypatch.setattr(duck_kpi, "SMALL_ASSET_DAYS", 0)
        db = Database(":memory:")
        historian = DuckDBHistorian(db)
        yield historian, DuckDBKpiSource(db)
        historian.close()
        db.close()


class TestDuckDBKpiSqlShortCopy(KpiContract):
    """Small calls whose copy of rows reaches only 5 minutes before (and after) the windows: most
    anchors come from the later searches, and the rows they need are added to the copy."""

    @pytest.fixture
    def kpi_store(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[KpiStore]:
        monkeypatch.setattr(duck_kpi, "NEAR_US", 300_000_000)
        db = Database(":memory:")
        historian = DuckDBHistorian(db)
        yield historian, DuckDBKpiSource(db)
        historian.close()
        db.close()


class TestPostgresKpiSql(KpiContract):
    @pytest.fixture
    def kpi_store(self, pg_schema: tuple[str, str]) -> Iterator[KpiStore]:
        dsn, schema = pg_schema
        db = PgDatabase(dsn, schema, max_size=4)
        historian = PostgresHistorian(db)
        yield historian, PostgresKpiSource(db)
        historian.close()
        db.close()


class TestPostgresKpiSqlInParts(KpiContract):
    """The same on PostgreSQL with every call split into three transactions run at once."""

    @pytest.fixture
    def kpi_store(self, pg_schema: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[KpiStore]:
        monkeypatch.setattr(pg_kpi, "SPLIT_MIN_WINDOWS", 1)
        dsn, schema = pg_schema
        db = PgDatabase(dsn, schema, max_size=4)
        historian = PostgresHistorian(db)
        yield historian, PostgresKpiSource(db, workers=3)
        historian.close()
        db.close()
