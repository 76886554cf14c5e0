"""NCMD and DCMD writes to an edge node's metrics (implements ``ports.sparkplug.SparkplugCommands``).

A command is a payload with a timestamp and no sequence number, one metric per write, each with its
name, data type and value; it is published with QoS 0 and not retained, as the specification
requires of NCMD and DCMD. A data type not given is chosen from the value: Boolean for a bool,
Int64 for an int, Double for a float, String for a str.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from shopfloor.connectors.sparkplug.codec import encode_payload
from shopfloor.connectors.sparkplug.errors import SparkplugEncodeError
from shopfloor.connectors.sparkplug.model import BASIC_TYPES, DataType, Metric, Payload
from shopfloor.connectors.sparkplug.topics import EdgeNode, MessageType, valid_id
from shopfloor.domain.errors import InvalidInput, ShopfloorError
from shopfloor.ports.sparkplug import MetricWrite, Publisher

COMMAND_QOS = 0

_BY_NAME = {t.name.replace("_", ""): t for t in BASIC_TYPES}


class CommandNotSent(ShopfloorError):
    status = 503
    title = "Command not sent"


def command_datatype(write: MetricWrite) -> DataType:
    """The data type a write declares (by name, any case, with or without underscores) or implies."""
    if write.datatype is not None:
        found = _BY_NAME.get(write.datatype.replace("_", "").upper())
        if found is None:
            raise InvalidInput(f"metric {write.name!r}: data type {write.datatype!r} is not one of "
                               f"{', '.join(sorted(t.name.title().replace('_', '') for t in BASIC_TYPES))}")
        return found
    value = write.value
    if isinstance(value, bool):
        return DataType.BOOLEAN
    if isinstance(value, int):
        return DataType.INT64
    if isinstance(value, float):
        return DataType.DOUBLE
    return DataType.STRING


def command_payload(writes: Sequence[MetricWrite], timestamp_ms: int) -> bytes:
    metrics = tuple(Metric(name=w.name, timestamp=timestamp_ms, datatype=command_datatype(w), value=w.value)
                    for w in writes)
    try:
        return encode_payload(Payload(timestamp=timestamp_ms, metrics=metrics))
    except SparkplugEncodeError as exc:
        raise InvalidInput(exc.message) from None


class SparkplugCommander:
    """Encodes writes and publishes them through ``publisher`` (the embedded broker, or an MQTT client)."""

    def __init__(self, publisher: Publisher, now_ms: Callable[[], int] | None = None) -> None:
        self._publisher = publisher
        self._now_ms = now_ms or (lambda: time.time_ns() // 1_000_000)

    async def send(self, group: str, edge_node: str, device: str | None, writes: Sequence[MetricWrite]) -> str:
        if not valid_id(group) or not valid_id(edge_node) or (device is not None and not valid_id(device)):
            raise InvalidInput(f"not a Sparkplug edge node or device: {group}/{edge_node}/{device or ''}")
        node = EdgeNode(group, edge_node)
        topic = node.topic(MessageType.NCMD) if device is None else node.topic(MessageType.DCMD, device)
        payload = command_payload(writes, self._now_ms())
        try:
            await self._publisher.publish(topic, payload, COMMAND_QOS, False)
        except ShopfloorError as exc:
            raise CommandNotSent(f"{topic}: {exc.message}") from None
        except Exception as exc:
            raise CommandNotSent(f"{topic}: the broker did not take the command: {exc}") from None
        return topic
