"""The Sparkplug host over fakes: mapping to machines and measurements, births, data by alias, gaps and
rebirths, deaths by bdSeq, reconnects, quarantine and approval, commit failures, commands."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from shopfloor.connectors.sparkplug import host as host_module
from shopfloor.connectors.sparkplug.codec import decode_payload
from shopfloor.connectors.sparkplug.commands import SparkplugCommander, command_datatype
from shopfloor.connectors.sparkplug.host import SparkplugHost, SparkplugRouter
from shopfloor.connectors.sparkplug.host_messages import REBIRTH_METRIC, parse_state_payload, state_message
from shopfloor.connectors.sparkplug.host_state import NodeStatus
from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.connectors.sparkplug.topics import EdgeNode, SparkplugTopic, parse_topic
from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.records import IngestBatch, Quality, Reason
from shopfloor.domain.sparkplug import Approval, MetricMap, SparkplugSpec
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.ingest import RawMessage
from shopfloor.ports.sparkplug import MetricWrite
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.sparkplug import SparkplugBindings
from shopfloor.services.sparkplug_directory import SparkplugDirectoryService
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry
from shopfloor.testing.sparkplug_edge import EdgeNodeSim, MetricDef

T0 = 1_700_000_000_000  # ms
LINE = "berlin/press-shop/line-1"


class Sink:
    """A ``BatchSink`` that keeps every committed batch (or fails while ``down``)."""

    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []
        self.down = False

    async def submit(self, batch: IngestBatch) -> int:
        if self.down:
            raise StoreUnavailable("simulated outage")
        self.batches.append(batch)
        return len(self.batches)

    def samples(self) -> list[tuple[int, int, float | None, str | None, int]]:
        out = []
        for b in self.batches:
            s = b.samples
            out += list(zip(s.series_id, s.ts_us, s.value, s.text, s.quality, strict=True))
        return out

    def good(self) -> list[tuple[int, int, float | None, str | None]]:
        return [(s, t, v, x) for s, t, v, x, q in self.samples() if q == Quality.GOOD]

    def events(self) -> list[tuple[int, str, str]]:
        return [(e.asset_id, e.kind, e.type) for b in self.batches for e in b.events]

    def dead(self) -> list[tuple[Reason, str]]:
        return [(d.reason, d.detail) for b in self.batches for d in b.dead_letters]


@dataclass
class Publisher:
    sent: list[tuple[str, bytes, int, bool]] = field(default_factory=list)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos, retain))

    def topics(self) -> list[str]:
        return [t for t, *_ in self.sent]


@dataclass
class World:
    clock: FixedClock
    repo: InMemoryRegistry
    registry: RegistryService
    ctx: TenantContext
    bindings: SparkplugBindings
    directory: SparkplugDirectoryService
    sink: Sink
    publisher: Publisher
    host: SparkplugHost
    gw_id: int
    series: dict[str, int]  # "press-1/temperature" -> id
    machines: dict[str, int]

    def edge(self, group: str = "acme", edge_node: str = "gw-1") -> EdgeNodeSim:
        return EdgeNodeSim(group, edge_node,
                           metrics={"Oil/Temp": MetricDef(1, DataType.INT32), "Uptime": MetricDef(2, DataType.INT64),
                                    "Debug": MetricDef(3, DataType.STRING)},
                           devices={"Press2": {"force": MetricDef(10, DataType.DOUBLE),
                                               "running": MetricDef(11, DataType.BOOLEAN),
                                               "mode": MetricDef(12, DataType.STRING)}})

    def send(self, *messages: tuple[str, bytes], username: str = "") -> None:
        raws = [RawMessage(username, t, p, self.clock.now_us()) for t, p in messages]
        asyncio.run(self.host.submit_messages(raws))

    def tick(self, ms: int = 1000) -> int:
        return self.clock.advance(ms * 1000) // 1000


@pytest.fixture
def w() -> World:
    clock = FixedClock(T0 * 1000)
    repo = InMemoryRegistry(clock=clock)
    registry = RegistryService(repo)
    registry.create_tenant(PLATFORM, "acme")
    _, token = registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(token)
    registry.put_asset_type(ctx, "press", measurements=[
        MeasurementDef("temperature", "degC"), MeasurementDef("force", "kN"),
        MeasurementDef("running", "", ValueType.BOOLEAN), MeasurementDef("mode", "", ValueType.STRING)])
    site = registry.create_asset(ctx, Level.SITE, "berlin", timezone="UTC")
    area = registry.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    machines, series = {}, {}
    for name in ("press-1", "press-2"):
        m = registry.create_asset(ctx, Level.MACHINE, name, parent_id=line.id, type_name="press")
        machines[name] = m.id
        for s in registry.series_of(ctx, m.id):
            series[f"{name}/{s.measurement}"] = s.id
    gw, _ = registry.create_device(ctx, "gw-1", [line.id], gateway=True)
    bindings = SparkplugBindings(registry)
    bindings.put(ctx, gw.id, SparkplugSpec(node=f"{LINE}/press-1", devices={"Press2": f"{LINE}/press-2"},
                                           metrics={"Oil/Temp": MetricMap("temperature", scale=0.1),
                                                    "Debug": None}))
    directory = SparkplugDirectoryService(repo, RegistryCache(repo, clock), clock, check_every_us=0)
    sink, publisher = Sink(), Publisher()
    host = SparkplugHost(directory, sink, publisher, now_us=clock.now_us, rebirth_retry_s=0.0)
    return World(clock, repo, registry, ctx, bindings, directory, sink, publisher, host, gw.id, series, machines)


def _rebirths(w: World) -> list[str]:
    out = []
    for topic, payload, qos, retain in w.publisher.sent:
        if "/NCMD/" in topic:
            metric = decode_payload(payload).metric(REBIRTH_METRIC)
            assert metric is not None and metric.value is True and qos == 0 and not retain
            out.append(topic)
    return out


def test_births_and_data_by_alias_become_samples_of_the_mapped_machines(w: World) -> None:
    edge = w.edge()
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 215, "Uptime": 5, "Debug": "x"}, t1),
           edge.dbirth("Press2", {"force": 12.5, "running": True, "mode": "auto"}, t1))
    t2 = w.tick()
    w.send(edge.ndata({"Oil/Temp": 220}, t2), edge.ddata("Press2", {"force": 13.0, "running": False}, t2))
    s = w.series
    assert sorted(w.sink.good()) == sorted([
        (s["press-1/temperature"], t1 * 1000, pytest.approx(21.5), None),
        (s["press-2/force"], t1 * 1000, 12.5, None), (s["press-2/running"], t1 * 1000, 1.0, None),
        (s["press-2/mode"], t1 * 1000, None, "auto"),
        (s["press-1/temperature"], t2 * 1000, pytest.approx(22.0), None),
        (s["press-2/force"], t2 * 1000, 13.0, None), (s["press-2/running"], t2 * 1000, 0.0, None),
    ])
    assert w.sink.events() == [(w.machines["press-1"], "status", "online"), (w.machines["press-2"], "status", "online")]
    # Uptime is process data mapped to nothing: one dead letter per message; bdSeq, Node Control/*,
    # Properties/* and the left-out Debug are not dead letters
    assert w.sink.dead() == [(Reason.UNKNOWN_MEASUREMENT,
                              f"not measurements of {LINE}/press-1 (the edge node's own metrics): 'Uptime'")]
    assert w.publisher.sent == []
    assert w.host.state.status(edge.node) is NodeStatus.ONLINE


def test_a_sequence_gap_asks_for_a_rebirth_and_holds_the_data_until_it_comes(w: World) -> None:
    edge = w.edge()
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200}, t1), edge.dbirth("Press2", {"force": 1.0}, t1))
    edge.skip()
    t2 = w.tick()
    w.send(edge.ddata("Press2", {"force": 2.0}, t2))
    assert _rebirths(w) == ["spBv1.0/acme/NCMD/gw-1"]
    stale = [(sid, ts) for sid, ts, v, _, q in w.sink.samples() if q == Quality.BAD and ts == t2 * 1000]
    born = ["press-1/temperature", "press-2/force", "press-2/running", "press-2/mode"]  # (births send nulls too)
    assert sorted(stale) == sorted((w.series[name], t2 * 1000) for name in born)  # the last values end here
    w.send(edge.ddata("Press2", {"force": 3.0}, w.tick()))  # still waiting: dropped, asked again
    assert len(_rebirths(w)) == 2
    t4 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 210}, t4), edge.dbirth("Press2", {"force": 4.0}, t4))  # same bdSeq
    w.send(edge.ddata("Press2", {"force": 5.0}, (t5 := w.tick())))
    forces = [(ts, v) for sid, ts, v, _ in w.sink.good() if sid == w.series["press-2/force"]]
    assert forces == [(t1 * 1000, 1.0), (t4 * 1000, 4.0), (t5 * 1000, 5.0)]
    assert len(_rebirths(w)) == 2


def test_death_only_with_the_current_bdseq_and_a_reconnect_with_a_new_one(w: World) -> None:
    edge = w.edge()
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200}, t1), edge.dbirth("Press2", {"force": 1.0}, t1))
    old_will = edge.will()
    edge.reconnect()  # the node reconnects (bdSeq 1) before its old Will arrives
    t2 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 201}, t2), edge.dbirth("Press2", {"force": 2.0}, t2))
    w.send(old_will)
    assert w.host.state.status(edge.node) is NodeStatus.ONLINE and w.host.state.bd_seq(edge.node) == 1
    offline = [e for e in w.sink.events() if e[2] == "offline"]
    assert offline == []
    w.tick()
    w.send(edge.will())
    assert w.host.state.status(edge.node) is NodeStatus.OFFLINE
    assert sorted(e[0] for e in w.sink.events() if e[2] == "offline") == sorted(w.machines.values())
    assert _rebirths(w) == []
    edge.reconnect()
    t3 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 202}, t3), edge.dbirth("Press2", {"force": 3.0}, t3))
    forces = [v for sid, _, v, _ in w.sink.good() if sid == w.series["press-2/force"]]
    assert forces == [1.0, 2.0, 3.0]


def test_a_device_death_takes_its_machine_offline_and_its_values_stale(w: World) -> None:
    edge = w.edge()
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200}, t1), edge.dbirth("Press2", {"force": 1.0, "mode": "auto"}, t1))
    t2 = w.tick()
    w.send(edge.ddeath("Press2", t2))
    assert w.sink.events()[-1] == (w.machines["press-2"], "status", "offline")
    stale = sorted(sid for sid, ts, v, _, q in w.sink.samples() if q == Quality.BAD and ts == t2 * 1000)
    assert stale == sorted(w.series[f"press-2/{m}"] for m in ("force", "running", "mode"))
    w.send(edge.ddata("Press2", {"force": 2.0}, w.tick()))  # data of a dead device: a rebirth
    assert len(_rebirths(w)) == 1


def test_wrong_values_and_unmapped_devices_are_dead_letters(w: World) -> None:
    edge = w.edge()
    edge.devices["Press9"] = {"force": MetricDef(20, DataType.DOUBLE)}
    edge.devices["Press2"]["mode"] = MetricDef(12, DataType.INT32)  # an integer into a string measurement
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200}, t1), edge.dbirth("Press2", {"force": 1.0, "mode": 3}, t1),
           edge.dbirth("Press9", {"force": 1.0}, t1))
    assert sorted(w.sink.dead()) == sorted([
        (Reason.UNKNOWN_MEASUREMENT, f"not measurements of {LINE}/press-1 (the edge node's own metrics): 'Uptime'"),
        (Reason.WRONG_TYPE, "mode: expected a string, got int"),
        (Reason.UNKNOWN_ASSET, "no machine for Sparkplug device 'Press9' of acme/gw-1 ('force')"),
    ])
    assert w.sink.batches[0].dead_letters[0].tenant_id == w.ctx.tenant_id


def test_a_failed_commit_leaves_the_state_as_it_was(w: World) -> None:
    edge = w.edge()
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200}, t1))
    msg = edge.ndata({"Oil/Temp": 201}, w.tick())
    w.sink.down = True
    with pytest.raises(StoreUnavailable):
        w.send(msg)
    w.sink.down = False
    w.send(msg)  # the transport delivers it again: no gap, no rebirth
    w.send(edge.ndata({"Oil/Temp": 202}, w.tick()))
    assert _rebirths(w) == []
    assert [v for sid, _, v, _ in w.sink.good()] == pytest.approx([20.0, 20.1, 20.2])


def test_messages_arriving_together_go_into_one_commit(w: World) -> None:
    edge = w.edge()
    t1 = w.tick()
    messages = [edge.nbirth({"Oil/Temp": 200}, t1)] + [edge.ndata({"Oil/Temp": 200 + i}, t1 + i) for i in range(1, 20)]

    async def run() -> None:
        await asyncio.gather(*(w.host.submit_messages([RawMessage("", t, p, w.clock.now_us())]) for t, p in messages))

    asyncio.run(run())
    assert len(w.sink.good()) == 20 and len(w.sink.batches) == 1
    assert _rebirths(w) == []


def test_a_lost_broker_session_makes_every_node_stale_and_asks_for_rebirths(w: World) -> None:
    edge = w.edge()
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200}, t1), edge.dbirth("Press2", {"force": 1.0}, t1))
    w.tick()
    asyncio.run(w.host.session_lost())
    assert _rebirths(w) == ["spBv1.0/acme/NCMD/gw-1"]
    assert w.host.state.status(edge.node) is NodeStatus.STALE
    stale = [sid for sid, ts, _, _, q in w.sink.samples() if q == Quality.BAD and ts == w.clock.now_us()]
    assert len(stale) == 4  # the node's and its device's series
    w.send(edge.ndata({"Oil/Temp": 201}, w.tick()))  # dropped until the rebirth
    t3 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 202}, t3))
    assert [v for _, ts, v, _ in w.sink.good() if ts == t3 * 1000] == pytest.approx([20.2])


def test_an_unknown_edge_node_named_like_a_device_waits_in_quarantine(w: World) -> None:
    line = w.registry.repo.find_asset(w.ctx.require_tenant(), tuple(LINE.split("/")))
    assert line is not None
    plc, _ = w.registry.create_device(w.ctx, "plc-7", [line.id], gateway=True)
    edge = w.edge(edge_node="plc-7")
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200, "Uptime": 1}, t1), edge.dbirth("Press2", {"force": 1.0}, t1),
           username="acme.plc-7")
    assert w.sink.batches == [] and w.sink.dead() == []
    node = w.bindings.node(w.ctx, plc.id)
    assert node.status is Approval.QUARANTINED and (node.group, node.edge_node) == ("acme", "plc-7")
    assert node.seen == {"": ["Debug", "Oil/Temp", "Uptime"], "Press2": ["force", "mode", "running"]}
    w.send(edge.ddata("Press2", {"force": 2.0}, w.tick()))
    assert w.sink.batches == [] and _rebirths(w) == []

    w.bindings.approve(w.ctx, plc.id, SparkplugSpec(devices={"Press2": f"{LINE}/press-2"}))
    w.send(edge.ddata("Press2", {"force": 3.0}, w.tick()))  # approved: ask for the births again
    assert _rebirths(w) == ["spBv1.0/acme/NCMD/plc-7"]
    t2 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 200}, t2), edge.dbirth("Press2", {"force": 4.0}, t2))
    assert [(sid, v) for sid, _, v, _ in w.sink.good()] == [(w.series["press-2/force"], 4.0)]


def test_strangers_are_dead_letters(w: World) -> None:
    t1 = w.tick()
    w.send(w.edge(edge_node="ghost").nbirth({}, t1), w.edge(group="globex").nbirth({}, t1),
           w.edge(group="acme.north", edge_node="gw-1").nbirth({}, t1))
    w.send(w.edge().nbirth({}, t1), username="acme.plc-9")  # the embedded broker says who sent it
    assert [r for r, _ in w.sink.dead()] == [Reason.UNKNOWN_DEVICE] * 4
    assert "no tenant owns Sparkplug group 'globex'" in w.sink.dead()[1][1]
    assert "'acme.plc-9' may not publish as edge node acme/gw-1" in w.sink.dead()[3][1]
    assert w.host.state.nodes() == []


def test_a_disabled_device_stores_nothing(w: World) -> None:
    w.registry.update_device(w.ctx, w.gw_id, enabled=False)
    w.send(w.edge().nbirth({"Oil/Temp": 1}, w.tick()))
    assert [r for r, _ in w.sink.dead()] == [Reason.DEVICE_DISABLED]


def test_the_host_answers_a_late_will_of_its_own(w: World) -> None:
    asyncio.run(w.host.announce(T0))
    assert w.publisher.sent[-1][0] == "spBv1.0/STATE/shopfloor"
    assert parse_state_payload(w.publisher.sent[-1][1]).online and w.publisher.sent[-1][2:] == (1, True)
    old = state_message("shopfloor", False, T0 - 5000)
    other = state_message("ignition", False, T0)
    w.send((old.topic, old.payload), (other.topic, other.payload), ("spBv1.0/acme/NCMD/gw-1", b"\x00"))
    assert len(w.publisher.sent) == 2 and parse_state_payload(w.publisher.sent[-1][1]).online
    asyncio.run(w.host.retire())
    assert parse_state_payload(w.publisher.sent[-1][1]) == parse_state_payload(state_message("shopfloor", False, T0).payload)
    assert w.sink.dead() == []
    w.send((old.topic, old.payload), ("spBv1.0/acme/NCMD/gw-1", b"\x00"), username="acme.gw-1")
    assert [r for r, _ in w.sink.dead()] == [Reason.OUTSIDE_PREFIX] * 2  # a device publishing what hosts do


def test_the_router_sends_sparkplug_to_the_host_and_the_rest_to_ingest(w: World) -> None:
    @dataclass
    class Ingest:
        got: list[str] = field(default_factory=list)

        async def submit_messages(self, messages: list[RawMessage]) -> None:
            self.got += [m.topic for m in messages]

    ingest = Ingest()
    router = SparkplugRouter(ingest, w.host)
    edge = w.edge()
    topic, payload = edge.nbirth({"Oil/Temp": 1}, w.tick())
    json_topic = "shopfloor/v1/acme/berlin/press-shop/line-1/press-1/telemetry"
    now = w.clock.now_us()
    asyncio.run(router.submit_messages([RawMessage("", json_topic, b"{}", now), RawMessage("", topic, payload, now)]))
    assert ingest.got == [json_topic] and len(w.sink.good()) == 1


# -- commands -------------------------------------------------------------------------------------------

def test_commands_are_ncmd_and_dcmd_with_names_and_types() -> None:
    pub = Publisher()
    commander = SparkplugCommander(pub, now_ms=lambda: T0)
    node = EdgeNode("acme", "gw-1")
    topic = asyncio.run(commander.send(node.group, node.edge_node, None, [MetricWrite(REBIRTH_METRIC, True)]))
    assert topic == "spBv1.0/acme/NCMD/gw-1"
    topic = asyncio.run(commander.send("acme", "gw-1", "Press2", [MetricWrite("Setpoint", 12.5),
                                                                  MetricWrite("Count", -3, "int16"),
                                                                  MetricWrite("Mode", "auto")]))
    assert topic == "spBv1.0/acme/DCMD/gw-1/Press2"
    payload = decode_payload(pub.sent[-1][1])
    assert payload.seq is None and payload.timestamp == T0
    assert [(m.name, m.datatype, m.value) for m in payload.metrics] == [
        ("Setpoint", DataType.DOUBLE, 12.5), ("Count", DataType.INT16, -3), ("Mode", DataType.STRING, "auto")]
    assert pub.sent[-1][2:] == (0, False)
    assert command_datatype(MetricWrite("x", 1, "UInt32")) is DataType.UINT32
    assert command_datatype(MetricWrite("x", 1)) is DataType.INT64
    for bad in (MetricWrite("x", 1, "Int99"), MetricWrite("x", 300, "Int8"), MetricWrite("x", "a", "Double")):
        with pytest.raises(InvalidInput):
            asyncio.run(commander.send("acme", "gw-1", None, [bad]))
    with pytest.raises(InvalidInput):
        asyncio.run(commander.send("acme", "gw/1", None, [MetricWrite("x", 1)]))


def test_topics_are_read_once_but_a_malformed_one_is_a_dead_letter_every_time(
        w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(host_module, "MAX_PLANS", 2)  # the host's data plans are made again every 2 look-ups
    edge = w.edge()
    t1 = w.tick()
    w.send(edge.nbirth({"Oil/Temp": 215}, t1), edge.dbirth("Press2", {"force": 12.5}, t1))
    for _ in range(3):
        t = w.tick()
        w.send(edge.ndata({"Oil/Temp": 220}, t), edge.ddata("Press2", {"force": 13.0}, t),
               ("spBv1.0/acme/NDATA", b""), ("spBv1.0/acme/NDATA/gw-1/Press2", b""))
    s = w.series
    stored = w.sink.good()
    assert len(stored) == 2 + 3 * 2
    assert stored.count((s["press-2/force"], t * 1000, 13.0, None)) == 1
    topics = [detail for reason, detail in w.sink.dead() if reason is Reason.UNKNOWN_TOPIC]
    assert topics == ["malformed Sparkplug topic: 'spBv1.0/acme/NDATA'",
                      "NDATA takes no device id: 'spBv1.0/acme/NDATA/gw-1/Press2'"] * 3
    assert w.host.state.status(edge.node) is NodeStatus.ONLINE and _rebirths(w) == []
    # every topic of a node carries one EdgeNode object: look-ups by it compare identity
    birth, data = (parse_topic(edge.nbirth({}, t)[0]), parse_topic(edge.ddata("Press2", {}, t)[0]))
    assert isinstance(birth, SparkplugTopic) and isinstance(data, SparkplugTopic) and birth.node is data.node
