"""The historian contract on PostgreSQL (each test in its own schema), plus what only PostgreSQL
shows: partitions, the COPY fallback, concurrent committers in separate pools, the schema upgrade."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shopfloor.domain.assets import Level, ValueType
from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.query import Agg
from shopfloor.domain.records import IngestBatch, Reason, Sample
from shopfloor.domain.timeutil import to_us
from shopfloor.storage.postgres import pg_copy
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.historian_schema import MIGRATIONS
from shopfloor.storage.postgres.partitions import SamplePartitions, to_datetime
from shopfloor.storage.postgres.registry import PostgresRegistry
from shopfloor.testing.changes_contract import ChangesContract
from shopfloor.testing.store_contract import (
    MIN,
    T0,
    B,
    G,
    H,
    HistorianContract,
    RollupContract,
    S,
    dead,
    event,
    sample_batch,
    values,
)


@pytest.fixture
def pg_db(pg_schema: tuple[str, str]) -> Iterator[PgDatabase]:
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema, max_size=4)
    yield db
    db.close()


@pytest.fixture
def rollup_staleness_us() -> int:
    return 5 * MIN


# the rollup follower: after every commit, on its thread, or only before retention and rebuilds
# (lagging: queries answer the buckets unmerged samples can change from raw)
_FOLLOW = {"every-commit": 0.0, "thread": 0.5, "lagging": None}


@pytest.fixture(params=list(_FOLLOW))
def historian(request: pytest.FixtureRequest, pg_db: PgDatabase,
              rollup_staleness_us: int) -> Iterator[PostgresHistorian]:
    store = PostgresHistorian(pg_db, rollup_staleness_us=rollup_staleness_us,
                              rollup_interval_s=_FOLLOW[request.param])
    yield store
    store.close()


class TestPostgresChanges(ChangesContract):
    pass


class TestPostgresHistorian(HistorianContract):
    pass


class TestPostgresRollups(RollupContract):
    pass


# ---- PostgreSQL only ---------------------------------------------------------------------------

class FixedClock:
    def __init__(self, now_us: int) -> None:
        self.now = now_us

    def now_us(self) -> int:
        return self.now


def _day(y: int, m: int, d: int) -> int:
    return to_us(datetime(y, m, d, tzinfo=UTC))


def _partitions(db: PgDatabase) -> list[str]:
    with db.connection() as conn:
        rows = conn.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                            " WHERE i.inhparent = 'samples'::regclass ORDER BY 1").fetchall()
    return [str(r[0]) for r in rows]


def test_partitions_are_created_ahead_and_on_demand(pg_db: PgDatabase) -> None:
    clock = FixedClock(_day(2026, 3, 10) + 5 * H)
    store = PostgresHistorian(pg_db, partitions_ahead=2, clock=clock)
    assert _partitions(pg_db) == ["samples_20260310_20260311", "samples_20260311_20260312",
                                  "samples_20260312_20260313"]
    # back-filled data: its days get partitions before the COPY, also far apart
    store.commit(sample_batch((1, _day(2019, 5, 1) + H, 1.0, G), (1, _day(2024, 2, 29) + 23 * H, 2.0, G)))
    assert "samples_20190501_20190502" in _partitions(pg_db)
    assert "samples_20240229_20240301" in _partitions(pg_db)
    assert store.count_samples() == 2
    # the clock moves on: the next commit keeps partitions ahead of it
    clock.now = _day(2026, 3, 20)
    store.commit(sample_batch((1, clock.now, 3.0, G)))
    assert "samples_20260322_20260323" in _partitions(pg_db)
    # no default partition: every row lives in the partition of its day
    with pg_db.connection() as conn:
        row = conn.execute("SELECT count(*) FROM samples_20190501_20190502").fetchone()
    assert row is not None and row[0] == 1


def test_weekly_partitions_start_on_monday_and_fill_gaps_between_daily_ones(pg_db: PgDatabase) -> None:
    daily = PostgresHistorian(pg_db, partitions_ahead=0, clock=FixedClock(_day(2026, 3, 11)))  # a Wednesday
    assert _partitions(pg_db) == ["samples_20260311_20260312"]
    weekly = PostgresHistorian(pg_db, partition_interval="1 week", partitions_ahead=1,
                               clock=FixedClock(_day(2026, 3, 11)))
    assert _partitions(pg_db) == ["samples_20260309_20260311", "samples_20260311_20260312",
                                  "samples_20260312_20260316", "samples_20260316_20260323"]
    weekly.commit(sample_batch((1, _day(2026, 3, 10), 1.0, G), (1, _day(2026, 3, 11), 2.0, G)))
    assert daily.count_samples() == 2
    with pytest.raises(InvalidInput, match="partition interval"):
        PostgresHistorian(pg_db, partition_interval="12 hours")


def test_retention_drops_whole_partitions_and_deletes_the_rest(pg_db: PgDatabase) -> None:
    store = PostgresHistorian(pg_db, partitions_ahead=0, clock=FixedClock(_day(2024, 1, 5)))
    days = [_day(2024, 1, d) for d in (1, 2, 3, 4)]
    store.commit(sample_batch(*[(s, d + h * H, float(h), G) for d in days for s in (1, 2) for h in range(0, 24, 6)]))
    assert store.count_samples() == 32
    assert "samples_20240101_20240102" in _partitions(pg_db)
    # per-series retention cannot drop partitions: a plain DELETE
    assert store.delete_before(days[1], [2]) == 4
    assert "samples_20240101_20240102" in _partitions(pg_db)
    # a day-aligned cutoff drops partitions only, and counts what they held
    assert store.delete_before(days[2]) == 12
    assert _partitions(pg_db)[0] == "samples_20240103_20240104"
    # a cutoff inside a day: the partition stays, its older rows are deleted
    assert store.delete_before(days[2] + 12 * H) == 4
    assert [s.ts_us for s in store.raw(1, 0, 2**62)][:2] == [days[2] + 12 * H, days[2] + 18 * H]
    assert store.drop_partitions_before(days[3]) == 4
    assert store.count_samples() == 8
    # a sample of a dropped day arrives again: its partition comes back
    store.commit(sample_batch((1, days[0], 5.0, G)))
    assert store.raw(1, days[0], days[0] + 1) == [Sample(1, days[0], 5.0, None, G)]


def test_a_partition_dropped_by_another_process_is_recreated_on_commit(pg_db: PgDatabase,
                                                                      pg_schema: tuple[str, str]) -> None:
    store = PostgresHistorian(pg_db, partitions_ahead=0, clock=FixedClock(_day(2024, 1, 2)))
    store.commit(sample_batch((1, _day(2024, 1, 1), 1.0, G)))  # this process now knows the partition
    other_db = PgDatabase(*pg_schema, max_size=2)
    try:
        other = PostgresHistorian(other_db, partitions_ahead=0, clock=FixedClock(_day(2024, 1, 2)))
        assert other.drop_partitions_before(_day(2024, 1, 2)) == 1
    finally:
        other_db.close()
    seq = store.commit(sample_batch((1, _day(2024, 1, 1) + S, 2.0, G)))
    assert seq == store.last_seq() and store.count_samples() == 1


def test_duplicates_fall_back_from_copy_to_the_staging_table(historian: PostgresHistorian,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    fast: list[tuple[str, bool]] = []
    original = pg_copy.write_idempotent

    def spy(conn: Any, table: str, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]] | None:
        result = original(conn, table, *args, **kwargs)
        fast.append((table, result is None))
        return result

    monkeypatch.setattr(pg_copy, "write_idempotent", spy)
    historian.commit(sample_batch((1, T0, 1.0, G), (1, T0 + S, 2.0, G)))
    # a redelivery with one new sample, and a key twice within the batch
    historian.commit(sample_batch((1, T0, 9.0, B), (1, T0 + 2 * S, 3.0, G), (1, T0 + 2 * S, 4.0, G),
                                  (1, T0 + S, 8.0, G)))
    historian.commit(IngestBatch(events=[event(1, 10, T0, n=1), event(1, 10, T0, n=1), event(1, 10, T0, n=2)]))
    assert fast == [("samples", True), ("samples", False), ("events", False)]
    assert [(s.ts_us - T0, s.value) for s in historian.raw(1, T0, T0 + H)] == [(0, 1.0), (S, 2.0), (2 * S, 3.0)]
    # the rollups saw the one new sample of the redelivery (the hour is answered from them)
    assert values(historian.aggregate(1, [(T0, T0 + H)], Agg.AVG, MIN)) == [(2.0, 3)]
    assert values(historian.aggregate(1, [(T0, T0 + H)], Agg.TWA, 5 * MIN)) == [(pytest.approx(
        (1.0 * 1 + 2.0 * 1 + 3.0 * 300) / 302), 3)]
    assert sorted(e.data["n"] for e in historian.events(1)) == [1, 2]
    # a large batch whose second half repeats the first with other values
    n = 50_000
    batch = IngestBatch()
    for i in range(n):
        batch.samples.add(100 + i % 100, T0 + (i // 100) * 1_000, float(i))
    for i in range(n):
        batch.samples.add(100 + i % 100, T0 + (i // 100) * 1_000, -1.0)
    historian.commit(batch)
    assert historian.count_samples([100 + s for s in range(100)]) == n
    assert historian.aggregate(107, [(T0, T0 + n * 1_000)], Agg.MIN, MIN)[0].value == 7.0


def test_committers_in_separate_pools_get_distinct_gapless_seqs_in_commit_order(
        pg_db: PgDatabase, pg_schema: tuple[str, str]) -> None:
    dbs = [PgDatabase(*pg_schema, max_size=2) for _ in range(3)]
    stores = [PostgresHistorian(db) for db in dbs]
    got: dict[int, list[int]] = {i: [] for i in range(len(stores))}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in range(25):
                got[i].append(stores[i].commit(sample_batch((i, T0 + k * S, float(k), G))))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(stores))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for db in dbs:
        db.close()
    assert not errors
    seqs = [s for mine in got.values() for s in mine]
    assert sorted(seqs) == list(range(1, 76))  # distinct and gapless
    assert all(mine == sorted(mine) for mine in got.values())
    reader = PostgresHistorian(pg_db)
    assert reader.last_seq() == 75
    with pg_db.connection() as conn:  # each commit's rows carry its number
        rows = conn.execute("SELECT series_id, seq FROM samples ORDER BY series_id, ts").fetchall()
    assert [r[1] for r in rows] == [s for i in range(3) for s in got[i]]


def test_a_later_seq_is_never_visible_before_an_earlier_one(pg_db: PgDatabase,
                                                           pg_schema: tuple[str, str]) -> None:
    """A commit holding seq N blocks the next commit until it ends, so readers never see N+1 first."""
    store = PostgresHistorian(pg_db)
    store.commit(sample_batch((1, T0, 1.0, G)))
    with pg_db.connection() as conn:  # an open ingest transaction that has taken seq 2
        conn.execute("UPDATE historian_seq SET last_seq = last_seq + 1")
        other_db = PgDatabase(*pg_schema, max_size=2)
        try:
            other = PostgresHistorian(other_db)
            done: list[int] = []
            th = threading.Thread(target=lambda: done.append(other.commit(sample_batch((2, T0, 1.0, G)))))
            th.start()
            th.join(0.5)
            assert th.is_alive() and done == []  # waits for seq 2 to commit or roll back
            conn.rollback()
            th.join(10)
            assert done == [2]
        finally:
            other_db.close()


def test_failed_commit_stores_nothing_and_keeps_the_sequence(historian: PostgresHistorian,
                                                             pg_db: PgDatabase) -> None:
    before = historian.commit(sample_batch((1, T0, 1.0, G)))
    with pg_db.connection() as conn:
        conn.execute("ALTER TABLE events RENAME TO events_elsewhere")
    batch = sample_batch((1, T0 + MIN, 2.0, G))
    batch.events.append(event(1, 10, T0))
    with pytest.raises(StoreUnavailable, match="could not commit"):
        historian.commit(batch)
    assert historian.last_seq() == before
    assert historian.count_samples() == 1
    with pg_db.connection() as conn:
        conn.execute("ALTER TABLE events_elsewhere RENAME TO events")
    assert historian.commit(batch) == before + 1
    assert historian.count_samples() == 2


def test_values_postgresql_refuses_are_invalid_input(historian: PostgresHistorian) -> None:
    historian.commit(sample_batch((1, T0, 1.0, G)))
    bad_batches = [
        sample_batch((2**40, T0, 1.0, G)),                            # series id beyond integer
        sample_batch((1, 2**62, 1.0, G)),                             # beyond the year 9999
        IngestBatch(events=[event(1, 1, T0, bad=float("nan"))]),       # not JSON
    ]
    malformed = IngestBatch()
    malformed.samples.series_id.append(1)  # the other columns are missing
    for batch in [*bad_batches, malformed]:
        with pytest.raises(InvalidInput):
            historian.commit(batch)
    assert historian.last_seq() == 1 and historian.count_samples() == 1 and historian.events(1) == []


def test_text_postgresql_cannot_hold_is_stored_with_replacement_characters(historian: PostgresHistorian) -> None:
    """NUL and unpaired surrogates: refusing them would fail the whole commit, again on every retry."""
    batch = sample_batch((1, T0, None, G, "nul\x00byte"), (1, T0 + S, None, G, "half \ud800 pair"))
    batch.events.append(event(1, 10, T0, "event", "note\x00", text="a\x00b", **{"k\x00": ["\udfff"]}))
    batch.dead_letters.append(dead(1, "plc\x00", Reason.UNDECODABLE, T0, b"\x00raw bytes stay"))
    historian.commit(batch)
    assert [s.text for s in historian.raw(1, T0, T0 + H)] == ["nul\ufffdbyte", "half \ufffd pair"]
    (stored,) = historian.events(1)
    assert (stored.type, stored.data) == ("note\ufffd", {"text": "a\ufffdb", "k\ufffd": ["\ufffd"]})
    (letter,) = historian.dead_letters(1)
    assert (letter.device, letter.payload) == ("plc\ufffd", b"\x00raw bytes stay")
    historian.commit(batch)  # a redelivery is recognised as the same event
    assert len(historian.events(1)) == 1


def test_twa_needs_a_positive_staleness_and_reads_take_any_bounds(historian: PostgresHistorian) -> None:
    with pytest.raises(InvalidInput, match="staleness"):
        historian.aggregate(1, [(T0, T0 + MIN)], Agg.TWA, 0)
    historian.commit(sample_batch((1, T0, 1.0, G)))
    assert len(historian.raw(1, -(2**63), 2**63 - 1)) == 1
    assert historian.aggregate(1, [(-(2**62), 2**62)], Agg.TWA, 2**62)[0].value == 1.0
    assert historian.delete_events_before(-(2**63)) == 0


def test_closed_historian_refuses_reads_and_writes(historian: PostgresHistorian) -> None:
    historian.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        historian.count_samples()
    with pytest.raises(StoreUnavailable, match="closed"):
        historian.commit(sample_batch((1, T0, 1.0, G)))


def test_an_unreachable_server_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        PgDatabase("host=127.0.0.1 port=1 dbname=test user=postgres connect_timeout=2", "nowhere")


def test_a_database_of_schema_version_1_is_upgraded_and_keeps_its_data(pg_db: PgDatabase) -> None:
    pg_db.migrate("historian", MIGRATIONS[:1])
    SamplePartitions(pg_db, 1, 0).ensure_timestamps([T0, T0 + 3 * H])
    with pg_db.connection() as conn:  # what version 1 wrote: samples, events, dead letters, the seq
        conn.execute("INSERT INTO samples (series_id, ts, value, text, quality, seq)"
                     " SELECT 1, %s + g * interval '1 minute', g, NULL, 0, 1 FROM generate_series(0, 179) g",
                     [to_datetime(T0)])
        conn.execute("INSERT INTO events (seq, tenant_id, asset_id, ts, kind, type, data)"
                     " VALUES (2, 1, 10, %s, 'state', 'running', '{\"by\": \"v1\"}')", [to_datetime(T0)])
        conn.execute("INSERT INTO dead_letters (tenant_id, device, topic, reason, detail, payload, received_at, seq)"
                     " VALUES (1, 'plc-1', 't', 'undecodable', 'd', '\\x00ff', %s, 2)", [to_datetime(T0)])
        conn.execute("UPDATE historian_seq SET last_seq = 2")
    assert pg_db.version("historian") == 1

    store = PostgresHistorian(pg_db)
    assert pg_db.version("historian") == len(MIGRATIONS) == 4
    assert store.last_seq() == 2
    assert store.count_samples() == 180 and store.raw(1, T0, T0 + 1)[0].value == 0.0
    assert store.events(1)[0].data == {"by": "v1"}
    assert store.dead_letters(1)[0].payload == b"\x00\xff"
    # the rollups (version 2) were built from the data kept: with raw gone, hours still answer
    hours = [(T0 + i * H, T0 + (i + 1) * H) for i in range(3)]
    before = values(store.aggregate(1, hours, Agg.AVG, MIN))
    assert store.delete_before(T0 + 3 * H) == 180
    assert values(store.aggregate(1, hours, Agg.AVG, MIN)) == before == [(29.5, 60), (89.5, 60), (149.5, 60)]
    assert store.commit(sample_batch((1, T0 + 3 * H, 1.0, G))) == 3


def test_another_rollup_staleness_rebuilds_the_rollups_on_open(pg_db: PgDatabase) -> None:
    five = PostgresHistorian(pg_db, rollup_staleness_us=5 * MIN)
    five.commit(sample_batch(*[(1, T0 + i * 150 * S, float(i), G) for i in range(40)]))
    minutes = [(T0 + i * MIN, T0 + (i + 1) * MIN) for i in range(100)]
    truth = values(five.aggregate(1, minutes, Agg.TWA, 90 * S))  # from raw: not the rollups' staleness
    ninety = PostgresHistorian(pg_db, rollup_staleness_us=90 * S)
    with pg_db.connection() as conn:
        row = conn.execute("SELECT rebuild_pending, staleness_us FROM rollup_state").fetchone()
    assert row == (False, 90 * S)
    ninety.delete_before(T0 + 2 * H)  # only the rollups, now built with 90 s, can answer
    assert values(ninety.aggregate(1, minutes, Agg.TWA, 90 * S)) == [
        (None if v is None else pytest.approx(v), n) for v, n in truth]
    assert sum(n for _, n in truth) > 40


def test_huge_values_never_make_a_commit_fail(historian: PostgresHistorian) -> None:
    big = 1.5e308
    historian.commit(sample_batch((1, T0, big, G), (1, T0 + S, big, G), (1, T0 + 2 * S, -big, G)))
    assert historian.count_samples() == 3
    historian.catch_up_rollups()  # merging them does not fail either
    hour = [(T0, T0 + H)]
    assert historian.aggregate(1, hour, Agg.MAX, MIN)[0].value == big
    # from the rollups, summed in numeric where double precision overflowed on the way
    assert historian.aggregate(1, hour, Agg.SUM, MIN)[0].value == big
    with pytest.raises(InvalidInput):  # raw arithmetic in double precision overflows
        historian.aggregate(1, [(T0, T0 + H + 1)], Agg.SUM, MIN)


def test_each_bucket_is_answered_by_its_own_source(historian: PostgresHistorian) -> None:
    historian.commit(sample_batch(*[(1, T0 + i * 10 * S, float(i), G) for i in range(3 * 360)]))
    grid = [(T0, T0 + H), (T0 + H, T0 + H + MIN), (T0 + H + MIN + S, T0 + 2 * H), (T0 + 2 * H, T0 + 3 * H)]
    before = values(historian.aggregate(1, grid, Agg.AVG, MIN))
    assert before == [(179.5, 360), (362.5, 6), (543.0, 353), (899.5, 360)]
    historian.delete_rollups_before("1h", T0 + 2 * H)  # the first hour now comes from the minutes
    assert values(historian.aggregate(1, grid, Agg.AVG, MIN)) == before
    historian.delete_before(T0 + 3 * H)  # raw gone: only the bucket no rollup tiles goes empty
    assert values(historian.aggregate(1, grid, Agg.AVG, MIN)) == [before[0], before[1], (None, 0), before[3]]


def test_per_series_retention_drops_a_partition_once_all_its_series_are_cut(pg_db: PgDatabase) -> None:
    store = PostgresHistorian(pg_db, partitions_ahead=0, clock=FixedClock(_day(2024, 1, 4)))
    days = [_day(2024, 1, d) for d in (1, 2, 3)]
    store.commit(sample_batch(*[(s, d + h * H, 1.0, G) for d in days for s in (1, 2, 3) for h in range(4)]))
    # a retention run over two groups (tenants, or asset types with their own policy)
    assert store.delete_before(days[2], [1]) == 8  # series 2 and 3 still have rows there: DELETE
    assert _partitions(pg_db)[:2] == ["samples_20240101_20240102", "samples_20240102_20240103"]
    assert store.delete_before(days[2], [2, 3]) == 16  # the last group: the partitions go
    assert _partitions(pg_db) == ["samples_20240103_20240104", "samples_20240104_20240105"]
    assert store.count_samples() == 12
    # a group with a later cutoff does not let an earlier one drop more than it asked for
    assert store.delete_before(days[2] + H, [1]) == 1
    assert store.count_samples([2, 3]) == 8


def test_the_sql_examples_of_the_schema_docs_run(pg_db: PgDatabase) -> None:
    """Every ```sql block of docs/postgres-schema.md, Grafana macros filled in, against a small plant."""
    registry = PostgresRegistry(pg_db)
    store = PostgresHistorian(pg_db)
    tenant = registry.create_tenant("acme", "Acme")
    parent = None
    for level, name in ((Level.SITE, "lyon"), (Level.AREA, "assembly"), (Level.LINE, "line-1"),
                        (Level.MACHINE, "press-3")):
        parent = registry.create_asset(tenant.id, None if parent is None else parent.id, level, name,
                                       timezone="Europe/Paris")
    assert parent is not None
    temperature = registry.ensure_series(tenant.id, parent.id, "temperature", "°C", ValueType.NUMERIC)
    power = registry.ensure_series(tenant.id, parent.id, "power", "kW", ValueType.NUMERIC)
    now = to_us(datetime.now(UTC)) - H
    batch = sample_batch(*[(sid, now - i * MIN, float(i % 40), G) for sid in (temperature.id, power.id)
                           for i in range(0, 26 * 60, 7)])
    batch.events.extend([event(tenant.id, parent.id, now - 5 * H, "state", "running", state="running"),
                         event(tenant.id, parent.id, now - 2 * H, "state", "unplanned_stop", state="unplanned_stop",
                               reason="jam"),
                         event(tenant.id, parent.id, now - H, "count", "delta", mode="delta", good=12, reject=1)])
    batch.dead_letters.append(dead(tenant.id, "press-3", Reason.WRONG_TYPE, now))
    store.commit(batch)
    store.catch_up_rollups()  # the follower's thread would within 5 s

    text = (Path(__file__).resolve().parents[2] / "docs" / "postgres-schema.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    assert len(blocks) >= 8
    grafana = {r"\$__timeGroupAlias\(([^,]+), \$__interval\)": r"date_bin('1 minute', \1, timestamptz 'epoch') AS time",
               r"\$__timeFilter\(([^)]+)\)": r"\1 BETWEEN now() - interval '1 day' AND now()",
               r"\$machine": str(parent.id), r"\$measurement": "temperature"}
    for block in blocks:
        for pattern, replacement in grafana.items():
            block = re.sub(pattern, replacement, block)
        with pg_db.connection() as conn:
            rows = conn.execute(block.encode()).fetchall()
        assert rows, block
