"""The ingest service: raw messages in, committed samples/events/dead letters out.

Implements the ``MessageSink`` and ``BatchSink`` ports. Callers on the event loop await their
message's commit; while one commit runs, new messages gather into the next one, so a busy broker
commits large batches and a quiet one commits at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from shopfloor.domain.errors import InvalidInput, ShopfloorError, StoreUnavailable
from shopfloor.domain.payloads import DEAD_PAYLOAD_BYTES, Decoder, Limits
from shopfloor.domain.records import DeadLetter, IngestBatch, Reason
from shopfloor.domain.topics import TopicError, parse_topic, topic_within
from shopfloor.ports.clock import Clock
from shopfloor.ports.ingest import RawMessage
from shopfloor.ports.store import TimeSeriesStore
from shopfloor.services.cache import RegistryCache
from shopfloor.services.stats import IngestStats

log = logging.getLogger(__name__)

MAX_BATCH_POINTS = 200_000


@dataclass(slots=True)
class _Pending:
    batch: IngestBatch
    future: asyncio.Future[int]
    tenant_id: int | None
    device: str
    messages: int
    raw: RawMessage | None = None
    live: bool = True


class IngestService:
    def __init__(self, store: TimeSeriesStore, cache: RegistryCache, clock: Clock, stats: IngestStats,
                 limits: Limits | None = None) -> None:
        self._store = store
        self._cache = cache
        self._clock = clock
        self.stats = stats
        self.decoder = Decoder(limits or Limits())
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopfloor-commit")
        self._pending: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.last_seq = store.last_seq()
        self.last_commit_us: int | None = None
        self._in_flight = 0
        self._listeners: list[Callable[[int, bool], None]] = []

    def on_commit(self, listener: Callable[[int, bool], None]) -> None:
        """Call ``listener(seq, live)`` on the event loop after each commit (rules and alarms follow
        ingest this way). A commit holds only live data or only back-filled history (``live`` False)."""
        self._listeners.append(listener)

    def _committed(self, seq: int, live: bool) -> None:
        for listener in self._listeners:
            try:
                listener(seq, live)
            except Exception:
                log.exception("a commit listener failed")

    # -- decoding (pure but for registry look-ups) ---------------------------------------------
    def decode(self, msg: RawMessage) -> tuple[IngestBatch, int | None]:
        """Judge one message; never raises for bad input. Returns its batch portion and tenant."""
        out = IngestBatch()

        def reject(reason: Reason, detail: str, tenant_id: int | None) -> tuple[IngestBatch, int | None]:
            out.dead_letters.append(DeadLetter(tenant_id, msg.device, msg.topic[:512], reason, detail,
                                               msg.payload[:DEAD_PAYLOAD_BYTES], msg.received_us))
            return out, tenant_id

        if msg.device == "":
            return self._decode_trusted(msg, reject)
        info = self._cache.device(msg.device)
        if info is None:
            return reject(Reason.UNKNOWN_DEVICE, f"no device with username {msg.device!r}", None)
        tid = info.device.tenant_id
        if not info.device.enabled:
            return reject(Reason.DEVICE_DISABLED, f"device {info.device.name!r} is disabled", tid)
        if not topic_within(msg.topic, info.prefixes):
            return reject(Reason.OUTSIDE_PREFIX, f"device {info.device.name!r} may publish only under "
                          f"{', '.join(p + '/' for p in info.prefixes) or '(nothing)'}", tid)
        try:
            addr = parse_topic(msg.topic)
        except TopicError as exc:
            return reject(Reason.UNKNOWN_TOPIC, str(exc), tid)
        machine = self._cache.machine(tid, addr.path)
        if machine is None:
            return reject(Reason.UNKNOWN_ASSET, f"no machine {'/'.join(addr.path)!r} in the registry", tid)
        return self.decoder.decode(addr.kind, msg.payload, machine, device=msg.device, topic=msg.topic,
                                   now_us=msg.received_us), tid

    def _decode_trusted(self, msg: RawMessage,
                        reject: Callable[[Reason, str, int | None], tuple[IngestBatch, int | None]]
                        ) -> tuple[IngestBatch, int | None]:
        """A message from an external broker that already enforced the device's prefix (server mode):
        MQTT does not say who published, so tenant and machine come from the topic."""
        try:
            addr = parse_topic(msg.topic)
        except TopicError as exc:
            return reject(Reason.UNKNOWN_TOPIC, str(exc), None)
        tid = self._cache.tenant_id(addr.tenant)
        if tid is None:
            return reject(Reason.UNKNOWN_TOPIC, f"no tenant {addr.tenant!r}", None)
        machine = self._cache.machine(tid, addr.path)
        if machine is None:
            return reject(Reason.UNKNOWN_ASSET, f"no machine {'/'.join(addr.path)!r} in the registry", tid)
        device = self._cache.publisher(tid, addr.path)
        return self.decoder.decode(addr.kind, msg.payload, machine, device=device, topic=msg.topic,
                                   now_us=msg.received_us), tid

    # -- the sinks ---------------------------------------------------------------------------
    async def submit_messages(self, messages: list[RawMessage]) -> None:
        futures = []
        for msg in messages:
            try:
                batch, tid = self.decode(msg)
            except StoreUnavailable:
                raise  # the registry is down: do not acknowledge, the transport retries
            except ShopfloorError as exc:  # registry trouble: keep the message as a dead letter
                batch, tid = IngestBatch(), None
                batch.dead_letters.append(DeadLetter(None, msg.device, msg.topic[:512], Reason.UNDECODABLE,
                                                     exc.message, msg.payload[:DEAD_PAYLOAD_BYTES],
                                                     msg.received_us))
            device = msg.device
            if not device:
                device = self._publisher_of(msg.topic, tid)
            futures.append(self._enqueue(batch, tid, device, 1, msg))
        if futures:
            await asyncio.gather(*futures)

    async def submit(self, batch: IngestBatch) -> int:
        tid = batch.events[0].tenant_id if batch.events else None
        return await self._enqueue(batch, tid, "", 0)

    def _publisher_of(self, topic: str, tenant_id: int | None) -> str:
        if tenant_id is None:
            return ""
        try:
            return self._cache.publisher(tenant_id, parse_topic(topic).path)
        except TopicError:
            return ""

    def _enqueue(self, batch: IngestBatch, tenant_id: int | None, device: str,
                 messages: int, raw: RawMessage | None = None) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._pending.append(_Pending(batch, fut, tenant_id, device, messages, raw,
                                      raw.live if raw is not None else True))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        return fut

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            take, points = 0, 0
            live = self._pending[0].live
            for p in self._pending:
                if p.live is not live:  # live data and back-filled history never share a commit
                    break
                take += 1
                points += len(p.batch)
                if points >= MAX_BATCH_POINTS:
                    break
            group, self._pending = self._pending[:take], self._pending[take:]
            merged = IngestBatch()
            for p in group:
                merged.extend(p.batch)
            self._in_flight = len(group)
            try:
                seq = await loop.run_in_executor(self._writer, self._store.commit, merged)
            except InvalidInput as exc:
                # the store refused the content, not the commit: find the message(s) it refused
                # and keep them as dead letters, so one bad value never blocks a transport forever
                self._in_flight = 0
                await self._isolate(group, exc)
                continue
            except Exception as exc:
                self.stats.commit_done(False)
                log.error("commit of %d item(s) failed: %s", len(merged), exc)
                err = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"commit failed: {exc}")
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            finally:
                self._in_flight = 0
            self.last_seq = seq
            self.last_commit_us = self._clock.now_us()
            self.stats.commit_done(True)
            self._committed(seq, live)
            for p in group:
                self.stats.record(p.tenant_id, p.device, p.messages,
                                  len(p.batch.samples) + len(p.batch.events),
                                  [(d.device, d.reason.value) for d in p.batch.dead_letters])
                if not p.future.done():
                    p.future.set_result(seq)

    async def _isolate(self, group: list[_Pending], exc: InvalidInput) -> None:
        loop = asyncio.get_running_loop()
        log.warning("the store refused a batch of %d message(s) (%s); committing them one by one",
                    len(group), exc.message)
        for p in group:
            batch = p.batch
            for attempt in range(2):
                try:
                    seq = await loop.run_in_executor(self._writer, self._store.commit, batch)
                except InvalidInput as inner:
                    if attempt == 0 and p.raw is not None:
                        batch = IngestBatch(dead_letters=[DeadLetter(
                            p.tenant_id, p.raw.device, p.raw.topic[:512], Reason.STORE_REJECTED,
                            inner.message[:300], p.raw.payload[:DEAD_PAYLOAD_BYTES], p.raw.received_us)])
                        continue
                    self._fail([p], StoreUnavailable(f"the store refused: {inner.message}"))
                    break
                except Exception as other:
                    self._fail([p], other)
                    break
                self._done(p, batch, seq)
                break

    def _fail(self, group: list[_Pending], exc: Exception) -> None:
        self.stats.commit_done(False)
        err = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"commit failed: {exc}")
        for p in group:
            if not p.future.done():
                p.future.set_exception(err)

    def _done(self, p: _Pending, batch: IngestBatch, seq: int) -> None:
        self.last_seq = max(self.last_seq, seq)
        self.last_commit_us = self._clock.now_us()
        self.stats.commit_done(True)
        self._committed(seq, p.live)
        self.stats.record(p.tenant_id, p.device, p.messages, len(batch.samples) + len(batch.events),
                          [(d.device, d.reason.value) for d in batch.dead_letters])
        if not p.future.done():
            p.future.set_result(seq)

    @property
    def pending_messages(self) -> int:
        """Submissions accepted but not yet committed (queued, plus the commit running now)."""
        return len(self._pending) + self._in_flight

    async def drain(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.wait({self._flusher})

    def close(self) -> None:
        self._writer.shutdown(wait=True)
