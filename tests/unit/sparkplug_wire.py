"""A tiny protobuf wire writer, independent of our .proto, of protobuf and of our codec.

Field numbers are written out here from the Sparkplug B 3.0 specification's schema, so payloads built
with it test the codec against the specification rather than against itself.
"""

from __future__ import annotations

import struct

# Payload
P_TIMESTAMP, P_METRICS, P_SEQ, P_UUID, P_BODY = 1, 2, 3, 4, 5
# Payload.Metric
M_NAME, M_ALIAS, M_TIMESTAMP, M_DATATYPE = 1, 2, 3, 4
M_IS_HISTORICAL, M_IS_TRANSIENT, M_IS_NULL, M_METADATA, M_PROPERTIES = 5, 6, 7, 8, 9
M_INT, M_LONG, M_FLOAT, M_DOUBLE, M_BOOLEAN, M_STRING, M_BYTES, M_DATASET, M_TEMPLATE = 10, 11, 12, 13, 14, 15, 16, 17, 18
# Payload.MetaData
MD_IS_MULTI_PART, MD_CONTENT_TYPE, MD_SIZE, MD_SEQ, MD_FILE_NAME, MD_FILE_TYPE, MD_MD5, MD_DESCRIPTION = range(1, 9)
# Payload.PropertySet, Payload.PropertyValue, Payload.PropertySetList
PS_KEYS, PS_VALUES = 1, 2
PV_TYPE, PV_IS_NULL, PV_INT, PV_LONG, PV_FLOAT, PV_DOUBLE, PV_BOOLEAN, PV_STRING, PV_SET, PV_SET_LIST = range(1, 11)
PSL_PROPERTYSET = 1
# Payload.DataSet, DataSet.Row, DataSet.DataSetValue
DS_NUM_OF_COLUMNS, DS_COLUMNS, DS_TYPES, DS_ROWS = 1, 2, 3, 4
ROW_ELEMENTS = 1
DV_INT, DV_LONG, DV_FLOAT, DV_DOUBLE, DV_BOOLEAN, DV_STRING = range(1, 7)
# Payload.Template, Template.Parameter
T_VERSION, T_METRICS, T_PARAMETERS, T_TEMPLATE_REF, T_IS_DEFINITION = 1, 2, 3, 4, 5
TP_NAME, TP_TYPE, TP_INT, TP_LONG, TP_FLOAT, TP_DOUBLE, TP_BOOLEAN, TP_STRING = range(1, 9)

# data type codes, from the specification's DataType enumeration
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = range(1, 9)
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID, DATASET, BYTES, FILE, TEMPLATE = range(9, 20)
PROPERTY_SET, PROPERTY_SET_LIST = 20, 21
INT8_ARRAY, INT16_ARRAY, INT32_ARRAY, INT64_ARRAY = 22, 23, 24, 25
UINT8_ARRAY, UINT16_ARRAY, UINT32_ARRAY, UINT64_ARRAY = 26, 27, 28, 29
FLOAT_ARRAY, DOUBLE_ARRAY, BOOLEAN_ARRAY, STRING_ARRAY, DATETIME_ARRAY = 30, 31, 32, 33, 34

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def varint(n: int) -> bytes:
    assert 0 <= n < 2**64
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def uint(field: int, n: int) -> bytes:
    """A varint field; negative numbers must already be in their two's complement form."""
    return key(field, VARINT) + varint(n)


def boolean(field: int, flag: bool) -> bytes:
    return uint(field, 1 if flag else 0)


def f32(field: int, x: float) -> bytes:
    return key(field, FIXED32) + struct.pack("<f", x)


def f64(field: int, x: float) -> bytes:
    return key(field, FIXED64) + struct.pack("<d", x)


def blob(field: int, data: bytes) -> bytes:
    return key(field, LENGTH) + varint(len(data)) + data


def text(field: int, s: str) -> bytes:
    return blob(field, s.encode("utf-8"))


def message(field: int, *parts: bytes) -> bytes:
    return blob(field, b"".join(parts))


def metric(*parts: bytes) -> bytes:
    """One entry of Payload.metrics."""
    return message(P_METRICS, *parts)


def payload(*parts: bytes) -> bytes:
    return b"".join(parts)


def two32(n: int) -> int:
    """A signed number as the uint32 two's complement that Int8/16/32 travel in."""
    return n % 2**32


def two64(n: int) -> int:
    return n % 2**64
