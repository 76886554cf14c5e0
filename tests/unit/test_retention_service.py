"""The retention job: policies per asset type, cutoffs per level, events, the periodic runner."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shopfloor.domain.assets import AssetType, Level, ValueType
from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.query import Agg
from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.domain.retention import DAY_US, RetentionPolicy
from shopfloor.domain.timeutil import to_us
from shopfloor.services.retention import RetentionReport, RetentionService, run_periodically
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

MIN = 60_000_000
H = 60 * MIN
NOW = to_us(datetime(2025, 6, 1, 12, tzinfo=UTC))
AGES = (1, 8, 20, 45, 100, 800)  # days: one sample each
DEFAULT = RetentionPolicy(raw_days=30, rollup_1m_days=90, rollup_1h_days=730)


def hour_of(age_days: int) -> int:
    t = NOW - age_days * DAY_US
    return t - t % H


def sample_ts(age_days: int) -> int:
    return hour_of(age_days) + 10 * MIN + 7


class World:
    def __init__(self) -> None:
        self.clock = FixedClock(NOW)
        self.repo = InMemoryRegistry(clock=self.clock)
        self.db = Database(":memory:")
        self.store = DuckDBHistorian(self.db)
        self.series: dict[str, int] = {}
        acme = self.repo.create_tenant("acme", "Acme").id
        globex = self.repo.create_tenant("globex", "Globex").id
        self.tenants = {"acme": acme, "globex": globex}
        types: dict[tuple[int, str], dict[str, Any]] = {
            (acme, "press"): {"ideal_cycle_s": 12},
            (acme, "oven"): {"retention_raw_days": 7, "retention_rollup_1m_days": 14},
            (acme, "camera"): {"retention_raw_days": "7"},  # malformed: its data must stay
            (globex, "press"): {"retention_raw_days": 60},
        }
        for (tid, name), attributes in types.items():
            self.repo.put_asset_type(AssetType(tid, name, attributes=attributes))
        for tenant, tid in self.tenants.items():
            site = self.repo.create_asset(tid, None, Level.SITE, "site", timezone="Europe/Berlin")
            self._series(f"{tenant}/site", tid, site.id)  # an asset without a type
            for type_name in sorted({n for t, n in types if t == tid}):
                machine = self.repo.create_asset(tid, site.id, Level.MACHINE, f"{type_name}-1", type_name=type_name)
                self._series(f"{tenant}/{type_name}", tid, machine.id)
        batch = IngestBatch()
        for sid in self.series.values():
            for age in AGES:
                batch.samples.add(sid, sample_ts(age), float(age))
        for tid in self.tenants.values():
            for age in (10, 40):
                batch.events.append(EventRecord(tid, 1, NOW - age * DAY_US, "state", "running", {}))
        self.store.commit(batch)
        self.service = RetentionService(self.repo, self.store, self.clock, DEFAULT)

    def _series(self, key: str, tenant_id: int, asset_id: int) -> None:
        self.series[key] = self.repo.ensure_series(tenant_id, asset_id, "temperature", "C", ValueType.NUMERIC).id

    def raw_ages(self, key: str) -> list[int]:
        now = self.clock.now_us()
        return sorted(round((now - s.ts_us) / DAY_US) for s in self.store.raw(self.series[key], 0, now))

    def count(self, key: str, age: int, width: int) -> int:
        b0 = sample_ts(age) - sample_ts(age) % width
        return self.store.aggregate(self.series[key], [(b0, b0 + width)], Agg.COUNT, 5 * MIN)[0].count


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.store.close()
    w.db.close()


def test_raw_samples_follow_the_policy_of_their_asset_type(world: World) -> None:
    report = world.service.apply()
    assert world.raw_ages("acme/press") == [1, 8, 20]            # default: 30 days
    assert world.raw_ages("acme/site") == [1, 8, 20]             # no type: the default
    assert world.raw_ages("acme/oven") == [1]                    # retention_raw_days = 7
    assert world.raw_ages("acme/camera") == list(AGES)           # malformed attribute: untouched
    assert world.raw_ages("globex/press") == [1, 8, 20, 45]      # the other tenant's press: 60 days
    assert world.raw_ages("globex/site") == [1, 8, 20]
    assert report.deleted("raw") == 3 + 3 + 5 + 2 + 3
    assert report.now_us == NOW
    assert [(s.tenant_id, s.asset_type) for s in report.skipped] == [(world.tenants["acme"], "camera")]
    assert "whole number" in report.skipped[0].reason
    assert "camera" in report.summary()


def test_rollups_keep_answering_until_their_own_cutoff(world: World) -> None:
    world.service.apply()
    # acme/press, default policy: raw 30 days, 1-minute rollups 90, 1-hour rollups 730
    assert [world.count("acme/press", age, MIN) for age in AGES] == [1, 1, 1, 1, 0, 0]
    assert [world.count("acme/press", age, H) for age in AGES] == [1, 1, 1, 1, 1, 0]
    # acme/oven: 1-minute rollups 14 days only
    assert [world.count("acme/oven", age, MIN) for age in AGES] == [1, 1, 0, 0, 0, 0]
    assert [world.count("acme/oven", age, H) for age in AGES] == [1, 1, 1, 1, 1, 0]
    # the camera's data is all still there
    assert [world.count("acme/camera", age, MIN) for age in AGES] == [1] * len(AGES)


def test_groups_and_cutoffs_in_the_report(world: World) -> None:
    report = world.service.apply()
    acme, globex = world.tenants["acme"], world.tenants["globex"]
    by_key = {(g.tenant_id, g.asset_types): g for g in report.groups}
    assert set(by_key) == {(acme, (None, "press")), (acme, ("oven",)), (globex, (None,)), (globex, ("press",))}
    default_group = by_key[(acme, (None, "press"))]
    assert default_group.policy == DEFAULT and default_group.series == 2
    def midnight(us: int) -> int:  # cutoffs fall on UTC midnights, so daily partitions drop whole
        return us - us % DAY_US

    assert default_group.cutoffs == {"raw": midnight(NOW - 30 * DAY_US), "1m": midnight(NOW - 90 * DAY_US),
                                     "1h": midnight(NOW - 730 * DAY_US)}
    assert default_group.deleted["raw"] == 6
    assert default_group.deleted["1m"] > 0 and default_group.deleted["1h"] > 0
    oven = by_key[(acme, ("oven",))]
    assert oven.policy == RetentionPolicy(raw_days=7, rollup_1m_days=14, rollup_1h_days=730)
    assert by_key[(globex, ("press",))].cutoffs["raw"] == midnight(NOW - 60 * DAY_US)


def test_events_follow_the_default_only_in_a_run_over_all_tenants(world: World) -> None:
    one = world.service.apply(world.tenants["globex"])
    assert one.events_deleted is None
    assert {g.tenant_id for g in one.groups} == {world.tenants["globex"]}
    assert world.raw_ages("acme/press") == list(AGES)  # the other tenant was not touched
    assert len(world.store.events(world.tenants["acme"])) == 2
    everyone = world.service.apply()
    assert everyone.events_deleted == 2  # the 40-day-old event of each tenant
    assert [(NOW - e.ts_us) // DAY_US for e in world.store.events(world.tenants["acme"])] == [10]


def test_a_second_run_drops_nothing_more_until_time_passes(world: World) -> None:
    world.service.apply()
    again = world.service.apply()
    assert (again.deleted("raw"), again.deleted("1m"), again.deleted("1h"), again.events_deleted) == (0, 0, 0, 0)
    world.clock.advance(25 * DAY_US)
    later = world.service.apply()
    assert world.raw_ages("acme/press") == [26]  # the sample 1 day old then; 8 + 25 > 30
    assert later.deleted("raw") > 0 and later.events_deleted == 2  # the 10-day-old ones


def test_policy_for_a_type() -> None:
    service = RetentionService(InMemoryRegistry(), None, FixedClock(), DEFAULT)  # type: ignore[arg-type]
    assert service.policy_for(None) == DEFAULT
    assert service.policy_for(AssetType(1, "x", attributes={"retention_rollup_1h_days": 3650})).rollup_1h_days == 3650
    with pytest.raises(InvalidInput):
        service.policy_for(AssetType(1, "x", attributes={"retention_raw_days": 0}))


class CountingService:
    """Counts runs (they happen in a worker thread); ``reached`` is set after ``target`` of them."""

    def __init__(self, target: int = 1, fail_first: bool = False) -> None:
        self.calls = 0
        self.target = target
        self.fail_first = fail_first
        self.reached = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def apply(self, tenant_id: int | None = None) -> RetentionReport:
        self.calls += 1
        if self.calls >= self.target:
            self._loop.call_soon_threadsafe(self.reached.set)
        if self.fail_first and self.calls == 1:
            raise StoreUnavailable("the database is busy")
        return RetentionReport(NOW, (), (), 0)


async def test_run_periodically_runs_at_once_then_every_interval_until_stopped() -> None:
    service = CountingService(target=3)
    stop = asyncio.Event()
    task = asyncio.create_task(run_periodically(service, 0.05, stop))  # type: ignore[arg-type]
    await asyncio.wait_for(service.reached.wait(), 5)
    stop.set()
    runs = await asyncio.wait_for(task, 2)
    assert runs == service.calls >= 3


async def test_run_periodically_survives_a_failed_run(caplog: pytest.LogCaptureFixture) -> None:
    service = CountingService(target=2, fail_first=True)
    stop = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="shopfloor.services.retention"):
        task = asyncio.create_task(run_periodically(service, 0.02, stop))  # type: ignore[arg-type]
        await asyncio.wait_for(service.reached.wait(), 5)
        stop.set()
        runs = await asyncio.wait_for(task, 2)
    assert runs == service.calls - 1
    assert "retention run failed" in caplog.text and "retention dropped 0 raw samples" in caplog.text


async def test_run_periodically_stops_at_once_when_told() -> None:
    stop = asyncio.Event()
    stop.set()
    service = CountingService()
    assert await run_periodically(service, 3600, stop) == 0  # type: ignore[arg-type]
    assert service.calls == 0
    with pytest.raises(InvalidInput):
        await run_periodically(service, 0, asyncio.Event())  # type: ignore[arg-type]
