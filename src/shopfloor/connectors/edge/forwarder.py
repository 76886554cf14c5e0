"""Publishes the buffer's messages in order, at most ``window`` unacknowledged, and deletes each on its PUBACK."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from shopfloor.connectors.edge.buffer import DiskBuffer


class Publisher(Protocol):
    connected: asyncio.Event

    def publish(self, topic: str, payload: bytes) -> int: ...


class Forwarder:
    def __init__(self, buffer: DiskBuffer, window: int = 100, delete_every_s: float = 0.05) -> None:
        self.buffer = buffer
        self.window = window
        self.published = 0
        self.acked = 0
        self._cursor = 0  # the highest sequence number handed to the link
        self._inflight: dict[int, int] = {}  # mid -> seq
        self._acked: list[int] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set whenever nothing is in flight
        self._delete_every_s = delete_every_s

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def wake(self) -> None:
        self._wake.set()

    def on_ack(self, mid: int) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is not None:
            self._acked.append(seq)
            self.acked += 1
            self._wake.set()
            if not self._inflight:
                self._idle.set()

    def rewind(self) -> None:
        """Forget what is in flight (the link dropped it): it goes out again, from the oldest."""
        self.flush_acks()
        if self._inflight:
            self._cursor = min(self._inflight.values()) - 1
            self._inflight.clear()
        self._idle.set()
        self._wake.set()

    def flush_acks(self) -> None:
        if self._acked:
            acked, self._acked = self._acked, []
            self.buffer.delete(acked)

    async def run(self, link: Publisher) -> None:
        loop = asyncio.get_running_loop()
        last_delete = loop.time()
        while True:
            if loop.time() - last_delete >= self._delete_every_s:
                self.flush_acks()
                last_delete = loop.time()
            room = self.window - len(self._inflight)
            rows = self.buffer.after(self._cursor, room) if room > 0 and link.connected.is_set() else []
            for seq, topic, payload in rows:
                self._inflight[link.publish(topic, payload)] = seq
                self._cursor = seq
                self.published += 1
            if rows:
                await asyncio.sleep(0)
                continue
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait())]
            if not link.connected.is_set():
                waiters.append(asyncio.ensure_future(link.connected.wait()))
            try:
                await asyncio.wait(waiters, timeout=self._delete_every_s if self._acked else 1.0,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight (or ``timeout_s``); delete what was acknowledged."""
        if self._inflight:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        self.flush_acks()
        return not self._inflight
