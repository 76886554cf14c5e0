"""The DuckDB historian's rollup follower (``rollup_follower.py``): commits leave the rollups alone,
queries stay exact while the follower lags (buckets that unmerged rows can change come from raw,
the rest from rollups), a crash after a catch-up or in the middle of one loses nothing (the mark
moves with the rollup rows), the thread keeps up by itself, and ``close`` catches up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.query import Agg
from shopfloor.domain.records import EventRecord, IngestBatch, Sample
from shopfloor.storage.duckdb import historian, rollup_append, rollup_follower
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DEFAULT_ROLLUP_STALENESS_US, DuckDBHistorian
from shopfloor.testing.aggregate_reference import irregular_samples
from shopfloor.testing.store_contract import ALIGNED_GRIDS, D0, GRIDS, H, check_aggregates, sample_batch
from tests.contract.test_duckdb_rollup_append import _commit, _rows, _same, _stream

ST = DEFAULT_ROLLUP_STALENESS_US


Manual = tuple[Database, DuckDBHistorian]


@pytest.fixture
def manual(tmp_path: Path) -> Iterator[Manual]:
    """A database and its historian whose follower runs only when a test calls catch_up_rollups;
    closed after the test."""
    db = Database(tmp_path / "h.duckdb")
    yield db, DuckDBHistorian(db, rollup_interval_s=None)
    db.close()


def _commit_samples(store: DuckDBHistorian, samples: list[Sample]) -> None:
    store.commit(sample_batch(*[(s.series_id, s.ts_us, s.value, s.quality, s.text) for s in samples]))


def _mark(db: Database) -> int:
    return int(db.cursor().execute("SELECT seq FROM rollup_follow").fetchall()[0][0])


def _check_all(store: DuckDBHistorian, data: list[Sample], what: str) -> None:
    for name, grid in GRIDS.items():
        for agg in Agg:
            check_aggregates(store, 1, data, grid, agg, ST, f"{what}, {name}")


def _equal_to_a_rebuild(db: Database, store: DuckDBHistorian) -> None:
    kept = (_rows(db, "rollup_1m"), _rows(db, "rollup_1h"))
    assert kept[0], "no rollup rows at all"
    store.rebuild_rollups()
    _same(kept[0], _rows(db, "rollup_1m"))
    _same(kept[1], _rows(db, "rollup_1h"))


def test_commits_leave_the_rollups_to_the_follower(manual: Manual) -> None:
    db, store = manual
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    _commit_samples(store, data)
    assert _rows(db, "rollup_1m") == [] and _mark(db) == 0
    assert store.rollups_pending() == len(data)
    assert store.catch_up_rollups() == len(data)
    assert _mark(db) == store.last_seq() and store.rollups_pending() == 0
    assert store.catch_up_rollups() == 0
    _equal_to_a_rebuild(db, store)


@pytest.mark.parametrize("late", [False, True], ids=["in order", "with late samples"])
def test_a_lagging_follower_answers_exactly(manual: Manual, late: bool) -> None:
    """Half the data merged, the rest committed (in order, or partly between merged samples) and
    not: every grid and aggregate equals the reference; the old buckets come from rollups."""
    db, store = manual
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    cut = D0 + 30 * H
    merged = [s for s in data if s.ts_us < cut and (not late or s.ts_us % 3)]
    rest = [s for s in data if s not in merged]
    _commit_samples(store, merged)
    store.catch_up_rollups()
    _check_all(store, merged, "merged")
    for k in range(0, len(rest), 40):
        _commit_samples(store, rest[k:k + 40])
    assert store.rollups_pending() == len(rest)
    _check_all(store, data, "lagging")
    hours = ALIGNED_GRIDS["1h"]
    sources = store._rollups.sources(1, hours, Agg.AVG, ST, min(s.ts_us for s in rest))
    assert "1h" in sources and None in sources, sources
    store.catch_up_rollups()
    _check_all(store, data, "caught up")
    _equal_to_a_rebuild(db, store)


def test_retention_merges_pending_rows_first(manual: Manual) -> None:
    db, store = manual
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    _commit_samples(store, data)
    store.delete_before(D0 + 60 * H)  # raw gone: only the rollups can answer, and they hold it all
    assert _mark(db) == store.last_seq()
    for name, grid in ALIGNED_GRIDS.items():
        for agg in Agg:
            check_aggregates(store, 1, data, grid, agg, ST, name)


_CRASHING_WRITER = """
import os, sys
from shopfloor.domain.records import IngestBatch
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from tests.contract.test_duckdb_rollup_append import _stream

rows = _stream(5, 3, 1200)
db = Database(sys.argv[1])
store = DuckDBHistorian(db, rollup_interval_s=None)
for k in range(0, 1200, 50):
    batch = IngestBatch()
    for sid, ts, value, text, quality in rows[k:k + 50]:
        batch.samples.add(sid, ts, value, text, quality)
    store.commit(batch)
    if k == 500:
        store.catch_up_rollups()
os._exit(0)  # a crash: no close, no catch-up
"""


def test_a_crash_after_a_catch_up_continues_from_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, str(path)], check=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    db = Database(path)
    store = DuckDBHistorian(db, rollup_interval_s=None)
    mark = _mark(db)
    assert 0 < mark < store.last_seq() == 24
    assert store.rollups_pending() == 1200 - 11 * 50
    data = sorted((Sample(*r) for r in _stream(5, 3, 1200) if r[0] == 1),
                  key=lambda s: s.ts_us)
    _check_all(store, data, "after the crash")
    assert store.catch_up_rollups() == 1200 - 11 * 50
    _equal_to_a_rebuild(db, store)
    db.close()


def test_a_failed_catch_up_changes_nothing(manual: Manual, monkeypatch: pytest.MonkeyPatch) -> None:
    db, store = manual
    rows = _stream(6, 3, 900)
    _commit(store, rows[:400])
    store.catch_up_rollups()
    before = (_rows(db, "rollup_1m"), _rows(db, "rollup_1h"), _mark(db))
    _commit(store, rows[400:])
    real_merge = rollup_append._merge

    def merge_then_fail(cur: object, table: str, delta: object) -> None:
        real_merge(cur, table, delta)  # type: ignore[arg-type]
        if table == "rollup_1h":
            raise rollup_append.duckdb.IOException("disk full (simulated)")

    monkeypatch.setattr(rollup_append, "_merge", merge_then_fail)
    with pytest.raises(StoreUnavailable):
        store.catch_up_rollups()
    assert (_rows(db, "rollup_1m"), _rows(db, "rollup_1h"), _mark(db)) == before
    monkeypatch.undo()
    assert store.catch_up_rollups() == 500
    _equal_to_a_rebuild(db, store)


def test_the_thread_keeps_up_and_close_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    db = Database(path)
    store = DuckDBHistorian(db, rollup_interval_s=0.05)
    rows = _stream(7, 3, 600)
    _commit(store, rows[:300])
    deadline = time.monotonic() + 20
    while _mark(db) < store.last_seq() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _mark(db) == store.last_seq(), "the follower thread did not catch up"
    store.close()

    store = DuckDBHistorian(db, rollup_interval_s=None)
    _commit(store, rows[300:])
    db.close()  # closing the database closes the historian, which catches up
    db = Database(path)
    assert _mark(db) == int(db.cursor().execute("SELECT last_seq FROM historian_seq").fetchall()[0][0]) > 0
    store = DuckDBHistorian(db, rollup_interval_s=None)
    assert store.rollups_pending() == 0
    _equal_to_a_rebuild(db, store)
    db.close()


def test_the_follower_merges_the_rows_commits_hand_over_without_reading_them_back(
        manual: Manual, monkeypatch: pytest.MonkeyPatch) -> None:
    """In-order commits hand their rows over; a commit on the anti-join path (late samples) or a
    restart means reading by seq again. Either way the rollups equal a rebuild from raw."""
    db, store = manual
    rows = _stream(8, 3, 900)
    real_sql = rollup_follower._PENDING_SQL
    monkeypatch.setattr(rollup_follower, "_PENDING_SQL", "SELECT error('read back ' || $mark || '-' || $upto)")
    for k in range(0, 600, 50):
        _commit(store, rows[k:k + 50])
    assert store.catch_up_rollups() == 600  # the failing read-back was never run
    _commit(store, rows[600:])
    _commit(store, rows[100:150])  # already stored: the anti-join path, rows stored not known
    with pytest.raises(StoreUnavailable, match="read back"):
        store.catch_up_rollups()
    monkeypatch.setattr(rollup_follower, "_PENDING_SQL", real_sql)
    assert store.catch_up_rollups() == 300  # read back: the repeated 50 were not stored again
    _equal_to_a_rebuild(db, store)


def test_a_failed_commit_hands_nothing_over(manual: Manual, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit whose transaction fails after its samples went in: none of them reaches the rollups."""
    db, store = manual
    rows = _stream(9, 3, 300)
    _commit(store, rows[:100])

    def fail(*_: object) -> None:
        raise historian.duckdb.IOException("disk full (simulated)")

    monkeypatch.setattr(historian, "_insert_events", fail)
    batch = IngestBatch()
    for sid, ts, value, text, quality in rows[100:200]:
        batch.samples.add(sid, ts, value, text, quality)
    batch.events.append(EventRecord(1, 1, D0, "event", "note", {}))
    with pytest.raises(StoreUnavailable):
        store.commit(batch)
    monkeypatch.undo()
    _commit(store, rows[200:])  # takes the failed commit's seq
    assert store.catch_up_rollups() == 200
    _equal_to_a_rebuild(db, store)
