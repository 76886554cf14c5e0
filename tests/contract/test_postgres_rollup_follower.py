"""The PostgreSQL historian's rollup follower (``pg_follower.py``): commits leave the rollups alone
and record what is pending, queries stay exact while the follower lags, a crash after a catch-up or
in the middle of one loses nothing, one follower runs at a time across processes, retention merges
what is pending first and never brings back what it cut, the thread keeps up, ``close`` catches up,
and an installation of schema version 3 upgrades with nothing pending."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.query import Agg
from shopfloor.domain.records import IngestBatch, Sample
from shopfloor.storage.postgres import pg_follower, pg_rollups
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.historian_schema import MIGRATIONS
from shopfloor.storage.postgres.partitions import SamplePartitions, to_datetime
from shopfloor.testing.aggregate_reference import irregular_samples
from shopfloor.testing.store_contract import ALIGNED_GRIDS, D0, GRIDS, MIN, H, S, check_aggregates, sample_batch
from tests.contract.test_duckdb_rollup_append import _stream

ST = 300_000_000
COLUMNS = ("series_id, bucket, sample_count, value_count, value_sum, value_min, value_max, first_ts, first_value,"
           " last_ts, last_value, twa_weighted_sum, twa_duration_us, twa_carried_in")


@pytest.fixture
def pg_db(pg_schema: tuple[str, str]) -> Iterator[PgDatabase]:
    db = PgDatabase(*pg_schema, max_size=4)
    yield db
    db.close()


def _commit_samples(store: PostgresHistorian, samples: list[Sample]) -> None:
    store.commit(sample_batch(*[(s.series_id, s.ts_us, s.value, s.quality, s.text) for s in samples]))


def _commit_rows(store: PostgresHistorian, rows: list[tuple[int, int, float | None, str | None, int]]) -> None:
    batch = IngestBatch()
    for sid, ts, value, text, quality in rows:
        batch.samples.add(sid, ts, value, text, quality)
    store.commit(batch)


def _one(db: PgDatabase, sql: str, params: list[Any] | None = None) -> Any:
    with db.connection() as conn:
        row = conn.execute(sql, params or []).fetchone()
    assert row is not None
    return row[0]


def _mark(db: PgDatabase) -> int:
    return int(_one(db, "SELECT seq FROM rollup_follow"))


def _rows(db: PgDatabase, table: str) -> list[tuple[Any, ...]]:
    with db.connection() as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM {table} ORDER BY series_id, bucket").fetchall()


_FLOATS = (4, 5, 6, 8, 10, 11)  # sum, min, max, first and last value, twa weighted sum


def _same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:4] == w[:4] and g[7:11:2] == w[7:11:2] and g[12:] == w[12:], (g, w)
        for a, b in zip([g[i] for i in _FLOATS], [w[i] for i in _FLOATS], strict=True):
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-6), (g, w)


def _equal_to_a_rebuild(db: PgDatabase, store: PostgresHistorian) -> None:
    kept = (_rows(db, "rollup_1m"), _rows(db, "rollup_1h"))
    assert kept[0], "no rollup rows at all"
    store.rebuild_rollups()
    _same(kept[0], _rows(db, "rollup_1m"))
    _same(kept[1], _rows(db, "rollup_1h"))


def _check_all(store: PostgresHistorian, data: list[Sample], what: str, grids: dict[str, Any] = GRIDS) -> None:
    for name, grid in grids.items():
        for agg in Agg:
            check_aggregates(store, 1, data, grid, agg, ST, f"{what}, {name}")


def test_commits_leave_the_rollups_to_the_follower(pg_db: PgDatabase) -> None:
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    _commit_samples(store, data[:500])
    _commit_samples(store, data[500:])
    store.commit(sample_batch((1, data[3].ts_us, 1.0, 0)))  # a redelivery: nothing new to merge
    assert _rows(pg_db, "rollup_1m") == [] and _mark(pg_db) == 0
    with pg_db.connection() as conn:
        pending = conn.execute("SELECT seq, samples, series_ids, min_ts[1], max_ts[1] FROM rollup_pending"
                               " ORDER BY seq").fetchall()
    assert pending == [(1, 500, [1], data[0].ts_us, data[499].ts_us),
                       (2, len(data) - 500, [1], data[500].ts_us, data[-1].ts_us)]
    assert store.rollups_pending() == len(data)
    assert store.catch_up_rollups() == len(data)
    assert _mark(pg_db) == store.last_seq() == 3 and store.rollups_pending() == 0
    assert _one(pg_db, "SELECT count(*) FROM rollup_pending") == 0
    assert store.catch_up_rollups() == 0
    _equal_to_a_rebuild(pg_db, store)
    store.close()


def test_pending_rows_hold_each_series_oldest_and_newest_sample() -> None:
    assert pg_follower.pending_row([7, 3, 7, 3, 9], [50, 20, 10, 40, 30]) == ([3, 7, 9], [20, 10, 30], [40, 50, 30])


@pytest.mark.parametrize("late", [False, True], ids=["in order", "with late samples"])
def test_a_lagging_follower_answers_exactly(pg_db: PgDatabase, late: bool) -> None:
    """Half the data merged, the rest committed (in order, or partly between merged samples) and
    not: every grid and aggregate equals the reference; the old buckets come from rollups."""
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
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
    with pg_db.connection() as conn:
        state = pg_rollups.lock_and_read(conn, [1], lock=False)
        pending_from = pg_follower.pending_from(conn, 1)
    assert pending_from == min(s.ts_us for s in rest)
    sources = pg_rollups.sources(hours, Agg.AVG, ST, state, 1, pending_from)
    assert "1h" in sources and None in sources, sources
    assert store.catch_up_rollups() == len(rest)
    _check_all(store, data, "caught up")
    _equal_to_a_rebuild(pg_db, store)
    store.close()


def test_retention_merges_pending_rows_first(pg_db: PgDatabase) -> None:
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    _commit_samples(store, data[:300])
    store.drop_partitions_before(D0 - 2 * 24 * H)  # nothing to drop, but pending rows merged first
    assert _mark(pg_db) == store.last_seq()
    _commit_samples(store, data[300:])
    store.delete_before(D0 + 60 * H)  # raw gone: only the rollups can answer, and they hold it all
    assert _mark(pg_db) == store.last_seq() and store.count_samples() == 0
    _check_all(store, data, "raw gone", ALIGNED_GRIDS)
    store.close()


def test_retention_never_brings_back_what_it_cut(pg_db: PgDatabase) -> None:
    """Late samples before a rollup cutoff, committed after it and merged later, leave no rollup row
    before it; late raw samples before a raw cutoff change no rollup bucket it guards."""
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    _commit_samples(store, data)
    store.delete_before(D0 + 20 * H)
    cutoff = D0 + 24 * H
    store.delete_rollups_before("1m", cutoff)
    hours_before = _rows(pg_db, "rollup_1h")
    late = [Sample(1, t, 5.0, None, 0) for t in (D0 + 10 * H + 7 * S, D0 + 22 * H + 7 * S, D0 + 23 * H + 59 * MIN)]
    _commit_samples(store, late)
    assert store.catch_up_rollups() == len(late)
    assert _one(pg_db, "SELECT count(*) FROM rollup_1m WHERE bucket < %s", [to_datetime(cutoff)]) == 0
    # the hours before the cutoff (their minutes are gone) kept what they held
    after = _rows(pg_db, "rollup_1h")
    assert [r for r in after if r[1] < to_datetime(cutoff)] == [r for r in hours_before if r[1] < to_datetime(cutoff)]
    assert {r[1] for r in after} == {r[1] for r in hours_before}
    store.close()


def test_a_bucket_raw_cannot_answer_waits_for_the_follower(pg_db: PgDatabase) -> None:
    """A local day that straddles the raw cutoff and holds an unmerged sample: raw has lost its
    start and the rollups lack the sample, so the query lets the follower catch up first."""
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    _commit_samples(store, data)
    store.delete_before(D0 + 20 * H)
    late = Sample(1, D0 + 22 * H + 7 * S, 5.0, None, 0)
    assert late not in data
    _commit_samples(store, [late])
    assert _mark(pg_db) < store.last_seq()
    days = ALIGNED_GRIDS["1d Europe/Berlin"]
    assert days[0][0] < D0 + 20 * H < D0 + 22 * H < days[0][1]
    for agg in Agg:
        check_aggregates(store, 1, sorted([*data, late], key=lambda s: s.ts_us), days, agg, ST, "days")
    assert _mark(pg_db) == store.last_seq()
    store.close()


_CRASHING_WRITER = """
import os, sys
from shopfloor.domain.records import IngestBatch
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from tests.contract.test_duckdb_rollup_append import _stream

rows = _stream(5, 3, 1200)
db = PgDatabase(sys.argv[1], sys.argv[2], max_size=2)
store = PostgresHistorian(db, rollup_interval_s=None)
for k in range(0, 1200, 50):
    batch = IngestBatch()
    for sid, ts, value, text, quality in rows[k:k + 50]:
        batch.samples.add(sid, ts, value, text, quality)
    store.commit(batch)
    if k == 500:
        store.catch_up_rollups()
os._exit(0)  # a crash: no close, no catch-up
"""


def test_a_crash_after_a_catch_up_continues_from_the_mark(pg_db: PgDatabase, pg_schema: tuple[str, str]) -> None:
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, *pg_schema], check=True, cwd=root,
                   env={**os.environ, "PYTHONPATH": str(root)}, timeout=120)
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    mark = _mark(pg_db)
    assert 0 < mark < store.last_seq() == 24
    assert store.rollups_pending() == 1200 - 11 * 50
    data = sorted((Sample(*r) for r in _stream(5, 3, 1200) if r[0] == 1), key=lambda s: s.ts_us)
    _check_all(store, data, "after the crash")
    assert store.catch_up_rollups() == 1200 - 11 * 50
    _equal_to_a_rebuild(pg_db, store)
    store.close()


def test_a_failed_catch_up_changes_nothing(pg_db: PgDatabase, monkeypatch: pytest.MonkeyPatch) -> None:
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    rows = _stream(6, 3, 900)
    _commit_rows(store, rows[:400])
    store.catch_up_rollups()
    before = (_rows(pg_db, "rollup_1m"), _rows(pg_db, "rollup_1h"), _mark(pg_db))
    _commit_rows(store, rows[400:])
    real_refresh = pg_rollups.refresh

    def refresh_then_fail(conn: psycopg.Connection, *args: Any) -> None:
        real_refresh(conn, *args)
        conn.execute("SELECT 1 / 0")  # the server fails after the rollup rows were written

    monkeypatch.setattr(pg_rollups, "refresh", refresh_then_fail)
    with pytest.raises(StoreUnavailable):
        store.catch_up_rollups()
    assert (_rows(pg_db, "rollup_1m"), _rows(pg_db, "rollup_1h"), _mark(pg_db)) == before
    monkeypatch.undo()
    assert store.rollups_pending() == 500
    assert store.catch_up_rollups() == 500
    _equal_to_a_rebuild(pg_db, store)
    store.close()


def test_one_follower_at_a_time_across_processes(pg_db: PgDatabase, pg_schema: tuple[str, str]) -> None:
    """While another process catches up (it holds the mark row), a follower's own turn is skipped
    and an explicit catch-up waits; committers of several pools that each catch up after every
    commit end with the rollups a rebuild gives."""
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    rows = _stream(8, 4, 800)
    _commit_rows(store, rows[:200])
    follower = pg_follower.PgRollupFollower(pg_db, ST, interval_s=None)
    with psycopg.connect(pg_schema[0], options=f"-c search_path={pg_schema[1]}") as other:
        assert pg_follower.lock_mark(other, wait=True) == 0
        assert follower.catch_up(wait=False) == 0  # skipped
        assert _rows(pg_db, "rollup_1m") == []
        done: list[int] = []
        waiting = threading.Thread(target=lambda: done.append(store.catch_up_rollups()))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and done == []
        other.rollback()
        waiting.join(30)
    assert done == [200] and _mark(pg_db) == store.last_seq()

    dbs = [PgDatabase(*pg_schema, max_size=2) for _ in range(3)]
    stores = [PostgresHistorian(db, rollup_interval_s=0) for db in dbs]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(200 + i * 10, 800, 30):
                _commit_rows(stores[i], rows[k:k + 10])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for s in stores:
        s.close()
    for db in dbs:
        db.close()
    assert not errors
    assert _mark(pg_db) == store.last_seq() and store.count_samples() == 800
    _equal_to_a_rebuild(pg_db, store)
    store.close()


def test_the_thread_keeps_up_and_close_catches_up(pg_db: PgDatabase) -> None:
    store = PostgresHistorian(pg_db, rollup_interval_s=0.05)
    rows = _stream(7, 3, 600)
    _commit_rows(store, rows[:300])
    deadline = time.monotonic() + 20
    while _mark(pg_db) < store.last_seq() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _mark(pg_db) == store.last_seq(), "the follower thread did not catch up"
    store.close()

    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    _commit_rows(store, rows[300:])
    last = store.last_seq()
    assert _mark(pg_db) < last
    store.close()
    assert _mark(pg_db) == last
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    assert store.rollups_pending() == 0
    _equal_to_a_rebuild(pg_db, store)
    store.close()


def test_with_several_committing_processes_one_follower_keeps_the_rollups(
        pg_db: PgDatabase, pg_schema: tuple[str, str]) -> None:
    """Two processes commit, each with its follower thread: once one of them keeps the rollups up
    to date, the other skips its turns (a catch-up recomputes the current minute of every live
    series, so two would read it twice as often) and forgets the commits of its own the other
    merged; the rollups end as a rebuild gives them."""
    dbs = [PgDatabase(*pg_schema, max_size=2) for _ in range(2)]
    stores = [PostgresHistorian(db, rollup_interval_s=0.1) for db in dbs]
    rows = _stream(6, 3, 900)
    try:
        for k in range(0, 600, 10):  # both commit, turn about, for a second or so
            _commit_rows(stores[(k // 10) % 2], rows[k:k + 10])
            time.sleep(0.02)
        deadline = time.monotonic() + 20
        while (_mark(pg_db) < max(s.last_seq() for s in stores) or any(s.rollups_pending() for s in stores)) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [s.rollups_pending() for s in stores] == [0, 0]  # each forgot what the other merged
        assert _mark(pg_db) == max(s.last_seq() for s in stores)
        runs = sorted(s._follower.catch_ups for s in stores)
        # the turns: about one catch-up per 0.1 s in all, nearly all by one of the two
        assert runs[1] >= 3 and runs[0] <= max(2, runs[1] // 3), runs
    finally:
        for s in stores:
            s.close()
        for db in dbs:
            db.close()
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    assert store.count_samples() == 600
    _equal_to_a_rebuild(pg_db, store)
    store.close()


def test_a_database_of_schema_version_3_upgrades_with_nothing_pending(pg_db: PgDatabase) -> None:
    """Version 3 kept the rollups in every commit: they are complete, so the mark starts at the
    last seq."""
    pg_db.migrate("historian", MIGRATIONS[:3])
    data = irregular_samples(1, D0, D0 + 50 * H, seed=1)
    SamplePartitions(pg_db, 1, 0).ensure_timestamps([s.ts_us for s in data])
    with pg_db.connection() as conn:  # what version 3 wrote: raw rows, their rollups, the seq
        with conn.cursor().copy("COPY samples (series_id, ts, value, text, quality, seq) FROM STDIN") as cp:
            for s in data:
                cp.write_row((1, to_datetime(s.ts_us), s.value, s.text, s.quality, 7))
        conn.execute("UPDATE historian_seq SET last_seq = 7")
        conn.execute("UPDATE rollup_state SET rebuild_pending = false, staleness_us = %s", [ST])
        state = pg_rollups.lock_and_read(conn, [1], lock=True)
        pg_rollups.refresh(conn, pg_rollups.all_ranges(conn, None, None, None, ST), state, ST)
    store = PostgresHistorian(pg_db, rollup_interval_s=None)
    assert pg_db.version("historian") == 4
    assert _mark(pg_db) == store.last_seq() == 7 and store.rollups_pending() == 0
    assert store.catch_up_rollups() == 0
    store.delete_before(D0 + 60 * H)
    _check_all(store, data, "upgraded, raw gone", ALIGNED_GRIDS)
    store.close()
