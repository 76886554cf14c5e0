"""The analytics service with fakes: following machines, the periodic job, one failing model not
stopping the others."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence

import pytest

from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.records import IngestBatch, Sample
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.analytics import AnalyticsService, score_periodically
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.analytics import InMemoryAnalyticsStore
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

S = 1_000_000


class FakeStore:
    """``raw`` over samples kept in memory (what the service reads)."""

    def __init__(self) -> None:
        self.samples: dict[int, list[Sample]] = {}

    def add(self, sid: int, ts: int, v: float) -> None:
        self.samples.setdefault(sid, []).append(Sample(sid, ts, v, None, 0))

    def raw(self, series_id: int, start_us: int, end_us: int, limit: int = 10_000) -> list[Sample]:
        return [s for s in self.samples.get(series_id, []) if start_us <= s.ts_us < end_us][:limit]


class FakeSink:
    def __init__(self, store: FakeStore) -> None:
        self.store = store
        self.batches: list[IngestBatch] = []

    async def submit(self, batch: IngestBatch) -> int:
        self.batches.append(batch)
        for sid, ts, v in zip(batch.samples.series_id, batch.samples.ts_us, batch.samples.value, strict=True):
            assert v is not None
            self.store.add(sid, ts, v)
        return len(self.batches)


def setup() -> tuple[AnalyticsService, TenantContext, FakeStore, FakeSink, list[int], FixedClock]:
    repo = InMemoryRegistry()
    reg = RegistryService(repo)
    reg.create_tenant(PLATFORM, "acme")
    tenant = repo.find_tenant("acme")
    assert tenant is not None
    ctx = TenantContext(tenant.id, "acme", Role.ADMIN, "t")
    reg.put_asset_type(ctx, "pump", measurements=[MeasurementDef("flow")])
    site = reg.create_asset(ctx, Level.SITE, "s")
    area = reg.create_asset(ctx, Level.AREA, "a", parent_id=site.id)
    line = reg.create_asset(ctx, Level.LINE, "l", parent_id=area.id)
    pumps = [reg.create_asset(ctx, Level.MACHINE, f"p{i}", parent_id=line.id, type_name="pump").id for i in (1, 2)]
    store = FakeStore()
    sink = FakeSink(store)
    clock = FixedClock(1000 * S)
    svc = AnalyticsService(reg, store, InMemoryAnalyticsStore(), clock, sink)  # type: ignore[arg-type]
    return svc, ctx, store, sink, pumps, clock


def flow_sid(svc: AnalyticsService, ctx: TenantContext, asset_id: int, name: str = "flow") -> int:
    return next(s.id for s in svc._registry.series_of(ctx, asset_id) if s.measurement == name)


def fill(svc: AnalyticsService, ctx: TenantContext, store: FakeStore, pumps: Sequence[int], ts: range) -> None:
    for a in pumps:
        for t in ts:
            store.add(flow_sid(svc, ctx, a), t * S, 10.0 + (t % 7) * 0.1)


async def test_follow_scores_only_new_rows_and_survives_a_broken_model(caplog: pytest.LogCaptureFixture) -> None:
    svc, ctx, store, _, pumps, clock = setup()
    fill(svc, ctx, store, pumps, range(0, 100))
    svc.configure(ctx, "watch", asset_type="pump", inputs=["flow"], kind="zscore")
    svc.configure(ctx, "other", asset_type="pump", inputs=["flow"], kind="zscore", output="flow_other")
    svc.train(ctx, "watch", 0, 100 * S)
    svc.train(ctx, "other", 0, 100 * S)
    report = await svc.score(ctx, "watch", 50 * S)
    assert [a.written for a in report.assets] == [50, 50]
    await svc.score(ctx, "other", 50 * S)
    assert await svc.score_incoming() == 0  # nothing new since
    fill(svc, ctx, store, pumps, range(100, 110))
    clock.set(200 * S)
    # break "other": its blob no longer loads; "watch" is still scored
    broken = svc._models.get(ctx.require_tenant(), "other")
    assert broken is not None and broken.trained is not None
    models = svc._models
    assert isinstance(models, InMemoryAnalyticsStore)
    models._models[(ctx.require_tenant(), "other")] = dataclasses.replace(
        broken, trained=dataclasses.replace(broken.trained, blob=b"junk"))
    with caplog.at_level(logging.WARNING):
        written = await svc.score_incoming()
    assert written == 20  # 10 new rows on each pump of "watch"; "other" failed
    assert "scoring model other" in caplog.text and "not a serialised zscore detector" in caplog.text
    got = svc.model(ctx, "watch")
    assert got.scored_to_us == {pumps[0]: 109 * S, pumps[1]: 109 * S}


async def test_score_periodically_scores_new_rows_until_stopped() -> None:
    svc, ctx, store, sink, pumps, clock = setup()
    fill(svc, ctx, store, pumps, range(0, 100))
    svc.configure(ctx, "watch", asset_type="pump", inputs=["flow"], kind="zscore")
    svc.train(ctx, "watch", 0, 100 * S)
    await svc.score(ctx, "watch", 0, asset_ids=[pumps[0]])
    before = len(sink.batches)
    fill(svc, ctx, store, pumps[:1], range(100, 103))
    clock.set(200 * S)
    stop = asyncio.Event()
    task = asyncio.create_task(score_periodically(svc, 0.01, stop))
    for _ in range(200):
        if len(sink.batches) > before:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    new = sink.batches[before:]
    assert [b.samples.ts_us for b in new] == [[100 * S, 101 * S, 102 * S]]
    assert task.exception() is None
