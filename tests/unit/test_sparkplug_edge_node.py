"""The edge agent's Sparkplug B edge node: births, data by alias, sequence numbers, bdSeq and commands,
read back with our own decoder (and the host's state machine, which must accept every message)."""

from __future__ import annotations

import pytest

from shopfloor.connectors.sparkplug.codec import decode_payload, encode_payload
from shopfloor.connectors.sparkplug.edge_node import Record, SparkplugEdgeNode, Write
from shopfloor.connectors.sparkplug.host_state import HostState, Rebirth, Store
from shopfloor.connectors.sparkplug.model import DataType, Metric, Payload
from shopfloor.connectors.sparkplug.topics import parse_topic

P1, P2 = "s/a/l/press-1", "s/a/l/press-2"


def make() -> SparkplugEdgeNode:
    points = {(P1, "temperature"): DataType.DOUBLE, (P1, "running"): DataType.BOOLEAN,
              (P2, "temperature"): DataType.DOUBLE, (P2, "recipe"): DataType.DOUBLE}
    return SparkplugEdgeNode("acme", "gw", points, {P1: None, P2: "Press2"}, {(P2, "recipe"): "Recipe/Name"})


def test_births_declare_what_was_read_with_its_timestamp_and_data_goes_by_alias() -> None:
    node = make()
    births = node.births(1000)
    assert [t for t, _ in births] == ["spBv1.0/acme/NBIRTH/gw", "spBv1.0/acme/DBIRTH/gw/Press2"]
    nbirth = decode_payload(births[0][1])
    assert nbirth.seq == 0 and [m.name for m in nbirth.metrics] == ["bdSeq", "Node Control/Rebirth"]
    assert decode_payload(births[1][1]).metrics == ()  # nothing read yet: nothing declared

    records = [Record(2000, {"temperature": 21, "running": True}), Record(2100, {"temperature": 21.5})]
    assert node.retype(P1, records)  # first values: births go out again, with them
    births = node.births(2200)
    declared = {m.name: (m.alias, m.timestamp, m.value, m.datatype) for m in decode_payload(births[0][1]).metrics}
    assert declared["temperature"] == (node.aliases[(P1, "temperature")], 2100, 21.5, DataType.DOUBLE)  # the last
    assert declared["running"] == (node.aliases[(P1, "running")], 2000, True, DataType.BOOLEAN)
    topic, payload = node.data(P1, records, 2300) or ("", b"")
    data = decode_payload(payload)
    assert topic == "spBv1.0/acme/NDATA/gw" and data.seq == 2  # NBIRTH 0, DBIRTH 1
    assert [(m.name, m.alias, m.timestamp, m.value) for m in data.metrics] == [
        (None, node.aliases[(P1, "temperature")], 2000, 21.0), (None, node.aliases[(P1, "running")], 2000, True),
        (None, node.aliases[(P1, "temperature")], 2100, 21.5)]
    assert not node.retype(P1, [Record(2400, {"temperature": 22})])  # known point, same type
    assert node.data("s/a/l/elsewhere", records, 2500) is None

    # a string where a Double was declared (an OPC UA node's first value): births again, typed String
    assert node.retype(P2, [Record(3000, {"recipe": "P-12", "temperature": 30.0})])
    births = node.births(3100)
    dbirth = {m.name: (m.datatype, m.value) for m in decode_payload(births[1][1]).metrics}
    assert dbirth == {"Recipe/Name": (DataType.STRING, "P-12"), "temperature": (DataType.DOUBLE, 30.0)}
    topic, payload = node.data(P2, [Record(3200, {"recipe": "P-13"}, "uncertain")], 3200) or ("", b"")
    metric = decode_payload(payload).metrics[0]
    assert topic == "spBv1.0/acme/DDATA/gw/Press2" and metric.quality == 500 and metric.value == "P-13"


def test_the_host_accepts_the_session_and_a_new_connection_moves_bd_seq() -> None:
    node, host = make(), HostState()
    node.retype(P1, [Record(1000, {"temperature": 20.0})])
    node.retype(P2, [Record(1000, {"temperature": 30.0})])
    messages = node.births(1100)
    messages += [m for m in (node.data(P1, [Record(1200 + i, {"temperature": 20.5 + i})], 1300) for i in range(300))
                 if m is not None]  # seq wraps past 255
    actions = []
    for topic, payload in messages:
        parsed = parse_topic(topic)
        actions += host.handle(parsed, decode_payload(payload))  # type: ignore[arg-type]
    assert not [a for a in actions if isinstance(a, Rebirth)]
    stored = [m for a in actions if isinstance(a, Store) for m in a.metrics if m.name != "bdSeq" and not m.name.startswith("Node Control")]
    assert len(stored) == 2 + 300
    will_topic, will = node.ndeath()
    assert will_topic == "spBv1.0/acme/NDEATH/gw" and decode_payload(will).metric("bdSeq").value == 0  # type: ignore[union-attr]
    assert decode_payload(node.next_session()[1]).metric("bdSeq").value == 1  # type: ignore[union-attr]
    assert decode_payload(node.births(5000)[0][1]).metric("bdSeq").value == 1  # type: ignore[union-attr]


def test_commands() -> None:
    node = make()
    ncmd = encode_payload(Payload(metrics=(Metric(name="Node Control/Rebirth", datatype=DataType.BOOLEAN,
                                                  value=True),)))
    assert node.command("spBv1.0/acme/NCMD/gw", ncmd) == (True, [])
    dcmd = encode_payload(Payload(metrics=(Metric(name="Recipe/Name", datatype=DataType.STRING, value="P-7"),
                                           Metric(alias=node.aliases[(P2, "temperature")], datatype=DataType.DOUBLE,
                                                  value=31.5))))
    assert node.command("spBv1.0/acme/DCMD/gw/Press2", dcmd) == (
        False, [Write(P2, "recipe", "P-7"), Write(P2, "temperature", 31.5)])
    with pytest.raises(ValueError, match="no metric 'Recipe/Name'"):  # a metric of another device
        node.command("spBv1.0/acme/NCMD/gw", dcmd)
    with pytest.raises(ValueError, match="not a command of acme/gw"):
        node.command("spBv1.0/acme/NCMD/other", ncmd)
    with pytest.raises(ValueError):
        node.command("spBv1.0/acme/NCMD/gw", b"\xff\xff")


def test_every_machine_needs_a_device_id() -> None:
    with pytest.raises(ValueError, match="s/a/l/press-9"):
        SparkplugEdgeNode("acme", "gw", {("s/a/l/press-9", "t"): DataType.DOUBLE}, {P1: None})
