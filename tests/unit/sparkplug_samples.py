"""Sample Sparkplug payloads written with the independent wire writer, and the spec's array examples."""

from __future__ import annotations

import struct

from shopfloor.connectors.sparkplug.model import DataType
from tests.unit import sparkplug_wire as w

# The 3.0 specification's worked examples ("Datatype Details", array types). Two of them are misprinted
# there: the Int8Array example writes -23 as 0xEF (it is 0xE9), and the FloatArray/DoubleArray examples
# print each value most significant byte first although the rule beside them says little-endian; the
# bytes below are the little-endian ones.
SPEC_ARRAY_EXAMPLES = [
    (DataType.INT8_ARRAY, [-23, 123], "e9 7b"),
    (DataType.INT16_ARRAY, [-30000, 30000], "d0 8a 30 75"),
    (DataType.INT32_ARRAY, [-1, 315338746], "ff ff ff ff fa af cb 12"),
    (DataType.INT64_ARRAY, [-4270929666821191986, -3601064768563266876],
     "ce 06 72 ac 18 9c ba c4 c4 ba 9c 18 ac 72 06 ce"),
    (DataType.UINT8_ARRAY, [23, 250], "17 fa"),
    (DataType.UINT16_ARRAY, [30, 52360], "1e 00 88 cc"),
    (DataType.UINT32_ARRAY, [52, 3293969225], "34 00 00 00 49 fb 55 c4"),
    (DataType.UINT64_ARRAY, [52, 16444743074749521625], "34 00 00 00 00 00 00 00 d9 9e 02 d1 b2 76 37 e4"),
    (DataType.FLOAT_ARRAY, [struct.unpack("<f", struct.pack("<f", x))[0] for x in (1.23, 89.341)],
     "a4 70 9d 3f 98 ae b2 42"),
    (DataType.DOUBLE_ARRAY, [12.354213, 1022.9123213], "d7 a2 05 68 5b b5 28 40 8e 17 1c 6f 4c f7 8f 40"),
    (DataType.BOOLEAN_ARRAY, [False, False, True, True, False, True, False, False, True, True, False, True],
     "0c 00 00 00 34 d0"),
    (DataType.STRING_ARRAY, ["ABC", "hello"], "41 42 43 00 68 65 6c 6c 6f 00"),
    (DataType.DATETIME_ARRAY, [1256102875335, 1656107875000], "c7 d0 90 75 24 01 00 00 b8 ba b8 97 81 01 00 00"),
]  # fmt: skip

T0 = 1_700_000_000_000


def _named(name: str, datatype: int, *value: bytes, alias: int | None = None) -> bytes:
    parts = [w.text(w.M_NAME, name), w.uint(w.M_TIMESTAMP, T0), w.uint(w.M_DATATYPE, datatype), *value]
    if alias is not None:
        parts.insert(1, w.uint(w.M_ALIAS, alias))
    return w.metric(*parts)


def prop(key: str, *value: bytes) -> tuple[bytes, bytes]:
    return w.text(w.PS_KEYS, key), w.message(w.PS_VALUES, *value)


def _property_set(*props: tuple[bytes, bytes]) -> bytes:
    # keys first, then values, as protobuf writes repeated fields; the codec must pair them by position
    return b"".join(k for k, _ in props) + b"".join(v for _, v in props)


ARRAY_ALIASES = {datatype: 30 + i for i, (datatype, _, _) in enumerate(SPEC_ARRAY_EXAMPLES)}


def hand_built_nbirth(bd_seq: int = 7, seq: int = 0) -> bytes:
    """A full NBIRTH of an edge node, written field by field from the specification."""
    temperature_props = _property_set(
        prop("engUnit", w.uint(w.PV_TYPE, w.STRING), w.text(w.PV_STRING, "°C")),
        prop("Quality", w.uint(w.PV_TYPE, w.INT32), w.uint(w.PV_INT, 192)),
    )
    settings_props = _property_set(
        prop("limits", w.uint(w.PV_TYPE, w.PROPERTY_SET), w.message(w.PV_SET, _property_set(
            prop("hi", w.uint(w.PV_TYPE, w.DOUBLE), w.f64(w.PV_DOUBLE, 90.0)),
            prop("lo", w.uint(w.PV_TYPE, w.DOUBLE), w.f64(w.PV_DOUBLE, 10.0)),
        ))),
        prop("history", w.uint(w.PV_TYPE, w.PROPERTY_SET_LIST), w.message(
            w.PV_SET_LIST,
            w.message(w.PSL_PROPERTYSET, *prop("n", w.uint(w.PV_TYPE, w.UINT8), w.uint(w.PV_INT, 1))),
            w.message(w.PSL_PROPERTYSET, *prop("n", w.uint(w.PV_TYPE, w.UINT8), w.uint(w.PV_INT, 2))),
        )),
        prop("note", w.uint(w.PV_TYPE, w.STRING), w.boolean(w.PV_IS_NULL, True)),
    )
    batch = w.message(
        w.M_DATASET,
        w.uint(w.DS_NUM_OF_COLUMNS, 4),
        *(w.text(w.DS_COLUMNS, c) for c in ("part", "count", "ok", "weight")),
        *(w.uint(w.DS_TYPES, t) for t in (w.STRING, w.INT32, w.BOOLEAN, w.DOUBLE)),
        w.message(w.DS_ROWS, w.message(w.ROW_ELEMENTS, w.text(w.DV_STRING, "A-1")),
                  w.message(w.ROW_ELEMENTS, w.uint(w.DV_INT, w.two32(-5))),
                  w.message(w.ROW_ELEMENTS, w.boolean(w.DV_BOOLEAN, True)),
                  w.message(w.ROW_ELEMENTS, w.f64(w.DV_DOUBLE, 1.25))),
        w.message(w.DS_ROWS, w.message(w.ROW_ELEMENTS, w.text(w.DV_STRING, "B-2")),
                  w.message(w.ROW_ELEMENTS, w.uint(w.DV_INT, 7)),
                  w.message(w.ROW_ELEMENTS, w.boolean(w.DV_BOOLEAN, False)),
                  w.message(w.ROW_ELEMENTS)),  # an empty cell
    )
    motor_definition = w.message(
        w.M_TEMPLATE,
        w.text(w.T_VERSION, "1"),
        w.message(w.T_METRICS, w.text(w.M_NAME, "rpm"), w.uint(w.M_DATATYPE, w.INT32), w.uint(w.M_INT, 0)),
        w.message(w.T_METRICS, w.text(w.M_NAME, "label"), w.uint(w.M_DATATYPE, w.STRING), w.text(w.M_STRING, "")),
        w.message(w.T_PARAMETERS, w.text(w.TP_NAME, "rated"), w.uint(w.TP_TYPE, w.FLOAT), w.f32(w.TP_FLOAT, 1.5)),
        w.boolean(w.T_IS_DEFINITION, True),
    )
    motor_instance = w.message(
        w.M_TEMPLATE,
        w.message(w.T_METRICS, w.text(w.M_NAME, "rpm"), w.uint(w.M_DATATYPE, w.INT32), w.uint(w.M_INT, w.two32(-1500))),
        w.message(w.T_PARAMETERS, w.text(w.TP_NAME, "rated"), w.uint(w.TP_TYPE, w.FLOAT), w.f32(w.TP_FLOAT, 2.5)),
        w.text(w.T_TEMPLATE_REF, "_types_/Motor"),
        w.boolean(w.T_IS_DEFINITION, False),
    )
    return w.payload(
        w.uint(w.P_TIMESTAMP, T0),
        _named("bdSeq", w.INT64, w.uint(w.M_LONG, bd_seq)),
        _named("Node Control/Rebirth", w.BOOLEAN, w.boolean(w.M_BOOLEAN, False)),
        _named("Node Control/Scan Rate", w.INT64, w.uint(w.M_LONG, 3000)),
        _named("Properties/Hardware Make", w.STRING, w.text(w.M_STRING, "ACME")),
        # value and properties before the name: field order must not matter
        w.metric(w.f32(w.M_FLOAT, 21.5), w.message(w.M_PROPERTIES, temperature_props), w.uint(w.M_DATATYPE, w.FLOAT),
                 w.uint(w.M_ALIAS, 10), w.text(w.M_NAME, "Line/Temperature"), w.uint(w.M_TIMESTAMP, T0)),
        _named("Line/Offset", w.INT8, w.uint(w.M_INT, w.two32(-23)), alias=11),
        _named("Line/Delta", w.INT16, w.uint(w.M_INT, 0x8AD0), alias=12),  # the narrow form of -30000
        _named("Line/Counter", w.INT64, w.uint(w.M_LONG, w.two64(-42)), alias=13),
        _named("Line/Total", w.UINT64, w.uint(w.M_LONG, 2**64 - 1), alias=14),
        _named("Line/Pressure", w.DOUBLE, w.f64(w.M_DOUBLE, 1.0e5), alias=15),
        _named("Line/Running", w.BOOLEAN, w.boolean(w.M_BOOLEAN, True), alias=16),
        _named("Line/Started", w.DATETIME, w.uint(w.M_LONG, 1656107875000), alias=17),
        _named("Line/Serial", w.UUID, w.text(w.M_STRING, "6f1c3a52-8d3e-4c1e-9a43-0d6b2b1e7a10"), alias=18),
        _named("Line/Blob", w.BYTES, w.blob(w.M_BYTES, b"\x00\xff"), alias=19),
        _named("Line/Batch", w.DATASET, batch, alias=20),
        _named("Line/Spare", w.DOUBLE, w.boolean(w.M_IS_NULL, True), alias=21),
        _named("Line/Settings", w.INT32, w.uint(w.M_INT, 1), w.message(w.M_PROPERTIES, settings_props), alias=22),
        _named("_types_/Motor", w.TEMPLATE, motor_definition),
        _named("Motor1", w.TEMPLATE, motor_instance, alias=23),
        _named("Line/Report", w.FILE, w.message(w.M_METADATA, w.text(w.MD_FILE_NAME, "r.csv"), w.uint(w.MD_SIZE, 3)),
               w.blob(w.M_BYTES, b"a,b"), alias=24),
        *(_named(f"Line/{datatype.name}", int(datatype), w.blob(w.M_BYTES, bytes.fromhex(hexbytes)),
                 alias=ARRAY_ALIASES[datatype]) for datatype, _, hexbytes in SPEC_ARRAY_EXAMPLES),
        w.uint(w.P_SEQ, seq),
    )
