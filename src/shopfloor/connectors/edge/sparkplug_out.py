"""The edge agent as a Sparkplug B edge node (``protocol: sparkplug`` in edge.yaml).

The buffer holds the same messages as in JSON mode (each machine's telemetry records); this side
turns each into an NDATA/DDATA when the forwarder hands it over, so its ``seq`` belongs to the
session it is sent in. On every connection: what was in flight is dropped by the link and sent
again, re-encoded, after the NBIRTH and DBIRTHs (a host drops data whose ``seq`` does not follow);
the Will is the NDEATH with the session's bdSeq. A ``Node Control/Rebirth`` NCMD sends the births
again; NCMD/DCMD metric writes go to the source that owns the point, like JSON commands.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from shopfloor.connectors.edge.link import MqttLink
from shopfloor.connectors.sparkplug.edge_node import Record, SparkplugEdgeNode, Write
from shopfloor.domain.timeutil import parse_ts
from shopfloor.domain.topics import ROOT

_log = logging.getLogger(__name__)


def _records(payload: bytes) -> list[Record]:
    body = json.loads(payload)
    items = body if isinstance(body, list) else [body]
    return [Record(parse_ts(r["ts"]) // 1000, r["values"], r.get("quality", "")) for r in items]


class SparkplugOut:
    def __init__(self, node: SparkplugEdgeNode, tenant: str, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.tenant = tenant
        self.link: MqttLink | None = None
        self.births = 0
        self.rebirths = 0  # asked for by the host
        self._clock = clock
        self._prefix = f"{ROOT}/{tenant}/"

    def link_options(self) -> dict[str, Any]:
        return {"subscriptions": self.node.command_topics(), "will": self.node.ndeath(), "will_retain": False,
                "next_will": self.node.next_session, "resend": False}

    @property
    def connected(self) -> asyncio.Event:
        if self.link is None:
            raise RuntimeError("no link yet")
        return self.link.connected

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def send_births(self) -> None:
        if self.link is None:
            return
        for topic, payload in self.node.births(self._now_ms()):
            self.link.publish_now(topic, payload)
        self.births += 1

    def publish(self, topic: str, payload: bytes) -> int:
        """The forwarder's publish: a machine's buffered telemetry as its NDATA/DDATA."""
        if self.link is None:
            raise RuntimeError("no link yet")
        if topic.startswith(self._prefix) and topic.endswith("/telemetry"):
            machine = topic[len(self._prefix):-len("/telemetry")]
            try:
                records = _records(payload)
            except (ValueError, KeyError, TypeError) as exc:  # our own buffer: never expected
                _log.warning("edge: unreadable buffered message for %s: %s", machine, exc)
                records = []
            if records and self.node.retype(machine, records):
                self.send_births()
            message = self.node.data(machine, records, self._now_ms()) if records else None
            if message is not None:
                return self.link.publish(*message)
        return self.link.publish(topic, payload)  # not a point of the node: as it is

    def command(self, topic: str, payload: bytes) -> list[Write]:
        """An NCMD/DCMD: births again on a rebirth request; the writes it asks for."""
        rebirth, writes = self.node.command(topic, payload)
        if rebirth:
            self.rebirths += 1
            self.send_births()
        return writes
