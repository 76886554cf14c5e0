"""Hands readings to the sink in batches, in arrival order, after de-duplication.

Subscription callbacks only append to a list (they must not block asyncua's loop); one task
drains it into the ``ReadingSink``. A sink that raises is retried with the same batch, so nothing
accepted is lost or reordered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from shopfloor.connectors.opcua.dedup import Deduplicator
from shopfloor.domain.fieldbus import Reading, ReadingSink

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Stats:
    notifications: int = 0  # readings that arrived (subscriptions, polls, history)
    delivered: int = 0  # handed to the sink
    duplicates: int = 0  # dropped by (node, source timestamp)
    backfilled: int = 0  # read by HistoryRead after a reconnect
    gaps_marked: int = 0  # bad-quality readings at a reconnect without history
    reconnects: int = 0
    polled_nodes: int = 0  # nodes the server would not monitor
    sink_errors: int = 0


class Delivery:
    def __init__(self, sink: ReadingSink, max_batch: int = 5000) -> None:
        self._sink = sink
        self._max_batch = max_batch
        self._pending: list[Reading] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.dedup = Deduplicator()
        self.stats = Stats()

    def offer(self, node_id: str, reading: Reading, remember: bool = False) -> None:
        """Queue one reading unless (node, source timestamp) was seen already (``remember``: a
        back-filled reading, which live notifications may repeat out of order)."""
        self.stats.notifications += 1
        if not self.dedup.first_time(node_id, reading.ts_us, remember):
            self.stats.duplicates += 1
            return
        self._pending.append(reading)
        self._idle.clear()
        self._ready.set()

    def offer_many(self, items: Iterable[tuple[str, Reading]]) -> None:
        for node_id, reading in items:
            self.offer(node_id, reading)

    async def run(self) -> None:
        """Drain forever (cancel to stop)."""
        backoff = 0.1
        batch: list[Reading] = []
        while True:
            if not batch:
                if not self._pending:
                    self._idle.set()
                    self._ready.clear()
                    await self._ready.wait()
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            try:
                await self._sink(batch)
            except Exception as exc:  # the sink's trouble is not ours to crash on: retry the same batch
                self.stats.sink_errors += 1
                log.warning("reading sink failed (%s); retrying %d readings in %.1f s", exc, len(batch), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.1
            self.stats.delivered += len(batch)
            batch = []

    async def drained(self) -> None:
        """Wait until everything queued so far was handed to the sink."""
        while not self._idle.is_set() or self._pending:
            await self._idle.wait()
            await asyncio.sleep(0)

