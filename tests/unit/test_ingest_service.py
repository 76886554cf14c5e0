"""The ingest service: device/topic resolution, value checks, micro-batched commits, failures."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.payloads import Limits
from shopfloor.domain.records import EventRecord, IngestBatch, Reason
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.cache import RegistryCache
from shopfloor.services.ingest import IngestService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

LINE1 = "shopfloor/v1/acme/berlin/press-shop/line-1"
PRESS1 = f"{LINE1}/press-01"
PRESS2 = f"{LINE1}/press-02"
OVEN = "shopfloor/v1/acme/berlin/press-shop/line-2/oven-01"


class RecordingStore:
    """A ``TimeSeriesStore`` that keeps every committed batch (``commit`` and ``last_seq`` only)."""

    def __init__(self, start_seq: int = 0) -> None:
        self.batches: list[IngestBatch] = []
        self.seq = start_seq
        self.lock = threading.Lock()

    def commit(self, batch: IngestBatch) -> int:
        with self.lock:
            self.seq += 1
            self.batches.append(batch)
            return self.seq

    def last_seq(self) -> int:
        return self.seq

    # everything committed, flattened
    @property
    def samples(self) -> list[tuple[int, int, float | None, str | None, int]]:
        return [row for b in self.batches for row in zip(b.samples.series_id, b.samples.ts_us, b.samples.value,
                                                         b.samples.text, b.samples.quality, strict=True)]

    @property
    def events(self) -> list[EventRecord]:
        return [e for b in self.batches for e in b.events]

    @property
    def dead(self) -> list[tuple[int | None, str, Reason]]:
        return [(d.tenant_id, d.device, d.reason) for b in self.batches for d in b.dead_letters]


class FailingStore(RecordingStore):
    """Refuses every commit until ``healed``."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error
        self.attempts = 0
        self.healed = False

    def commit(self, batch: IngestBatch) -> int:
        self.attempts += 1
        if not self.healed:
            raise self.error
        return super().commit(batch)


class GatedStore(RecordingStore):
    """Blocks each commit until the test opens the gate; tells the test when a commit is waiting."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def commit(self, batch: IngestBatch) -> int:
        self.waiting.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return super().commit(batch)


@dataclass
class Plant:
    clock: FixedClock
    repo: InMemoryRegistry
    registry: RegistryService
    cache: RegistryCache
    stats: IngestStats
    ctx: TenantContext
    secrets: dict[str, str]

    def series_id(self, machine_path: tuple[str, ...], measurement: str) -> int:
        asset = self.repo.find_asset(self.ctx.require_tenant(), machine_path)
        assert asset is not None
        return next(s.id for s in self.registry.series_of(self.ctx, asset.id) if s.measurement == measurement)

    def msg(self, device: str, topic: str, payload: Any) -> RawMessage:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return RawMessage(device, topic, data, self.clock.now_us())

    def ingest(self, store: RecordingStore) -> IngestService:
        return IngestService(store, self.cache, self.clock, self.stats)


@pytest.fixture
def plant() -> Plant:
    clock = FixedClock()
    repo = InMemoryRegistry(clock=clock)
    registry = RegistryService(repo)
    t = registry.create_tenant(PLATFORM, "acme")
    ctx = TenantContext(t.id, t.slug, Role.ENGINEER, "test")
    registry.put_asset_type(ctx, "press", measurements=[MeasurementDef("temperature", "degC"),
                                                       MeasurementDef("running", "", ValueType.BOOLEAN)])
    registry.put_asset_type(ctx, "oven", measurements=[MeasurementDef("zone_temp", "degC")],
                            events=["door_open"])
    site = registry.create_asset(ctx, Level.SITE, "berlin")
    area = registry.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
    line1 = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    line2 = registry.create_asset(ctx, Level.LINE, "line-2", parent_id=area.id)
    p1 = registry.create_asset(ctx, Level.MACHINE, "press-01", parent_id=line1.id, type_name="press")
    registry.create_asset(ctx, Level.MACHINE, "press-02", parent_id=line1.id, type_name="press")
    oven = registry.create_asset(ctx, Level.MACHINE, "oven-01", parent_id=line2.id, type_name="oven")
    secrets = {}
    for name, assets, gw in (("plc-1", [p1.id], False), ("gw-1", [line1.id], True), ("oven-plc", [oven.id], False),
                             ("plc-off", [p1.id], False)):
        dev, secrets[name] = registry.create_device(ctx, name, assets, gateway=gw)
        if name == "plc-off":
            registry.update_device(ctx, dev.id, enabled=False)
    stats = IngestStats(clock)
    return Plant(clock, repo, registry, RegistryCache(repo, clock), stats, ctx, secrets)


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def ingest(plant: Plant, store: RecordingStore) -> Iterator[IngestService]:
    svc = plant.ingest(store)
    yield svc
    svc.close()


# -- resolution --------------------------------------------------------------------------------


async def test_good_message_becomes_samples_with_the_right_series(plant: Plant, store: RecordingStore,
                                                                  ingest: IngestService) -> None:
    now = plant.clock.now_us()
    await ingest.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                            {"values": {"temperature": 71.5, "running": True}})])
    path = ("berlin", "press-shop", "line-1", "press-01")
    assert sorted(store.samples) == sorted([
        (plant.series_id(path, "temperature"), now, 71.5, None, 0),
        (plant.series_id(path, "running"), now, 1.0, None, 0),
    ])
    assert store.dead == [] and ingest.last_seq == store.seq == 1


async def test_events_carry_tenant_and_machine(plant: Plant, store: RecordingStore, ingest: IngestService) -> None:
    await ingest.submit_messages([plant.msg("acme.oven-plc", f"{OVEN}/state", {"state": "running"}),
                                  plant.msg("acme.oven-plc", f"{OVEN}/event", {"type": "door_open"})])
    oven = plant.repo.find_asset(plant.ctx.require_tenant(), ("berlin", "press-shop", "line-2", "oven-01"))
    assert oven is not None
    assert [(e.tenant_id, e.asset_id, e.kind, e.type) for e in store.events] == [
        (plant.ctx.tenant_id, oven.id, "state", "running"), (plant.ctx.tenant_id, oven.id, "event", "door_open")]


@pytest.mark.parametrize(("device", "topic", "reason", "has_tenant"), [
    ("acme.nobody", f"{PRESS1}/telemetry", Reason.UNKNOWN_DEVICE, False),
    ("globex.plc-1", f"{PRESS1}/telemetry", Reason.UNKNOWN_DEVICE, False),
    ("acme.plc-off", f"{PRESS1}/telemetry", Reason.DEVICE_DISABLED, True),
    ("acme.plc-1", f"{PRESS2}/telemetry", Reason.OUTSIDE_PREFIX, True),  # another machine
    ("acme.plc-1", f"{PRESS1}0/telemetry", Reason.OUTSIDE_PREFIX, True),  # press-010: not a sub-level
    ("acme.plc-1", "shopfloor/v1/globex/berlin/press-shop/line-1/press-01/telemetry", Reason.OUTSIDE_PREFIX, True),
    ("acme.gw-1", f"{OVEN}/telemetry", Reason.OUTSIDE_PREFIX, True),  # another line
    ("acme.gw-1", f"{LINE1}/press-99/telemetry", Reason.UNKNOWN_ASSET, True),
    ("acme.gw-1", f"{LINE1}/telemetry", Reason.UNKNOWN_TOPIC, True),  # a line is not a machine
    ("acme.plc-1", f"{PRESS1}/telemetry/raw", Reason.UNKNOWN_TOPIC, True),
    ("acme.plc-1", f"{PRESS1}/command", Reason.UNKNOWN_TOPIC, True),  # commands go down, not up
])
async def test_resolution_failures_are_dead_letters(plant: Plant, store: RecordingStore, ingest: IngestService,
                                                    device: str, topic: str, reason: Reason,
                                                    has_tenant: bool) -> None:
    await ingest.submit_messages([plant.msg(device, topic, {"values": {"temperature": 1}})])
    assert store.dead == [(plant.ctx.tenant_id if has_tenant else None, device, reason)]
    assert store.samples == []
    dl = store.batches[0].dead_letters[0]
    assert dl.topic == topic and dl.payload == b'{"values": {"temperature": 1}}' and dl.detail


async def test_a_gateway_on_a_line_publishes_for_each_machine(plant: Plant, store: RecordingStore,
                                                             ingest: IngestService) -> None:
    await ingest.submit_messages([
        plant.msg("acme.gw-1", f"{PRESS1}/telemetry", {"values": {"temperature": 1}}),
        plant.msg("acme.gw-1", f"{PRESS2}/telemetry", {"values": {"temperature": 2}}),
    ])
    assert store.dead == []
    got = {(sid, v) for sid, _, v, _, _ in store.samples}
    assert got == {(plant.series_id(("berlin", "press-shop", "line-1", "press-01"), "temperature"), 1.0),
                   (plant.series_id(("berlin", "press-shop", "line-1", "press-02"), "temperature"), 2.0)}


async def test_bad_values_are_dead_lettered_next_to_good_ones(plant: Plant, store: RecordingStore,
                                                              ingest: IngestService) -> None:
    await ingest.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                            {"values": {"temperature": "hot", "running": False, "zone_temp": 1}})])
    assert sorted(r for _, _, r in store.dead) == [Reason.UNKNOWN_MEASUREMENT, Reason.WRONG_TYPE]
    assert [v for _, _, v, _, _ in store.samples] == [0.0]
    ts = plant.stats.tenant(plant.ctx.tenant_id)
    assert (ts.messages, ts.points, ts.rejected) == (1, 1, 2)
    assert ts.rejects == {("acme.plc-1", "unknown_measurement"): 1, ("acme.plc-1", "wrong_type"): 1}
    assert ts.last_seen_us == {"acme.plc-1": plant.clock.now_us()}


async def test_a_measurement_removed_from_the_type_is_refused(plant: Plant, store: RecordingStore,
                                                              ingest: IngestService) -> None:
    plant.registry.put_asset_type(plant.ctx, "press", measurements=[MeasurementDef("temperature", "degC")])
    plant.clock.advance(1_000_000)  # the cache looks at the registry version again
    await ingest.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                            {"values": {"temperature": 1, "running": True}})])
    assert [r for _, _, r in store.dead] == [Reason.UNKNOWN_MEASUREMENT]


async def test_registry_changes_reach_ingest(plant: Plant, store: RecordingStore, ingest: IngestService) -> None:
    topic = f"{PRESS1}/telemetry"
    await ingest.submit_messages([plant.msg("acme.plc-1", topic, {"values": {"temperature": 1}})])
    dev = plant.repo.find_device(plant.ctx.require_tenant(), "plc-1")
    assert dev is not None
    plant.registry.update_device(plant.ctx, dev.id, enabled=False)
    plant.cache.invalidate()
    await ingest.submit_messages([plant.msg("acme.plc-1", topic, {"values": {"temperature": 2}})])
    assert store.dead == [(plant.ctx.tenant_id, "acme.plc-1", Reason.DEVICE_DISABLED)]
    plant.registry.update_device(plant.ctx, dev.id, enabled=True)
    plant.clock.advance(1_000_000)  # without invalidate(): seen within the check interval
    await ingest.submit_messages([plant.msg("acme.plc-1", topic, {"values": {"temperature": 3}})])
    assert [v for _, _, v, _, _ in store.samples] == [1.0, 3.0]


async def test_undecodable_message_is_one_dead_letter(plant: Plant, store: RecordingStore,
                                                      ingest: IngestService) -> None:
    await ingest.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry", b"\x00\xff{")])
    assert store.dead == [(plant.ctx.tenant_id, "acme.plc-1", Reason.UNDECODABLE)]


async def test_too_large_messages_follow_the_configured_limit(plant: Plant, store: RecordingStore) -> None:
    svc = IngestService(store, plant.cache, plant.clock, plant.stats, Limits(max_payload_bytes=64))
    try:
        await svc.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                             {"values": {"temperature": 1}, "pad": "x" * 100})])
    finally:
        svc.close()
    assert [r for _, _, r in store.dead] == [Reason.TOO_LARGE]


async def test_registry_unavailable_is_not_acknowledged(plant: Plant, store: RecordingStore,
                                                                   ingest: IngestService,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(username: str) -> None:
        raise StoreUnavailable("registry database is gone")

    monkeypatch.setattr(plant.cache, "device", broken)
    with pytest.raises(StoreUnavailable):  # the transport must not acknowledge; it retries later
        await ingest.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                                {"values": {"temperature": 1}})])
    assert store.batches == []


# -- commits -----------------------------------------------------------------------------------


async def test_concurrent_submissions_share_commits(plant: Plant, store: RecordingStore,
                                                    ingest: IngestService) -> None:
    n = 50
    msgs = [plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                      {"values": {"temperature": float(i)}, "ts": plant.clock.now_us() // 1000 - i})
            for i in range(n)]
    await asyncio.gather(*(ingest.submit_messages([m]) for m in msgs))
    assert len(store.samples) == n
    assert 1 <= len(store.batches) < n
    assert ingest.stats.commits == len(store.batches)
    assert ingest.stats.messages == n


async def test_messages_arriving_during_a_commit_go_into_the_next_one(plant: Plant) -> None:
    store = GatedStore()
    svc = plant.ingest(store)
    try:
        first = asyncio.create_task(svc.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                                                   {"values": {"temperature": 0}})]))
        assert await asyncio.to_thread(store.waiting.wait, 5)  # the first commit runs, blocked in the store
        later = [asyncio.create_task(svc.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                                                    {"values": {"temperature": i}})]))
                 for i in range(1, 21)]
        await asyncio.sleep(0.05)
        # nobody returns before its commit
        assert not first.done() and not any(t.done() for t in later)
        assert store.batches == []
        store.gate.set()
        await first
        assert len(store.batches) >= 1
        await asyncio.gather(*later)
        # each caller returned only after the batch holding its message was committed
        assert sorted(v for _, _, v, _, _ in store.samples) == [float(i) for i in range(21)]
        assert [len(b.samples) for b in store.batches] == [1, 20]
    finally:
        store.gate.set()
        svc.close()


async def test_each_caller_returns_after_its_own_commit(plant: Plant) -> None:
    store = GatedStore()
    svc = plant.ingest(store)
    try:
        task = asyncio.create_task(svc.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/state",
                                                                  {"state": "idle"})]))
        assert await asyncio.to_thread(store.waiting.wait, 5)
        await asyncio.sleep(0.02)
        assert not task.done()
        store.gate.set()
        await asyncio.wait_for(task, 5)
        assert [e.type for e in store.events] == ["idle"]
    finally:
        store.gate.set()
        svc.close()


@pytest.mark.parametrize("error", [StoreUnavailable("disk full"), RuntimeError("duckdb exploded")])
async def test_a_failing_store_raises_and_is_not_counted(plant: Plant, error: Exception) -> None:
    store = FailingStore(error)
    svc = plant.ingest(store)
    try:
        msgs = [plant.msg("acme.plc-1", f"{PRESS1}/telemetry", {"values": {"temperature": 1}}),
                plant.msg("acme.nobody", f"{PRESS1}/telemetry", {"values": {"temperature": 1}})]
        with pytest.raises(StoreUnavailable):
            await svc.submit_messages(msgs)
        assert store.attempts >= 1 and store.batches == []
        assert (plant.stats.messages, plant.stats.points, plant.stats.rejected, plant.stats.commits) == (0, 0, 0, 0)
        assert plant.stats.commit_failures == store.attempts
        assert plant.stats.tenant(plant.ctx.tenant_id).messages == 0
        assert svc.last_seq == 0
        # the transport redelivers; once the store is back the same messages are committed
        store.healed = True
        await svc.submit_messages(msgs)
        assert len(store.samples) == 1 and len(store.dead) == 1
        assert plant.stats.messages == 2 and svc.last_seq == store.seq
    finally:
        svc.close()


async def test_a_failed_commit_fails_every_caller_in_it(plant: Plant) -> None:
    store = FailingStore(StoreUnavailable("down"))
    svc = plant.ingest(store)
    try:
        results = await asyncio.gather(*(svc.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/state",
                                                                        {"state": "idle"})]) for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results)
    finally:
        svc.close()


async def test_batch_sink_submit_returns_the_sequence(plant: Plant) -> None:
    store = RecordingStore(start_seq=41)
    svc = plant.ingest(store)
    try:
        assert svc.last_seq == 41
        batch = IngestBatch()
        batch.events.append(EventRecord(plant.ctx.require_tenant(), 1, plant.clock.now_us(), "state", "idle",
                                        {"state": "idle"}))
        assert await svc.submit(batch) == 42
        assert svc.last_seq == 42 and store.events == batch.events
        await svc.drain()
    finally:
        svc.close()


async def test_empty_submission_commits_nothing(ingest: IngestService, store: RecordingStore) -> None:
    await ingest.submit_messages([])
    assert store.batches == []


# -- stats -------------------------------------------------------------------------------------


async def test_rates_cover_the_last_complete_seconds(plant: Plant, ingest: IngestService) -> None:
    for _ in range(3):
        await ingest.submit_messages([plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                                                {"values": {"temperature": 1, "running": True}})] * 3)
        plant.clock.advance(1_000_000)
    mps, pps = plant.stats.rates(plant.ctx.tenant_id)
    # 9 messages and 18 points over the window of complete seconds
    assert (mps, pps) == pytest.approx((9 / 9, 18 / 9))
    assert plant.stats.rates() == (mps, pps)
    plant.clock.advance(60_000_000)
    assert plant.stats.rates(plant.ctx.tenant_id) == (0.0, 0.0)
    assert plant.stats.messages == 9  # totals stay


def test_online_devices_are_counted_per_tenant(plant: Plant) -> None:
    plant.stats.set_online("acme.plc-1", 1, True)
    plant.stats.set_online("acme.gw-1", 1, True)
    plant.stats.set_online("globex.x", 2, True)
    plant.stats.set_online("acme.gw-1", 1, False)
    assert (plant.stats.online_count(), plant.stats.online_count(1), plant.stats.online_count(2)) == (2, 1, 1)


async def test_trusted_topic_from_an_external_broker_resolves_tenant_and_publisher(
        plant: Plant, store: RecordingStore, ingest: IngestService) -> None:
    """Server mode: Mosquitto enforced the prefix; the message carries no username."""
    await ingest.submit_messages([plant.msg("", f"{PRESS1}/telemetry", {"values": {"temperature": 3.5}}),
                                  plant.msg("", "shopfloor/v1/nobody/s/a/l/m/telemetry", {"values": {}})])
    assert [row[1:3] for row in store.samples] == [(plant.clock.now_us(), 3.5)]
    assert store.samples[0][0] == plant.series_id(("berlin", "press-shop", "line-1", "press-01"), "temperature")
    reasons = [d[2].value for d in store.dead]
    assert reasons == ["unknown_topic"]
    assert ingest.stats.tenant(plant.ctx.require_tenant()).last_seen_us.get("acme.plc-1") is not None


class PickyStore(RecordingStore):
    """Refuses (as invalid input) any batch holding the value 13.0, like a column it cannot hold."""

    def commit(self, batch: IngestBatch) -> int:
        if 13.0 in batch.samples.value:
            from shopfloor.domain.errors import InvalidInput

            raise InvalidInput("value 13.0 does not fit")
        return super().commit(batch)


async def test_a_value_the_store_refuses_is_dead_lettered_and_does_not_block_the_others(plant: Plant) -> None:
    store = PickyStore()
    ingest = plant.ingest(store)
    msgs = [plant.msg("acme.plc-1", f"{PRESS1}/telemetry",
                      {"values": {"temperature": v}, "ts": plant.clock.now_us() // 1000 - i})
            for i, v in enumerate((1.0, 13.0, 2.0))]
    await asyncio.gather(*(ingest.submit_messages([m]) for m in msgs))  # none raises: nothing retries forever
    assert sorted(row[2] for row in store.samples) == [1.0, 2.0]
    assert [d[2] for d in store.dead] == [Reason.STORE_REJECTED]
    assert ingest.stats.messages == 3


# -- one submission, one commit; memoised routes follow the registry ---------------------------------

async def test_a_submission_is_one_commit_counted_per_publisher(plant: Plant, store: RecordingStore,
                                                                ingest: IngestService) -> None:
    msgs = [plant.msg("acme.plc-1", f"{PRESS1}/telemetry", {"values": {"temperature": float(i)}}) for i in range(50)]
    msgs += [plant.msg("acme.gw-1", f"{PRESS2}/telemetry", {"values": {"temperature": 1.0, "running": "x"}}),
             plant.msg("acme.nobody", f"{PRESS1}/telemetry", {"values": {"temperature": 1.0}})]
    await ingest.submit_messages(msgs)
    assert len(store.batches) == 1 and len(store.samples) == 51
    tenant = plant.stats.by_tenant[plant.ctx.tenant_id]
    assert (tenant.messages, tenant.points, tenant.rejected) == (51, 51, 1)
    assert dict(tenant.rejects) == {("acme.gw-1", Reason.WRONG_TYPE.value): 1}
    assert plant.stats.by_tenant[None].rejects == {("acme.nobody", Reason.UNKNOWN_DEVICE.value): 1}


async def test_memoised_routes_follow_registry_changes(plant: Plant, store: RecordingStore,
                                                       ingest: IngestService) -> None:
    topic = f"{PRESS1}/telemetry"
    await ingest.submit_messages([plant.msg("acme.plc-1", topic, {"values": {"temperature": 1.0}})])
    device = next(d for d in plant.registry.list_devices(plant.ctx) if d.name == "plc-1")
    plant.registry.update_device(plant.ctx, device.id, enabled=False)
    plant.clock.advance(1_000_000)  # past the cache's check interval
    await ingest.submit_messages([plant.msg("acme.plc-1", topic, {"values": {"temperature": 2.0}})])
    assert [s[2] for s in store.samples] == [1.0]
    assert store.dead == [(plant.ctx.tenant_id, "acme.plc-1", Reason.DEVICE_DISABLED)]
