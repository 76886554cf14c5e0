"""The edge agent: field-bus sources in, the platform's MQTT out, through a disk buffer; commands back.

Sources (Modbus devices, OPC UA endpoints) hand batches of ``Reading`` to the agent; it groups them
into each machine's telemetry messages, appends them to the ``DiskBuffer`` and returns (the
readings are safe on disk). The ``Forwarder`` publishes the buffer in order over the ``MqttLink``
and deletes a message only after its PUBACK. When the link is down the buffer grows, bounded; when
it is back, everything left goes out in order.

Commands: the agent subscribes to ``.../command`` of every machine its sources feed. A command
``{"id": "c-17", "write": {"setpoint": 72.5}}`` is executed by the source that owns each
measurement (a register or node marked writable) and answered on ``.../command/reply`` with
``{"ts", "id", "status": "ok"}`` or ``{"status": "error", "error": "..."}``; every write is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from shopfloor.connectors.edge.buffer import DiskBuffer
from shopfloor.connectors.edge.forwarder import Forwarder
from shopfloor.connectors.edge.link import LinkSettings, MqttLink
from shopfloor.connectors.edge.messages import machine_topic, reply_message, telemetry_messages
from shopfloor.connectors.edge.sparkplug_out import SparkplugOut
from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.fieldbus import Reading, ReadingSink
from shopfloor.domain.topics import ROOT

_log = logging.getLogger(__name__)


MAX_WRITES = 100


def _writes_of(body: dict[str, Any]) -> list[tuple[str, float | bool | str]]:
    """(measurement, value) pairs of a command: ``"write": {m: v}``, or the platform API's
    ``"writes": [{"measurement": m, "value": v}]``."""
    pairs: list[tuple[str, Any]]
    if isinstance(body.get("write"), dict):
        pairs = list(body["write"].items())
    elif isinstance(body.get("writes"), list):
        pairs = []
        for w in body["writes"]:
            if not isinstance(w, dict) or not isinstance(w.get("measurement"), str) or "value" not in w:
                raise ValueError("each of 'writes' is {\"measurement\": name, \"value\": value}")
            pairs.append((w["measurement"], w["value"]))
    else:
        raise ValueError("a command needs 'write': {measurement: value, ...}")
    if not 1 <= len(pairs) <= MAX_WRITES:
        raise ValueError(f"a command writes 1 to {MAX_WRITES} values")
    for name, value in pairs:
        if isinstance(value, list | dict) or value is None:
            raise ValueError(f"{name}: a value is a number, a boolean or a string")
    return pairs


class EdgeSource(Protocol):
    """What the agent runs: a connector feeding readings, and writing the measurements it owns."""

    name: str

    def points(self) -> list[tuple[str, str]]: ...

    def writable(self, asset: str, measurement: str) -> bool: ...

    async def run(self, sink: ReadingSink) -> None: ...

    async def write(self, asset: str, measurement: str, value: float | bool | str) -> None: ...

    def counters(self) -> dict[str, dict[str, object]]: ...


@dataclass(slots=True)
class AgentStats:
    readings: int = 0  # readings received from sources
    unreadable: int = 0  # readings without a value (bad quality), not sent
    messages: int = 0  # messages appended to the buffer
    commands: Counter[str] = field(default_factory=Counter)  # by outcome: ok, error


class EdgeAgent:
    def __init__(self, tenant: str, sources: Sequence[EdgeSource], buffer: DiskBuffer, link: LinkSettings, *,
                 max_records: int = 200, clock: Callable[[], float] = time.time,
                 sparkplug: SparkplugOut | None = None) -> None:
        self.tenant = tenant
        self.sparkplug = sparkplug  # publish as a Sparkplug B edge node instead of JSON
        self.sources = list(sources)
        self.buffer = buffer
        self.link_settings = link
        self.stats = AgentStats()
        self.forwarder = Forwarder(buffer, window=link.window)
        self.link: MqttLink | None = None
        self._max_records = max_records
        self._clock = clock
        self._owners: dict[tuple[str, str], EdgeSource] = {}
        for source in self.sources:
            for point in source.points():
                self._owners[point] = source
        self.machines = sorted({asset for asset, _ in self._owners})
        self._tasks: set[asyncio.Task[None]] = set()

    async def sink(self, readings: Sequence[Reading]) -> None:
        """The ``ReadingSink`` of every source: returns once the readings are on disk."""
        messages, empty = telemetry_messages(self.tenant, readings, self._max_records)
        self.stats.readings += len(readings)
        self.stats.unreadable += empty
        if messages:
            self.append(messages)

    def append(self, messages: list[tuple[str, bytes]]) -> None:
        dropped = self.buffer.append(messages)
        self.stats.messages += len(messages)
        if dropped:
            _log.warning("edge: buffer full (%d bytes): dropped the %d oldest message(s), %d in all",
                         self.buffer.max_bytes, dropped, self.buffer.dropped)
        self.forwarder.wake()

    async def run(self, stop: asyncio.Event, *, drain_s: float = 5.0) -> None:
        """Run sources, forwarder and link until ``stop`` is set; then wait up to ``drain_s`` for acks."""
        publisher: Any
        if self.sparkplug is not None:
            self.link = MqttLink(self.link_settings, on_ack=self.forwarder.on_ack, on_message=self._on_message,
                                 on_connect=self._online, **self.sparkplug.link_options())
            self.sparkplug.link = publisher = self.link
            publisher = self.sparkplug
        else:
            subscriptions = [machine_topic(self.tenant, m, "command") for m in self.machines]
            will = (machine_topic(self.tenant, self.machines[0], "status"), b"offline") if self.machines else None
            self.link = publisher = MqttLink(self.link_settings, on_ack=self.forwarder.on_ack,
                                             on_message=self._on_message, subscriptions=subscriptions, will=will,
                                             on_connect=self._online)
        self.link.start()
        tasks = [asyncio.create_task(self._run_forwarder(publisher), name="edge forwarder")]
        tasks += [asyncio.create_task(self._run_source(s), name=f"edge source {s.name}") for s in self.sources]
        try:
            await stop.wait()
        finally:
            for t in tasks[1:]:
                t.cancel()
            await asyncio.gather(*tasks[1:], return_exceptions=True)
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._flush_all(), drain_s)
            tasks[0].cancel()
            await asyncio.gather(tasks[0], return_exceptions=True)
            await self.forwarder.drain(0.5)
            await self.link.stop()

    async def _flush_all(self) -> None:
        """Until the buffer is empty and nothing is in flight (while connected)."""
        while len(self.buffer) > 0 and self.link is not None and self.link.connected.is_set():
            self.forwarder.flush_acks()
            await asyncio.sleep(0.05)

    async def _run_forwarder(self, link: Any) -> None:
        while True:
            try:
                await self.forwarder.run(link)
            except asyncio.CancelledError:
                raise
            except Exception:  # the buffer's file (disk full, I/O error): keep buffering, try again
                _log.exception("edge: forwarding failed; again in 5 s")
                await asyncio.sleep(5.0)

    async def _run_source(self, source: EdgeSource) -> None:
        delay = 1.0
        while True:
            try:
                await source.run(self.sink)
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # a connector bug must not stop the agent: log, restart it
                _log.exception("edge: source %s failed; restarting in %.0f s", source.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)

    def _online(self) -> None:
        if self.sparkplug is not None:  # births first; then what was in flight, re-encoded for this session
            self.forwarder.rewind()
            self.sparkplug.send_births()
            return
        if self.link is not None:
            for m in self.machines[:1]:
                self.link.publish_now(machine_topic(self.tenant, m, "status"), b"online", retain=True)

    # -- commands ---------------------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        if self.sparkplug is not None:
            self._sparkplug_command(topic, payload)
            return
        prefix = f"{ROOT}/{self.tenant}/"
        if not (topic.startswith(prefix) and topic.endswith("/command")):
            return
        asset = topic[len(prefix):-len("/command")]
        task = asyncio.create_task(self._command(asset, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _command(self, asset: str, payload: bytes) -> None:
        now_us = int(self._clock() * 1_000_000)
        command_id: Any = None
        results: list[dict[str, Any]] = []
        try:
            body = json.loads(payload)
            if not isinstance(body, dict):
                raise ValueError("a command is a JSON object")
            command_id = body.get("id")
            writes = _writes_of(body)
            for name, _value in writes:
                source = self._owners.get((asset, name))
                if source is None or not source.writable(asset, name):
                    raise ValueError(f"{name} of {asset} is not a writable point of this edge agent")
            for name, value in writes:
                try:
                    await self._owners[(asset, name)].write(asset, name, value)
                except ShopfloorError as exc:
                    results.append({"measurement": name, "ok": False, "error": exc.message})
                    raise
                results.append({"measurement": name, "ok": True})
                _log.info("edge: command %s (by %s) wrote %s %s = %r", command_id, body.get("by", "?"), asset,
                          name, value)
        except (ValueError, ShopfloorError) as exc:
            reason = exc.message if isinstance(exc, ShopfloorError) else str(exc)
            _log.warning("edge: command %s for %s failed: %s", command_id, asset, reason)
            self.stats.commands["error"] += 1
            self.append([reply_message(self.tenant, asset, now_us, command_id, "error",
                                       {"error": reason, "results": results})])
            return
        self.stats.commands["ok"] += 1
        self.append([reply_message(self.tenant, asset, now_us, command_id, "ok", {"results": results})])

    def _sparkplug_command(self, topic: str, payload: bytes) -> None:
        if self.sparkplug is None:
            return
        try:
            writes = self.sparkplug.command(topic, payload)
            for w in writes:
                source = self._owners.get((w.machine, w.measurement))
                if source is None or not source.writable(w.machine, w.measurement):
                    raise ValueError(f"{w.measurement} of {w.machine} is not a writable point of this edge agent")
        except ValueError as exc:
            _log.warning("edge: Sparkplug command refused: %s", exc)
            self.stats.commands["error"] += 1
            return
        if writes:
            task = asyncio.create_task(self._sparkplug_writes(topic, writes))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sparkplug_writes(self, topic: str, writes: Sequence[Any]) -> None:
        for w in writes:
            try:
                await self._owners[(w.machine, w.measurement)].write(w.machine, w.measurement, w.value)
            except ShopfloorError as exc:
                _log.warning("edge: %s: write of %s %s failed: %s", topic, w.machine, w.measurement, exc.message)
                self.stats.commands["error"] += 1
                return
            _log.info("edge: %s wrote %s %s = %r", topic, w.machine, w.measurement, w.value)
        self.stats.commands["ok"] += 1

    def describe(self) -> dict[str, object]:
        """Counters of the agent, its buffer and its sources."""
        return {
            "readings": self.stats.readings, "unreadable": self.stats.unreadable,
            "messages": self.stats.messages, "published": self.forwarder.published,
            "acked": self.forwarder.acked, "inflight": self.forwarder.inflight,
            "buffered": len(self.buffer), "buffer_bytes": self.buffer.size_bytes, "dropped": self.buffer.dropped,
            "commands": dict(self.stats.commands), "connects": self.link.connects if self.link else 0,
            "sources": {s.name: s.counters() for s in self.sources},
            **({"sparkplug": {"bd_seq": self.sparkplug.node.bd_seq, "births": self.sparkplug.births,
                              "rebirths": self.sparkplug.rebirths}} if self.sparkplug is not None else {}),
        }
