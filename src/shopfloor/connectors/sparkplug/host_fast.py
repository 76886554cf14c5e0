"""The Sparkplug host's fast path for the messages that carry nearly all the points: NDATA and DDATA.

The general path decodes a payload into the model (:mod:`model`), hands it to the state machine
(:class:`HostState`), which resolves each metric against its birth and retypes it, and the host
then maps each kept metric by name to its series. Per metric that is several objects and look-ups.

Here the protobuf message is read once, straight into rows, through a :class:`DataPlan`: for one
birth scope (the node's NBIRTH or a device's DBIRTH) and one machine target (the registry's mapping
of that node or device), each alias and name maps to one :class:`PlanEntry` holding what the birth
declared (name, data type, whether it is a measurement) and where its values go (series, type,
scale). A plan is built once per birth and registry answer, and found again by their identity.

The fast path takes a message only when it would pass every protocol check of the general path:
each metric found by alias or name, its value in the field its data type allows, no properties or
metadata (which can change the quality or fail to decode), nothing a data message does not carry.
Anything else (:func:`read_rows` returns None) goes through the general path, from the start,
which finds and reports what is wrong exactly as before. What the host then checks per value
(mapping, timestamp limits, value types) is shared by both paths.

Most data messages carry nothing but Float/Double measurements mapped to numeric series, with
timestamps in range. Sent by alias, the compiled reader of :mod:`host_wire` takes those from the
wire bytes before the message is parsed at all. Otherwise :func:`read_floats` takes them in one
pass straight into three columns (series, ts, value) without a row per metric; at the first metric
that is anything else, or a value or timestamp that would need a dead letter, it gives up (None)
and :func:`read_rows` reads the message from the start.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import isfinite
from typing import Any, TypeAlias, TypeVar

from shopfloor.connectors.sparkplug import sparkplug_b_pb2 as pb
from shopfloor.connectors.sparkplug.codec import typed_value
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError
from shopfloor.connectors.sparkplug.host_state import BirthScope, MetricInfo, is_measurement
from shopfloor.connectors.sparkplug.host_wire import WirePlan, wire_plan
from shopfloor.connectors.sparkplug.model import METRIC_TYPES, DataType, Value
from shopfloor.domain.assets import ValueType
from shopfloor.ports.sparkplug import MachineTarget, MetricTarget

#: A value to map: name, whether the machine takes the name, its target (None: left out on
#: purpose), value, timestamp (ms, the metric's or the payload's), null, Sparkplug quality.
Row: TypeAlias = tuple[str, bool, MetricTarget | None, Value, int | None, bool, int | None]

_BY_CODE: dict[int, DataType] = {int(t): t for t in METRIC_TYPES}
_FLOATS = frozenset({DataType.FLOAT, DataType.DOUBLE})
_FLOAT_CODES = frozenset(int(t) for t in _FLOATS)
_FLOAT_FIELDS = frozenset({"float_value", "double_value"})
_NOT_SCALAR = frozenset({"dataset_value", "template_value"})


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One metric of a birth, with where its values go."""

    name: str
    datatype: DataType | None  # as the birth declared it
    floats: bool  # Float or Double
    keep: bool  # a measurement (not bdSeq, controls, properties)
    mapped: bool  # the machine takes this name
    target: MetricTarget | None  # None: left out on purpose (or not mapped)


#: A Float/Double measurement that goes to a numeric series: (series id, scale, offset).
FloatEntry: TypeAlias = tuple[int, float, float]
_E = TypeVar("_E", PlanEntry, FloatEntry)


@dataclass(frozen=True, slots=True)
class DataPlan:
    scope: BirthScope
    target: MachineTarget
    by_alias: Mapping[int, PlanEntry]
    by_name: Mapping[str, PlanEntry]
    floats_by_alias: Mapping[int, FloatEntry]  # the entries read_floats takes
    floats_by_name: Mapping[str, FloatEntry]
    wire: WirePlan | None  # floats_by_alias for the compiled reader (host_wire)


def make_plan(scope: BirthScope, target: MachineTarget) -> DataPlan:
    def entry(info: MetricInfo) -> PlanEntry:
        mapped = info.name in target.metrics
        return PlanEntry(info.name, info.datatype, info.datatype in _FLOATS, is_measurement(info.name), mapped,
                         target.metrics[info.name] if mapped else None)

    def floats(entries: Mapping[Any, PlanEntry]) -> dict[Any, FloatEntry]:
        return {key: (e.target.series_id, float(e.target.mapping.scale), float(e.target.mapping.offset))
                for key, e in entries.items()
                if e.floats and e.keep and e.target is not None and e.target.value_type is ValueType.NUMERIC}

    by_alias = {alias: entry(info) for alias, info in scope.by_alias.items()}
    by_name = {name: entry(info) for name, info in scope.by_name.items()}
    by_alias_floats = floats(by_alias)
    return DataPlan(scope, target, by_alias, by_name, by_alias_floats, floats(by_name), wire_plan(by_alias_floats))


def _entry(metric: Any, by_alias: Mapping[int, _E], by_name: Mapping[str, _E]) -> _E | None:
    """What a plan holds for ``metric``: found by its alias if it has one, else by its name; None
    when neither finds it (or its name is not valid UTF-8, which comes back as bytes)."""
    name = metric.name
    if not isinstance(name, str):
        return None
    alias = metric.alias
    if alias or metric.HasField("alias"):
        return by_alias.get(alias)
    if name or metric.HasField("name"):
        return by_name.get(name)
    return None


def read_floats(message: Any, plan: DataPlan, now_us: int, latest_us: int,
                earliest_us: int) -> tuple[list[int], list[int], list[float]] | None:
    """The (series ids, timestamps in µs, values) of a parsed NDATA/DDATA ``message`` whose metrics
    are all Float/Double measurements of numeric series, finite after scaling, within
    [earliest_us, latest_us]; None for any other message (then :func:`read_rows` reads it). What it
    returns is what ``read_rows`` and the host's per-value checks would store for it."""
    if message.HasField("uuid") and not isinstance(message.uuid, str):
        return None
    payload_ts: int | None = message.timestamp if message.HasField("timestamp") else None
    by_alias, by_name = plan.floats_by_alias, plan.floats_by_name
    sids: list[int] = []
    times: list[int] = []
    values: list[float] = []
    for m in message.metrics:
        entry = _entry(m, by_alias, by_name)
        if entry is None or m.HasField("properties") or m.HasField("metadata") or m.is_null:
            return None
        code = m.datatype
        if code and code not in _FLOAT_CODES:
            return None
        raw = m.double_value
        if not raw:
            field = m.WhichOneof("value")
            if field not in _FLOAT_FIELDS:
                return None
            raw = float(getattr(m, field))
        if m.is_transient:
            continue  # checked, and not stored (as read_rows)
        ts_ms = m.timestamp
        if not ts_ms and not m.HasField("timestamp"):
            ts_ms = payload_ts
        ts = ts_ms * 1000 if ts_ms is not None else now_us
        series_id, scale, offset = entry
        value = raw * scale + offset
        if ts > latest_us or ts < earliest_us or not isfinite(value):
            return None
        sids.append(series_id)
        times.append(ts)
        values.append(value)
    return sids, times, values


def read_rows(message: Any, plan: DataPlan) -> list[Row] | None:
    """The rows of the kept metrics of a parsed NDATA/DDATA ``message`` (a ``sparkplug_b_pb2.Payload``
    whose ``seq`` the state machine accepted), in message order; None when the general path must
    judge it. Checks what the codec and the state machine check; changes nothing."""
    if message.HasField("uuid") and not isinstance(message.uuid, str):
        return None
    payload_ts: int | None = message.timestamp if message.HasField("timestamp") else None
    by_alias, by_name = plan.by_alias, plan.by_name
    rows: list[Row] = []
    append = rows.append
    # An absent scalar field reads as its default (0, "", False), so HasField is asked only when a
    # default is read back: absent and present-but-default differ for alias, name and timestamp.
    for m in message.metrics:
        entry = _entry(m, by_alias, by_name)
        if entry is None or m.HasField("properties") or m.HasField("metadata"):
            return None
        code = m.datatype  # 0: absent or Unknown, the same to the codec
        if code:
            datatype = _BY_CODE.get(code)
            if datatype is None:
                return None
            floats = code in _FLOAT_CODES
        else:
            datatype = entry.datatype
            if datatype is None:
                return None  # untyped in the birth and here: the general path keeps the wire value
            floats = entry.floats
        is_null = m.is_null
        value: Value = None
        if not is_null:
            value = m.double_value if floats else 0.0
            if not value:  # a non-zero double_value is the oneof's field; anything else is asked
                field = m.WhichOneof("value")
                if field is None or field == "extension_value":
                    value = None
                elif field in _NOT_SCALAR:
                    return None
                elif floats and field in _FLOAT_FIELDS:
                    value = float(getattr(m, field))
                else:
                    try:
                        value = typed_value(datatype, field, getattr(m, field))
                    except SparkplugDecodeError:
                        return None
        if entry.keep and not m.is_transient:
            ts: int | None = m.timestamp
            if not ts and not m.HasField("timestamp"):
                ts = payload_ts
            append((entry.name, entry.mapped, entry.target, value, ts, is_null, None))
    return rows


def parse_message(data: bytes) -> Any:
    """The protobuf message of a payload (``sparkplug_b_pb2.Payload``), or None when it does not parse
    (the general path parses it again and reports why)."""
    try:
        return pb.Payload.FromString(data)
    except Exception:
        return None
