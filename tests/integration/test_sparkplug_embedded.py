"""Sparkplug B in embedded mode: an edge node on the embedded broker, the host behind the routing sink,
DuckDB underneath.

The broker hands every PUBLISH to ``SparkplugRouter`` before it acknowledges it: ``spBv1.0/...`` goes
to the ``SparkplugHost``, the rest to ingest. The host publishes its STATE and its rebirth requests
through the broker itself, and commands go out the same way. The edge node is a paho MQTT 3.1.1
client (what the embedded broker speaks) with its NDEATH as Will.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.connectors.mqtt.embedded_broker import EmbeddedBroker
from shopfloor.connectors.sparkplug.codec import decode_payload
from shopfloor.connectors.sparkplug.commands import SparkplugCommander
from shopfloor.connectors.sparkplug.host import SparkplugHost, SparkplugRouter
from shopfloor.connectors.sparkplug.host_messages import parse_state_payload
from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.errors import Forbidden
from shopfloor.domain.records import Quality
from shopfloor.domain.sparkplug import MetricMap, SparkplugSpec
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.sparkplug import MetricWrite
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.devices import DeviceAccessService
from shopfloor.services.ingest import IngestService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.sparkplug import SparkplugBindings, SparkplugCommandService
from shopfloor.services.sparkplug_directory import SparkplugDirectoryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from tests.integration.sparkplug_edge_client import Edge

pytestmark = pytest.mark.integration

LINE = "plant/shop/line-1"
WITHIN = 10.0


async def eventually(predicate: Callable[[], bool], within: float = WITHIN) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


@dataclass
class Embedded:
    historian: DuckDBHistorian
    registry: RegistryService
    ctx: TenantContext
    host: SparkplugHost
    broker: EmbeddedBroker
    commands: SparkplugCommandService
    series: dict[str, int]
    machines: dict[str, int]
    secrets: dict[str, str]
    gw_id: int

    def edge(self, device: str = "gw") -> Edge:
        return Edge(self.broker.bound_port, f"acme.{device}", self.secrets[device], "acme", mqtt5=False)

    def good(self) -> list[tuple[str, int, float]]:
        out = []
        for name, sid in self.series.items():
            out += [(name, s.ts_us, s.value) for s in self.historian.raw(sid, 0, 2**62)
                    if s.quality == Quality.GOOD and s.value is not None]
        return sorted(out)


@pytest.fixture
async def e(tmp_path: Path) -> AsyncIterator[Embedded]:
    db = Database(tmp_path / "shopfloor.duckdb")
    repo, historian, clock = DuckDBRegistry(db), DuckDBHistorian(db), SystemClock()
    registry = RegistryService(repo)
    registry.create_tenant(PLATFORM, "acme")
    _, token = registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(token)
    registry.put_asset_type(ctx, "press", measurements=[
        MeasurementDef("temperature", "degC"), MeasurementDef("force", "kN"),
        MeasurementDef("running", "", ValueType.BOOLEAN)])
    site = registry.create_asset(ctx, Level.SITE, "plant", timezone="UTC")
    area = registry.create_asset(ctx, Level.AREA, "shop", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    series, machines = {}, {}
    for name in ("press-1", "press-2"):
        m = registry.create_asset(ctx, Level.MACHINE, name, parent_id=line.id, type_name="press")
        machines[name] = m.id
        series.update({f"{name}/{s.measurement}": s.id for s in registry.series_of(ctx, m.id)})
    gw, gw_secret = registry.create_device(ctx, "gw", [line.id], gateway=True)
    _, other_secret = registry.create_device(ctx, "other", [line.id], gateway=True)
    bindings = SparkplugBindings(registry)
    bindings.put(ctx, gw.id, SparkplugSpec(node=f"{LINE}/press-1", devices={"Press2": f"{LINE}/press-2"},
                                           metrics={"Oil/Temp": MetricMap("temperature", scale=0.1)}))

    # the wiring of embedded mode
    stats = IngestStats(clock)
    cache = RegistryCache(repo, clock)
    ingest = IngestService(historian, cache, clock, stats)
    host = SparkplugHost(SparkplugDirectoryService(repo, cache, clock), ingest, rebirth_retry_s=2.0)
    broker = EmbeddedBroker("127.0.0.1", 0, SparkplugRouter(ingest, host), DeviceAccessService(cache, stats))
    await broker.start()
    host.set_publisher(broker)
    await host.announce(clock.now_us() // 1000)
    commands = SparkplugCommandService(bindings, ingest, SparkplugCommander(broker), clock.now_us)
    made = Embedded(historian, registry, ctx, host, broker, commands, series, machines,
                    {"gw": gw_secret, "other": other_secret}, gw.id)
    try:
        yield made
    finally:
        await host.retire()
        await broker.stop()
        await host.drain()
        await ingest.drain()
        ingest.close()
        historian.close()
        db.close()


async def test_an_edge_node_on_the_embedded_broker(e: Embedded) -> None:
    edge = e.edge()
    await asyncio.to_thread(edge.connect)
    assert await eventually(lambda: bool(edge.states))  # the host's retained STATE
    assert parse_state_payload(edge.states[-1][1]).online and edge.states[-1][0] == "spBv1.0/STATE/shopfloor"
    for _ in range(10):
        await asyncio.to_thread(edge.data)
    assert await eventually(lambda: e.good() == sorted(edge.expected))

    await asyncio.to_thread(edge.gap)  # dropped; the host asks through the broker, the node answers
    assert await eventually(lambda: edge.rebirths == 1)
    for _ in range(5):
        await asyncio.to_thread(edge.data)
    assert await eventually(lambda: e.good() == sorted(edge.expected))

    await asyncio.to_thread(edge.die)  # the Will (NDEATH, current bdSeq) reaches the host

    def offline() -> int:
        return len([x for x in e.historian.events(e.ctx.require_tenant(), kinds=["status"]) if x.type == "offline"])

    assert await eventually(lambda: offline() == 2)
    await asyncio.to_thread(edge.reconnect)
    for _ in range(5):
        await asyncio.to_thread(edge.data)
    assert await eventually(lambda: e.good() == sorted(edge.expected))
    good = e.good()
    assert len(good) == len({(n, ts) for n, ts, _ in good}) == len(edge.expected)
    assert not set(edge.dropped) & set(good)
    assert e.host.state.bd_seq(edge.sim.node) == 1


async def test_broker_rights_and_commands(e: Embedded) -> None:
    edge = e.edge()
    await asyncio.to_thread(edge.connect)
    assert await eventually(lambda: len(e.good()) == 3)

    # another device of the tenant may not speak as gw's edge node, nor read its commands
    other = e.edge("other")
    other.sim.edge_node = "gw"
    with pytest.raises(AssertionError):  # a Will as gw's NDEATH: the CONNECT is refused
        await asyncio.to_thread(other.connect)
    other.close()
    spy = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    spy.username_pw_set("acme.other", e.secrets["other"])
    got: list[str] = []
    codes: list[object] = []
    spy.on_message = lambda _c, _u, m: got.append(m.topic)
    spy.on_subscribe = lambda _c, _u, _mid, rcs, _p: codes.extend(rcs)
    await asyncio.to_thread(spy.connect, "127.0.0.1", e.broker.bound_port, 30)
    spy.loop_start()
    spy.subscribe([("spBv1.0/acme/NCMD/gw", 1), ("spBv1.0/#", 1)])
    assert await eventually(lambda: len(codes) == 2)
    assert all(getattr(c, "is_failure", False) for c in codes)
    for topic, payload in (other.sim.nbirth({"Oil/Temp": 1}, 1), other.sim.ndata({"Oil/Temp": 2}, 2)):
        spy.publish(topic, payload, qos=1)  # acknowledged, dead-lettered, never stored
    assert await eventually(lambda: len(e.historian.dead_letters(e.ctx.require_tenant())) >= 2)
    letters = e.historian.dead_letters(e.ctx.require_tenant())
    assert {d.reason for d in letters} == {"unknown_device"} and {d.device for d in letters} == {"acme.other"}
    assert "'acme.other' may not publish as edge node acme/gw" in letters[0].detail
    assert len(e.good()) == 3

    # a DCMD write: engineers only, logged before it is sent
    with pytest.raises(Forbidden):
        await e.commands.command(TenantContext(e.ctx.tenant_id, "acme", Role.OPERATOR, "op"), e.gw_id, "Press2",
                                 [MetricWrite("setpoint", 1.5)])
    done = await e.commands.command(e.ctx, e.gw_id, "Press2", [MetricWrite("setpoint", 1.5, "Float"),
                                                              MetricWrite("mode", "auto")])
    assert done["topic"] == "spBv1.0/acme/DCMD/gw/Press2" and done["asset_id"] == e.machines["press-2"]
    assert await eventually(lambda: any(t == "spBv1.0/acme/DCMD/gw/Press2" for t, _ in edge.commands))
    payload = decode_payload(next(p for t, p in edge.commands if t.endswith("/DCMD/gw/Press2")))
    assert [(m.name, m.datatype, m.value) for m in payload.metrics] == [("setpoint", DataType.FLOAT, 1.5),
                                                                         ("mode", DataType.STRING, "auto")]
    [audit] = e.historian.events(e.ctx.require_tenant(), kinds=["command"])
    assert (audit.asset_id, audit.type) == (e.machines["press-2"], "sparkplug_write")
    assert audit.data["by"] == "eng" and audit.data["edge_node"] == "gw" and audit.data["device"] == "Press2"
    assert audit.data["metrics"] == [{"name": "setpoint", "value": 1.5, "datatype": "Float"},
                                     {"name": "mode", "value": "auto"}]
    await asyncio.sleep(0.2)
    assert got == []  # the spy saw nothing
    spy.disconnect()
    spy.loop_stop()
