"""Interoperability: payloads written field by field from the specification by an independent encoder
(tests/unit/sparkplug_wire.py: no protobuf, no .proto, no codec) decode to every value; our encoder
writes the same bytes that writer does."""

from __future__ import annotations

from shopfloor.connectors.sparkplug.codec import decode_payload, encode_payload, retype
from shopfloor.connectors.sparkplug.model import (
    DataSet,
    DataType,
    MetaData,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Quality,
    Template,
    TemplateParameter,
)
from tests.unit import sparkplug_wire as w
from tests.unit.sparkplug_samples import ARRAY_ALIASES, SPEC_ARRAY_EXAMPLES, T0, hand_built_nbirth, prop


def test_interop_full_nbirth_from_an_independent_encoder_decodes_to_every_value() -> None:
    payload = decode_payload(hand_built_nbirth())
    assert payload.timestamp == T0 and payload.seq == 0 and payload.uuid is None and payload.body is None
    by_name = {m.name: m for m in payload.metrics}
    assert all(m.timestamp == T0 for m in payload.metrics)

    def value(name: str) -> object:
        return by_name[name].value

    assert (by_name["bdSeq"].datatype, value("bdSeq")) == (DataType.INT64, 7)
    assert (by_name["Node Control/Rebirth"].datatype, value("Node Control/Rebirth")) == (DataType.BOOLEAN, False)
    assert value("Node Control/Scan Rate") == 3000
    assert value("Properties/Hardware Make") == "ACME"
    temperature = by_name["Line/Temperature"]
    assert (temperature.alias, temperature.datatype, temperature.value) == (10, DataType.FLOAT, 21.5)
    assert temperature.engineering_unit == "°C" and temperature.quality == Quality.GOOD
    assert temperature.properties is not None and temperature.properties.keys() == ("engUnit", "Quality")
    assert (value("Line/Offset"), value("Line/Delta"), value("Line/Counter")) == (-23, -30000, -42)
    assert value("Line/Total") == 2**64 - 1
    assert value("Line/Pressure") == 1.0e5 and value("Line/Running") is True
    assert value("Line/Started") == 1656107875000
    assert value("Line/Serial") == "6f1c3a52-8d3e-4c1e-9a43-0d6b2b1e7a10"
    assert value("Line/Blob") == b"\x00\xff"
    assert value("Line/Batch") == DataSet(
        columns=("part", "count", "ok", "weight"),
        types=(DataType.STRING, DataType.INT32, DataType.BOOLEAN, DataType.DOUBLE),
        rows=(("A-1", -5, True, 1.25), ("B-2", 7, False, None)),
    )
    spare = by_name["Line/Spare"]
    assert spare.is_null and spare.value is None and spare.datatype is DataType.DOUBLE
    settings_props = by_name["Line/Settings"].properties
    assert settings_props == PropertySet((
        ("limits", PropertyValue(DataType.PROPERTY_SET, PropertySet((
            ("hi", PropertyValue(DataType.DOUBLE, 90.0)), ("lo", PropertyValue(DataType.DOUBLE, 10.0)))))),
        ("history", PropertyValue(DataType.PROPERTY_SET_LIST, (
            PropertySet((("n", PropertyValue(DataType.UINT8, 1)),)),
            PropertySet((("n", PropertyValue(DataType.UINT8, 2)),))))),
        ("note", PropertyValue(DataType.STRING, None, is_null=True)),
    ))  # fmt: skip
    assert value("_types_/Motor") == Template(
        metrics=(Metric(name="rpm", datatype=DataType.INT32, value=0),
                 Metric(name="label", datatype=DataType.STRING, value="")),
        parameters=(TemplateParameter("rated", DataType.FLOAT, 1.5),), version="1", is_definition=True)
    assert value("Motor1") == Template(
        metrics=(Metric(name="rpm", datatype=DataType.INT32, value=-1500),),
        parameters=(TemplateParameter("rated", DataType.FLOAT, 2.5),), template_ref="_types_/Motor")
    report = by_name["Line/Report"]
    assert report.value == b"a,b" and report.metadata == MetaData(file_name="r.csv", size=3)
    for datatype, values, _ in SPEC_ARRAY_EXAMPLES:
        metric = by_name[f"Line/{datatype.name}"]
        assert (metric.alias, metric.datatype, metric.value) == (ARRAY_ALIASES[datatype], datatype, values)
    assert len(payload.metrics) == 20 + len(SPEC_ARRAY_EXAMPLES)


def test_interop_ndata_by_alias_without_types_reads_with_the_birth_types() -> None:
    birth = {m.alias: m.datatype for m in decode_payload(hand_built_nbirth()).metrics if m.alias is not None}
    ndata = w.payload(
        w.uint(w.P_TIMESTAMP, T0 + 1000), w.uint(w.P_SEQ, 1),
        w.metric(w.uint(w.M_ALIAS, 11), w.uint(w.M_TIMESTAMP, T0 + 900), w.uint(w.M_INT, w.two32(-100))),
        w.metric(w.uint(w.M_ALIAS, 13), w.uint(w.M_TIMESTAMP, T0 + 900), w.uint(w.M_LONG, w.two64(-(2**63)))),
        w.metric(w.uint(w.M_ALIAS, 10), w.uint(w.M_TIMESTAMP, T0 + 900), w.f32(w.M_FLOAT, -4.0),
                 w.message(w.M_PROPERTIES, *prop("Quality", w.uint(w.PV_TYPE, w.INT32), w.uint(w.PV_INT, 500)))),
        w.metric(w.uint(w.M_ALIAS, ARRAY_ALIASES[DataType.BOOLEAN_ARRAY]), w.uint(w.M_TIMESTAMP, T0 + 900),
                 w.blob(w.M_BYTES, bytes.fromhex("03000000a0"))),
        w.metric(w.uint(w.M_ALIAS, 21), w.uint(w.M_TIMESTAMP, T0 + 900), w.f64(w.M_DOUBLE, 0.5)),
    )  # fmt: skip
    payload = decode_payload(ndata)
    assert payload.seq == 1 and all(m.name is None and m.datatype is None for m in payload.metrics)
    typed = [retype(m, birth[m.alias or 0]) for m in payload.metrics]
    assert [m.value for m in typed] == [-100, -(2**63), -4.0, [True, False, True], 0.5]
    assert typed[2].quality == Quality.STALE


def test_interop_rebirth_command_bytes_are_what_an_independent_encoder_writes() -> None:
    hand = w.payload(
        w.uint(w.P_TIMESTAMP, T0),
        w.metric(w.text(w.M_NAME, "Node Control/Rebirth"), w.uint(w.M_TIMESTAMP, T0), w.uint(w.M_DATATYPE, w.BOOLEAN),
                 w.boolean(w.M_BOOLEAN, True)),
    )
    ours = encode_payload(Payload(timestamp=T0, metrics=(
        Metric(name="Node Control/Rebirth", timestamp=T0, datatype=DataType.BOOLEAN, value=True),)))
    assert ours == hand
    decoded = decode_payload(hand)
    assert decoded.seq is None and decoded.metric("Node Control/Rebirth") == Metric(
        name="Node Control/Rebirth", timestamp=T0, datatype=DataType.BOOLEAN, value=True)


def test_interop_our_signed_and_array_encodings_are_byte_for_byte_the_spec_forms() -> None:
    hand = w.payload(
        w.metric(w.text(w.M_NAME, "a"), w.uint(w.M_DATATYPE, w.INT8), w.uint(w.M_INT, w.two32(-23))),
        w.metric(w.text(w.M_NAME, "b"), w.uint(w.M_DATATYPE, w.INT64), w.uint(w.M_LONG, w.two64(-42))),
        w.metric(w.text(w.M_NAME, "c"), w.uint(w.M_DATATYPE, w.BOOLEAN_ARRAY), w.blob(w.M_BYTES, bytes.fromhex("0c0000003450"))),
        w.uint(w.P_SEQ, 5),
    )
    ours = encode_payload(Payload(seq=5, metrics=(
        Metric(name="a", datatype=DataType.INT8, value=-23),
        Metric(name="b", datatype=DataType.INT64, value=-42),
        Metric(name="c", datatype=DataType.BOOLEAN_ARRAY,
               value=[False, False, True, True, False, True, False, False, False, True, False, True]),
    )))  # fmt: skip
    assert ours == hand
