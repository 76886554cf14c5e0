"""Sparkplug B 3.0 array types, packed into a metric's ``bytes_value``.

- Numeric and DateTime arrays: the values back to back, little-endian, at their natural width
  (DateTime as a signed 64-bit count of milliseconds since the epoch).
- BooleanArray: a 4-byte little-endian count of values, then the values one bit each, eight to a byte,
  the first value in the most significant bit; the unused bits of the last byte do not matter.
- StringArray: each string in UTF-8 followed by a zero byte.

The 3.0 specification's worked examples are the reference (for Int32Array ``[-1, 315338746]`` gives
``FF FF FF FF FA AF CB 12``); where an example disagrees with the little-endian rule stated beside it
(the FloatArray and DoubleArray examples are printed most significant byte first), the rule wins.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError, SparkplugEncodeError
from shopfloor.connectors.sparkplug.model import ArrayValue, DataType

# struct format letter and (for integers) the inclusive range of each numeric array type
_NUMERIC: dict[DataType, tuple[str, tuple[int, int] | None]] = {
    DataType.INT8_ARRAY: ("b", (-(2**7), 2**7 - 1)),
    DataType.INT16_ARRAY: ("h", (-(2**15), 2**15 - 1)),
    DataType.INT32_ARRAY: ("i", (-(2**31), 2**31 - 1)),
    DataType.INT64_ARRAY: ("q", (-(2**63), 2**63 - 1)),
    DataType.UINT8_ARRAY: ("B", (0, 2**8 - 1)),
    DataType.UINT16_ARRAY: ("H", (0, 2**16 - 1)),
    DataType.UINT32_ARRAY: ("I", (0, 2**32 - 1)),
    DataType.UINT64_ARRAY: ("Q", (0, 2**64 - 1)),
    DataType.DATETIME_ARRAY: ("q", (-(2**63), 2**63 - 1)),
    DataType.FLOAT_ARRAY: ("f", None),
    DataType.DOUBLE_ARRAY: ("d", None),
}
_COUNT = struct.Struct("<I")


def unpack_array(datatype: DataType, data: bytes) -> ArrayValue:
    """Read the packed ``bytes_value`` of an array metric."""
    if datatype is DataType.BOOLEAN_ARRAY:
        return _unpack_booleans(data)
    if datatype is DataType.STRING_ARRAY:
        return _unpack_strings(data)
    if datatype not in _NUMERIC:
        raise SparkplugDecodeError(f"{datatype.name} is not an array type")
    letter, _ = _NUMERIC[datatype]
    size = struct.calcsize(letter)
    if len(data) % size:
        raise SparkplugDecodeError(f"{datatype.name} of {len(data)} bytes is not a whole number of {size}-byte values")
    values = list(struct.unpack(f"<{len(data) // size}{letter}", data))
    return values


def pack_array(datatype: DataType, values: object) -> bytes:
    """Pack a list of values as the ``bytes_value`` of an array metric."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise SparkplugEncodeError(f"{datatype.name} needs a list of values, not {type(values).__name__}")
    if datatype is DataType.BOOLEAN_ARRAY:
        return _pack_booleans(values)
    if datatype is DataType.STRING_ARRAY:
        return _pack_strings(values)
    if datatype not in _NUMERIC:
        raise SparkplugEncodeError(f"{datatype.name} is not an array type")
    letter, bounds = _NUMERIC[datatype]
    for value in values:
        if bounds is None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SparkplugEncodeError(f"{datatype.name} holds numbers, not {value!r}")
            if letter == "f" and math.isfinite(value) and abs(value) > 3.4028234663852886e38:
                raise SparkplugEncodeError(f"{value!r} does not fit a 32-bit float")
        else:
            if isinstance(value, bool) or not isinstance(value, int):
                raise SparkplugEncodeError(f"{datatype.name} holds integers, not {value!r}")
            if not bounds[0] <= value <= bounds[1]:
                raise SparkplugEncodeError(f"{value} is outside the range of {datatype.name}")
    try:
        return struct.pack(f"<{len(values)}{letter}", *values)
    except (struct.error, OverflowError) as exc:  # pragma: no cover - the checks above come first
        raise SparkplugEncodeError(f"cannot pack {datatype.name}: {exc}") from exc


def _unpack_booleans(data: bytes) -> list[bool]:
    if not data:
        return []
    if len(data) < _COUNT.size:
        raise SparkplugDecodeError("BooleanArray shorter than its 4-byte count")
    (count,) = _COUNT.unpack_from(data)
    packed = data[_COUNT.size:]
    if len(packed) != (count + 7) // 8:
        raise SparkplugDecodeError(f"BooleanArray of {count} values needs {(count + 7) // 8} bytes, has {len(packed)}")
    return [bool(packed[i // 8] & (0x80 >> (i % 8))) for i in range(count)]


def _pack_booleans(values: Sequence[object]) -> bytes:
    packed = bytearray((len(values) + 7) // 8)
    for i, value in enumerate(values):
        if not isinstance(value, bool):
            raise SparkplugEncodeError(f"BooleanArray holds booleans, not {value!r}")
        if value:
            packed[i // 8] |= 0x80 >> (i % 8)
    return _COUNT.pack(len(values)) + bytes(packed)


def _unpack_strings(data: bytes) -> list[str]:
    if not data:
        return []
    if not data.endswith(b"\x00"):
        raise SparkplugDecodeError("StringArray does not end with a zero byte")
    try:
        return [part.decode("utf-8") for part in data[:-1].split(b"\x00")]
    except UnicodeDecodeError as exc:
        raise SparkplugDecodeError(f"StringArray holds invalid UTF-8: {exc.reason}") from exc


def _pack_strings(values: Sequence[object]) -> bytes:
    out = bytearray()
    for value in values:
        if not isinstance(value, str):
            raise SparkplugEncodeError(f"StringArray holds strings, not {value!r}")
        if "\x00" in value:
            raise SparkplugEncodeError("a StringArray element cannot contain a zero character")
        try:
            out += value.encode("utf-8") + b"\x00"
        except UnicodeEncodeError as exc:
            raise SparkplugEncodeError(f"StringArray element is not encodable as UTF-8: {exc.reason}") from exc
    return bytes(out)
