"""The Sparkplug B 3.0 topic namespace.

``spBv1.0/{group_id}/{message_type}/{edge_node_id}[/{device_id}]`` for edge nodes and devices, and
``spBv1.0/STATE/{host_id}`` for host applications. Group, edge node, device and host ids are UTF-8
strings without ``+``, ``/`` or ``#``; the device id is present exactly for the D* message types.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError

NAMESPACE = "spBv1.0"
_RESERVED = frozenset("+/#")


class MessageType(enum.StrEnum):
    NBIRTH = "NBIRTH"
    NDATA = "NDATA"
    NDEATH = "NDEATH"
    NCMD = "NCMD"
    DBIRTH = "DBIRTH"
    DDATA = "DDATA"
    DDEATH = "DDEATH"
    DCMD = "DCMD"


DEVICE_MESSAGES = frozenset({MessageType.DBIRTH, MessageType.DDATA, MessageType.DDEATH, MessageType.DCMD})


@dataclass(frozen=True, slots=True, order=True)
class EdgeNode:
    """An edge node descriptor: group id and edge node id, unique together on a broker."""

    group: str
    edge_node: str

    def __str__(self) -> str:
        return f"{self.group}/{self.edge_node}"

    def topic(self, message_type: MessageType, device: str | None = None) -> str:
        """The topic of a message of this node (``device`` for the D* message types)."""
        if (device is not None) != (message_type in DEVICE_MESSAGES):
            raise ValueError(f"{message_type} {'needs' if device is None else 'takes no'} device id")
        suffix = f"/{device}" if device is not None else ""
        return f"{NAMESPACE}/{self.group}/{message_type}/{self.edge_node}{suffix}"


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    node: EdgeNode
    message_type: MessageType
    device: str | None = None

    def __str__(self) -> str:
        return self.node.topic(self.message_type, self.device)


@dataclass(frozen=True, slots=True)
class StateTopic:
    """``spBv1.0/STATE/{host_id}``: a host application's birth and death."""

    host_id: str

    def __str__(self) -> str:
        return state_topic(self.host_id)


def valid_id(value: str) -> bool:
    """Whether ``value`` may be a group, edge node, device or host id."""
    return bool(value) and not _RESERVED.intersection(value)


def state_topic(host_id: str) -> str:
    if not valid_id(host_id):
        raise ValueError(f"invalid Sparkplug host id {host_id!r}: non-empty, without + / #")
    return f"{NAMESPACE}/STATE/{host_id}"


# A host reads the same few topics over and over: each is read once (the answers are immutable), and
# every topic of one edge node carries the same EdgeNode object, so look-ups keyed by it compare
# identity first. A topic that does not parse raises every time (exceptions are not cached).
_CACHED_TOPICS = 65_536


@functools.lru_cache(maxsize=_CACHED_TOPICS)
def _edge_node(group: str, edge_node: str) -> EdgeNode:
    return EdgeNode(group, edge_node)


@functools.lru_cache(maxsize=_CACHED_TOPICS)
def parse_topic(topic: str) -> SparkplugTopic | StateTopic:
    """Read a topic of the ``spBv1.0`` namespace; raises :class:`SparkplugDecodeError` for anything else."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NAMESPACE:
        raise SparkplugDecodeError(f"not a Sparkplug B topic: {topic!r}")
    if parts[1] == "STATE":
        if len(parts) != 3 or not valid_id(parts[2]):
            raise SparkplugDecodeError(f"malformed STATE topic: {topic!r}")
        return StateTopic(parts[2])
    if len(parts) not in (4, 5):
        raise SparkplugDecodeError(f"malformed Sparkplug topic: {topic!r}")
    try:
        message_type = MessageType(parts[2])
    except ValueError:
        raise SparkplugDecodeError(f"unknown Sparkplug message type {parts[2]!r} in {topic!r}") from None
    device = parts[4] if len(parts) == 5 else None
    if (device is not None) != (message_type in DEVICE_MESSAGES):
        raise SparkplugDecodeError(f"{message_type} {'needs' if device is None else 'takes no'} device id: {topic!r}")
    if not all(valid_id(part) for part in (parts[1], parts[3], *([device] if device is not None else []))):
        raise SparkplugDecodeError(f"empty id in Sparkplug topic {topic!r}")
    return SparkplugTopic(_edge_node(parts[1], parts[3]), message_type, device)
