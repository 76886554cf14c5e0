"""How many threads the embedded DuckDB works with: the setting, else the cores the broker's child
process leaves, else DuckDB's own default; and the Database applies it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shopfloor.bootstrap import duckdb_threads
from shopfloor.config import Settings
from shopfloor.storage.duckdb.database import Database


@pytest.mark.skipif(os.name != "posix", reason="the broker's child process is POSIX only")
def test_duckdb_leaves_the_broker_child_its_core() -> None:
    assert duckdb_threads(Settings(), cores=2) == 1
    assert duckdb_threads(Settings(), cores=8) == 7
    assert duckdb_threads(Settings(), cores=1) == 1
    assert duckdb_threads(Settings(), cores=None) >= 1  # type: ignore[operator]


def test_the_setting_wins_and_without_a_broker_child_duckdb_decides() -> None:
    assert duckdb_threads(Settings(duckdb_threads=3), cores=2) == 3
    assert duckdb_threads(Settings(mqtt_broker_process=False), cores=2) is None
    assert duckdb_threads(Settings(broker="mosquitto"), cores=2) is None


def test_the_database_works_with_the_threads_it_is_given(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.duckdb", threads=1)
    try:
        assert db.cursor().execute("SELECT current_setting('threads')").fetchone() == (1,)
    finally:
        db.close()
    default = Database(tmp_path / "b.duckdb")
    try:
        got = default.cursor().execute("SELECT current_setting('threads')").fetchone()
        assert got is not None and got[0] >= 1
    finally:
        default.close()
