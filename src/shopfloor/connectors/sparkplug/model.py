"""Sparkplug B payloads as plain Python values: what the codec decodes to and encodes from.

Integers are Python ints with their sign restored (an Int8 of -1 is ``-1``, whatever the wire carried),
timestamps and DateTime values are milliseconds since the Unix epoch (UTC), arrays are lists,
a DataSet is columns, types and rows, a PropertySet keeps its keys in order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TypeAlias


class DataType(enum.IntEnum):
    """The Sparkplug B 3.0 data type codes (Metric.datatype, PropertyValue.type, DataSet.types)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19
    PROPERTY_SET = 20
    PROPERTY_SET_LIST = 21
    INT8_ARRAY = 22
    INT16_ARRAY = 23
    INT32_ARRAY = 24
    INT64_ARRAY = 25
    UINT8_ARRAY = 26
    UINT16_ARRAY = 27
    UINT32_ARRAY = 28
    UINT64_ARRAY = 29
    FLOAT_ARRAY = 30
    DOUBLE_ARRAY = 31
    BOOLEAN_ARRAY = 32
    STRING_ARRAY = 33
    DATETIME_ARRAY = 34


#: Types a DataSet column, a property value or a template parameter may have ("basic types").
BASIC_TYPES = frozenset(DataType(code) for code in range(1, 15))
#: Types whose value travels packed in ``bytes_value``.
ARRAY_TYPES = frozenset(DataType(code) for code in range(22, 35))
#: Types a metric may declare.
METRIC_TYPES = BASIC_TYPES | ARRAY_TYPES | {
    DataType.UUID, DataType.DATASET, DataType.BYTES, DataType.FILE, DataType.TEMPLATE,
}
#: Types a property value may declare.
PROPERTY_TYPES = BASIC_TYPES | {DataType.PROPERTY_SET, DataType.PROPERTY_SET_LIST}


class Quality(enum.IntEnum):
    """Values of the ``Quality`` property (a signed 32-bit integer property, type Int32)."""

    BAD = 0
    GOOD = 192
    STALE = 500


QUALITY_KEY = "Quality"
#: Property keys that carry a metric's engineering unit (Ignition writes ``engUnit``).
ENGINEERING_UNIT_KEYS = ("engUnit", "engineeringUnits")

Scalar: TypeAlias = int | float | bool | str | bytes
ArrayValue: TypeAlias = list[int] | list[float] | list[bool] | list[str]


@dataclass(frozen=True, slots=True)
class DataSet:
    """A table: one type per column, rows of basic values (``None`` for an empty cell)."""

    columns: tuple[str, ...]
    types: tuple[DataType, ...]
    rows: tuple[tuple[Scalar | None, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class PropertyValue:
    type: DataType
    value: Scalar | PropertySet | tuple[PropertySet, ...] | None
    is_null: bool = False


@dataclass(frozen=True, slots=True)
class PropertySet:
    """A small ordered map of property name to typed value."""

    items: tuple[tuple[str, PropertyValue], ...] = ()

    def get(self, key: str) -> PropertyValue | None:
        for name, value in self.items:
            if name == key:
                return value
        return None

    def keys(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.items)

    def as_dict(self) -> dict[str, PropertyValue]:
        return dict(self.items)


@dataclass(frozen=True, slots=True)
class MetaData:
    is_multi_part: bool | None = None
    content_type: str | None = None
    size: int | None = None
    seq: int | None = None
    file_name: str | None = None
    file_type: str | None = None
    md5: str | None = None
    description: str | None = None


@dataclass(frozen=True, slots=True)
class TemplateParameter:
    name: str | None
    type: DataType
    value: Scalar | None


@dataclass(frozen=True, slots=True)
class Template:
    """A template definition (``is_definition``) or an instance of one (``template_ref``)."""

    metrics: tuple[Metric, ...] = ()
    parameters: tuple[TemplateParameter, ...] = ()
    version: str | None = None
    template_ref: str | None = None
    is_definition: bool = False


Value: TypeAlias = Scalar | ArrayValue | DataSet | Template | None


@dataclass(frozen=True, slots=True)
class WireValue:
    """The value exactly as the wire carried it: which ``oneof`` field, and its raw content.

    Kept on decoded metrics whose message gave no data type (data messages normally omit it), so the
    value can be read again once the type is known from the birth certificate.
    """

    field: str
    raw: int | float | bool | str | bytes


@dataclass(frozen=True, slots=True)
class Metric:
    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: DataType | None = None
    value: Value = None
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    properties: PropertySet | None = None
    metadata: MetaData | None = None
    wire: WireValue | None = field(default=None, compare=False, repr=False)

    @property
    def quality(self) -> int | None:
        """The ``Quality`` property's code (0 bad, 192 good, 500 stale), if the metric carries one."""
        return quality_of(self.properties)

    @property
    def engineering_unit(self) -> str | None:
        return engineering_unit_of(self.properties)


@dataclass(frozen=True, slots=True)
class Payload:
    metrics: tuple[Metric, ...] = ()
    timestamp: int | None = None
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None

    def metric(self, name: str) -> Metric | None:
        """The first metric with this name, if any."""
        for metric in self.metrics:
            if metric.name == name:
                return metric
        return None


def quality_of(properties: PropertySet | None) -> int | None:
    prop = properties.get(QUALITY_KEY) if properties else None
    if prop is None or isinstance(prop.value, bool) or not isinstance(prop.value, int):
        return None
    return prop.value


def engineering_unit_of(properties: PropertySet | None) -> str | None:
    for key in ENGINEERING_UNIT_KEYS:
        prop = properties.get(key) if properties else None
        if prop is not None and isinstance(prop.value, str):
            return prop.value
    return None
