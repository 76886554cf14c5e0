"""Simulated history: machines stepped through a past window at a coarse step, as messages.

Pure: no I/O and no wall clock. ``HistoryRun`` steps ``SimMachine`` models from ``start_ms`` on,
``step_s`` simulated seconds at a time, and returns what each machine's controller would have
published at each step, stamped with that step's time: the same topics and payloads the live
simulator sends over MQTT. The models keep their state, so a live ``Simulator`` given the same
objects continues where the history ends (counters go on rising, orders and states carry on).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.topics import Kind, asset_prefix
from shopfloor.sim.machine import SimMachine

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    """One message as a device would have published it: who, where, what."""

    username: str  # the MQTT username of the device that publishes for the machine
    topic: str
    payload: bytes


@dataclass(slots=True)
class HistoryTotals:
    steps: int = 0
    messages: int = 0
    points: int = 0  # telemetry values


class _Source:
    __slots__ = ("model", "pending", "topics", "username")

    def __init__(self, username: str, model: SimMachine, tenant: str) -> None:
        self.username = username
        self.model = model
        self.pending: list[Any] = []  # telemetry records not yet sent
        prefix = asset_prefix(tenant, model.profile.path)
        self.topics = {kind: f"{prefix}/{kind.value}" for kind in Kind}


class HistoryRun:
    """Steps ``machines`` (``(username, model)`` pairs) through time from ``start_ms``.

    The models must be fresh (never stepped): their first step places them at ``start_ms``. With
    ``telemetry_batch=n`` a machine's telemetry goes out as one message holding a list of n records
    (each with its own ``ts``), as a gateway uploads what it buffered: the same points in n times
    fewer messages. States, counts and events go out at their step.
    """

    def __init__(self, machines: Iterable[tuple[str, SimMachine]], tenant: str, start_ms: int,
                 step_s: float, *, telemetry_batch: int = 1) -> None:
        if not step_s > 0:
            raise InvalidInput("the history step must be positive")
        if telemetry_batch < 1:
            raise InvalidInput("telemetry_batch must be at least 1")
        self.telemetry_batch = telemetry_batch
        self._sources = [_Source(user, model, tenant) for user, model in machines]
        if any(s.model.sim_s is not None for s in self._sources):
            raise InvalidInput("history needs machines that have not been stepped yet")
        self.start_ms = start_ms
        self.step_ms = max(1, round(step_s * 1000))
        self.last_ms: int | None = None  # time of the last step taken
        self.totals = HistoryTotals()

    @property
    def next_ms(self) -> int:
        return self.start_ms if self.last_ms is None else self.last_ms + self.step_ms

    def advance(self, until_ms: int, max_messages: int) -> list[HistoryMessage]:
        """Take whole steps up to ``until_ms`` until at least ``max_messages`` are gathered.

        An empty list means the run is within one step of ``until_ms``.
        """
        out: list[HistoryMessage] = []
        while len(out) < max_messages and self.next_ms <= until_ms:
            self._step(self.next_ms, out)
        return out

    def finish(self, at_ms: int) -> list[HistoryMessage]:
        """One last, shorter step that lands the machines exactly at ``at_ms`` (if it is later), and
        the telemetry still held back."""
        out: list[HistoryMessage] = []
        if self.last_ms is None or at_ms > self.last_ms:
            self._step(at_ms, out)
        for src in self._sources:
            if src.pending:
                self._send_telemetry(src, out)
        return out

    def _step(self, ts_ms: int, out: list[HistoryMessage]) -> None:
        dt_s = 0.0 if self.last_ms is None else (ts_ms - self.last_ms) / 1000.0
        telemetry = Kind.TELEMETRY
        batch = self.telemetry_batch
        for src in self._sources:
            for msg in src.model.step(ts_ms, dt_s):
                if msg.kind is telemetry:
                    src.pending.append(msg.payload)
                    if len(src.pending) >= batch:
                        self._send_telemetry(src, out)
                else:
                    self._send(src.username, src.topics[msg.kind], msg.payload, out)
        self.last_ms = ts_ms
        self.totals.steps += 1

    def _send_telemetry(self, src: _Source, out: list[HistoryMessage]) -> None:
        records, src.pending = src.pending, []
        self.totals.points += sum(len(r["values"]) for r in records)
        self._send(src.username, src.topics[Kind.TELEMETRY], records[0] if len(records) == 1 else records, out)

    def _send(self, username: str, topic: str, payload: Any, out: list[HistoryMessage]) -> None:
        out.append(HistoryMessage(username, topic, _encode(payload).encode()))
        self.totals.messages += 1
