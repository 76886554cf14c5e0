"""A ``MessageSink`` fake for connector tests: it "commits" after a delay and records what it committed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.ports.ingest import RawMessage


class RecordingSink:
    """Records each message once its simulated commit has finished, with the commit time.

    ``commit_delay`` is the simulated commit latency. ``fail`` decides, per message, whether the
    whole submit raises ``StoreUnavailable`` (as a store that is down would). While ``gate`` is
    cleared, commits wait for it. ``in_flight``/``max_in_flight`` count concurrent submits.
    """

    def __init__(self, commit_delay: float = 0.0, *,
                 fail: Callable[[RawMessage], bool] | None = None) -> None:
        self.commit_delay = commit_delay
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()
        self.messages: list[RawMessage] = []  # committed, in commit order
        self.arrivals: list[RawMessage] = []  # every message submitted, in call order
        self.committed_at: dict[bytes, float] = {}  # payload -> time.monotonic() of its first commit
        self.calls = 0
        self.failures = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def submit_messages(self, messages: list[RawMessage]) -> None:
        self.calls += 1
        self.arrivals.extend(messages)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.fail is not None and any(self.fail(m) for m in messages):
                self.failures += 1
                raise StoreUnavailable("simulated store outage")
            await self.gate.wait()
            await asyncio.sleep(self.commit_delay)
            now = time.monotonic()
            for message in messages:
                self.committed_at.setdefault(message.payload, now)
            self.messages.extend(messages)
        finally:
            self.in_flight -= 1

    def payloads(self) -> list[bytes]:
        return [m.payload for m in self.messages]

    def on_topic(self, topic: str) -> list[RawMessage]:
        return [m for m in self.messages if m.topic == topic]
