"""The host application's view of each edge node: a pure state machine, no I/O.

Feed it every decoded message of the ``spBv1.0`` namespace, in arrival order, with :meth:`HostState.handle`;
it returns the actions the MQTT side carries out: store values, request a rebirth, mark a node or a
device online, offline or stale, or note why a message was dropped.

The rules (Sparkplug B 3.0, chapters "Topics" and "Operational Behavior"):

- An NBIRTH starts a session: it must carry a ``seq`` in 0..255 and a ``bdSeq`` metric; it replaces the
  node's alias map and forgets its devices, which must be born again by DBIRTH.
- Every later NBIRTH/DBIRTH/NDATA/DDATA/DDEATH of the session carries the previous ``seq`` + 1 (255 wraps
  to 0). A gap, a missing ``seq``, data from a node or device this host has no birth for, an alias or
  name the birth did not declare, or a value that does not fit the birth's data type: the node is
  marked stale, one rebirth is requested, and its messages are dropped until the next NBIRTH. The
  specification allows a host to wait a "reorder timeout" for late messages first; this host waits
  zero, because one broker delivers one client's messages in order.
- An NDEATH applies only when its ``bdSeq`` equals the one of the node's current NBIRTH: a late Will
  from an earlier connection does not kill the new session. It takes the node and its devices offline.
- A DDEATH takes its device offline; the device's data is refused until its next DBIRTH.
- ``bdSeq``, ``Node Control/*``, ``Device Control/*`` and ``Properties/*`` metrics are bookkeeping, not
  measurements; transient metrics are not kept in history; template definitions are types, not values:
  none of them is stored.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from shopfloor.connectors.sparkplug.codec import retype
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError
from shopfloor.connectors.sparkplug.model import (
    DataType,
    Metric,
    Payload,
    PropertySet,
    Template,
    Value,
    engineering_unit_of,
)
from shopfloor.connectors.sparkplug.topics import EdgeNode, MessageType, SparkplugTopic

BD_SEQ = "bdSeq"
_NOT_MEASUREMENTS = ("Node Control/", "Device Control/", "Properties/")
_SEQ_MODULO = 256


def is_measurement(name: str) -> bool:
    """Whether a metric of this name is process data (not bdSeq, controls or properties)."""
    return name != BD_SEQ and not name.startswith(_NOT_MEASUREMENTS)


class NodeStatus(enum.StrEnum):
    ONLINE = "online"
    STALE = "stale"  # waiting for a rebirth; its messages are dropped
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """What a birth certificate declared about one metric."""

    name: str
    alias: int | None
    datatype: DataType | None
    properties: PropertySet | None


@dataclass(frozen=True, slots=True)
class StoredMetric:
    """A value to keep, resolved to the metric's name."""

    name: str
    value: Value
    timestamp: int | None  # ms since the epoch: the metric's own, else the payload's
    datatype: DataType | None
    is_null: bool = False
    is_historical: bool = False
    quality: int | None = None  # the value's Quality property (0, 192, 500); absent means good
    engineering_unit: str | None = None


@dataclass(frozen=True, slots=True)
class Store:
    node: EdgeNode
    device: str | None
    metrics: tuple[StoredMetric, ...]
    birth: bool  # current values from a birth certificate, rather than a change
    seq: int | None


@dataclass(frozen=True, slots=True)
class Rebirth:
    """Send ``Node Control/Rebirth`` to the node (see ``host_messages.rebirth_message``)."""

    node: EdgeNode
    reason: str


@dataclass(frozen=True, slots=True)
class MarkOnline:
    node: EdgeNode
    device: str | None
    bd_seq: int | None = None


@dataclass(frozen=True, slots=True)
class MarkOffline:
    """The node (``device`` None: and all its devices) or one device went offline."""

    node: EdgeNode
    device: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class MarkStale:
    """The node's (``device`` None: and its devices') or one device's last values are no longer current."""

    node: EdgeNode
    device: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A message that changed nothing, and why (for logs and counters)."""

    topic: SparkplugTopic
    reason: str


Action = Store | Rebirth | MarkOnline | MarkOffline | MarkStale | Ignored


@dataclass
class BirthScope:
    """The metrics one birth declared (the node's NBIRTH or a device's DBIRTH). Never changed once
    built: a new birth makes a new scope, so callers may memoise what they derive from one by identity."""

    by_alias: dict[int, MetricInfo] = field(default_factory=dict)
    by_name: dict[str, MetricInfo] = field(default_factory=dict)


@dataclass
class _Node:
    status: NodeStatus
    bd_seq: int | None = None
    seq: int | None = None
    metrics: BirthScope = field(default_factory=BirthScope)
    devices: dict[str, BirthScope] = field(default_factory=dict)  # born and not dead
    refused_devices: set[str] = field(default_factory=set)  # malformed DBIRTH: ignored, not rebirthed


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    nodes: dict[EdgeNode, _Node]


def _copy(state: _Node) -> _Node:
    # scopes are never changed once built, so sharing them is safe
    return _Node(state.status, state.bd_seq, state.seq, state.metrics, dict(state.devices),
                 set(state.refused_devices))


class _Refused(Exception):
    """A message of a live session that breaks the protocol: stale, rebirth."""


class HostState:
    """Sparkplug session state of every edge node seen, keyed by its group and edge node id."""

    def __init__(self) -> None:
        self._nodes: dict[EdgeNode, _Node] = {}

    # -------------------------------------------------------------------------------- queries

    def status(self, node: EdgeNode) -> NodeStatus | None:
        state = self._nodes.get(node)
        return state.status if state else None

    def bd_seq(self, node: EdgeNode) -> int | None:
        state = self._nodes.get(node)
        return state.bd_seq if state else None

    def devices(self, node: EdgeNode) -> frozenset[str]:
        """The node's devices that are born and not dead."""
        state = self._nodes.get(node)
        return frozenset(state.devices) if state and state.status is NodeStatus.ONLINE else frozenset()

    def nodes(self, status: NodeStatus | None = None) -> list[EdgeNode]:
        return sorted(n for n, s in self._nodes.items() if status is None or s.status is status)

    # -------------------------------------------------------------------------------- transactions

    def snapshot(self) -> HostSnapshot:
        """The state as it is now, for :meth:`restore` when what was applied since could not be
        committed (the same messages will come again and must meet the same state)."""
        return HostSnapshot({node: _copy(state) for node, state in self._nodes.items()})

    def restore(self, snapshot: HostSnapshot) -> None:
        self._nodes = {node: _copy(state) for node, state in snapshot.nodes.items()}

    # -------------------------------------------------------------------------------- commands

    def request_rebirth(self, node: EdgeNode, reason: str) -> list[Action]:
        """Ask again (a rebirth that did not come), or for a node whose state this host lost."""
        state = self._nodes.setdefault(node, _Node(NodeStatus.STALE))
        actions: list[Action] = []
        if state.status is NodeStatus.ONLINE:
            actions.append(MarkStale(node, None, reason))
        state.status = NodeStatus.STALE
        actions.append(Rebirth(node, reason))
        return actions

    def connection_lost(self) -> list[Action]:
        """The host lost its broker: every online node's values are stale until it is heard again.

        After reconnecting, the MQTT side requests a rebirth of each node (:meth:`request_rebirth`).
        """
        actions: list[Action] = []
        for node in self.nodes(NodeStatus.ONLINE):
            self._nodes[node].status = NodeStatus.STALE
            actions.append(MarkStale(node, None, "host lost its broker connection"))
        return actions

    def data_scope(self, topic: SparkplugTopic, seq: int | None) -> BirthScope | None:
        """For a data message (NDATA, DDATA) carrying ``seq``: the birth it is read against, when the
        node is online, ``seq`` is the next one and the device (for DDATA) is born; else None.

        Changes nothing. A caller that finds every metric of the message in the scope, with a value
        its data type allows, records it with :meth:`accept_data`, which has the effect
        :meth:`handle` would have; for anything else it calls :meth:`handle`.
        """
        state = self._nodes.get(topic.node)
        if state is None or state.status is not NodeStatus.ONLINE or state.seq is None:
            return None
        if seq != (state.seq + 1) % _SEQ_MODULO:
            return None
        if topic.device is None:
            return state.metrics if topic.message_type is MessageType.NDATA else None
        return state.devices.get(topic.device) if topic.message_type is MessageType.DDATA else None

    def accept_data(self, topic: SparkplugTopic, seq: int) -> None:
        """Apply a data message :meth:`data_scope` found valid: its sequence number is the node's last."""
        self._nodes[topic.node].seq = seq

    def handle(self, topic: SparkplugTopic, payload: Payload) -> list[Action]:
        """Apply one message; return what to do about it."""
        handler = {
            MessageType.NBIRTH: self._nbirth,
            MessageType.NDEATH: self._ndeath,
            MessageType.DBIRTH: self._session_message,
            MessageType.NDATA: self._session_message,
            MessageType.DDATA: self._session_message,
            MessageType.DDEATH: self._session_message,
        }.get(topic.message_type)
        if handler is None:
            return [Ignored(topic, f"{topic.message_type} is a command, not data for the host")]
        return handler(topic, payload)

    # -------------------------------------------------------------------------------- node birth/death

    def _nbirth(self, topic: SparkplugTopic, payload: Payload) -> list[Action]:
        node = topic.node
        previous = self._nodes.get(node)
        actions: list[Action] = []
        if previous is not None and previous.status is NodeStatus.ONLINE:
            # a new session without the death of the old one (a rebirth, or a lost Will): the devices of
            # the old session keep their last values, stale, until their DBIRTH comes again
            actions += [MarkStale(node, device, "new NBIRTH") for device in sorted(previous.devices)]
        try:
            if payload.seq is None or not 0 <= payload.seq < _SEQ_MODULO:
                raise _Refused(f"NBIRTH sequence number {payload.seq} is not in 0..255")
            bd_seq = _bd_seq(payload)
            if bd_seq is None:
                raise _Refused("NBIRTH without a bdSeq metric")
            scope = _scope(payload, "NBIRTH")
        except _Refused as exc:
            # refused without asking for a rebirth: the edge node would send the same birth again
            if previous is not None and previous.status is NodeStatus.ONLINE:
                actions.append(MarkStale(node, None, str(exc)))
            self._nodes[node] = _Node(NodeStatus.STALE, bd_seq=previous.bd_seq if previous else None)
            return [*actions, Ignored(topic, str(exc))]
        self._nodes[node] = _Node(NodeStatus.ONLINE, bd_seq=bd_seq, seq=payload.seq, metrics=scope)
        actions.append(MarkOnline(node, None, bd_seq))
        actions += _store(topic, payload, payload.metrics, birth=True, scope=scope)
        return actions

    def _ndeath(self, topic: SparkplugTopic, payload: Payload) -> list[Action]:
        state = self._nodes.get(topic.node)
        bd_seq = _bd_seq(payload)
        if state is None or state.bd_seq is None:
            return [Ignored(topic, "NDEATH of a node this host has no birth for")]
        if bd_seq != state.bd_seq:
            return [Ignored(topic, f"NDEATH bdSeq {bd_seq} is not the current NBIRTH's {state.bd_seq}")]
        if state.status is NodeStatus.OFFLINE:
            return [Ignored(topic, "node already offline")]
        state.status, state.seq, state.devices = NodeStatus.OFFLINE, None, {}
        return [MarkOffline(topic.node, None, "NDEATH")]

    # -------------------------------------------------------------------------------- the session

    def _session_message(self, topic: SparkplugTopic, payload: Payload) -> list[Action]:
        node = topic.node
        state = self._nodes.get(node)
        if state is None or state.status is NodeStatus.OFFLINE:
            what = "unknown" if state is None else "offline"
            return self._stale(node, f"{topic.message_type} from an {what} node (its NBIRTH was missed)")
        if state.status is NodeStatus.STALE:
            return [Ignored(topic, "node is stale, waiting for its NBIRTH")]
        assert state.seq is not None  # an online node has one
        expected = (state.seq + 1) % _SEQ_MODULO
        if payload.seq != expected:
            return self._stale(node, f"sequence gap: {topic.message_type} seq {payload.seq}, expected {expected}")
        state.seq = expected
        try:
            if topic.message_type is MessageType.DBIRTH:
                return self._dbirth(topic, payload, state)
            if topic.message_type is MessageType.DDEATH:
                return self._ddeath(topic, state)
            return self._data(topic, payload, state)
        except _Refused as exc:
            return self._stale(node, str(exc))

    def _dbirth(self, topic: SparkplugTopic, payload: Payload, state: _Node) -> list[Action]:
        assert topic.device is not None
        try:
            scope = _scope(payload, "DBIRTH")
        except _Refused as exc:
            state.devices.pop(topic.device, None)
            state.refused_devices.add(topic.device)
            return [MarkStale(topic.node, topic.device, str(exc)), Ignored(topic, str(exc))]
        state.refused_devices.discard(topic.device)
        state.devices[topic.device] = scope
        return [MarkOnline(topic.node, topic.device), *_store(topic, payload, payload.metrics, birth=True, scope=scope)]

    def _ddeath(self, topic: SparkplugTopic, state: _Node) -> list[Action]:
        assert topic.device is not None
        if state.devices.pop(topic.device, None) is None:
            return [Ignored(topic, "DDEATH of a device that is not born")]
        return [MarkOffline(topic.node, topic.device, "DDEATH")]

    def _data(self, topic: SparkplugTopic, payload: Payload, state: _Node) -> list[Action]:
        if topic.device is None:
            scope = state.metrics
        elif topic.device in state.devices:
            scope = state.devices[topic.device]
        elif topic.device in state.refused_devices:
            return [Ignored(topic, "device's DBIRTH was refused")]
        else:
            raise _Refused(f"DDATA from device {topic.device!r} without a DBIRTH")
        resolved: list[Metric] = []
        for metric in payload.metrics:
            info = _lookup(scope, metric)
            if info is None:
                raise _Refused(f"{topic.message_type} metric {_describe(metric)} is not in the birth certificate")
            try:
                typed = retype(metric, info.datatype)
            except SparkplugDecodeError as exc:
                raise _Refused(exc.message) from exc
            resolved.append(_named(typed, info))
        return _store(topic, payload, resolved, birth=False, scope=scope)

    def _stale(self, node: EdgeNode, reason: str) -> list[Action]:
        state = self._nodes.setdefault(node, _Node(NodeStatus.STALE))
        actions: list[Action] = []
        if state.status is NodeStatus.ONLINE:
            actions.append(MarkStale(node, None, reason))
        state.status = NodeStatus.STALE
        actions.append(Rebirth(node, reason))
        return actions


def _bd_seq(payload: Payload) -> int | None:
    metric = payload.metric(BD_SEQ)
    if metric is None or isinstance(metric.value, bool) or not isinstance(metric.value, int):
        return None
    return metric.value


def _scope(payload: Payload, what: str) -> BirthScope:
    scope = BirthScope()
    for metric in payload.metrics:
        if metric.name is None:
            raise _Refused(f"{what} metric {_describe(metric)} has no name")
        info = MetricInfo(metric.name, metric.alias, metric.datatype, metric.properties)
        if metric.alias is not None:
            if metric.alias in scope.by_alias and scope.by_alias[metric.alias].name != metric.name:
                raise _Refused(f"{what} gives alias {metric.alias} to {scope.by_alias[metric.alias].name!r} "
                               f"and {metric.name!r}")
            scope.by_alias[metric.alias] = info
        scope.by_name[metric.name] = info
    return scope


def _lookup(scope: BirthScope, metric: Metric) -> MetricInfo | None:
    if metric.alias is not None:
        return scope.by_alias.get(metric.alias)
    if metric.name is not None:
        return scope.by_name.get(metric.name)
    return None


def _named(metric: Metric, info: MetricInfo) -> Metric:
    return metric if metric.name == info.name else replace(metric, name=info.name)


def _describe(metric: Metric) -> str:
    if metric.name is not None:
        return repr(metric.name)
    return f"alias {metric.alias}" if metric.alias is not None else "without name or alias"


def _store(topic: SparkplugTopic, payload: Payload, metrics: Sequence[Metric], *, birth: bool,
           scope: BirthScope) -> list[Action]:
    kept = []
    for metric in metrics:
        if metric.name is None or not is_measurement(metric.name) or metric.is_transient:
            continue
        if isinstance(metric.value, Template) and metric.value.is_definition:
            continue  # a type, not a value
        info = scope.by_name.get(metric.name)
        unit = metric.engineering_unit
        if unit is None and info is not None:
            unit = engineering_unit_of(info.properties)
        kept.append(StoredMetric(
            name=metric.name,
            value=metric.value,
            timestamp=metric.timestamp if metric.timestamp is not None else payload.timestamp,
            datatype=metric.datatype if metric.datatype is not None else (info.datatype if info else None),
            is_null=metric.is_null,
            is_historical=metric.is_historical,
            quality=metric.quality,
            engineering_unit=unit,
        ))  # fmt: skip
    if not kept:
        return []
    return [Store(topic.node, topic.device, tuple(kept), birth=birth, seq=payload.seq)]
