"""The historian contract on DuckDB, plus what only a file database can show (reopening, atomicity,
the upgrade that adds rollups) and the guards of its rollup maintenance."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.query import Agg, Interval, buckets
from shopfloor.domain.records import IngestBatch, Reason, Sample
from shopfloor.storage.duckdb import rollups
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DEFAULT_ROLLUP_STALENESS_US, MIGRATIONS, DuckDBHistorian
from shopfloor.testing.aggregate_reference import irregular_samples, reference_aggregate
from shopfloor.testing.changes_contract import ChangesContract
from shopfloor.testing.store_contract import (
    ALIGNED_GRIDS,
    D0,
    MIN,
    T0,
    H,
    HistorianContract,
    RollupContract,
    S,
    check_aggregates,
    dead,
    event,
    sample_batch,
)

G = 0


@pytest.fixture
def rollup_staleness_us() -> int:
    """The store's default; ``RollupContract`` overrides it with its own values."""
    return DEFAULT_ROLLUP_STALENESS_US


# the rollup follower: after every commit (memory), on its thread (file), or only before retention
# and rebuilds (lagging: queries answer unmerged buckets from raw)
_FOLLOW = {"memory": 0.0, "file": 0.5, "lagging": None}


@pytest.fixture(params=list(_FOLLOW))
def historian(request: pytest.FixtureRequest, tmp_path: Path, rollup_staleness_us: int) -> Iterator[DuckDBHistorian]:
    db = Database(":memory:" if request.param == "memory" else tmp_path / "shopfloor.duckdb")
    store = DuckDBHistorian(db, rollup_staleness_us=rollup_staleness_us, rollup_interval_s=_FOLLOW[request.param])
    yield store
    store.close()
    db.close()


class TestDuckDBChanges(ChangesContract):
    pass


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


# ---- rollups: what only DuckDB shows (upgrade, reopening, its guards) -------------------------

ALIGNED = ALIGNED_GRIDS


def _commit(store: DuckDBHistorian, samples: list[Sample]) -> None:
    store.commit(sample_batch(*[(s.series_id, s.ts_us, s.value, s.quality, s.text) for s in samples]))


def _check(store: DuckDBHistorian, series_id: int, samples: list[Sample], staleness_us: int, what: str) -> None:
    for name, grid in ALIGNED.items():
        for agg in Agg:
            check_aggregates(store, series_id, samples, grid, agg, staleness_us, f"{what}, {name}")


def _series(sid: int = 1) -> list[Sample]:
    return irregular_samples(sid, D0, D0 + 50 * H, seed=sid)


def test_upgrade_from_schema_1_builds_rollups_from_raw(tmp_path: Path) -> None:
    path = tmp_path / "shopfloor.duckdb"
    data = _series()
    db = Database(path)
    db.migrate("historian", MIGRATIONS[:1])  # a database written before rollups existed
    db.cursor().executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?, 1)",
                            [(s.series_id, s.ts_us, s.value, s.text, s.quality) for s in data])
    db.cursor().execute("UPDATE historian_seq SET last_seq = 1")
    db.close()

    db = Database(path)
    store = DuckDBHistorian(db)
    try:
        assert store.last_seq() == 1
        assert db.cursor().execute("SELECT rebuild_pending FROM rollup_state").fetchall() == [(False,)]
        store.delete_before(D0 + 60 * H)  # only the rollups the upgrade built can answer now
        _check(store, 1, data, DEFAULT_ROLLUP_STALENESS_US, "upgraded")
    finally:
        store.close()
        db.close()


def test_reopening_with_another_staleness_rebuilds_the_rollups(tmp_path: Path) -> None:
    path = tmp_path / "shopfloor.duckdb"
    data = _series()
    db = Database(path)
    store = DuckDBHistorian(db, rollup_staleness_us=5 * MIN)
    _commit(store, data)
    store.close()
    db.close()

    db = Database(path)
    store = DuckDBHistorian(db, rollup_staleness_us=2 * MIN)
    try:
        store.delete_before(D0 + 60 * H)
        _check(store, 1, data, 2 * MIN, "rebuilt with 2 min")
    finally:
        store.close()
        db.close()


def test_retention_marks_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "shopfloor.duckdb"
    data = _series()
    cutoff = D0 + 24 * H
    db = Database(path)
    store = DuckDBHistorian(db)
    _commit(store, data)
    store.delete_before(D0 + 60 * H)
    store.delete_rollups_before("1h", cutoff, [1])
    store.delete_rollups_before("1m", D0 + 12 * H)
    store.close()
    db.close()

    db = Database(path)
    store = DuckDBHistorian(db)
    try:
        store.rebuild_rollups()  # raw is gone: must not drop what the rollups know
        hourly = [b for b in ALIGNED["1h"] if b[0] >= D0 + 12 * H]  # hours before 24 h come from 1m
        for agg in Agg:
            check_aggregates(store, 1, data, hourly, agg, DEFAULT_ROLLUP_STALENESS_US, "reopened")
        early = [b for b in ALIGNED["1h"] if b[0] < D0 + 12 * H]
        assert {(r.value, r.count) for r in store.aggregate(1, early, Agg.AVG, MIN)} == {(None, 0)}
    finally:
        store.close()
        db.close()


@pytest.mark.parametrize("scope", ["all series", "this series"])
def test_late_samples_behind_the_raw_cutoff_leave_rollups_alone(historian: DuckDBHistorian, scope: str) -> None:
    """A rollup minute is recomputed only if raw still holds everything that can reach into it
    (from its start minus the staleness on); older minutes keep what they know."""
    st = DEFAULT_ROLLUP_STALENESS_US
    data = _series()
    _commit(historian, data)
    cutoff = D0 + 20 * H + 17 * S
    historian.delete_before(cutoff, None if scope == "all series" else [1])
    behind = Sample(1, cutoff - 10 * MIN + 1, 1e6, None, G)   # raw around it is gone: not taken in
    near = Sample(1, cutoff + st // 2 + 3, -1e6, None, G)     # taken in from cutoff + staleness on
    ahead = Sample(1, cutoff + 3 * H + 11, 123.5, None, G)
    _commit(historian, [behind, near, ahead])
    historian.delete_before(D0 + 60 * H)  # now only the rollups answer
    first_exact = cutoff + st - (cutoff + st) % MIN + MIN
    before = buckets(cutoff - H, cutoff - cutoff % MIN, Interval(1, "m"))
    after = buckets(first_exact, first_exact + 2 * H, Interval(1, "m"))
    quarter = [b for b in ALIGNED["15m"] if b[1] <= cutoff or b[0] >= first_exact]
    for agg in Agg:
        check_aggregates(historian, 1, [*data, ahead], before, agg, st, "minutes before the cutoff")
        check_aggregates(historian, 1, [*data, near, ahead], after, agg, st, "minutes after it")
        check_aggregates(historian, 1, [*data, near, ahead], quarter, agg, st, "quarters")
    # the checks above tell the two apart: near's hold reaches the first exact minutes
    assert reference_aggregate([*data, near, ahead], after, Agg.TWA, st) != \
        reference_aggregate([*data, ahead], after, Agg.TWA, st)
    assert reference_aggregate([*data, behind, ahead], before, Agg.MAX, st) != \
        reference_aggregate([*data, ahead], before, Agg.MAX, st)


def test_one_batch_far_apart_in_time(historian: DuckDBHistorian) -> None:
    old = irregular_samples(1, D0, D0 + 6 * H, seed=11)
    new = irregular_samples(1, D0 + 20 * 24 * H, D0 + 20 * 24 * H + 6 * H, seed=12)
    other = irregular_samples(2, D0 + 3 * H, D0 + 10 * 24 * H, seed=13)[::40]
    _commit(historian, old[::2] + new[::2] + other)
    _commit(historian, old[1::2] + new[1::2])  # late, in both stretches, in one batch
    historian.delete_before(D0 + 30 * 24 * H)
    st = DEFAULT_ROLLUP_STALENESS_US
    for grid in (buckets(D0, D0 + 7 * H, Interval(1, "m")),
                 buckets(D0 + 20 * 24 * H - H, D0 + 20 * 24 * H + 7 * H, Interval(5, "m")),
                 buckets(D0, D0 + 21 * 24 * H, Interval(1, "h"))):
        for agg in Agg:
            check_aggregates(historian, 1, old + new, grid, agg, st, "far apart")
    for agg in Agg:
        check_aggregates(historian, 2, other, buckets(D0, D0 + 11 * 24 * H, Interval(1, "d"), "Europe/Berlin"),
                         agg, st, "sparse series")


def test_unknown_rollup_level_and_bad_staleness() -> None:
    db = Database(":memory:")
    try:
        with pytest.raises(InvalidInput):
            DuckDBHistorian(db, rollup_staleness_us=0)
        store = DuckDBHistorian(db)
        with pytest.raises(InvalidInput, match="rollup level"):
            store.delete_rollups_before("5m", T0)
        assert store.delete_before(T0, []) == 0
        store.rebuild_rollups([])
    finally:
        db.close()


def test_rebuild_in_stretches_equals_incremental(historian: DuckDBHistorian, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollups, "_REBUILD_CHUNK_US", 5 * H)  # the 50 hours of data in eleven stretches
    data = {sid: _series(sid) for sid in (1, 2)}
    for sid in (1, 2):
        _commit(historian, data[sid])
    edge = D0 + 20 * H - (D0 + 20 * H) % (5 * H)  # a stretch boundary; the next stretch has no samples
    lonely = [Sample(3, edge - 2 * MIN, 5.0, None, G), Sample(3, edge + 11 * H, 6.0, None, G)]
    _commit(historian, lonely)
    historian.rebuild_rollups()
    historian.rebuild_rollups([2], D0 + 7 * H + 13 * S, D0 + 31 * H)
    historian.delete_before(D0 + 60 * H)
    for sid in (1, 2):
        _check(historian, sid, data[sid], DEFAULT_ROLLUP_STALENESS_US, f"rebuilt in stretches {sid}")
    for agg in Agg:  # the hold of the last sample before an empty stretch reaches into it
        check_aggregates(historian, 3, lonely, buckets(edge - H, edge + H, Interval(1, "m")), agg,
                         DEFAULT_ROLLUP_STALENESS_US, "across the boundary")
