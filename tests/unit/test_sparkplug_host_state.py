"""The host's per-edge-node state machine: births, data by alias, sequence gaps and rebirths, deaths by
bdSeq, reconnects, device deaths; the STATE message and the topic namespace."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shopfloor.connectors.sparkplug import sparkplug_b_pb2 as pb
from shopfloor.connectors.sparkplug.codec import decode_payload, encode_payload
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError, SparkplugEncodeError
from shopfloor.connectors.sparkplug.host_messages import (
    REBIRTH_METRIC,
    HostStatus,
    parse_state_payload,
    rebirth_message,
    state_message,
)
from shopfloor.connectors.sparkplug.host_state import (
    Action,
    HostState,
    Ignored,
    MarkOffline,
    MarkOnline,
    MarkStale,
    NodeStatus,
    Rebirth,
    Store,
    StoredMetric,
    is_measurement,
)
from shopfloor.connectors.sparkplug.model import (
    DataType,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Template,
)
from shopfloor.connectors.sparkplug.topics import EdgeNode, MessageType, SparkplugTopic, StateTopic, parse_topic
from tests.unit import sparkplug_wire as w
from tests.unit.sparkplug_samples import T0, hand_built_nbirth

NODE = EdgeNode("plant1", "gw-1")
UNIT = PropertySet((("engUnit", PropertyValue(DataType.STRING, "degC")),))


def _nbirth(bd_seq: int = 0, seq: int = 0, *extra: Metric) -> Payload:
    return Payload(timestamp=T0, seq=seq, metrics=(
        Metric(name="bdSeq", timestamp=T0, datatype=DataType.INT64, value=bd_seq),
        Metric(name="Node Control/Rebirth", timestamp=T0, datatype=DataType.BOOLEAN, value=False),
        Metric(name="Node Control/Scan Rate", alias=9, timestamp=T0, datatype=DataType.INT64, value=1000),
        Metric(name="Properties/OS", timestamp=T0, datatype=DataType.STRING, value="linux"),
        Metric(name="Temperature", alias=1, timestamp=T0, datatype=DataType.FLOAT, value=20.5, properties=UNIT),
        Metric(name="Offset", alias=2, timestamp=T0, datatype=DataType.INT8, value=-3),
        *extra,
    ))  # fmt: skip


def _dbirth(seq: int) -> Payload:
    return Payload(timestamp=T0, seq=seq, metrics=(
        Metric(name="Device Control/Rebirth", timestamp=T0, datatype=DataType.BOOLEAN, value=False),
        Metric(name="Force", alias=10, timestamp=T0, datatype=DataType.DOUBLE, value=1.0),
        Metric(name="Good", alias=11, timestamp=T0, datatype=DataType.UINT32, value=0),
    ))  # fmt: skip


def _data(seq: int | None, *metrics: Metric) -> Payload:
    return Payload(timestamp=T0 + 5, seq=seq, metrics=metrics)


def _death(bd_seq: int) -> Payload:
    return Payload(metrics=(Metric(name="bdSeq", datatype=DataType.INT64, value=bd_seq),))


def _wire(payload: Payload, *, untyped: bool) -> Payload:
    """Through the codec, as it arrives; data messages carry no data types (the spec says they should not)."""
    raw = encode_payload(payload)
    if untyped:
        message = pb.Payload.FromString(raw)
        for metric in message.metrics:
            metric.ClearField("datatype")
        raw = message.SerializeToString()
    return decode_payload(raw)


def _send(host: HostState, kind: MessageType, payload: Payload, device: str | None = None,
          node: EdgeNode = NODE) -> list[Action]:
    untyped = kind in (MessageType.NDATA, MessageType.DDATA)
    return host.handle(SparkplugTopic(node, kind, device), _wire(payload, untyped=untyped))


def _born(host: HostState, bd_seq: int = 0) -> None:
    _send(host, MessageType.NBIRTH, _nbirth(bd_seq))
    _send(host, MessageType.DBIRTH, _dbirth(1), "press")


def _stores(actions: list[Action]) -> list[Store]:
    return [a for a in actions if isinstance(a, Store)]


# ------------------------------------------------------------------------------------------ births


def test_nbirth_brings_the_node_online_and_stores_only_measurements() -> None:
    host = HostState()
    actions = _send(host, MessageType.NBIRTH, _nbirth(bd_seq=3))
    assert actions[0] == MarkOnline(NODE, None, 3)
    [store] = _stores(actions)
    assert store.birth and store.device is None and store.seq == 0
    assert store.metrics == (
        StoredMetric("Temperature", 20.5, T0, DataType.FLOAT, engineering_unit="degC"),
        StoredMetric("Offset", -3, T0, DataType.INT8),
    )
    assert host.status(NODE) is NodeStatus.ONLINE and host.bd_seq(NODE) == 3


def test_dbirth_brings_the_device_online() -> None:
    host = HostState()
    _send(host, MessageType.NBIRTH, _nbirth())
    actions = _send(host, MessageType.DBIRTH, _dbirth(1), "press")
    assert actions == [
        MarkOnline(NODE, "press"),
        Store(NODE, "press", (StoredMetric("Force", 1.0, T0, DataType.DOUBLE),
                              StoredMetric("Good", 0, T0, DataType.UINT32)), birth=True, seq=1),
    ]  # fmt: skip
    assert host.devices(NODE) == {"press"}


def test_nbirth_may_start_at_any_sequence_number_and_255_wraps_to_0() -> None:
    host = HostState()
    _send(host, MessageType.NBIRTH, _nbirth(seq=254))
    assert _stores(_send(host, MessageType.NDATA, _data(255, Metric(alias=2, datatype=DataType.INT8, value=1))))
    actions = _send(host, MessageType.DBIRTH, _dbirth(0), "press")
    assert actions[0] == MarkOnline(NODE, "press")


# ------------------------------------------------------------------------------------- data by alias


def test_data_by_alias_is_resolved_to_names_and_typed_by_the_birth() -> None:
    host = HostState()
    _born(host)
    ndata = w.payload(
        w.uint(w.P_TIMESTAMP, T0 + 5), w.uint(w.P_SEQ, 2),
        w.metric(w.uint(w.M_ALIAS, 1), w.uint(w.M_TIMESTAMP, T0 + 4), w.f32(w.M_FLOAT, 21.0)),
        w.metric(w.uint(w.M_ALIAS, 2), w.uint(w.M_INT, w.two32(-100))),  # no timestamp: the payload's
        w.metric(w.uint(w.M_ALIAS, 9), w.uint(w.M_TIMESTAMP, T0 + 4), w.uint(w.M_LONG, 500)),  # Node Control
    )  # fmt: skip
    actions = host.handle(SparkplugTopic(NODE, MessageType.NDATA), decode_payload(ndata))
    assert actions == [Store(NODE, None, (
        StoredMetric("Temperature", 21.0, T0 + 4, DataType.FLOAT, engineering_unit="degC"),
        StoredMetric("Offset", -100, T0 + 5, DataType.INT8),
    ), birth=False, seq=2)]  # fmt: skip
    ddata = w.payload(w.uint(w.P_SEQ, 3), w.metric(w.uint(w.M_ALIAS, 11), w.uint(w.M_INT, 2**32 - 1)))
    [store] = host.handle(SparkplugTopic(NODE, MessageType.DDATA, "press"), decode_payload(ddata))
    assert isinstance(store, Store) and store.device == "press"
    assert store.metrics == (StoredMetric("Good", 2**32 - 1, None, DataType.UINT32),)


def test_data_by_name_nulls_history_quality_and_transients() -> None:
    host = HostState()
    _born(host)
    stale = PropertySet((("Quality", PropertyValue(DataType.INT32, 500)),))
    actions = _send(host, MessageType.NDATA, _data(
        2,
        Metric(name="Temperature", timestamp=T0 + 1, is_null=True),
        Metric(alias=1, timestamp=T0 + 2, value=19.5, datatype=DataType.FLOAT, is_historical=True, properties=stale),
        Metric(alias=2, timestamp=T0 + 3, value=1, datatype=DataType.INT8, is_transient=True),
    ))  # fmt: skip
    assert actions == [Store(NODE, None, (
        StoredMetric("Temperature", None, T0 + 1, DataType.FLOAT, is_null=True, engineering_unit="degC"),
        StoredMetric("Temperature", 19.5, T0 + 2, DataType.FLOAT, is_historical=True, quality=500,
                     engineering_unit="degC"),
    ), birth=False, seq=2)]  # fmt: skip


def test_bookkeeping_metrics_are_not_measurements() -> None:
    assert not any(map(is_measurement, ["bdSeq", "Node Control/Rebirth", "Device Control/Scan Rate", "Properties/OS"]))
    assert is_measurement("Line 1/Temperature") and is_measurement("Properties")


def test_template_definitions_are_not_stored_but_instances_are() -> None:
    host = HostState()
    definition = Template(metrics=(Metric(name="rpm", datatype=DataType.INT32, value=0),), is_definition=True)
    instance = Template(metrics=(Metric(name="rpm", datatype=DataType.INT32, value=5),), template_ref="_types_/M")
    actions = _send(host, MessageType.NBIRTH, _nbirth(0, 0,
                    Metric(name="_types_/M", datatype=DataType.TEMPLATE, value=definition, timestamp=T0),
                    Metric(name="M1", alias=5, datatype=DataType.TEMPLATE, value=instance, timestamp=T0)))
    [store] = _stores(actions)
    assert [m.name for m in store.metrics] == ["Temperature", "Offset", "M1"]
    assert store.metrics[-1].value == instance


# --------------------------------------------------------------------- sequence gaps and rebirths


def test_forced_sequence_gap_requests_one_rebirth_and_holds_data_until_nbirth() -> None:
    host = HostState()
    _born(host)
    assert _stores(_send(host, MessageType.NDATA, _data(2, Metric(alias=1, value=1.0, datatype=DataType.FLOAT))))
    gap = _send(host, MessageType.NDATA, _data(4, Metric(alias=1, value=2.0, datatype=DataType.FLOAT)))
    reason = "sequence gap: NDATA seq 4, expected 3"
    assert gap == [MarkStale(NODE, None, reason), Rebirth(NODE, reason)]
    assert host.status(NODE) is NodeStatus.STALE and host.nodes(NodeStatus.STALE) == [NODE]
    # held: nothing is stored and no second rebirth is asked while waiting
    for kind, device in [(MessageType.NDATA, None), (MessageType.DDATA, "press"), (MessageType.DBIRTH, "press")]:
        assert _send(host, kind, _data(5, Metric(alias=1, value=3.0, datatype=DataType.FLOAT)), device) == [
            Ignored(SparkplugTopic(NODE, kind, device), "node is stale, waiting for its NBIRTH")]
    # the rebirth: NBIRTH with the same bdSeq (no new MQTT connection), then the DBIRTHs
    rebirth = _send(host, MessageType.NBIRTH, _nbirth(bd_seq=0))
    assert rebirth[0] == MarkOnline(NODE, None, 0) and _stores(rebirth)[0].birth
    assert host.devices(NODE) == frozenset()  # devices must be born again
    assert _send(host, MessageType.DBIRTH, _dbirth(1), "press")[0] == MarkOnline(NODE, "press")
    [store] = _stores(_send(host, MessageType.DDATA, _data(2, Metric(alias=10, value=7.5, datatype=DataType.DOUBLE)),
                            "press"))  # fmt: skip
    assert store.metrics[0].name == "Force" and store.metrics[0].value == 7.5


@pytest.mark.parametrize(("payload", "reason"), [
    (_data(None, Metric(alias=1, value=1.0, datatype=DataType.FLOAT)), "sequence gap: NDATA seq None, expected 2"),
    (_data(2, Metric(alias=77, value=1.0, datatype=DataType.FLOAT)),
     "NDATA metric alias 77 is not in the birth certificate"),
    (_data(2, Metric(name="Pressure", value=1.0, datatype=DataType.FLOAT)),
     "NDATA metric 'Pressure' is not in the birth certificate"),
    (_data(2, Metric(alias=10, value=1.0, datatype=DataType.DOUBLE)),  # the device's alias, on the node
     "NDATA metric alias 10 is not in the birth certificate"),
    (_data(2, Metric(alias=2, value="x", datatype=DataType.STRING)),
     "metric alias 2: INT8 must be in int_value or long_value, not string_value"),
])  # fmt: skip
def test_protocol_errors_mark_the_node_stale_and_request_a_rebirth(payload: Payload, reason: str) -> None:
    host = HostState()
    _born(host)
    assert _send(host, MessageType.NDATA, payload) == [MarkStale(NODE, None, reason), Rebirth(NODE, reason)]
    assert host.status(NODE) is NodeStatus.STALE


def test_data_from_a_node_without_birth_requests_a_rebirth_once() -> None:
    host = HostState()
    first = _send(host, MessageType.NDATA, _data(17, Metric(alias=1, value=1.0, datatype=DataType.FLOAT)))
    assert first == [Rebirth(NODE, "NDATA from an unknown node (its NBIRTH was missed)")]
    assert _send(host, MessageType.NDATA, _data(18))[0] == Ignored(
        SparkplugTopic(NODE, MessageType.NDATA), "node is stale, waiting for its NBIRTH")
    assert _send(host, MessageType.NBIRTH, _nbirth())[0] == MarkOnline(NODE, None, 0)


def test_ddata_from_a_device_without_dbirth_requests_a_rebirth() -> None:
    host = HostState()
    _send(host, MessageType.NBIRTH, _nbirth())
    reason = "DDATA from device 'oven' without a DBIRTH"
    assert _send(host, MessageType.DDATA, _data(1), "oven") == [MarkStale(NODE, None, reason), Rebirth(NODE, reason)]


@pytest.mark.parametrize(("payload", "reason"), [
    (Payload(seq=0, metrics=(Metric(name="T", datatype=DataType.FLOAT, value=1.0),)), "NBIRTH without a bdSeq metric"),
    (Payload(metrics=(Metric(name="bdSeq", datatype=DataType.INT64, value=1),)),
     "NBIRTH sequence number None is not in 0..255"),
    (Payload(seq=256, metrics=(Metric(name="bdSeq", datatype=DataType.INT64, value=1),)),
     "NBIRTH sequence number 256 is not in 0..255"),
    (_nbirth(0, 0, Metric(name="Other", alias=1, datatype=DataType.FLOAT, value=1.0)),
     "NBIRTH gives alias 1 to 'Temperature' and 'Other'"),
    (_nbirth(0, 0, Metric(alias=5, datatype=DataType.FLOAT, value=1.0)), "NBIRTH metric alias 5 has no name"),
])  # fmt: skip
def test_a_malformed_nbirth_is_refused_without_a_rebirth_loop(payload: Payload, reason: str) -> None:
    host = HostState()
    _born(host)
    actions = _send(host, MessageType.NBIRTH, payload)
    assert actions[-2:] == [MarkStale(NODE, None, reason), Ignored(SparkplugTopic(NODE, MessageType.NBIRTH), reason)]
    assert not any(isinstance(a, Rebirth) for a in actions)
    assert host.status(NODE) is NodeStatus.STALE
    assert not any(isinstance(a, Rebirth) for a in _send(host, MessageType.NDATA, _data(1)))


def test_a_malformed_dbirth_refuses_the_device_only() -> None:
    host = HostState()
    _send(host, MessageType.NBIRTH, _nbirth())
    bad = Payload(seq=1, metrics=(Metric(alias=3, datatype=DataType.FLOAT, value=1.0),))
    reason = "DBIRTH metric alias 3 has no name"
    assert _send(host, MessageType.DBIRTH, bad, "oven") == [
        MarkStale(NODE, "oven", reason), Ignored(SparkplugTopic(NODE, MessageType.DBIRTH, "oven"), reason)]
    assert _send(host, MessageType.DDATA, _data(2), "oven") == [
        Ignored(SparkplugTopic(NODE, MessageType.DDATA, "oven"), "device's DBIRTH was refused")]
    assert host.status(NODE) is NodeStatus.ONLINE
    assert _stores(_send(host, MessageType.NDATA, _data(3, Metric(alias=2, value=4, datatype=DataType.INT8))))


def test_an_unexpected_nbirth_marks_the_old_sessions_devices_stale() -> None:
    host = HostState()
    _born(host)
    actions = _send(host, MessageType.NBIRTH, _nbirth(bd_seq=1))
    assert actions[:2] == [MarkStale(NODE, "press", "new NBIRTH"), MarkOnline(NODE, None, 1)]


def test_request_rebirth_and_connection_loss() -> None:
    host = HostState()
    _born(host)
    other = EdgeNode("plant1", "gw-2")
    assert host.connection_lost() == [MarkStale(NODE, None, "host lost its broker connection")]
    assert host.status(NODE) is NodeStatus.STALE
    assert host.request_rebirth(NODE, "reconnected") == [Rebirth(NODE, "reconnected")]
    assert host.request_rebirth(other, "operator asked") == [Rebirth(other, "operator asked")]
    assert host.nodes() == [NODE, other]


# ------------------------------------------------------------------------------------------- deaths


def test_ndeath_applies_only_with_the_current_bdseq() -> None:
    host = HostState()
    _born(host, bd_seq=3)
    assert _send(host, MessageType.NDEATH, _death(2)) == [
        Ignored(SparkplugTopic(NODE, MessageType.NDEATH), "NDEATH bdSeq 2 is not the current NBIRTH's 3")]
    assert host.status(NODE) is NodeStatus.ONLINE and host.devices(NODE) == {"press"}
    assert _send(host, MessageType.NDEATH, _death(3)) == [MarkOffline(NODE, None, "NDEATH")]
    assert host.status(NODE) is NodeStatus.OFFLINE and host.devices(NODE) == frozenset()
    assert _send(host, MessageType.NDEATH, _death(3)) == [
        Ignored(SparkplugTopic(NODE, MessageType.NDEATH), "node already offline")]


def test_reconnect_with_a_new_bdseq_survives_the_old_connections_late_will() -> None:
    host = HostState()
    _born(host, bd_seq=3)
    assert _send(host, MessageType.NDEATH, _death(3)) == [MarkOffline(NODE, None, "NDEATH")]
    # data of the dead session must not be taken: the node is offline until it is born again
    assert _send(host, MessageType.NDATA, _data(2))[-1] == Rebirth(
        NODE, "NDATA from an offline node (its NBIRTH was missed)")
    births = _send(host, MessageType.NBIRTH, _nbirth(bd_seq=4))
    assert births[0] == MarkOnline(NODE, None, 4) and host.bd_seq(NODE) == 4
    # the new connection's NBIRTH can overtake the old connection's Will: that late NDEATH changes nothing
    host2 = HostState()
    _born(host2, bd_seq=3)
    _send(host2, MessageType.NBIRTH, _nbirth(bd_seq=4))
    assert isinstance(_send(host2, MessageType.NDEATH, _death(3))[0], Ignored)
    assert host2.status(NODE) is NodeStatus.ONLINE
    assert _send(host2, MessageType.NDEATH, _death(4)) == [MarkOffline(NODE, None, "NDEATH")]


def test_ndeath_of_an_unknown_node_or_without_bdseq_is_ignored() -> None:
    host = HostState()
    assert isinstance(_send(host, MessageType.NDEATH, _death(0))[0], Ignored)
    _born(host, bd_seq=0)
    assert isinstance(_send(host, MessageType.NDEATH, Payload())[0], Ignored)
    assert host.status(NODE) is NodeStatus.ONLINE


def test_ddeath_marks_the_device_offline_and_its_data_is_refused_until_dbirth() -> None:
    host = HostState()
    _born(host)
    assert _send(host, MessageType.DDEATH, _data(2), "press") == [MarkOffline(NODE, "press", "DDEATH")]
    assert host.devices(NODE) == frozenset() and host.status(NODE) is NodeStatus.ONLINE
    assert _send(host, MessageType.DDEATH, _data(3), "press") == [
        Ignored(SparkplugTopic(NODE, MessageType.DDEATH, "press"), "DDEATH of a device that is not born")]
    assert _send(host, MessageType.DBIRTH, _dbirth(4), "press")[0] == MarkOnline(NODE, "press")
    reason = "sequence gap: DDEATH seq 9, expected 5"
    assert _send(host, MessageType.DDEATH, _data(9), "press") == [MarkStale(NODE, None, reason), Rebirth(NODE, reason)]


def test_commands_are_not_data() -> None:
    host = HostState()
    topic = SparkplugTopic(NODE, MessageType.DCMD, "press")
    assert host.handle(topic, _data(None)) == [Ignored(topic, "DCMD is a command, not data for the host")]


# ------------------------------------------------------------- the independent encoder's NBIRTH


def test_independent_nbirth_and_ndata_through_the_host() -> None:
    host = HostState()
    topic = SparkplugTopic(NODE, MessageType.NBIRTH)
    actions = host.handle(topic, decode_payload(hand_built_nbirth(bd_seq=7)))
    assert actions[0] == MarkOnline(NODE, None, 7)
    [store] = _stores(actions)
    names = [m.name for m in store.metrics]
    assert "bdSeq" not in names and "_types_/Motor" not in names and "Motor1" in names
    assert not any(name.startswith(("Node Control/", "Properties/")) for name in names)
    ndata = w.payload(w.uint(w.P_SEQ, 1), w.uint(w.P_TIMESTAMP, T0 + 9),
                      w.metric(w.uint(w.M_ALIAS, 13), w.uint(w.M_LONG, w.two64(-7))),
                      w.metric(w.uint(w.M_ALIAS, 30), w.blob(w.M_BYTES, bytes.fromhex("ff01"))))
    [data] = host.handle(SparkplugTopic(NODE, MessageType.NDATA), decode_payload(ndata))
    assert isinstance(data, Store)
    assert [(m.name, m.value, m.datatype) for m in data.metrics] == [
        ("Line/Counter", -7, DataType.INT64), ("Line/INT8_ARRAY", [-1, 1], DataType.INT8_ARRAY)]


# ------------------------------------------------------------------------- STATE, rebirth, topics


def test_state_birth_and_death_messages() -> None:
    birth = state_message("shopfloor-1", True, T0)
    assert (birth.topic, birth.qos, birth.retain) == ("spBv1.0/STATE/shopfloor-1", 1, True)
    assert json.loads(birth.payload) == {"online": True, "timestamp": T0}
    death = state_message("shopfloor-1", False, T0)
    assert death.payload == b'{"online":false,"timestamp":1700000000000}'
    assert parse_state_payload(birth.payload) == HostStatus(online=True, timestamp=T0)
    with pytest.raises(ValueError):
        state_message("a/b", True, T0)
    with pytest.raises(ValueError):
        state_message("host", True, -1)


@pytest.mark.parametrize("data", [b"ONLINE", b"\xff", b"[]", b'{"online":"yes","timestamp":1}', b'{"online":true}',
                                  b'{"online":true,"timestamp":Infinity}', b'{"online":true,"timestamp":true}'])
def test_malformed_state_payloads(data: bytes) -> None:
    with pytest.raises(SparkplugDecodeError):
        parse_state_payload(data)


def test_rebirth_request_is_an_ncmd_without_seq() -> None:
    out = rebirth_message(NODE, T0)
    assert (out.topic, out.qos, out.retain) == ("spBv1.0/plant1/NCMD/gw-1", 0, False)
    payload = decode_payload(out.payload)
    assert payload.seq is None and payload.timestamp == T0
    assert payload.metrics == (Metric(name=REBIRTH_METRIC, timestamp=T0, datatype=DataType.BOOLEAN, value=True),)


def test_topics_parse_and_print() -> None:
    assert parse_topic("spBv1.0/plant1/NBIRTH/gw-1") == SparkplugTopic(NODE, MessageType.NBIRTH)
    assert parse_topic("spBv1.0/plant1/DDATA/gw-1/press") == SparkplugTopic(NODE, MessageType.DDATA, "press")
    assert parse_topic("spBv1.0/STATE/scada") == StateTopic("scada")
    assert str(SparkplugTopic(NODE, MessageType.DDATA, "press")) == "spBv1.0/plant1/DDATA/gw-1/press"
    assert str(StateTopic("scada")) == "spBv1.0/STATE/scada"
    assert str(NODE) == "plant1/gw-1"


@pytest.mark.parametrize("topic", [
    "spAv1.0/g/NDATA/e", "spBv1.0/g/NDATA", "spBv1.0/g/NDATA/e/d", "spBv1.0/g/DDATA/e", "spBv1.0/g/XDATA/e",
    "spBv1.0//NDATA/e", "spBv1.0/g/DDATA/e/", "spBv1.0/STATE", "spBv1.0/STATE/a/b", "spBv1.0/g/NDATA/e/d/x",
    "shopfloor/v1/acme/s/a/l/m/telemetry",
])  # fmt: skip
def test_malformed_topics(topic: str) -> None:
    with pytest.raises(SparkplugDecodeError):
        parse_topic(topic)


# ------------------------------------------------------------------------------ any message order

_KINDS = st.sampled_from([MessageType.NBIRTH, MessageType.NDATA, MessageType.NDEATH, MessageType.DBIRTH,
                          MessageType.DDATA, MessageType.DDEATH, MessageType.NCMD])
_METRICS = st.builds(
    Metric,
    name=st.none() | st.sampled_from(["bdSeq", "Temperature", "Offset", "Force", "Node Control/Rebirth"]),
    alias=st.none() | st.integers(0, 12),
    datatype=st.none() | st.sampled_from([DataType.INT8, DataType.FLOAT, DataType.INT64, DataType.BOOLEAN]),
    value=st.none() | st.integers(-5, 5) | st.floats(-1, 1) | st.booleans(),
)


@st.composite
def _messages(draw: st.DrawFn) -> tuple[SparkplugTopic, Payload]:
    kind = draw(_KINDS)
    device = draw(st.sampled_from(["press", "oven"])) if kind in (
        MessageType.DBIRTH, MessageType.DDATA, MessageType.DDEATH) else None
    metrics = tuple(draw(st.lists(_METRICS, max_size=4)))
    payload = Payload(metrics=metrics, seq=draw(st.none() | st.integers(0, 256)), timestamp=T0)
    return SparkplugTopic(NODE, kind, device), payload


_VALID = st.one_of(
    st.integers(0, 3).map(lambda bd: (SparkplugTopic(NODE, MessageType.NBIRTH), _nbirth(bd))),
    st.integers(0, 3).map(lambda bd: (SparkplugTopic(NODE, MessageType.NDEATH), _death(bd))),
    st.integers(0, 4).map(lambda seq: (SparkplugTopic(NODE, MessageType.DBIRTH, "press"), _dbirth(seq))),
    st.integers(0, 4).map(lambda seq: (SparkplugTopic(NODE, MessageType.NDATA), _data(
        seq, Metric(alias=1, value=0.5, datatype=DataType.FLOAT)))),
)


@given(st.lists(_messages() | _VALID, max_size=30))
@settings(max_examples=300)
def test_any_message_order_yields_actions_and_keeps_the_rules(messages: list[tuple[SparkplugTopic, Payload]]) -> None:
    host = HostState()
    rebirth_asked = False
    for topic, payload in messages:
        try:
            payload = decode_payload(encode_payload(payload))
        except SparkplugEncodeError:
            continue  # a value its type cannot hold never reaches the wire
        actions = host.handle(topic, payload)
        assert all(isinstance(action, Action.__args__) for action in actions)  # type: ignore[attr-defined]
        if any(isinstance(a, Store) for a in actions):
            assert host.status(NODE) is NodeStatus.ONLINE
        rebirths = [a for a in actions if isinstance(a, Rebirth)]
        assert len(rebirths) <= 1
        if rebirths:
            assert not rebirth_asked, "a second rebirth request before the NBIRTH"
            rebirth_asked = True
        if topic.message_type is MessageType.NBIRTH and host.status(NODE) is NodeStatus.ONLINE:
            rebirth_asked = False
        if host.status(NODE) is NodeStatus.OFFLINE:
            rebirth_asked = False


def test_the_docs_example_runs() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "sparkplug.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert len(blocks) == 2  # the state machine's example, the wire reader's
    for block in blocks:
        exec(compile(block, "docs/sparkplug.md", "exec"), {})
