"""The alarm store contract on DuckDB (in memory and on file) and PostgreSQL (own schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.ports.alarms import AlarmStore
from shopfloor.storage.duckdb.alarms import DuckDBAlarmStore
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.postgres.alarms import PostgresAlarmStore
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.testing.alarm_contract import AlarmStoreContract


@pytest.fixture(params=["duckdb-memory", "duckdb-file", "postgres"])
def alarm_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlarmStore]:
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        pg = PgDatabase(dsn, schema, max_size=2)
        yield PostgresAlarmStore(pg)
        pg.close()
        return
    db = Database(":memory:" if request.param == "duckdb-memory" else tmp_path / "a.duckdb")
    yield DuckDBAlarmStore(db)
    db.close()


class TestAlarmStore(AlarmStoreContract):
    pass


def test_duckdb_alarms_survive_reopening(tmp_path: Path) -> None:
    from shopfloor.testing.alarm_contract import alarm

    db = Database(tmp_path / "a.duckdb")
    DuckDBAlarmStore(db).save([alarm(1, 10)], [])
    db.close()
    db = Database(tmp_path / "a.duckdb")
    try:
        assert DuckDBAlarmStore(db).get_alarm(1, 1, 10) is not None
    finally:
        db.close()
