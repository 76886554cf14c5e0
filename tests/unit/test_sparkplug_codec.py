"""Sparkplug B codec: the schema's numbers, round trips of every type, the spec's array examples,
malformed input (only SparkplugDecodeError escapes), and payloads built by an independent encoder."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shopfloor.connectors.sparkplug import sparkplug_b_pb2 as pb
from shopfloor.connectors.sparkplug.arrays import pack_array, unpack_array
from shopfloor.connectors.sparkplug.codec import decode_payload, encode_payload, retype
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError, SparkplugEncodeError
from shopfloor.connectors.sparkplug.model import (
    ARRAY_TYPES,
    BASIC_TYPES,
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
from shopfloor.domain.errors import ShopfloorError
from tests.unit import sparkplug_wire as w
from tests.unit.sparkplug_samples import SPEC_ARRAY_EXAMPLES

# ------------------------------------------------------------------------------ the schema, from the spec

# (message, field) -> (number, protobuf type, label) as the Sparkplug B 3.0 schema gives them
SPEC_FIELDS = {
    ("Payload", "timestamp"): (1, "uint64", "optional"),
    ("Payload", "metrics"): (2, "Metric", "repeated"),
    ("Payload", "seq"): (3, "uint64", "optional"),
    ("Payload", "uuid"): (4, "string", "optional"),
    ("Payload", "body"): (5, "bytes", "optional"),
    ("Metric", "name"): (1, "string", "optional"),
    ("Metric", "alias"): (2, "uint64", "optional"),
    ("Metric", "timestamp"): (3, "uint64", "optional"),
    ("Metric", "datatype"): (4, "uint32", "optional"),
    ("Metric", "is_historical"): (5, "bool", "optional"),
    ("Metric", "is_transient"): (6, "bool", "optional"),
    ("Metric", "is_null"): (7, "bool", "optional"),
    ("Metric", "metadata"): (8, "MetaData", "optional"),
    ("Metric", "properties"): (9, "PropertySet", "optional"),
    ("Metric", "int_value"): (10, "uint32", "optional"),
    ("Metric", "long_value"): (11, "uint64", "optional"),
    ("Metric", "float_value"): (12, "float", "optional"),
    ("Metric", "double_value"): (13, "double", "optional"),
    ("Metric", "boolean_value"): (14, "bool", "optional"),
    ("Metric", "string_value"): (15, "string", "optional"),
    ("Metric", "bytes_value"): (16, "bytes", "optional"),
    ("Metric", "dataset_value"): (17, "DataSet", "optional"),
    ("Metric", "template_value"): (18, "Template", "optional"),
    ("Metric", "extension_value"): (19, "MetricValueExtension", "optional"),
    ("MetaData", "is_multi_part"): (1, "bool", "optional"),
    ("MetaData", "content_type"): (2, "string", "optional"),
    ("MetaData", "size"): (3, "uint64", "optional"),
    ("MetaData", "seq"): (4, "uint64", "optional"),
    ("MetaData", "file_name"): (5, "string", "optional"),
    ("MetaData", "file_type"): (6, "string", "optional"),
    ("MetaData", "md5"): (7, "string", "optional"),
    ("MetaData", "description"): (8, "string", "optional"),
    ("PropertySet", "keys"): (1, "string", "repeated"),
    ("PropertySet", "values"): (2, "PropertyValue", "repeated"),
    ("PropertySetList", "propertyset"): (1, "PropertySet", "repeated"),
    ("PropertyValue", "type"): (1, "uint32", "optional"),
    ("PropertyValue", "is_null"): (2, "bool", "optional"),
    ("PropertyValue", "int_value"): (3, "uint32", "optional"),
    ("PropertyValue", "long_value"): (4, "uint64", "optional"),
    ("PropertyValue", "float_value"): (5, "float", "optional"),
    ("PropertyValue", "double_value"): (6, "double", "optional"),
    ("PropertyValue", "boolean_value"): (7, "bool", "optional"),
    ("PropertyValue", "string_value"): (8, "string", "optional"),
    ("PropertyValue", "propertyset_value"): (9, "PropertySet", "optional"),
    ("PropertyValue", "propertysets_value"): (10, "PropertySetList", "optional"),
    ("PropertyValue", "extension_value"): (11, "PropertyValueExtension", "optional"),
    ("DataSet", "num_of_columns"): (1, "uint64", "optional"),
    ("DataSet", "columns"): (2, "string", "repeated"),
    ("DataSet", "types"): (3, "uint32", "repeated"),
    ("DataSet", "rows"): (4, "Row", "repeated"),
    ("Row", "elements"): (1, "DataSetValue", "repeated"),
    ("DataSetValue", "int_value"): (1, "uint32", "optional"),
    ("DataSetValue", "long_value"): (2, "uint64", "optional"),
    ("DataSetValue", "float_value"): (3, "float", "optional"),
    ("DataSetValue", "double_value"): (4, "double", "optional"),
    ("DataSetValue", "boolean_value"): (5, "bool", "optional"),
    ("DataSetValue", "string_value"): (6, "string", "optional"),
    ("DataSetValue", "extension_value"): (7, "DataSetValueExtension", "optional"),
    ("Template", "version"): (1, "string", "optional"),
    ("Template", "metrics"): (2, "Metric", "repeated"),
    ("Template", "parameters"): (3, "Parameter", "repeated"),
    ("Template", "template_ref"): (4, "string", "optional"),
    ("Template", "is_definition"): (5, "bool", "optional"),
    ("Parameter", "name"): (1, "string", "optional"),
    ("Parameter", "type"): (2, "uint32", "optional"),
    ("Parameter", "int_value"): (3, "uint32", "optional"),
    ("Parameter", "long_value"): (4, "uint64", "optional"),
    ("Parameter", "float_value"): (5, "float", "optional"),
    ("Parameter", "double_value"): (6, "double", "optional"),
    ("Parameter", "boolean_value"): (7, "bool", "optional"),
    ("Parameter", "string_value"): (8, "string", "optional"),
    ("Parameter", "extension_value"): (9, "ParameterValueExtension", "optional"),
}
SPEC_DATATYPES = [
    "Unknown", "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float", "Double",
    "Boolean", "String", "DateTime", "Text", "UUID", "DataSet", "Bytes", "File", "Template", "PropertySet",
    "PropertySetList", "Int8Array", "Int16Array", "Int32Array", "Int64Array", "UInt8Array", "UInt16Array",
    "UInt32Array", "UInt64Array", "FloatArray", "DoubleArray", "BooleanArray", "StringArray", "DateTimeArray",
]  # fmt: skip
_SCALAR_TYPE_NAMES = {
    1: "double", 2: "float", 4: "uint64", 8: "bool", 9: "string", 12: "bytes", 13: "uint32",
}  # fmt: skip


def _all_messages(descriptor: Any) -> Iterator[Any]:
    for message in descriptor.nested_types:
        yield message
        yield from _all_messages(message)


def test_generated_schema_has_the_spec_field_numbers_types_and_labels() -> None:
    seen = {}
    for message in [pb.Payload.DESCRIPTOR, *_all_messages(pb.Payload.DESCRIPTOR)]:
        for f in message.fields:
            kind = f.message_type.name if f.message_type else _SCALAR_TYPE_NAMES[f.type]
            label = "repeated" if f.is_repeated else "optional"
            seen[(message.name, f.name)] = (f.number, kind, label)
    assert seen == SPEC_FIELDS
    oneofs = {
        m.name: sorted(f.name for f in m.oneofs_by_name["value"].fields)
        for m in _all_messages(pb.Payload.DESCRIPTOR) if "value" in m.oneofs_by_name
    }  # fmt: skip
    assert set(oneofs) == {"Metric", "PropertyValue", "DataSetValue", "Parameter"}
    assert all(name.endswith("_value") for names in oneofs.values() for name in names)


def test_data_type_codes_are_the_spec_enumeration() -> None:
    generated = {v.name: v.number for v in pb.DESCRIPTOR.enum_types_by_name["DataType"].values}
    assert generated == {name: code for code, name in enumerate(SPEC_DATATYPES)}
    assert [t.value for t in DataType] == list(range(35))
    for code, name in enumerate(SPEC_DATATYPES):
        assert DataType(code).name.replace("_", "") == name.upper()


def _all_descriptor_protos(messages: Any) -> Iterator[Any]:
    for message in messages:
        yield message
        yield from _all_descriptor_protos(message.nested_type)


def test_generated_module_is_up_to_date_with_the_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="regenerating needs grpcio-tools (see scripts/gen_sparkplug.sh)")
    proto_dir = Path(pb.__file__).parent
    out = tmp_path / "set.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={proto_dir}",
                    f"--descriptor_set_out={out}", "sparkplug_b.proto"], check=True, cwd=proto_dir)
    [fresh] = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    for message in _all_descriptor_protos(fresh.message_type):
        for f in message.field:
            f.ClearField("json_name")  # a descriptor set carries it, generated code does not
    assert fresh == descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb), (
        "sparkplug_b.proto changed: run scripts/gen_sparkplug.sh")


def test_decode_errors_are_shopfloor_errors() -> None:
    assert issubclass(SparkplugDecodeError, ShopfloorError)
    assert issubclass(SparkplugEncodeError, ShopfloorError)


# ------------------------------------------------------------------------------------ round trips

_FLOAT32 = st.floats(width=32, allow_nan=False)
_DOUBLE = st.floats(allow_nan=False)
_TEXT = st.text(max_size=40)
_SCALARS: dict[DataType, st.SearchStrategy[Any]] = {
    DataType.INT8: st.integers(-(2**7), 2**7 - 1),
    DataType.INT16: st.integers(-(2**15), 2**15 - 1),
    DataType.INT32: st.integers(-(2**31), 2**31 - 1),
    DataType.INT64: st.integers(-(2**63), 2**63 - 1),
    DataType.UINT8: st.integers(0, 2**8 - 1),
    DataType.UINT16: st.integers(0, 2**16 - 1),
    DataType.UINT32: st.integers(0, 2**32 - 1),
    DataType.UINT64: st.integers(0, 2**64 - 1),
    DataType.FLOAT: _FLOAT32,
    DataType.DOUBLE: _DOUBLE,
    DataType.BOOLEAN: st.booleans(),
    DataType.STRING: _TEXT,
    DataType.DATETIME: st.integers(-(2**63), 2**63 - 1),
    DataType.TEXT: _TEXT,
}
_METRIC_SCALARS: dict[DataType, st.SearchStrategy[Any]] = {
    **_SCALARS,
    DataType.UUID: st.uuids().map(str),
    DataType.BYTES: st.binary(max_size=64),
    DataType.FILE: st.binary(max_size=64),
}
_ARRAYS: dict[DataType, st.SearchStrategy[Any]] = {
    DataType.INT8_ARRAY: st.lists(_SCALARS[DataType.INT8]),
    DataType.INT16_ARRAY: st.lists(_SCALARS[DataType.INT16]),
    DataType.INT32_ARRAY: st.lists(_SCALARS[DataType.INT32]),
    DataType.INT64_ARRAY: st.lists(_SCALARS[DataType.INT64]),
    DataType.UINT8_ARRAY: st.lists(_SCALARS[DataType.UINT8]),
    DataType.UINT16_ARRAY: st.lists(_SCALARS[DataType.UINT16]),
    DataType.UINT32_ARRAY: st.lists(_SCALARS[DataType.UINT32]),
    DataType.UINT64_ARRAY: st.lists(_SCALARS[DataType.UINT64]),
    DataType.FLOAT_ARRAY: st.lists(_FLOAT32),
    DataType.DOUBLE_ARRAY: st.lists(_DOUBLE),
    DataType.BOOLEAN_ARRAY: st.lists(st.booleans(), max_size=40),
    DataType.STRING_ARRAY: st.lists(st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)),
    DataType.DATETIME_ARRAY: st.lists(_SCALARS[DataType.DATETIME]),
}
assert set(_ARRAYS) == set(ARRAY_TYPES)
assert set(_SCALARS) == set(BASIC_TYPES)


def _round_trip(payload: Payload) -> Payload:
    return decode_payload(encode_payload(payload))


@pytest.mark.parametrize("datatype", list(_METRIC_SCALARS), ids=lambda t: t.name)
@given(data=st.data())
def test_every_scalar_type_round_trips(datatype: DataType, data: st.DataObject) -> None:
    value = data.draw(_METRIC_SCALARS[datatype])
    metric = Metric(name="m", alias=data.draw(st.integers(0, 2**64 - 1)), timestamp=1_700_000_000_000,
                    datatype=datatype, value=value)
    payload = Payload(metrics=(metric,), timestamp=1_700_000_000_001, seq=data.draw(st.integers(0, 255)))
    assert _round_trip(payload) == payload


@pytest.mark.parametrize(
    ("datatype", "value", "field", "wire"),
    [
        (DataType.INT8, -128, "int_value", 0xFFFFFF80),
        (DataType.INT8, 127, "int_value", 127),
        (DataType.INT8, -1, "int_value", 0xFFFFFFFF),
        (DataType.INT16, -32768, "int_value", 0xFFFF8000),
        (DataType.INT16, 32767, "int_value", 32767),
        (DataType.INT32, -(2**31), "int_value", 0x80000000),
        (DataType.INT32, 2**31 - 1, "int_value", 0x7FFFFFFF),
        (DataType.INT64, -(2**63), "long_value", 2**63),
        (DataType.INT64, -1, "long_value", 2**64 - 1),
        (DataType.INT64, 2**63 - 1, "long_value", 2**63 - 1),
        (DataType.UINT32, 2**32 - 1, "int_value", 2**32 - 1),
        (DataType.UINT64, 2**64 - 1, "long_value", 2**64 - 1),
        (DataType.DATETIME, -1, "long_value", 2**64 - 1),
    ],
)
def test_signed_extremes_travel_as_twos_complement(datatype: DataType, value: int, field: str, wire: int) -> None:
    raw = encode_payload(Payload(metrics=(Metric(name="x", datatype=datatype, value=value),)))
    message = pb.Payload.FromString(raw)
    assert message.metrics[0].WhichOneof("value") == field
    assert getattr(message.metrics[0], field) == wire
    assert decode_payload(raw).metrics[0].value == value


@pytest.mark.parametrize(("datatype", "narrow", "value"), [
    (DataType.INT8, 0xFF, -1), (DataType.INT8, 0x80, -128), (DataType.INT16, 0x8AD0, -30000),
    (DataType.INT16, 0xFFFF, -1), (DataType.INT32, 0xFFFFFFFF, -1),
])  # fmt: skip
def test_narrow_twos_complement_from_other_encoders_decodes_too(datatype: DataType, narrow: int, value: int) -> None:
    raw = w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, datatype), w.uint(w.M_INT, narrow))
    assert decode_payload(raw).metrics[0].value == value


@pytest.mark.parametrize(("datatype", "field", "raw"), [
    (DataType.INT8, w.M_INT, 0x100), (DataType.INT8, w.M_INT, 0xFFFFFF7F), (DataType.INT16, w.M_INT, 0x10000),
    (DataType.UINT8, w.M_INT, 256), (DataType.UINT16, w.M_INT, 65536), (DataType.UINT32, w.M_LONG, 2**32),
    (DataType.INT32, w.M_LONG, 2**32), (DataType.INT64, w.M_INT, 2**32 - 1 + 0),
])  # fmt: skip
def test_integers_that_fit_no_form_of_their_type_are_refused(datatype: DataType, field: int, raw: int) -> None:
    data = w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, datatype), w.uint(field, raw))
    if datatype is DataType.INT64:  # an Int64 in int_value is read as the non-negative number it is
        assert decode_payload(data).metrics[0].value == raw
        return
    with pytest.raises(SparkplugDecodeError, match="outside the range"):
        decode_payload(data)


def test_float_nan_and_infinities_round_trip() -> None:
    metrics = tuple(
        Metric(name=f"{t.name}{i}", datatype=t, value=v)
        for t in (DataType.FLOAT, DataType.DOUBLE) for i, v in enumerate([math.nan, math.inf, -math.inf, -0.0])
    )  # fmt: skip
    decoded = _round_trip(Payload(metrics=metrics)).metrics
    assert math.isnan(decoded[0].value) and math.isnan(decoded[4].value)  # type: ignore[arg-type]
    assert [m.value for m in decoded if m.name and m.name[-1] in "12"] == [math.inf, -math.inf] * 2
    assert math.copysign(1.0, decoded[3].value) == -1.0  # type: ignore[arg-type]


@pytest.mark.parametrize("datatype", list(_ARRAYS), ids=lambda t: t.name)
@given(data=st.data())
def test_every_array_type_round_trips(datatype: DataType, data: st.DataObject) -> None:
    values = data.draw(_ARRAYS[datatype])
    payload = Payload(metrics=(Metric(name="a", alias=3, datatype=datatype, value=values, timestamp=5),), seq=1)
    assert _round_trip(payload) == payload




@pytest.mark.parametrize(("datatype", "values", "hexbytes"), SPEC_ARRAY_EXAMPLES, ids=lambda x: getattr(x, "name", ""))
def test_spec_array_examples(datatype: DataType, values: list[object], hexbytes: str) -> None:
    packed = bytes.fromhex(hexbytes)
    assert pack_array(datatype, values) == packed
    assert unpack_array(datatype, packed) == values


def test_boolean_array_padding_bits_do_not_matter() -> None:
    assert unpack_array(DataType.BOOLEAN_ARRAY, bytes.fromhex("0c000000 34 df")) == unpack_array(
        DataType.BOOLEAN_ARRAY, bytes.fromhex("0c000000 34 d0"))


@pytest.mark.parametrize(("datatype", "hexbytes", "message"), [
    (DataType.INT16_ARRAY, "010203", "whole number"),
    (DataType.DOUBLE_ARRAY, "00" * 9, "whole number"),
    (DataType.BOOLEAN_ARRAY, "0300", "shorter than its 4-byte count"),
    (DataType.BOOLEAN_ARRAY, "09000000ff", "needs 2 bytes"),
    (DataType.BOOLEAN_ARRAY, "ffffffff00", "needs 536870912 bytes"),
    (DataType.STRING_ARRAY, "414243", "zero byte"),
    (DataType.STRING_ARRAY, "ff00", "invalid UTF-8"),
])  # fmt: skip
def test_malformed_arrays_are_decode_errors(datatype: DataType, hexbytes: str, message: str) -> None:
    data = w.metric(w.text(w.M_NAME, "a"), w.uint(w.M_DATATYPE, datatype), w.blob(w.M_BYTES, bytes.fromhex(hexbytes)))
    with pytest.raises(SparkplugDecodeError, match=message):
        decode_payload(data)


_COLUMN_TYPES = st.sampled_from(sorted(BASIC_TYPES))


@st.composite
def datasets(draw: st.DrawFn) -> DataSet:
    types = tuple(draw(st.lists(_COLUMN_TYPES, max_size=5)))
    columns = tuple(draw(st.lists(_TEXT, min_size=len(types), max_size=len(types))))
    rows = draw(st.lists(st.tuples(*[st.none() | _SCALARS[t] for t in types]), max_size=5))
    return DataSet(columns=columns, types=types, rows=tuple(rows))


@given(datasets())
def test_datasets_round_trip(dataset: DataSet) -> None:
    payload = Payload(metrics=(Metric(name="table", datatype=DataType.DATASET, value=dataset),))
    assert _round_trip(payload) == payload


_BASIC_PROPERTY = _COLUMN_TYPES.flatmap(lambda t: _SCALARS[t].map(lambda v: PropertyValue(type=t, value=v)))


def _property_sets(children: st.SearchStrategy[PropertyValue]) -> st.SearchStrategy[PropertySet]:
    return st.lists(st.tuples(_TEXT, children), max_size=4).map(lambda items: PropertySet(items=tuple(items)))


_PROPERTY_VALUES = st.recursive(
    _BASIC_PROPERTY | _COLUMN_TYPES.map(lambda t: PropertyValue(type=t, value=None, is_null=True)),
    lambda children: (
        _property_sets(children).map(lambda s: PropertyValue(type=DataType.PROPERTY_SET, value=s))
        | st.lists(_property_sets(children), max_size=3).map(
            lambda sets: PropertyValue(type=DataType.PROPERTY_SET_LIST, value=tuple(sets)))
    ),
    max_leaves=12,
)


@given(_property_sets(_PROPERTY_VALUES))
def test_property_sets_round_trip(properties: PropertySet) -> None:
    payload = Payload(metrics=(Metric(name="p", datatype=DataType.INT32, value=1, properties=properties),))
    assert _round_trip(payload) == payload


@given(st.lists(st.tuples(_COLUMN_TYPES, st.data()), max_size=4), st.booleans(), st.none() | _TEXT)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_templates_round_trip(members: list[tuple[DataType, st.DataObject]], definition: bool, ref: str | None) -> None:
    metrics = tuple(Metric(name=f"m{i}", datatype=t, value=d.draw(_SCALARS[t])) for i, (t, d) in enumerate(members))
    parameters = tuple(TemplateParameter(name=f"p{i}", type=t, value=m.value)  # type: ignore[arg-type]
                       for i, (t, m) in enumerate(zip([t for t, _ in members], metrics, strict=True)))
    template = Template(metrics=metrics, parameters=parameters, version="1.0", template_ref=None if definition else ref,
                        is_definition=definition)
    payload = Payload(metrics=(Metric(name="udt", datatype=DataType.TEMPLATE, value=template),))
    assert _round_trip(payload) == payload


def test_flags_metadata_nulls_and_payload_fields_round_trip() -> None:
    payload = Payload(
        metrics=(
            Metric(name="file", datatype=DataType.FILE, value=b"%PDF", is_historical=True,
                   metadata=MetaData(file_name="a.pdf", file_type="pdf", size=4, md5="x", is_multi_part=False)),
            Metric(name="gone", alias=9, datatype=DataType.DOUBLE, is_null=True, is_transient=True, timestamp=3),
            Metric(alias=9, value=None),
        ),
        timestamp=0, seq=255, uuid="spb-compressed", body=b"\x00\x01",
    )  # fmt: skip
    assert _round_trip(payload) == payload


def test_quality_and_engineering_unit_properties() -> None:
    props = PropertySet(items=(("engUnit", PropertyValue(DataType.STRING, "degC")),
                               ("Quality", PropertyValue(DataType.INT32, Quality.STALE))))
    metric = _round_trip(Payload(metrics=(Metric(name="t", datatype=DataType.FLOAT, value=1.5, properties=props),)))
    assert metric.metrics[0].engineering_unit == "degC"
    assert metric.metrics[0].quality == 500


# ------------------------------------------------------------------------ data messages without type


def test_values_without_a_data_type_keep_their_wire_form_until_retyped() -> None:
    data = w.payload(
        w.uint(w.P_SEQ, 4),
        w.metric(w.uint(w.M_ALIAS, 1), w.uint(w.M_INT, w.two32(-23))),
        w.metric(w.uint(w.M_ALIAS, 2), w.blob(w.M_BYTES, bytes.fromhex("0c00000034d0"))),
        w.metric(w.uint(w.M_ALIAS, 3), w.boolean(w.M_IS_NULL, True)),
    )
    first, second, third = decode_payload(data).metrics
    assert first.datatype is None and first.value == 2**32 - 23
    assert retype(first, DataType.INT8).value == -23
    assert retype(first, DataType.INT8).datatype is DataType.INT8
    assert retype(second, DataType.BOOLEAN_ARRAY).value == [False, False, True, True, False, True] * 2
    assert retype(third, DataType.STRING).value is None
    assert retype(first, DataType.INT16).value == -23  # sign-extended to 32 bits fits Int16 as well
    with pytest.raises(SparkplugDecodeError, match="outside the range"):
        retype(first, DataType.UINT16)
    with pytest.raises(SparkplugDecodeError, match="must be in"):
        retype(first, DataType.STRING)
    typed = retype(first, DataType.INT8)
    assert retype(typed, DataType.UINT64) is typed  # a typed value is not read again


# ----------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(("data", "message"), [
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, 35), w.uint(w.M_INT, 1)), "unknown data type code 35"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.PROPERTY_SET)), "not allowed here"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.INT32), w.text(w.M_STRING, "1")), "must be in int_value"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.STRING), w.uint(w.M_INT, 1)), "must be in string_value"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.BOOLEAN), w.uint(w.M_INT, 1)), "boolean_value"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.BYTES), w.text(w.M_STRING, "1")), "bytes_value"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.INT32), w.message(w.M_DATASET)), "carries dataset_value"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.DATASET),
              w.message(w.M_DATASET, w.text(w.DS_COLUMNS, "a"))), "1 columns but 0 types"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.DATASET),
              w.message(w.M_DATASET, w.uint(w.DS_NUM_OF_COLUMNS, 2), w.text(w.DS_COLUMNS, "a"),
                        w.uint(w.DS_TYPES, w.INT32))), "says 2 columns"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.DATASET),
              w.message(w.M_DATASET, w.text(w.DS_COLUMNS, "a"), w.uint(w.DS_TYPES, w.INT8_ARRAY))), "not allowed"),
    (w.metric(w.text(w.M_NAME, "x"), w.uint(w.M_DATATYPE, w.DATASET),
              w.message(w.M_DATASET, w.text(w.DS_COLUMNS, "a"), w.uint(w.DS_TYPES, w.INT32),
                        w.message(w.DS_ROWS))), "0 cells for 1 columns"),
    (w.metric(w.text(w.M_NAME, "x"), w.message(w.M_PROPERTIES, w.text(w.PS_KEYS, "k"))), "1 keys but 0 values"),
    (w.metric(w.text(w.M_NAME, "x"), w.message(w.M_PROPERTIES, w.text(w.PS_KEYS, "k"),
                                               w.message(w.PS_VALUES, w.uint(w.PV_TYPE, 99)))), "unknown data type"),
    (w.metric(w.text(w.M_NAME, "x"), w.message(w.M_PROPERTIES, w.text(w.PS_KEYS, "k"), w.message(
        w.PS_VALUES, w.uint(w.PV_TYPE, w.INT32), w.message(w.PV_SET)))), "carries a PropertySet"),
    (w.blob(w.P_UUID, b"\xff\xfe"), "payload uuid is not valid UTF-8"),
    (w.metric(w.blob(w.M_NAME, b"\xc3")), "metric name is not valid UTF-8"),
    (w.metric(w.uint(w.M_ALIAS, 1), w.blob(w.M_STRING, b"\xc3")), "string_value is not valid UTF-8"),
    (w.metric(w.uint(w.M_DATATYPE, w.TEXT), w.blob(w.M_STRING, b"\xc3")), "not valid UTF-8"),
    (b"\x0a", "not a Sparkplug B payload"),
])  # fmt: skip
def test_malformed_payloads_are_decode_errors(data: bytes, message: str) -> None:
    with pytest.raises(SparkplugDecodeError, match=message):
        decode_payload(data)


def test_a_payload_must_be_bytes() -> None:
    with pytest.raises(SparkplugDecodeError):
        decode_payload("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(("metric", "message"), [
    (Metric(name="x", datatype=DataType.INT8, value=128), "outside the range"),
    (Metric(name="x", datatype=DataType.UINT8, value=-1), "outside the range"),
    (Metric(name="x", datatype=DataType.INT32, value=True), "needs an integer"),
    (Metric(name="x", datatype=DataType.FLOAT, value=1e39), "32-bit float"),
    (Metric(name="x", datatype=DataType.BOOLEAN, value=1), "True or False"),
    (Metric(name="x", datatype=DataType.STRING, value=b"x"), "needs a string"),
    (Metric(name="x", datatype=DataType.INT8_ARRAY, value=[1, 200]), "outside the range"),
    (Metric(name="x", datatype=DataType.STRING_ARRAY, value=["a\x00b"]), "zero character"),
    (Metric(name="x", datatype=DataType.BOOLEAN_ARRAY, value="yes"), "list of values"),
    (Metric(name="x", value=3), "no data type"),
    (Metric(name="x", datatype=DataType.PROPERTY_SET, value=3), "not a metric data type"),
    (Metric(name="x", datatype=DataType.DATASET, value=DataSet(("a",), ())), "1 columns but 0 types"),
    (Metric(name="x", datatype=DataType.STRING, value="\ud800"), "cannot encode"),
    (Metric(name="x", alias=-1, datatype=DataType.STRING, value="a"), "alias"),
])  # fmt: skip
def test_values_a_type_cannot_hold_are_encode_errors(metric: Metric, message: str) -> None:
    with pytest.raises(SparkplugEncodeError, match=message):
        encode_payload(Payload(metrics=(metric,)))


@given(st.binary(max_size=300))
@settings(max_examples=500)
@example(b"\x12\x02\x20\x23")  # datatype 35
@example(b"\x12\x05\x20\x16\x82\x01\x00")  # an Int8Array given as a string
def test_fuzz_random_bytes_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(SparkplugDecodeError):
        decode_payload(data)


def _sample_birth() -> bytes:
    return encode_payload(Payload(
        metrics=(
            Metric(name="bdSeq", datatype=DataType.INT64, value=3, timestamp=1),
            Metric(name="t", alias=1, datatype=DataType.FLOAT, value=1.5, properties=PropertySet(
                (("engUnit", PropertyValue(DataType.STRING, "C")), ("Quality", PropertyValue(DataType.INT32, 192))))),
            Metric(name="d", alias=2, datatype=DataType.DATASET,
                   value=DataSet(("a", "b"), (DataType.INT16, DataType.STRING), ((-1, "x"), (None, "y")))),
            Metric(name="arr", alias=3, datatype=DataType.BOOLEAN_ARRAY, value=[True, False, True]),
            Metric(name="s", alias=4, datatype=DataType.STRING_ARRAY, value=["a", "bc"]),
            Metric(name="u", alias=5, datatype=DataType.TEMPLATE, value=Template(
                metrics=(Metric(name="m", datatype=DataType.INT8, value=-5),),
                parameters=(TemplateParameter("p", DataType.UINT16, 7),), is_definition=True)),
        ),
        timestamp=10, seq=0,
    ))  # fmt: skip


@given(st.data())
@settings(max_examples=500)
def test_fuzz_mutated_valid_payloads_raise_only_decode_errors(data: st.DataObject) -> None:
    raw = bytearray(_sample_birth())
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    try:
        payload = decode_payload(bytes(raw))
    except SparkplugDecodeError:
        return
    assert all(isinstance(metric.name, str | None) for metric in payload.metrics)
    for metric in payload.metrics:
        with contextlib.suppress(SparkplugDecodeError):
            retype(metric, data.draw(st.sampled_from(list(DataType))))
