"""Sparkplug B through a real Mosquitto into PostgreSQL, with two workers each owning their groups.

The broker is our own (free port) with password and ACL files generated from the registry, so the
edge nodes have exactly their Sparkplug rights. Two tenants, ``acme`` and ``globex``, each with one
edge node (a gateway device bound through the plant mapping): group ``acme`` belongs to worker 0
and ``globex`` to worker 1 (``worker_for_group``). Each edge node is a paho MQTT 5 client driving
``EdgeNodeSim``: births, data by alias, a forced sequence gap (the host asks for a rebirth and the
node answers it), a death by its Will, a reconnect with the next bdSeq. Afterwards every value that
was not sent while the node was stale is in PostgreSQL exactly once, each worker followed only its
own group, and each published its STATE.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.connectors.mosquitto import BrokerOptions, MosquittoManager, ServiceUser
from shopfloor.connectors.mosquitto.config import INGEST_READ, INGEST_WRITE, SPARKPLUG_READ, SPARKPLUG_WRITE
from shopfloor.connectors.sparkplug.codec import decode_payload
from shopfloor.connectors.sparkplug.commands import SparkplugCommander
from shopfloor.connectors.sparkplug.host import SparkplugHost
from shopfloor.connectors.sparkplug.host_messages import parse_state_payload
from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.connectors.sparkplug.publisher import MqttPublisher
from shopfloor.connectors.sparkplug.worker import SparkplugWorker, host_id_for
from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.credentials import hash_secret
from shopfloor.domain.records import Quality
from shopfloor.domain.sparkplug import Approval, MetricMap, SparkplugSpec, worker_for_group
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.sparkplug import MetricWrite
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.ingest import IngestService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.sparkplug import SparkplugBindings, SparkplugCommandService
from shopfloor.services.sparkplug_directory import SparkplugDirectoryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.registry import PostgresRegistry
from tests.conftest import free_port, need
from tests.integration.sparkplug_edge_client import Edge
from tests.integration.test_mosquitto_registry import mosquitto_binary

pytestmark = pytest.mark.integration

SERVICE_USER, SERVICE_PASSWORD = "shopfloor-ingest", "ingest-secret"
LINE = "plant/shop/line-1"
WITHIN = 20.0
TENANTS = ("acme", "globex")


async def eventually(predicate: Callable[[], bool], within: float = WITHIN) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


@dataclass
class Setup:
    dsn: str
    schema: str
    db: PgDatabase
    repo: PostgresRegistry
    historian: PostgresHistorian
    registry: RegistryService
    manager: MosquittoManager
    port: int
    ctx: dict[str, TenantContext]
    series: dict[str, dict[str, int]]  # tenant -> machine/measurement -> series id
    machines: dict[str, dict[str, int]]
    secrets: dict[str, str]
    edges: list[Edge] = field(default_factory=list)

    def edge(self, tenant: str, device: str = "gw") -> Edge:
        made = Edge(self.port, f"{tenant}.{device}", self.secrets[f"{tenant}.{device}"], tenant)
        self.edges.append(made)
        return made

    def good(self, tenant: str) -> list[tuple[str, int, float]]:
        names = {sid: name for name, sid in self.series[tenant].items()}
        out = []
        for sid, name in names.items():
            for s in self.historian.raw(sid, 0, 2**62):
                if s.quality == Quality.GOOD:
                    assert s.value is not None
                    out.append((name, s.ts_us, s.value))
        return sorted(out)

    def stale(self, tenant: str) -> int:
        return sum(1 for sid in self.series[tenant].values() for s in self.historian.raw(sid, 0, 2**62)
                   if s.quality == Quality.BAD and s.value is None)


@pytest.fixture
def s(pg_schema: tuple[str, str], tmp_path: Path) -> Iterator[Setup]:
    binary = mosquitto_binary()
    need(binary is not None, "the mosquitto executable")
    assert binary is not None
    dsn, schema = pg_schema
    db = PgDatabase(dsn, schema)
    repo = PostgresRegistry(db)
    historian = PostgresHistorian(db)
    registry = RegistryService(repo)
    bindings = SparkplugBindings(registry)
    ctxs, series, machines, secrets = {}, {}, {}, {}
    for slug in TENANTS:
        registry.create_tenant(PLATFORM, slug)
        _, token = registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug=slug)
        ctx = ctxs[slug] = TokenAuthenticator(repo).context_for(token)
        registry.put_asset_type(ctx, "press", measurements=[
            MeasurementDef("temperature", "degC"), MeasurementDef("force", "kN"),
            MeasurementDef("running", "", ValueType.BOOLEAN)])
        site = registry.create_asset(ctx, Level.SITE, "plant", timezone="UTC")
        area = registry.create_asset(ctx, Level.AREA, "shop", parent_id=site.id)
        line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
        series[slug], machines[slug] = {}, {}
        for name in ("press-1", "press-2"):
            m = registry.create_asset(ctx, Level.MACHINE, name, parent_id=line.id, type_name="press")
            machines[slug][name] = m.id
            for s in registry.series_of(ctx, m.id):
                series[slug][f"{name}/{s.measurement}"] = s.id
        gw, secret = registry.create_device(ctx, "gw", [line.id], gateway=True)
        secrets[gw.username] = secret
        plc, secret = registry.create_device(ctx, "plc", [line.id], gateway=True)
        secrets[plc.username] = secret
        bindings.put(ctx, gw.id, SparkplugSpec(node=f"{LINE}/press-1", devices={"Press2": f"{LINE}/press-2"},
                                               metrics={"Oil/Temp": MetricMap("temperature", scale=0.1)}))
    port = free_port()
    svc = ServiceUser(SERVICE_USER, hash_secret(SERVICE_PASSWORD), read=INGEST_READ + SPARKPLUG_READ,
                      write=INGEST_WRITE + SPARKPLUG_WRITE)
    manager = MosquittoManager.for_registry(repo, tmp_path / "mosquitto", service_users=[svc],
                                            options=BrokerOptions(port=port), binary=binary)
    manager.start()
    made = Setup(dsn, schema, db, repo, historian, registry, manager, port, ctxs, series, machines, secrets)
    try:
        yield made
    finally:
        for e in made.edges:
            e.close()
        manager.stop()
        historian.close()
        db.close()


@dataclass
class Running:
    workers: list[SparkplugWorker]
    hosts: list[SparkplugHost]
    tasks: list[asyncio.Task[None]]
    subscribed: list[asyncio.Event]


@contextlib.asynccontextmanager
async def workers(s: Setup, count: int = 2) -> AsyncIterator[Running]:
    """``count`` workers in this process, each with its own host, ingest service and pool."""
    running = Running([], [], [], [])
    dbs, services = [], []
    for index in range(count):
        db = PgDatabase(s.dsn, s.schema, max_size=4, timeout=5.0)
        dbs.append(db)
        repo, clock = PostgresRegistry(db), SystemClock()
        historian = PostgresHistorian(db, clock=clock)
        cache = RegistryCache(repo, clock, check_every_us=100_000)
        ingest = IngestService(historian, cache, clock, IngestStats(clock))
        services.append((ingest, historian))
        directory = SparkplugDirectoryService(repo, cache, clock, check_every_us=100_000)
        host = SparkplugHost(directory, ingest, host_id=host_id_for("shopfloor", index, count),
                             rebirth_retry_s=2.0)
        done = asyncio.Event()
        worker = SparkplugWorker(index, count, "127.0.0.1", s.port, SERVICE_USER, SERVICE_PASSWORD, host,
                                 directory.groups, flush_ms=10, refresh_s=0.5, on_subscribed=done.set)
        running.workers.append(worker)
        running.hosts.append(host)
        running.subscribed.append(done)
        running.tasks.append(asyncio.create_task(worker.run()))
    try:
        for done in running.subscribed:
            await asyncio.wait_for(done.wait(), 10)
        yield running
    finally:
        for worker in running.workers:
            worker.stop()
        await asyncio.gather(*running.tasks, return_exceptions=True)
        for ingest, historian in services:
            await ingest.drain()
            ingest.close()
            historian.close()
        for db in dbs:
            db.close()


async def test_births_data_gap_death_and_reconnect_through_two_workers_store_every_value_once(s: Setup) -> None:
    assert [worker_for_group(t, 2) for t in TENANTS] == [0, 1]  # one group per worker
    async with workers(s) as run:
        edges = [s.edge(t) for t in TENANTS]
        for e in edges:
            await asyncio.to_thread(e.connect)
        for _ in range(20):
            for e in edges:
                await asyncio.to_thread(e.data)
            await asyncio.sleep(0.01)

        def all_stored() -> bool:
            return all(s.good(t) == sorted(e.expected) for t, e in zip(TENANTS, edges, strict=True))

        assert await eventually(all_stored), "births and data are not all stored"

        # a forced gap: dropped, a rebirth asked for and answered with current values
        for e in edges:
            await asyncio.to_thread(e.gap)
        assert await eventually(lambda: all(e.rebirths == 1 for e in edges)), "no rebirth request"
        for _ in range(5):
            for e in edges:
                await asyncio.to_thread(e.data)
        assert await eventually(all_stored), "data after the rebirth is missing"

        # death by Will, then a reconnect with the next bdSeq
        for e in edges:
            await asyncio.to_thread(e.die)
        for t in TENANTS:
            assert await eventually(lambda t=t: len(_status(s, t, "offline")) == 2), f"{t}: no offline status"
        stale_after_death = [s.stale(t) for t in TENANTS]
        assert all(n >= 3 for n in stale_after_death)  # every series the node stored since its birth
        for e in edges:
            await asyncio.to_thread(e.reconnect)
        for _ in range(5):
            for e in edges:
                await asyncio.to_thread(e.data)
        assert await eventually(all_stored), "data after the reconnect is missing"
        assert all(e.sim.bd_seq == 1 for e in edges)

        for t, e in zip(TENANTS, edges, strict=True):
            good = s.good(t)
            assert len(good) == len(set((n, ts) for n, ts, _ in good)) == len(e.expected)
            assert good == sorted(e.expected)  # exactly the values sent outside the gap, once each
            assert not set(e.dropped) & set(good)
            assert len(_status(s, t, "online")) >= 4  # births: twice before the death, once after

        # each worker followed only its own group, and is a Sparkplug host with its STATE online
        for index, host in enumerate(run.hosts):
            assert [str(n) for n in host.state.nodes()] == [f"{TENANTS[index]}/gw"]
            assert host.host_id == f"shopfloor-{index}" and host.birth_timestamp_ms is not None
            assert host.stats.stored > 0 and host.stats.rebirths == 1
        states = await asyncio.to_thread(_retained_states, s)
        assert {k: v.online for k, v in states.items()} == {"shopfloor-0": True, "shopfloor-1": True}
        assert all(e.rebirths == 1 for e in edges)
        assert s.historian.dead_letters(s.ctx["acme"].tenant_id) == []


async def test_edge_nodes_cannot_publish_as_another_and_strangers_wait_in_quarantine(s: Setup) -> None:
    async with workers(s) as run:
        intruder = s.edge("acme")
        intruder.sim.group = "globex"  # acme's gateway pretending to be globex's: the ACL drops it
        await asyncio.to_thread(intruder.connect)
        await asyncio.to_thread(intruder.data)
        honest = s.edge("globex")
        await asyncio.to_thread(honest.connect)
        assert await eventually(lambda: s.good("globex") == sorted(honest.expected))
        assert s.good("acme") == []

        # acme's plc has no binding: it may speak as edge node "plc" in group acme, and is quarantined
        plc = s.edge("acme", "plc")
        await asyncio.to_thread(plc.connect)
        bindings = SparkplugBindings(s.registry)
        ctx = s.ctx["acme"]
        def seen() -> bool:
            return [len(n.seen) for n in bindings.nodes(ctx, Approval.QUARANTINED)] == [2]  # NBIRTH and DBIRTH

        assert await eventually(seen)
        [node] = bindings.nodes(ctx, Approval.QUARANTINED)
        assert (node.group, node.edge_node) == ("acme", "plc")
        assert node.seen == {"": ["Oil/Temp"], "Press2": ["force", "running"]}
        await asyncio.to_thread(plc.data)
        await asyncio.sleep(0.5)
        assert s.good("acme") == []  # nothing stored in quarantine
        bindings.approve(ctx, node.device_id, SparkplugSpec(devices={"Press2": f"{LINE}/press-2"}))
        for _ in range(100):  # once the host sees the approval, it asks for the births again
            await asyncio.to_thread(plc.data, keep=False)
            if await eventually(lambda: plc.rebirths == 1, within=0.1):
                break
        assert plc.rebirths == 1
        births = {r for r in plc.expected[-3:] if r[0].startswith("press-2/")}  # answering the rebirth
        assert await eventually(lambda: births <= set(s.good("acme")))
        assert set(s.good("acme")) <= births | set(plc.dropped)  # (data sent after them, if any)
        assert run.hosts[0].stats.quarantined >= 3


async def test_a_worker_whose_connection_drops_reconnects_to_its_session_and_is_born_again(s: Setup) -> None:
    async with workers(s, count=1) as run:
        [worker], [host] = run.workers, run.hosts
        edge = s.edge("acme")
        await asyncio.to_thread(edge.connect)
        for _ in range(5):
            await asyncio.to_thread(edge.data)
        assert await eventually(lambda: s.good("acme") == sorted(edge.expected))
        first_birth = host.birth_timestamp_ms
        assert first_birth is not None and worker.stats.connects == 1

        link = worker._link
        assert link is not None
        link.abort()  # the connection drops without DISCONNECT: the broker keeps the session, sends the Will
        assert await eventually(lambda: worker.stats.connects == 2 and host.birth_timestamp_ms != first_birth)
        # (NDATA is QoS 0, which a broker does not queue for an absent session: what a node sends
        # meanwhile is lost, and the host asks for a rebirth at the next sequence gap)
        for _ in range(10):
            await asyncio.to_thread(edge.data)
        assert await eventually(lambda: s.good("acme") == sorted(edge.expected)), "data after the reconnect is missing"
        good = s.good("acme")
        assert len(good) == len(set((n, ts) for n, ts, _ in good))  # once each
        assert worker.stats.sessions_lost == 0 and edge.rebirths == 0 and host.stats.rebirths == 0
        states = await asyncio.to_thread(_retained_states, s, 1)
        # born again, with the timestamp of the new connection's Will
        assert {k: (v.online, v.timestamp) for k, v in states.items()} == {  # type: ignore[attr-defined]
            "shopfloor": (True, host.birth_timestamp_ms)}


async def test_an_api_process_sends_commands_through_mosquitto(s: Setup) -> None:
    async with workers(s, count=1):
        edge = s.edge("globex")
        await asyncio.to_thread(edge.connect)
        publisher = MqttPublisher("127.0.0.1", s.port, SERVICE_USER, SERVICE_PASSWORD, client_id="api-commands")
        assert await publisher.start()
        try:
            ingest = IngestService(s.historian, RegistryCache(s.repo, SystemClock()), SystemClock(),
                                   IngestStats(SystemClock()))
            commands = SparkplugCommandService(SparkplugBindings(s.registry), ingest, SparkplugCommander(publisher),
                                               SystemClock().now_us)
            gw = s.repo.find_device(s.ctx["globex"].require_tenant(), "gw")
            assert gw is not None
            done = await commands.command(s.ctx["globex"], gw.id, "Press2", [MetricWrite("setpoint", 42, "Int32")])
            assert done["topic"] == "spBv1.0/globex/DCMD/gw/Press2"
            assert await eventually(lambda: any(t == done["topic"] for t, _ in edge.commands))
            payload = decode_payload(next(p for t, p in edge.commands if t == done["topic"]))
            assert [(m.name, m.datatype, m.value) for m in payload.metrics] == [("setpoint", DataType.INT32, 42)]
            assert len(s.historian.events(s.ctx["globex"].require_tenant(), kinds=["command"])) == 1
            await ingest.drain()
            ingest.close()
        finally:
            await publisher.stop()


def _status(s: Setup, tenant: str, status: str) -> list[object]:
    return [e for e in s.historian.events(s.ctx[tenant].require_tenant(), kinds=["status"]) if e.type == status]


def _retained_states(s: Setup, expected: int = 2) -> dict[str, object]:
    got: dict[str, object] = {}
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(SERVICE_USER, SERVICE_PASSWORD)

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got[msg.topic.rsplit("/", 1)[1]] = parse_state_payload(msg.payload)
        if len(got) == expected:
            done.set()

    client.on_message = on_message
    client.connect("127.0.0.1", s.port, 30)
    client.loop_start()
    client.subscribe("spBv1.0/STATE/+", qos=1)
    done.wait(5)
    client.disconnect()
    client.loop_stop()
    return got
