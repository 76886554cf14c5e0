"""The historian contract on DuckDB, plus what only a file database can show (reopening, atomicity)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.query import Agg
from shopfloor.domain.records import IngestBatch, Reason
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DEFAULT_ROLLUP_STALENESS_US, DuckDBHistorian
from shopfloor.testing.store_contract import (
    MIN,
    T0,
    HistorianContract,
    RollupContract,
    dead,
    event,
    sample_batch,
)

G = 0


@pytest.fixture
def rollup_staleness_us() -> int:
    """The store's default; ``RollupContract`` overrides it with its own values."""
    return DEFAULT_ROLLUP_STALENESS_US


@pytest.fixture(params=["memory", "file"])
def historian(request: pytest.FixtureRequest, tmp_path: Path, rollup_staleness_us: int) -> Iterator[DuckDBHistorian]:
    db = Database(":memory:" if request.param == "memory" else tmp_path / "shopfloor.duckdb")
    store = DuckDBHistorian(db, rollup_staleness_us=rollup_staleness_us)
    yield store
    store.close()
    db.close()


class TestDuckDBHistorian(HistorianContract):
    pass


class TestDuckDBRollups(RollupContract):
    pass


def test_data_and_sequence_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "shopfloor.duckdb"
    db = Database(path)
    store = DuckDBHistorian(db)
    batch = sample_batch((1, T0, 1.0, G), (1, T0 + MIN, 2.0, G))
    batch.events.append(event(1, 10, T0, reason="setup"))
    batch.dead_letters.append(dead(1, "plc-1", Reason.UNDECODABLE, T0))
    store.commit(batch)
    seq = store.commit(sample_batch((1, T0, 5.0, G)))  # all duplicate, still numbered
    first_id = store.dead_letters(1)[0].id
    store.close()
    db.close()

    db = Database(path)
    store = DuckDBHistorian(db)
    try:
        assert store.last_seq() == seq
        assert [s.value for s in store.raw(1, T0, T0 + 2 * MIN)] == [1.0, 2.0]
        assert store.events(1)[0].data == {"reason": "setup"}
        assert store.commit(batch) == seq + 1  # redelivered after a restart: stored once
        assert store.count_samples() == 2 and len(store.events(1)) == 1
        ids = [d.id for d in store.dead_letters(1)]
        assert ids == [max(ids), first_id] and max(ids) > first_id
    finally:
        store.close()
        db.close()


def test_failed_commit_stores_nothing_and_keeps_the_sequence(historian: DuckDBHistorian) -> None:
    before = historian.commit(sample_batch((1, T0, 1.0, G)))
    historian._db.cursor().execute("ALTER TABLE events RENAME TO events_elsewhere")
    batch = sample_batch((1, T0 + MIN, 2.0, G))
    batch.events.append(event(1, 10, T0))
    with pytest.raises(StoreUnavailable, match="could not commit"):
        historian.commit(batch)
    assert historian.last_seq() == before
    assert historian.count_samples() == 1
    historian._db.cursor().execute("ALTER TABLE events_elsewhere RENAME TO events")
    assert historian.commit(batch) == before + 1
    assert historian.count_samples() == 2


def test_malformed_batch_is_invalid_input(historian: DuckDBHistorian) -> None:
    batch = IngestBatch()
    batch.samples.series_id.append(1)  # the other columns are missing
    with pytest.raises(InvalidInput):
        historian.commit(batch)
    with pytest.raises(InvalidInput):
        historian.commit(IngestBatch(events=[event(1, 1, T0, bad=float("nan"))]))
    assert historian.last_seq() == 0


def test_twa_needs_a_positive_staleness(historian: DuckDBHistorian) -> None:
    with pytest.raises(InvalidInput, match="staleness"):
        historian.aggregate(1, [(T0, T0 + MIN)], Agg.TWA, 0)


def test_closed_historian_refuses_reads_and_writes(historian: DuckDBHistorian) -> None:
    historian.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        historian.count_samples()
    with pytest.raises(StoreUnavailable, match="closed"):
        historian.commit(sample_batch((1, T0, 1.0, G)))


def test_large_batch_with_duplicates_keeps_the_first_value() -> None:
    db = Database(":memory:")
    store = DuckDBHistorian(db)
    try:
        n = 50_000
        batch = IngestBatch()
        for i in range(n):
            batch.samples.add(i % 100, T0 + (i // 100) * 1_000, float(i))
        for i in range(n):  # the same keys again, other values: all must lose
            batch.samples.add(i % 100, T0 + (i // 100) * 1_000, -1.0)
        store.commit(batch)
        assert store.count_samples() == n
        assert store.aggregate(7, [(T0, T0 + n * 1_000)], Agg.MIN, MIN)[0].value == 7.0
    finally:
        store.close()
        db.close()
