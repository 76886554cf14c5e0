"""The host's fast path for NDATA/DDATA (``host_fast``, with the compiled reader of ``host_wire``)
against its general path: for any data message, well-formed or not, both give the same commits (samples, events, dead letters with their reasons and
details), the same rebirth requests and the same state; and the fast path takes the plain messages."""

from __future__ import annotations

import asyncio
import functools
import math
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.connectors.sparkplug.codec import decode_payload
from shopfloor.connectors.sparkplug.host import SparkplugHost
from shopfloor.connectors.sparkplug.host_fast import DataPlan, make_plan, parse_message, read_floats, read_rows
from shopfloor.connectors.sparkplug.host_state import HostState
from shopfloor.connectors.sparkplug.host_wire import WIRE
from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.connectors.sparkplug.topics import parse_topic
from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.sparkplug import MetricMap, SparkplugSpec
from shopfloor.domain.tenancy import Role
from shopfloor.ports.ingest import RawMessage
from shopfloor.ports.sparkplug import MachineTarget
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.sparkplug import SparkplugBindings
from shopfloor.services.sparkplug_directory import SparkplugDirectoryService
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry
from shopfloor.testing.sparkplug_edge import EdgeNodeSim, MetricDef
from tests.unit import sparkplug_wire as w

NOW_MS = 1_700_000_000_000
LINE = "berlin/press-shop/line-1"
NODE_METRICS = {"Oil/Temp": MetricDef(1, DataType.INT32), "Uptime": MetricDef(2, DataType.INT64),
                "Debug": MetricDef(3, DataType.STRING)}
DEVICE_METRICS = {"force": MetricDef(10, DataType.DOUBLE), "running": MetricDef(11, DataType.BOOLEAN),
                  "mode": MetricDef(12, DataType.STRING), "temperature": MetricDef(13, DataType.FLOAT),
                  "count": MetricDef(14, DataType.INT64), "raw": MetricDef(15, DataType.UNKNOWN),
                  "Properties/Serial": MetricDef(16, DataType.STRING)}
FLOATS = {name: DEVICE_METRICS[name] for name in ("force", "temperature")}  # messages read_floats takes whole
ODD_ALIASES = [0, 1, 10, 99]
ODD_NAMES = ["", "nope", "Oil/Temp", "force"]


@pytest.fixture(scope="module", autouse=True)
def compiled_reader() -> None:
    """The fast path as it runs once the wire reader is compiled (host_wire)."""
    WIRE.start(wait=True)


class Sink:
    def __init__(self) -> None:
        self.batches: list[IngestBatch] = []

    async def submit(self, batch: IngestBatch) -> int:
        self.batches.append(batch)
        return len(self.batches)


@dataclass
class Publisher:
    def __post_init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos, retain))


@functools.cache
def directory() -> tuple[SparkplugDirectoryService, FixedClock]:
    """One plant for every example: a gateway bound as edge node gw-1, its own metrics on press-1
    (Oil/Temp scaled into temperature, Debug left out), device Press2 on press-2."""
    clock = FixedClock(NOW_MS * 1000)
    repo = InMemoryRegistry(clock=clock)
    registry = RegistryService(repo)
    registry.create_tenant(PLATFORM, "acme")
    _, token = registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(token)
    registry.put_asset_type(ctx, "press", measurements=[
        MeasurementDef("temperature", "degC"), MeasurementDef("force", "kN"), MeasurementDef("count", ""),
        MeasurementDef("running", "", ValueType.BOOLEAN), MeasurementDef("mode", "", ValueType.STRING)])
    site = registry.create_asset(ctx, Level.SITE, "berlin", timezone="UTC")
    area = registry.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    for name in ("press-1", "press-2"):
        registry.create_asset(ctx, Level.MACHINE, name, parent_id=line.id, type_name="press")
    gw, _ = registry.create_device(ctx, "gw-1", [line.id], gateway=True)
    SparkplugBindings(registry).put(ctx, gw.id, SparkplugSpec(
        node=f"{LINE}/press-1", devices={"Press2": f"{LINE}/press-2"},
        metrics={"Oil/Temp": MetricMap("temperature", scale=0.1), "Debug": None, "count": MetricMap("count", 2.0, 1.0)}))
    return SparkplugDirectoryService(repo, RegistryCache(repo, clock), clock), clock


# -- data messages on the wire, plain and odd ------------------------------------------------------------

_DOUBLES = st.one_of(st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf, 1e308]), st.floats(width=64))
_KINDS: dict[str, st.SearchStrategy[object]] = {
    "none": st.none(),
    "double": _DOUBLES,
    "float": st.floats(width=32),
    "int": st.sampled_from([0, 1, 2, 127, 2**31, 2**32 - 1]),
    "long": st.sampled_from([0, 1, 5, 2**63, 2**64 - 1]),
    "bool": st.booleans(),
    "string": st.sampled_from(["", "auto", "x" * 2000]),
    "bytes": st.sampled_from([b"", b"\x00\x00\x00\x00\x00\x00\xf0\x3f", b"\xff"]),
    "dataset": st.none(),
    "template": st.none(),
}


def _value(kind: str, v: object) -> bytes:
    if kind == "double":
        assert isinstance(v, float)
        return w.f64(w.M_DOUBLE, v)
    if kind == "float":
        assert isinstance(v, float)
        return w.f32(w.M_FLOAT, v)
    if kind in ("int", "long"):
        assert isinstance(v, int)
        return w.uint(w.M_INT if kind == "int" else w.M_LONG, v)
    if kind == "bool":
        return w.boolean(w.M_BOOLEAN, bool(v))
    if kind == "string":
        assert isinstance(v, str)
        return w.text(w.M_STRING, v)
    if kind == "bytes":
        assert isinstance(v, bytes)
        return w.blob(w.M_BYTES, v)
    if kind == "dataset":
        return w.message(w.M_DATASET)
    if kind == "template":
        return w.message(w.M_TEMPLATE)
    return b""


_ODD = st.sampled_from([False] * 19 + [True])


def _odd(draw: st.DrawFn) -> bool:
    """Mostly plain, sometimes odd: so that messages the fast path takes are common."""
    return draw(_ODD)


_PLAIN = {DataType.DOUBLE: "double", DataType.FLOAT: "float", DataType.INT32: "int", DataType.INT64: "long",
          DataType.BOOLEAN: "bool", DataType.STRING: "string", DataType.UNKNOWN: "double"}


@st.composite
def metrics(draw: st.DrawFn, defs: dict[str, MetricDef]) -> bytes:
    parts: list[bytes] = []
    name = draw(st.sampled_from(list(defs)))
    alias = draw(st.sampled_from(ODD_ALIASES)) if _odd(draw) else defs[name].alias
    how = draw(st.sampled_from(["neither", "bad name"])) if _odd(draw) else draw(
        st.sampled_from(["alias", "alias", "alias", "name", "both"]))
    if how in ("alias", "both", "bad name"):
        parts.append(w.uint(w.M_ALIAS, alias))
    if how in ("name", "both"):
        parts.append(w.text(w.M_NAME, draw(st.sampled_from(ODD_NAMES)) if _odd(draw) else name))
    if how == "bad name":
        parts.append(w.blob(w.M_NAME, b"\xff\xfe"))
    kind = draw(st.sampled_from(list(_KINDS))) if _odd(draw) else _PLAIN[defs[name].datatype]
    parts.append(_value(kind, draw(_KINDS[kind])))
    ts = draw(st.sampled_from([None, None, NOW_MS - 1000, NOW_MS, 0, NOW_MS + 3_600_000, NOW_MS - 40 * 86_400_000]))
    if ts is not None:
        parts.append(w.uint(w.M_TIMESTAMP, ts))
    odd_types = [None, 0, w.DOUBLE, w.FLOAT, w.INT32, w.INT64, w.UINT8, w.BOOLEAN, w.STRING, w.DATASET, w.TEMPLATE,
                 w.BYTES, w.DOUBLE_ARRAY, w.PROPERTY_SET, 99]
    datatype = draw(st.sampled_from(odd_types if _odd(draw) else [None, int(defs[name].datatype)]))
    if datatype is not None:
        parts.append(w.uint(w.M_DATATYPE, datatype))
    flags = draw(st.sampled_from([(), (), (), (), ("null",), ("not null",), ("transient",), ("historical",)]))
    if "null" in flags or "not null" in flags:
        parts.append(w.boolean(w.M_IS_NULL, "null" in flags))
    if "transient" in flags:
        parts.append(w.boolean(w.M_IS_TRANSIENT, True))
    if "historical" in flags:
        parts.append(w.boolean(w.M_IS_HISTORICAL, True))
    extra = draw(st.sampled_from([None] * 8 + ["quality", "metadata"]))
    if extra == "quality":
        code = draw(st.sampled_from([0, 192, 500]))
        parts.append(w.message(w.M_PROPERTIES, w.text(w.PS_KEYS, "Quality"),
                               w.message(w.PS_VALUES, w.uint(w.PV_TYPE, w.INT32), w.uint(w.PV_INT, code))))
    elif extra == "metadata":
        parts.append(w.message(w.M_METADATA, w.uint(w.MD_SIZE, 3)))
    return w.metric(*draw(st.permutations(parts)))


@st.composite
def data_messages(draw: st.DrawFn) -> list[tuple[str, bytes, str]]:
    """(topic, payload, what its seq is): NDATA/DDATA, mostly in sequence; after an odd one (which
    may have made the node stale) sometimes births again ("rebirth")."""
    out = []
    for _ in range(draw(st.integers(1, 8))):
        if out and out[-1][2] != "rebirth" and draw(st.sampled_from([False, False, False, True])):
            out.append(("", b"", "rebirth"))
        device = "Ghost" if _odd(draw) else draw(st.sampled_from([None, "Press2", "Press2"]))
        topic = "spBv1.0/acme/NDATA/gw-1" if device is None else f"spBv1.0/acme/DDATA/gw-1/{device}"
        defs = NODE_METRICS if device is None else draw(st.sampled_from([DEVICE_METRICS, DEVICE_METRICS, FLOATS]))
        body = b"".join(draw(st.lists(metrics(defs), max_size=6)))
        if draw(st.booleans()):
            body = w.uint(w.P_TIMESTAMP, draw(st.sampled_from([NOW_MS, NOW_MS + 3_600_000, 0]))) + body
        if draw(st.integers(0, 9)) == 0:
            body += w.blob(w.P_UUID, b"\xff") if draw(st.booleans()) else w.text(w.P_UUID, "u")
        seq = draw(st.sampled_from(["wrong", "none"])) if _odd(draw) else "next"
        if _odd(draw):
            body = body[:-1] + b"\x0a"  # truncated
        out.append((topic, body, seq))
    return out


def _run(fast: bool, data: list[tuple[str, bytes, str]], split: int) -> tuple[object, ...]:
    directory_, clock = directory()
    sink, publisher = Sink(), Publisher()
    host = SparkplugHost(directory_, sink, publisher, now_us=clock.now_us, rebirth_retry_s=0.0, fast_data=fast)
    edge = EdgeNodeSim("acme", "gw-1", metrics=dict(NODE_METRICS), devices={"Press2": dict(DEVICE_METRICS)})
    now = clock.now_us()

    def raw(topic: str, payload: bytes) -> RawMessage:
        return RawMessage("", topic, payload, now)

    def born() -> list[RawMessage]:
        return [raw(*edge.nbirth({"Oil/Temp": 200}, NOW_MS - 5000)), raw(*edge.dbirth("Press2", {}, NOW_MS - 5000))]

    births = born()
    messages = []
    seq = edge.seq
    for topic, body, how in data:
        if how == "rebirth":
            messages += born()
            seq = edge.seq
            continue
        seq = (seq + 1) % 256
        if how == "next":
            body = w.uint(w.P_SEQ, seq) + body
        elif how == "wrong":
            body = w.uint(w.P_SEQ, (seq + 7) % 256) + body
        messages.append(raw(topic, body))
    death = raw(*edge.ndeath())

    async def go() -> None:
        await host.submit_messages(births)
        await host.submit_messages(messages[:split])
        await host.submit_messages(messages[split:])
        await host.submit_messages([death])  # stale marks for every series stored since the births

    asyncio.run(go())
    return sink.batches, publisher.sent, host.state.snapshot(), host.stats


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_messages(), st.integers(0, 6))
def test_the_fast_path_and_the_general_path_give_the_same_commits_and_state(
        data: list[tuple[str, bytes, str]], split: int) -> None:
    general = _run(False, data, split)
    fast = _run(True, data, split)
    for got, want in zip(fast, general, strict=True):
        assert repr(got) == repr(want)  # repr: NaN is not equal to itself, nor are the dicts holding one


@functools.cache
def press2_plan() -> DataPlan:
    """The plan of device Press2 (DEVICE_METRICS, born by alias) on machine press-2."""
    res = directory()[0].resolve("acme", "gw-1")
    assert res.binding is not None
    edge = EdgeNodeSim("acme", "gw-1", devices={"Press2": dict(DEVICE_METRICS)})
    state = HostState()
    for topic, payload in (edge.nbirth({}, NOW_MS), edge.dbirth("Press2", {}, NOW_MS)):
        parsed = parse_topic(topic)
        assert not isinstance(parsed, str)
        state.handle(parsed, decode_payload(payload))  # type: ignore[arg-type]
    parsed = parse_topic("spBv1.0/acme/DDATA/gw-1/Press2")
    assert not isinstance(parsed, str)
    scope = state.data_scope(parsed, (edge.seq + 1) % 256)
    assert scope is not None
    return make_plan(scope, res.binding.machines["Press2"])


def test_the_fast_path_takes_plain_data_and_leaves_the_rest_to_the_general_path() -> None:
    plan = press2_plan()
    target: MachineTarget = plan.target
    edge = EdgeNodeSim("acme", "gw-1", devices={"Press2": dict(DEVICE_METRICS)})
    _, payload = edge.ddata("Press2", {"force": 2.5, "running": True, "mode": "auto"}, NOW_MS)
    message = parse_message(payload)
    rows = read_rows(message, plan)
    assert rows is not None
    assert [(name, value, ts) for name, _, _, value, ts, _, _ in rows] == [
        ("force", 2.5, NOW_MS), ("running", True, NOW_MS), ("mode", "auto", NOW_MS)]
    with_quality = w.payload(w.uint(w.P_SEQ, 3), w.metric(
        w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0),
        w.message(w.M_PROPERTIES, w.text(w.PS_KEYS, "Quality"),
                  w.message(w.PS_VALUES, w.uint(w.PV_TYPE, w.INT32), w.uint(w.PV_INT, 0)))))
    assert read_rows(parse_message(with_quality), plan) is None  # a property: the general path reads it
    unknown_alias = w.payload(w.uint(w.P_SEQ, 3), w.metric(w.uint(w.M_ALIAS, 99), w.f64(w.M_DOUBLE, 1.0)))
    assert read_rows(parse_message(unknown_alias), plan) is None  # the general path asks for a rebirth
    assert parse_message(b"\x0a") is None

    # all Float/Double measurements: straight into columns; anything else is left to read_rows
    now = NOW_MS * 1000
    force, temperature = (target.metrics[n] for n in ("force", "temperature"))
    assert force is not None and temperature is not None

    def floats(*metrics: bytes, payload_ts: int | None = NOW_MS) -> object:
        head = w.uint(w.P_SEQ, 3) + (w.uint(w.P_TIMESTAMP, payload_ts) if payload_ts is not None else b"")
        return read_floats(parse_message(w.payload(head, *metrics)), plan, now, now + 300_000_000,
                           now - 86_400_000_000)

    plain = (w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 2.5)),
             w.metric(w.uint(w.M_ALIAS, 13), w.f32(w.M_FLOAT, 0.0), w.uint(w.M_TIMESTAMP, NOW_MS - 1000)))
    assert floats(*plain) == ([force.series_id, temperature.series_id], [now, now - 1_000_000], [2.5, 0.0])
    assert floats(*plain, payload_ts=None) == ([force.series_id, temperature.series_id],
                                               [now, now - 1_000_000], [2.5, 0.0])  # no ts: received
    assert floats(w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0), w.boolean(w.M_IS_TRANSIENT, True))) == (
        [], [], [])  # transient: read, not stored
    assert floats(plain[0], w.metric(w.uint(w.M_ALIAS, 11), w.boolean(w.M_BOOLEAN, True))) is None  # a Boolean
    assert floats(w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, math.nan))) is None  # a dead letter
    assert floats(w.metric(w.uint(w.M_ALIAS, 10), w.f64(w.M_DOUBLE, 1.0),
                           w.uint(w.M_TIMESTAMP, NOW_MS + 3_600_000))) is None  # in the future: a dead letter
    assert floats(w.metric(w.uint(w.M_ALIAS, 10), w.boolean(w.M_IS_NULL, True))) is None  # null: a bad sample
    assert floats(w.metric(w.uint(w.M_ALIAS, 99), w.f64(w.M_DOUBLE, 1.0))) is None  # unknown alias
