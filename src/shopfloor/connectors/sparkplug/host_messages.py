"""What a Sparkplug host application publishes: its STATE birth and death, and rebirth requests.

STATE (3.0): topic ``spBv1.0/STATE/{host_id}``, QoS 1, retained; payload UTF-8 JSON with exactly
``online`` (a boolean) and ``timestamp`` (UTC milliseconds since the epoch). The death certificate is
the MQTT Will registered in CONNECT with ``online: false``; the birth published right after subscribing
carries ``online: true`` and the same timestamp as that Will.

Rebirth request: NCMD to the edge node with one Boolean metric ``Node Control/Rebirth`` = true, a
payload timestamp and no sequence number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shopfloor.connectors.sparkplug.codec import encode_payload
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError
from shopfloor.connectors.sparkplug.model import DataType, Metric, Payload
from shopfloor.connectors.sparkplug.topics import EdgeNode, MessageType, state_topic

REBIRTH_METRIC = "Node Control/Rebirth"
STATE_QOS = 1
STATE_RETAIN = True


@dataclass(frozen=True, slots=True)
class HostStatus:
    online: bool
    timestamp: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An MQTT publish: Sparkplug says the QoS and retain flag of each message."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


def state_message(host_id: str, online: bool, timestamp_ms: int) -> Outgoing:
    """The STATE birth (``online=True``) or death/Will (``online=False``) of host ``host_id``."""
    return Outgoing(state_topic(host_id), state_payload(online, timestamp_ms), STATE_QOS, STATE_RETAIN)


def state_payload(online: bool, timestamp_ms: int) -> bytes:
    if isinstance(timestamp_ms, bool) or not isinstance(timestamp_ms, int) or timestamp_ms < 0:
        raise ValueError(f"a STATE timestamp is milliseconds since the epoch, not {timestamp_ms!r}")
    return json.dumps({"online": bool(online), "timestamp": timestamp_ms}, separators=(",", ":")).encode()


def parse_state_payload(data: bytes) -> HostStatus:
    """Read another host's STATE message (3.0 JSON); raises :class:`SparkplugDecodeError`."""
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SparkplugDecodeError(f"STATE payload is not UTF-8 JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SparkplugDecodeError("STATE payload is not a JSON object")
    online, timestamp = obj.get("online"), obj.get("timestamp")
    if not isinstance(online, bool):
        raise SparkplugDecodeError("STATE payload needs a boolean 'online'")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not 0 <= timestamp < 2**64:
        raise SparkplugDecodeError("STATE payload needs a numeric 'timestamp'")
    return HostStatus(online=online, timestamp=int(timestamp))


def rebirth_message(node: EdgeNode, timestamp_ms: int) -> Outgoing:
    """The NCMD asking ``node`` for a new NBIRTH and DBIRTHs (QoS 0, not retained, as NCMD must be)."""
    payload = Payload(
        timestamp=timestamp_ms,
        metrics=(Metric(name=REBIRTH_METRIC, timestamp=timestamp_ms, datatype=DataType.BOOLEAN, value=True),),
    )
    return Outgoing(node.topic(MessageType.NCMD), encode_payload(payload), qos=0, retain=False)
