"""Sparkplug B 3.0 payload codec: protobuf bytes to :mod:`model` values and back.

``decode_payload`` raises :class:`SparkplugDecodeError` and nothing else for malformed input.
Signed integers follow the specification: Int8, Int16 and Int32 travel in the uint32 ``int_value``
as two's complement, Int64 (and DateTime) in the uint64 ``long_value``; the decoder accepts both the
32-bit sign-extended form other encoders write (``0xFFFFFFFF`` for an Int8 of -1) and the narrow form
(``0xFF``), and refuses a value that fits neither. The encoder writes the sign-extended form.

A metric whose message gives no data type (NDATA and DDATA normally omit it) decodes to its raw wire
value and keeps that wire value, so :func:`retype` can read it again with the type from the birth.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from google.protobuf.message import DecodeError, EncodeError

from shopfloor.connectors.sparkplug import sparkplug_b_pb2 as pb
from shopfloor.connectors.sparkplug.arrays import pack_array, unpack_array
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError, SparkplugEncodeError
from shopfloor.connectors.sparkplug.model import (
    ARRAY_TYPES,
    BASIC_TYPES,
    METRIC_TYPES,
    PROPERTY_TYPES,
    DataSet,
    DataType,
    MetaData,
    Metric,
    Payload,
    PropertySet,
    PropertyValue,
    Scalar,
    Template,
    TemplateParameter,
    Value,
    WireValue,
)

_U32 = 2**32
_U64 = 2**64
_SIGNED_BITS = {DataType.INT8: 8, DataType.INT16: 16, DataType.INT32: 32, DataType.INT64: 64, DataType.DATETIME: 64}
_UNSIGNED_BITS = {DataType.UINT8: 8, DataType.UINT16: 16, DataType.UINT32: 32, DataType.UINT64: 64}
_INT_FIELDS = ("int_value", "long_value")
_FLOAT_FIELDS = ("float_value", "double_value")
_STRING_TYPES = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})
_FLOAT32_MAX = 3.4028234663852886e38
_DECODE_FAILURES = (DecodeError, ValueError, TypeError, UnicodeError, RecursionError, OverflowError, IndexError)


# ---------------------------------------------------------------------------------------------- decode


def decode_payload(data: bytes) -> Payload:
    """Decode the bytes of an MQTT message on a ``spBv1.0`` data topic."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SparkplugDecodeError(f"a Sparkplug payload is bytes, not {type(data).__name__}")
    try:
        message = pb.Payload.FromString(bytes(data))
    except _DECODE_FAILURES as exc:
        raise SparkplugDecodeError(f"not a Sparkplug B payload: {exc}") from exc
    return decode_message(message)


def decode_message(message: pb.Payload) -> Payload:
    """The model of an already parsed protobuf payload (what :func:`decode_payload` returns for its bytes)."""
    try:
        return _payload(message)
    except SparkplugDecodeError:
        raise
    except _DECODE_FAILURES as exc:
        raise SparkplugDecodeError(f"not a Sparkplug B payload: {exc}") from exc


def typed_value(datatype: DataType, field: str, raw: Any) -> Value:
    """The raw content of a metric's ``oneof`` value ``field`` read as ``datatype`` (a metric data type
    other than DataSet and Template), as :func:`decode_payload` and :func:`retype` read it; raises
    :class:`SparkplugDecodeError` for a value the type does not allow."""
    return _typed(datatype, field, raw, "")


def retype(metric: Metric, datatype: DataType | None) -> Metric:
    """Read a metric's value as ``datatype`` when its own message did not say.

    A metric that carries its own data type, or whose value was already typed, is returned as it is.
    """
    if metric.datatype is not None or datatype is None or datatype is DataType.UNKNOWN:
        return metric
    if datatype not in METRIC_TYPES:
        raise SparkplugDecodeError(f"{datatype.name} is not a metric data type")
    label = _label(metric.name, metric.alias)
    if metric.is_null or metric.value is None:
        return replace(metric, datatype=datatype, value=None)
    if metric.wire is None:
        if datatype is DataType.DATASET and isinstance(metric.value, DataSet):
            return replace(metric, datatype=datatype)
        if datatype is DataType.TEMPLATE and isinstance(metric.value, Template):
            return replace(metric, datatype=datatype)
        raise SparkplugDecodeError(f"metric {label}: a {type(metric.value).__name__} value is not {datatype.name}")
    value = _typed(datatype, metric.wire.field, metric.wire.raw, label)
    return replace(metric, datatype=datatype, value=value, wire=None)


def _payload(message: Any) -> Payload:
    return Payload(
        metrics=tuple(_metric(m) for m in message.metrics),
        timestamp=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        uuid=_text(message.uuid, "payload uuid") if message.HasField("uuid") else None,
        body=message.body if message.HasField("body") else None,
    )


def _metric(m: Any) -> Metric:
    name = _text(m.name, "metric name") if m.HasField("name") else None
    alias = m.alias if m.HasField("alias") else None
    label = _label(name, alias)
    datatype: DataType | None = None
    if m.HasField("datatype") and m.datatype != DataType.UNKNOWN:
        datatype = _datatype(m.datatype, METRIC_TYPES, f"metric {label}")
    field = m.WhichOneof("value")
    value: Value = None
    wire: WireValue | None = None
    if not m.is_null and field is not None and field != "extension_value":
        raw = getattr(m, field)
        if field == "dataset_value":
            value = _dataset(raw, label)
        elif field == "template_value":
            value = _template(raw)
        elif datatype is None:
            if field == "string_value":
                raw = _text(raw, f"metric {label} string_value")
            value, wire = raw, WireValue(field, raw)
        else:
            value = _typed(datatype, field, raw, label)
        if datatype is not None and field in ("dataset_value", "template_value"):
            expected = DataType.DATASET if field == "dataset_value" else DataType.TEMPLATE
            if datatype is not expected:
                raise SparkplugDecodeError(f"metric {label}: datatype {datatype.name} carries {field}")
    return Metric(
        name=name,
        alias=alias,
        timestamp=m.timestamp if m.HasField("timestamp") else None,
        datatype=datatype,
        value=value,
        is_null=m.is_null,
        is_historical=m.is_historical,
        is_transient=m.is_transient,
        properties=_property_set(m.properties, label) if m.HasField("properties") else None,
        metadata=_metadata(m.metadata) if m.HasField("metadata") else None,
        wire=wire,
    )


def _label(name: str | None, alias: int | None) -> str:
    if name is not None:
        return repr(name)
    return f"alias {alias}" if alias is not None else "(no name, no alias)"


def _text(value: Any, where: str) -> str:
    """A protobuf string field; the runtime hands back bytes when they are not valid UTF-8."""
    if not isinstance(value, str):
        raise SparkplugDecodeError(f"{where} is not valid UTF-8")
    return value


def _datatype(code: int, allowed: frozenset[DataType], where: str) -> DataType:
    try:
        datatype = DataType(code)
    except ValueError:
        raise SparkplugDecodeError(f"{where}: unknown data type code {code}") from None
    if datatype not in allowed:
        raise SparkplugDecodeError(f"{where}: data type {datatype.name} is not allowed here")
    return datatype


def _typed(datatype: DataType, field: str, raw: Any, label: str) -> Value:
    """The value of one ``oneof`` field read as ``datatype``."""
    if datatype in ARRAY_TYPES:
        if field != "bytes_value":
            raise SparkplugDecodeError(f"metric {label}: {datatype.name} must be in bytes_value, not {field}")
        try:
            return unpack_array(datatype, raw)
        except SparkplugDecodeError as exc:
            raise SparkplugDecodeError(f"metric {label}: {exc.message}") from exc
    if datatype in (DataType.BYTES, DataType.FILE):
        if field != "bytes_value":
            raise SparkplugDecodeError(f"metric {label}: {datatype.name} must be in bytes_value, not {field}")
        return bytes(raw)
    return _scalar(datatype, field, raw, f"metric {label}")


def _scalar(datatype: DataType, field: str, raw: Any, where: str) -> Scalar:
    """A basic-type value from the field that carried it (shared by metrics, properties, cells, parameters)."""
    if datatype in _SIGNED_BITS or datatype in _UNSIGNED_BITS:
        if field not in _INT_FIELDS:
            raise SparkplugDecodeError(f"{where}: {datatype.name} must be in int_value or long_value, not {field}")
        return _integer(datatype, field, raw, where)
    if datatype in (DataType.FLOAT, DataType.DOUBLE):
        if field not in _FLOAT_FIELDS:
            raise SparkplugDecodeError(f"{where}: {datatype.name} must be in float_value or double_value, not {field}")
        return float(raw)
    if datatype is DataType.BOOLEAN:
        if field != "boolean_value":
            raise SparkplugDecodeError(f"{where}: Boolean must be in boolean_value, not {field}")
        return bool(raw)
    if datatype in _STRING_TYPES:
        if field != "string_value":
            raise SparkplugDecodeError(f"{where}: {datatype.name} must be in string_value, not {field}")
        return _text(raw, where)
    raise SparkplugDecodeError(f"{where}: {datatype.name} is not a basic type")


def _integer(datatype: DataType, field: str, raw: int, where: str) -> int:
    width = _U32 if field == "int_value" else _U64
    if datatype in _UNSIGNED_BITS:
        if raw >= 2 ** _UNSIGNED_BITS[datatype]:
            raise SparkplugDecodeError(f"{where}: {raw} is outside the range of {datatype.name}")
        return raw
    bits = _SIGNED_BITS[datatype]
    if raw < 2**bits:  # the narrow two's complement form (all of int_value for Int32)
        return raw - 2**bits if raw >= 2 ** (bits - 1) else raw
    if raw >= width - 2 ** (bits - 1):  # sign-extended to the width of the field
        return raw - width
    raise SparkplugDecodeError(f"{where}: {raw} is outside the range of {datatype.name}")


def _dataset(d: Any, label: str) -> DataSet:
    where = f"metric {label}: DataSet"
    columns = tuple(_text(column, f"{where} column name") for column in d.columns)
    types = tuple(_datatype(code, BASIC_TYPES, f"{where} column type") for code in d.types)
    if len(columns) != len(types):
        raise SparkplugDecodeError(f"{where} has {len(columns)} columns but {len(types)} types")
    if d.HasField("num_of_columns") and d.num_of_columns != len(columns):
        raise SparkplugDecodeError(f"{where} says {d.num_of_columns} columns but names {len(columns)}")
    rows = []
    for index, row in enumerate(d.rows):
        if len(row.elements) != len(columns):
            raise SparkplugDecodeError(f"{where} row {index} has {len(row.elements)} cells for {len(columns)} columns")
        cells: list[Scalar | None] = []
        for datatype, cell in zip(types, row.elements, strict=True):
            field = cell.WhichOneof("value")
            if field is None or field == "extension_value":
                cells.append(None)
            else:
                cells.append(_scalar(datatype, field, getattr(cell, field), f"{where} row {index}"))
        rows.append(tuple(cells))
    return DataSet(columns=columns, types=types, rows=tuple(rows))


def _property_set(p: Any, label: str) -> PropertySet:
    if len(p.keys) != len(p.values):
        raise SparkplugDecodeError(f"metric {label}: PropertySet has {len(p.keys)} keys but {len(p.values)} values")
    keys = [_text(key, f"metric {label}: property name") for key in p.keys]
    return PropertySet(items=tuple((key, _property_value(v, key, label)) for key, v in zip(keys, p.values, strict=True)))


def _property_value(v: Any, key: str, label: str) -> PropertyValue:
    where = f"metric {label}: property {key!r}"
    datatype = _datatype(v.type, PROPERTY_TYPES | {DataType.UNKNOWN}, where)
    field = v.WhichOneof("value")
    if v.is_null or field is None or field == "extension_value":
        return PropertyValue(type=datatype, value=None, is_null=v.is_null)
    raw = getattr(v, field)
    value: Scalar | PropertySet | tuple[PropertySet, ...]
    if field == "propertyset_value":
        if datatype not in (DataType.PROPERTY_SET, DataType.UNKNOWN):
            raise SparkplugDecodeError(f"{where}: {datatype.name} carries a PropertySet")
        value = _property_set(raw, label)
    elif field == "propertysets_value":
        if datatype not in (DataType.PROPERTY_SET_LIST, DataType.UNKNOWN):
            raise SparkplugDecodeError(f"{where}: {datatype.name} carries a PropertySetList")
        value = tuple(_property_set(s, label) for s in raw.propertyset)
    elif datatype is DataType.UNKNOWN:
        value = _text(raw, where) if field == "string_value" else raw
    else:
        value = _scalar(datatype, field, raw, where)
    return PropertyValue(type=datatype, value=value)


def _template(t: Any) -> Template:
    parameters = []
    for p in t.parameters:
        name = _text(p.name, "template parameter name") if p.HasField("name") else None
        where = f"template parameter {name!r}"
        datatype = _datatype(p.type, BASIC_TYPES | {DataType.UNKNOWN}, where)
        field = p.WhichOneof("value")
        value: Scalar | None = None
        if field is not None and field != "extension_value":
            raw = getattr(p, field)
            if datatype is DataType.UNKNOWN:
                value = _text(raw, where) if field == "string_value" else raw
            else:
                value = _scalar(datatype, field, raw, where)
        parameters.append(TemplateParameter(name=name, type=datatype, value=value))
    return Template(
        metrics=tuple(_metric(m) for m in t.metrics),
        parameters=tuple(parameters),
        version=_text(t.version, "template version") if t.HasField("version") else None,
        template_ref=_text(t.template_ref, "template_ref") if t.HasField("template_ref") else None,
        is_definition=t.is_definition,
    )


def _metadata(m: Any) -> MetaData:
    def get(name: str) -> Any:
        if not m.HasField(name):
            return None
        value = getattr(m, name)
        return _text(value, f"metadata {name}") if isinstance(value, bytes) else value

    return MetaData(**{name: get(name) for name in MetaData.__slots__ if not name.startswith("__")})


# ---------------------------------------------------------------------------------------------- encode


def encode_payload(payload: Payload) -> bytes:
    """Encode a payload; raises :class:`SparkplugEncodeError` for a value its data type cannot hold."""
    message = pb.Payload()
    if payload.timestamp is not None:
        message.timestamp = _uint(payload.timestamp, 64, "payload timestamp")
    if payload.seq is not None:
        message.seq = _uint(payload.seq, 64, "payload seq")
    if payload.uuid is not None:
        message.uuid = payload.uuid
    if payload.body is not None:
        message.body = payload.body
    try:
        for metric in payload.metrics:
            _put_metric(message.metrics.add(), metric)
        return bytes(message.SerializeToString())
    except SparkplugEncodeError:
        raise
    except (EncodeError, ValueError, TypeError, UnicodeError) as exc:
        raise SparkplugEncodeError(f"cannot encode Sparkplug payload: {exc}") from exc


def _uint(value: int, bits: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**bits:
        raise SparkplugEncodeError(f"{what} must be an unsigned {bits}-bit integer, not {value!r}")
    return value


def _put_metric(m: Any, metric: Metric) -> None:
    label = _label(metric.name, metric.alias)
    if metric.name is not None:
        m.name = metric.name
    if metric.alias is not None:
        m.alias = _uint(metric.alias, 64, f"metric {label} alias")
    if metric.timestamp is not None:
        m.timestamp = _uint(metric.timestamp, 64, f"metric {label} timestamp")
    if metric.datatype is not None:
        m.datatype = int(metric.datatype)
    if metric.is_historical:
        m.is_historical = True
    if metric.is_transient:
        m.is_transient = True
    if metric.metadata is not None:
        m.metadata.SetInParent()
        for name in MetaData.__slots__:
            if not name.startswith("__") and getattr(metric.metadata, name) is not None:
                setattr(m.metadata, name, getattr(metric.metadata, name))
    if metric.properties is not None:
        m.properties.SetInParent()
        _put_property_set(m.properties, metric.properties, label)
    if metric.is_null:
        m.is_null = True
        return
    if metric.value is None:
        return
    datatype = metric.datatype
    if datatype is None or datatype is DataType.UNKNOWN:
        if isinstance(metric.value, DataSet):
            datatype = DataType.DATASET
        elif isinstance(metric.value, Template):
            datatype = DataType.TEMPLATE
        elif metric.wire is not None:
            setattr(m, metric.wire.field, metric.wire.raw)
            return
        else:
            raise SparkplugEncodeError(f"metric {label} has a value but no data type")
    where = f"metric {label}"
    if datatype is DataType.DATASET:
        if not isinstance(metric.value, DataSet):
            raise SparkplugEncodeError(f"{where}: DataSet needs a DataSet value")
        _put_dataset(m.dataset_value, metric.value, where)
    elif datatype is DataType.TEMPLATE:
        if not isinstance(metric.value, Template):
            raise SparkplugEncodeError(f"{where}: Template needs a Template value")
        _put_template(m.template_value, metric.value)
    elif datatype in ARRAY_TYPES:
        try:
            m.bytes_value = pack_array(datatype, metric.value)
        except SparkplugEncodeError as exc:
            raise SparkplugEncodeError(f"{where}: {exc.message}") from exc
    elif datatype in (DataType.BYTES, DataType.FILE):
        if not isinstance(metric.value, bytes | bytearray):
            raise SparkplugEncodeError(f"{where}: {datatype.name} needs bytes")
        m.bytes_value = bytes(metric.value)
    elif datatype in BASIC_TYPES or datatype is DataType.UUID:
        _put_scalar(m, datatype, metric.value, where)
    else:
        raise SparkplugEncodeError(f"{where}: {datatype.name} is not a metric data type")


def _put_scalar(target: Any, datatype: DataType, value: object, where: str) -> None:
    """Write a basic-type value into the oneof field its type uses (signed integers as two's complement)."""
    if datatype in _SIGNED_BITS or datatype in _UNSIGNED_BITS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SparkplugEncodeError(f"{where}: {datatype.name} needs an integer, not {value!r}")
        if datatype in _SIGNED_BITS:
            bits = _SIGNED_BITS[datatype]
            low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
        else:
            bits = _UNSIGNED_BITS[datatype]
            low, high = 0, 2**bits - 1
        if not low <= value <= high:
            raise SparkplugEncodeError(f"{where}: {value} is outside the range of {datatype.name}")
        if bits == 64:
            target.long_value = value % _U64
        else:
            target.int_value = value % _U32
    elif datatype in (DataType.FLOAT, DataType.DOUBLE):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SparkplugEncodeError(f"{where}: {datatype.name} needs a number, not {value!r}")
        if datatype is DataType.FLOAT:
            if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
                raise SparkplugEncodeError(f"{where}: {value!r} does not fit a 32-bit float")
            target.float_value = float(value)
        else:
            target.double_value = float(value)
    elif datatype is DataType.BOOLEAN:
        if not isinstance(value, bool):
            raise SparkplugEncodeError(f"{where}: Boolean needs True or False, not {value!r}")
        target.boolean_value = value
    elif datatype in _STRING_TYPES:
        if not isinstance(value, str):
            raise SparkplugEncodeError(f"{where}: {datatype.name} needs a string, not {value!r}")
        target.string_value = value
    else:
        raise SparkplugEncodeError(f"{where}: {datatype.name} is not a basic type")


def _put_dataset(target: Any, dataset: DataSet, where: str) -> None:
    if len(dataset.columns) != len(dataset.types):
        raise SparkplugEncodeError(f"{where}: DataSet has {len(dataset.columns)} columns but {len(dataset.types)} types")
    target.num_of_columns = len(dataset.columns)
    target.columns.extend(dataset.columns)
    for datatype in dataset.types:
        if datatype not in BASIC_TYPES:
            raise SparkplugEncodeError(f"{where}: DataSet column type {DataType(datatype).name} is not a basic type")
        target.types.append(int(datatype))
    for index, row in enumerate(dataset.rows):
        if len(row) != len(dataset.columns):
            raise SparkplugEncodeError(f"{where}: DataSet row {index} has {len(row)} cells for {len(dataset.columns)} columns")
        out = target.rows.add()
        for datatype, cell in zip(dataset.types, row, strict=True):
            element = out.elements.add()
            if cell is not None:
                _put_scalar(element, datatype, cell, f"{where} DataSet row {index}")


def _put_property_set(target: Any, properties: PropertySet, label: str) -> None:
    for key, value in properties.items:
        target.keys.append(key)
        _put_property_value(target.values.add(), value, f"metric {label}: property {key!r}", label)


def _put_property_value(target: Any, prop: PropertyValue, where: str, label: str) -> None:
    if prop.type not in PROPERTY_TYPES:
        raise SparkplugEncodeError(f"{where}: {DataType(prop.type).name} is not a property type")
    target.type = int(prop.type)
    if prop.is_null or prop.value is None:
        target.is_null = True
        return
    if prop.type is DataType.PROPERTY_SET:
        if not isinstance(prop.value, PropertySet):
            raise SparkplugEncodeError(f"{where}: PropertySet needs a PropertySet value")
        target.propertyset_value.SetInParent()
        _put_property_set(target.propertyset_value, prop.value, label)
    elif prop.type is DataType.PROPERTY_SET_LIST:
        if not isinstance(prop.value, tuple | list) or not all(isinstance(s, PropertySet) for s in prop.value):
            raise SparkplugEncodeError(f"{where}: PropertySetList needs a list of PropertySets")
        target.propertysets_value.SetInParent()
        for item in prop.value:
            _put_property_set(target.propertysets_value.propertyset.add(), item, label)
    else:
        _put_scalar(target, prop.type, prop.value, where)


def _put_template(target: Any, template: Template) -> None:
    if template.version is not None:
        target.version = template.version
    if template.template_ref is not None:
        target.template_ref = template.template_ref
    target.is_definition = template.is_definition
    for parameter in template.parameters:
        p = target.parameters.add()
        if parameter.name is not None:
            p.name = parameter.name
        p.type = int(parameter.type)
        if parameter.value is not None:
            if parameter.type not in BASIC_TYPES:
                raise SparkplugEncodeError(f"template parameter {parameter.name!r}: {parameter.type.name} is not a basic type")
            _put_scalar(p, parameter.type, parameter.value, f"template parameter {parameter.name!r}")
    for metric in template.metrics:
        _put_metric(target.metrics.add(), metric)

