"""A simulated Sparkplug B edge node for tests: the messages a real one sends, in order.

It keeps what an edge node keeps (bdSeq per MQTT connection, the sequence number of its session,
aliases from its births) and returns ``(topic, payload bytes)`` to publish; tests send them
through a broker or hand them to the host directly. ``skip()`` forces a sequence gap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from shopfloor.connectors.sparkplug.codec import encode_payload
from shopfloor.connectors.sparkplug.model import DataType, Metric, Payload, Value
from shopfloor.connectors.sparkplug.topics import EdgeNode, MessageType


@dataclass(frozen=True, slots=True)
class MetricDef:
    alias: int
    datatype: DataType


@dataclass
class EdgeNodeSim:
    group: str
    edge_node: str
    metrics: dict[str, MetricDef] = field(default_factory=dict)  # the node's own
    devices: dict[str, dict[str, MetricDef]] = field(default_factory=dict)
    bd_seq: int = 0
    seq: int = -1  # the last sequence number sent

    @property
    def node(self) -> EdgeNode:
        return EdgeNode(self.group, self.edge_node)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def skip(self, n: int = 1) -> None:
        """Lose ``n`` messages: the next one's sequence number leaves a gap."""
        self.seq = (self.seq + n) % 256

    def reconnect(self) -> None:
        """A new MQTT connection: the next bdSeq (its Will carries it too)."""
        self.bd_seq = (self.bd_seq + 1) % 256

    def will(self) -> tuple[str, bytes]:
        """The NDEATH to register as the connection's MQTT Will."""
        payload = Payload(metrics=(Metric(name="bdSeq", datatype=DataType.INT64, value=self.bd_seq),))
        return self.node.topic(MessageType.NDEATH), encode_payload(payload)

    ndeath = will

    def nbirth(self, values: Mapping[str, Value], ts: int) -> tuple[str, bytes]:
        self.seq = -1
        metrics = [Metric(name="bdSeq", timestamp=ts, datatype=DataType.INT64, value=self.bd_seq),
                   Metric(name="Node Control/Rebirth", timestamp=ts, datatype=DataType.BOOLEAN, value=False),
                   Metric(name="Properties/Hardware", timestamp=ts, datatype=DataType.STRING, value="sim")]
        metrics += self._born(self.metrics, values, ts)
        return self.node.topic(MessageType.NBIRTH), self._encode(metrics, ts)

    def dbirth(self, device: str, values: Mapping[str, Value], ts: int) -> tuple[str, bytes]:
        metrics = self._born(self.devices[device], values, ts)
        return self.node.topic(MessageType.DBIRTH, device), self._encode(metrics, ts)

    def ndata(self, values: Mapping[str, Value], ts: int) -> tuple[str, bytes]:
        return self.node.topic(MessageType.NDATA), self._encode(self._by_alias(self.metrics, values, ts), ts)

    def ddata(self, device: str, values: Mapping[str, Value], ts: int) -> tuple[str, bytes]:
        metrics = self._by_alias(self.devices[device], values, ts)
        return self.node.topic(MessageType.DDATA, device), self._encode(metrics, ts)

    def ddeath(self, device: str, ts: int) -> tuple[str, bytes]:
        return self.node.topic(MessageType.DDEATH, device), self._encode([], ts)

    @staticmethod
    def _born(defs: Mapping[str, MetricDef], values: Mapping[str, Value], ts: int) -> list[Metric]:
        return [Metric(name=name, alias=d.alias, timestamp=ts, datatype=d.datatype, value=values.get(name),
                       is_null=values.get(name) is None) for name, d in defs.items()]

    @staticmethod
    def _by_alias(defs: Mapping[str, MetricDef], values: Mapping[str, Value], ts: int) -> list[Metric]:
        return [Metric(alias=defs[name].alias, timestamp=ts, datatype=defs[name].datatype, value=value)
                for name, value in values.items()]

    def _encode(self, metrics: list[Metric], ts: int) -> bytes:
        return encode_payload(Payload(timestamp=ts, seq=self._next_seq(), metrics=tuple(metrics)))
