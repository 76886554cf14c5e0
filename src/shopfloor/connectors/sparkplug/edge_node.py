"""A Sparkplug B edge node's messages, built with our codec: what the edge agent publishes in
``protocol: sparkplug`` mode. Pure: no MQTT here; the agent sends what this returns, in order.

* Each machine the agent feeds is a Sparkplug device (its id from the platform's binding), or the
  node itself (the binding's ``node`` machine); each measurement is a metric with an alias, declared
  with its data type and last value in the NBIRTH / DBIRTH and sent by alias in NDATA / DDATA.
* ``bdSeq`` counts MQTT sessions: the NDEATH registered as the connection's Will carries the one of
  the session's NBIRTH; ``next_session()`` moves on before a reconnect.
* ``seq`` runs 0..255 over the session's messages, NBIRTH being 0; it is assigned when a message is
  built, so the agent builds each message just before it publishes it.
* A value whose type differs from the birth's (an OPC UA node's first value, say) changes the metric's
  type; the caller is told to send the births again first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shopfloor.connectors.sparkplug.codec import decode_payload, encode_payload
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError
from shopfloor.connectors.sparkplug.model import DataType, Metric, Payload, PropertySet, PropertyValue, Value
from shopfloor.connectors.sparkplug.topics import EdgeNode, MessageType, SparkplugTopic, parse_topic

REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
Point = tuple[str, str]  # (machine path, measurement)
Message = tuple[str, bytes]
#: the Sparkplug Quality property of a sample that is not good (absent: good)
QUALITY_CODES = {"bad": 0, "uncertain": 500}


def datatype_of(value: float | bool | str) -> DataType:
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, str):
        return DataType.STRING
    return DataType.DOUBLE


@dataclass(frozen=True, slots=True)
class Record:
    """One moment of a machine: values by measurement, with their quality ("", "bad", "uncertain")."""

    ts_ms: int
    values: Mapping[str, float | bool | str]
    quality: str = ""


@dataclass(frozen=True, slots=True)
class Write:
    """A metric write of an NCMD/DCMD, as the agent's point."""

    machine: str
    measurement: str
    value: float | bool | str


class SparkplugEdgeNode:
    def __init__(self, group: str, edge_node: str, points: Mapping[Point, DataType],
                 devices: Mapping[str, str | None], metric_names: Mapping[Point, str] | None = None) -> None:
        """``devices``: machine path -> Sparkplug device id (None: the node's own metrics);
        ``metric_names``: a point's metric name where it is not the measurement's."""
        self.id = EdgeNode(group, edge_node)
        self.devices = dict(devices)
        missing = sorted({m for m, _ in points} - set(self.devices))
        if missing:
            raise ValueError(f"machine(s) {', '.join(missing)} have no Sparkplug device id")
        self.types = dict(points)
        names = metric_names or {}
        self.names = {p: names.get(p, p[1]) for p in sorted(points)}
        self.aliases = {p: i for i, p in enumerate(sorted(points), start=1)}
        self.by_name = {(self.devices[p[0]], name): p for p, name in self.names.items()}
        self.last: dict[Point, tuple[int, float | bool | str]] = {}  # (ts_ms, value)
        self.declared: set[Point] = set()  # the points the session's births declared
        self.bd_seq = 0
        self.seq = -1

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    # -- sessions -------------------------------------------------------------------------------------
    def ndeath(self) -> Message:
        """The NDEATH of the current session: the connection's Will."""
        payload = Payload(metrics=(Metric(name=BD_SEQ, datatype=DataType.INT64, value=self.bd_seq),))
        return self.id.topic(MessageType.NDEATH), encode_payload(payload)

    def next_session(self) -> Message:
        """The next connection's bdSeq; its Will."""
        self.bd_seq = (self.bd_seq + 1) % 256
        return self.ndeath()

    def births(self, ts_ms: int) -> list[Message]:
        """NBIRTH (seq 0) and a DBIRTH per device, with the type, alias, last value and its timestamp of
        every metric read so far."""
        self.seq = -1
        self.declared = set(self.last)
        node = [Metric(name=BD_SEQ, timestamp=ts_ms, datatype=DataType.INT64, value=self.bd_seq),
                Metric(name=REBIRTH, timestamp=ts_ms, datatype=DataType.BOOLEAN, value=False)]
        node += self._declared(None, ts_ms)
        out = [(self.id.topic(MessageType.NBIRTH), self._encode(node, ts_ms))]
        for device in sorted({d for d in self.devices.values() if d is not None}):
            out.append((self.id.topic(MessageType.DBIRTH, device), self._encode(self._declared(device, ts_ms), ts_ms)))
        return out

    def _declared(self, device: str | None, ts_ms: int) -> list[Metric]:
        out = []
        for point, name in self.names.items():
            if self.devices[point[0]] != device:
                continue
            if point not in self.last:
                continue
            at, value = self.last[point]
            typed: Value = float(value) if self.types[point] is DataType.DOUBLE else value
            out.append(Metric(name=name, alias=self.aliases[point], timestamp=at, datatype=self.types[point],
                              value=typed))
        return out

    # -- data -------------------------------------------------------------------------------------------
    def retype(self, machine: str, records: Sequence[Record]) -> bool:
        """Take the types of ``records``' values; True when births must go out (again) first: a type
        changed, or a point not yet declared in this session has its first value (births declare only
        points with a value, each with its own timestamp, so nothing is stored twice)."""
        changed = False
        for rec in records:
            for measurement, value in rec.values.items():
                point = (machine, measurement)
                if point not in self.types:
                    continue
                kind = datatype_of(value)
                if self.types[point] is not kind:  # numbers are all Double
                    self.types[point] = kind
                    changed = True
                if point not in self.declared:
                    self.last[point] = (rec.ts_ms, value)
                    changed = True
        return changed

    def data(self, machine: str, records: Sequence[Record], ts_ms: int) -> Message | None:
        """The NDATA/DDATA of ``records`` (metrics by alias, with their own timestamps); None when
        nothing in them is a point of this node."""
        if machine not in self.devices:
            return None
        metrics = []
        for rec in records:
            props = None
            if rec.quality in QUALITY_CODES:
                props = PropertySet((("Quality", PropertyValue(DataType.INT32, QUALITY_CODES[rec.quality])),))
            for measurement, value in rec.values.items():
                point = (machine, measurement)
                if point not in self.declared:
                    continue
                typed: Value = float(value) if self.types[point] is DataType.DOUBLE else value
                metrics.append(Metric(alias=self.aliases[point], timestamp=rec.ts_ms, datatype=self.types[point],
                                      value=typed, properties=props))
                self.last[point] = (rec.ts_ms, value)
        if not metrics:
            return None
        device = self.devices[machine]
        topic = (self.id.topic(MessageType.NDATA) if device is None
                 else self.id.topic(MessageType.DDATA, device))
        return topic, self._encode(metrics, ts_ms)

    def _encode(self, metrics: list[Metric], ts_ms: int) -> bytes:
        return encode_payload(Payload(timestamp=ts_ms, seq=self._next_seq(), metrics=tuple(metrics)))

    # -- commands ---------------------------------------------------------------------------------------
    def command_topics(self) -> list[str]:
        return [self.id.topic(MessageType.NCMD), self.id.topic(MessageType.DCMD, "+")]

    def command(self, topic: str, payload: bytes) -> tuple[bool, list[Write]]:
        """An NCMD/DCMD of this node: (whether it asks for a rebirth, the metric writes it carries).
        Raises ``ValueError`` for a message that is not one, or names a metric this node does not have."""
        try:
            parsed = parse_topic(topic)
            body = decode_payload(payload)
        except SparkplugDecodeError as exc:
            raise ValueError(exc.message) from None
        if (not isinstance(parsed, SparkplugTopic) or parsed.node != self.id
                or parsed.message_type not in (MessageType.NCMD, MessageType.DCMD)):
            raise ValueError(f"not a command of {self.id.group}/{self.id.edge_node}: {topic}")
        rebirth, writes = False, []
        by_alias = {(self.devices[p[0]], a): p for p, a in self.aliases.items()}
        for m in body.metrics:
            if parsed.device is None and m.name == REBIRTH:
                rebirth = rebirth or m.value is True
                continue
            point = (self.by_name.get((parsed.device, m.name)) if m.name is not None
                     else by_alias.get((parsed.device, m.alias)) if m.alias is not None else None)
            if point is None:
                raise ValueError(f"{topic}: no metric {m.name or m.alias!r}")
            if not isinstance(m.value, int | float | bool | str):
                raise ValueError(f"{topic}: {m.name or m.alias!r}: a value is a number, a boolean or a string")
            writes.append(Write(point[0], point[1], m.value))
        return rebirth, writes
