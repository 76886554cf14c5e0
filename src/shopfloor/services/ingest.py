"""The ingest service: raw messages in, committed samples/events/dead letters out.

Implements the ``MessageSink`` and ``BatchSink`` ports. Callers on the event loop await their
message's commit; while one commit runs, new messages gather into the next one, so a busy broker
commits large batches and a quiet one commits at once.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shopfloor.domain.errors import InvalidInput, ShopfloorError, StoreUnavailable
from shopfloor.domain.payloads import DEAD_PAYLOAD_BYTES, Decoder, Limits, MachineInfo
from shopfloor.domain.records import DeadLetter, IngestBatch, Reason
from shopfloor.domain.topics import Kind, TopicError, parse_topic, topic_within
from shopfloor.ports.clock import Clock
from shopfloor.ports.ingest import RawMessage
from shopfloor.ports.store import TimeSeriesStore
from shopfloor.services.cache import RegistryCache
from shopfloor.services.stats import IngestStats

log = logging.getLogger(__name__)

MAX_BATCH_POINTS = 200_000


@dataclass(slots=True)
class _Pending:
    """One submission: its decoded batch, and per (tenant, device) what it counts once committed."""

    batch: IngestBatch
    future: asyncio.Future[int]
    counts: dict[tuple[int | None, str], _Count]
    raws: list[RawMessage] | None = None  # the messages it came from (to isolate one the store refuses)


@dataclass(slots=True)
class _Count:
    messages: int = 0
    points: int = 0
    rejects: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Route:
    """Where a topic's messages go, once the registry said so (memoised per registry version)."""

    kind: Kind
    machine: MachineInfo
    tenant_id: int
    device: str  # the publisher credited in the stats and the dead-letter log


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
        self._routes: dict[tuple[str, str], _Route] = {}
        self._routes_of = -1  # the registry generation they belong to

    # -- decoding (pure but for registry look-ups) ---------------------------------------------
    def decode(self, msg: RawMessage) -> tuple[IngestBatch, int | None]:
        """Judge one message; never raises for bad input. Returns its batch portion and tenant."""
        out = IngestBatch()
        route = self._route(msg, out)
        if route is None:
            return out, out.dead_letters[-1].tenant_id
        self.decoder.decode(route.kind, msg.payload, route.machine, device=route.device, topic=msg.topic,
                            now_us=msg.received_us, out=out)
        return out, route.tenant_id

    def _route(self, msg: RawMessage, out: IngestBatch) -> _Route | None:
        """Where ``msg`` goes, or None with a dead letter in ``out`` saying why it goes nowhere."""
        route = self._routes.get((msg.device, msg.topic))
        if route is not None:
            return route
        found = self._find_route(msg)
        if isinstance(found, _Route):
            if len(self._routes) < 100_000:
                self._routes[(msg.device, msg.topic)] = found
            return found
        reason, detail, tid = found
        out.dead_letters.append(DeadLetter(tid, msg.device, msg.topic[:512], reason, detail,
                                           msg.payload[:DEAD_PAYLOAD_BYTES], msg.received_us))
        return None

    def _find_route(self, msg: RawMessage) -> _Route | tuple[Reason, str, int | None]:
        if msg.device == "":
            return self._find_trusted(msg)
        info = self._cache.device(msg.device)
        if info is None:
            return Reason.UNKNOWN_DEVICE, f"no device with username {msg.device!r}", None
        tid = info.device.tenant_id
        if not info.device.enabled:
            return Reason.DEVICE_DISABLED, f"device {info.device.name!r} is disabled", tid
        if not topic_within(msg.topic, info.prefixes):
            return (Reason.OUTSIDE_PREFIX, f"device {info.device.name!r} may publish only under "
                    f"{', '.join(p + '/' for p in info.prefixes) or '(nothing)'}", tid)
        try:
            addr = parse_topic(msg.topic)
        except TopicError as exc:
            return Reason.UNKNOWN_TOPIC, str(exc), tid
        machine = self._cache.machine(tid, addr.path)
        if machine is None:
            return Reason.UNKNOWN_ASSET, f"no machine {'/'.join(addr.path)!r} in the registry", tid
        return _Route(addr.kind, machine, tid, msg.device)

    def _find_trusted(self, msg: RawMessage) -> _Route | tuple[Reason, str, int | None]:
        """A message from an external broker that already enforced the device's prefix (server mode):
        MQTT does not say who published, so tenant and machine come from the topic."""
        try:
            addr = parse_topic(msg.topic)
        except TopicError as exc:
            return Reason.UNKNOWN_TOPIC, str(exc), None
        tid = self._cache.tenant_id(addr.tenant)
        if tid is None:
            return Reason.UNKNOWN_TOPIC, f"no tenant {addr.tenant!r}", None
        machine = self._cache.machine(tid, addr.path)
        if machine is None:
            return Reason.UNKNOWN_ASSET, f"no machine {'/'.join(addr.path)!r} in the registry", tid
        return _Route(addr.kind, machine, tid, self._cache.publisher(tid, addr.path))

    def _check_routes(self) -> None:
        generation = self._cache.generation()
        if generation != self._routes_of:
            self._routes.clear()
            self._routes_of = generation

    # -- the sinks ---------------------------------------------------------------------------
    async def submit_messages(self, messages: list[RawMessage]) -> None:
        """Decode every message into one batch (one commit, one future), counting per publisher."""
        if not messages:
            return
        self._check_routes()
        batch = IngestBatch()
        counts: dict[tuple[int | None, str], _Count] = {}
        samples, events, dead = batch.samples.series_id, batch.events, batch.dead_letters
        for msg in messages:
            points, rejected = len(samples) + len(events), len(dead)
            try:
                route = self._route(msg, batch)
                if route is not None:
                    self.decoder.decode(route.kind, msg.payload, route.machine, device=route.device,
                                        topic=msg.topic, now_us=msg.received_us, out=batch)
            except StoreUnavailable:
                raise  # the registry is down: do not acknowledge, the transport retries
            except ShopfloorError as exc:  # registry trouble: keep the message as a dead letter
                route = None
                dead.append(DeadLetter(None, msg.device, msg.topic[:512], Reason.UNDECODABLE, exc.message,
                                       msg.payload[:DEAD_PAYLOAD_BYTES], msg.received_us))
            tid = route.tenant_id if route is not None else dead[-1].tenant_id if len(dead) > rejected else None
            device = msg.device or (route.device if route is not None else self._publisher_of(msg.topic, tid))
            count = counts.get((tid, device))
            if count is None:
                count = counts[(tid, device)] = _Count()
            count.messages += 1
            count.points += len(samples) + len(events) - points
            count.rejects.extend((d.device, d.reason.value) for d in dead[rejected:])
        await self._enqueue(batch, counts, messages)

    async def submit(self, batch: IngestBatch) -> int:
        tid = batch.events[0].tenant_id if batch.events else None
        return await self._enqueue(batch, {(tid, ""): _Count(0, len(batch.samples) + len(batch.events),
                                                           [(d.device, d.reason.value) for d in batch.dead_letters])})

    def _publisher_of(self, topic: str, tenant_id: int | None) -> str:
        if tenant_id is None:
            return ""
        try:
            return self._cache.publisher(tenant_id, parse_topic(topic).path)
        except TopicError:
            return ""

    def _enqueue(self, batch: IngestBatch, counts: dict[tuple[int | None, str], _Count],
                 raws: list[RawMessage] | None = None) -> asyncio.Future[int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        self._pending.append(_Pending(batch, fut, counts, raws))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        return fut

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            take, points = 0, 0
            for p in self._pending:
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
            for p in group:
                self._record(p.counts)
                if not p.future.done():
                    p.future.set_result(seq)

    def _record(self, counts: dict[tuple[int | None, str], _Count]) -> None:
        for (tid, device), c in counts.items():
            self.stats.record(tid, device, c.messages, c.points, c.rejects)

    async def _isolate(self, group: list[_Pending], exc: InvalidInput) -> None:
        """The store refused a merged batch: commit message by message, and keep one it refuses as a
        dead letter (``store_rejected``), so that one bad value never blocks a transport forever."""
        loop = asyncio.get_running_loop()
        log.warning("the store refused a batch of %d submission(s) (%s); committing them one by one",
                    len(group), exc.message)
        for p in group:
            parts: list[tuple[IngestBatch, dict[tuple[int | None, str], _Count], RawMessage | None]]
            if p.raws is None:
                parts = [(p.batch, p.counts, None)]
            else:
                parts = []
                for one in p.raws:
                    batch, tid = self.decode(one)
                    device = one.device or self._publisher_of(one.topic, tid)
                    parts.append((batch, {(tid, device): _Count(1, len(batch.samples) + len(batch.events), [
                        (d.device, d.reason.value) for d in batch.dead_letters])}, one))
            seq: int | None = None
            for batch, counts, raw in parts:
                try:
                    seq = await loop.run_in_executor(self._writer, self._store.commit, batch)
                except InvalidInput as inner:
                    if raw is None:
                        self._fail([p], StoreUnavailable(f"the store refused: {inner.message}"))
                        break
                    (tid, device), = counts
                    batch = IngestBatch(dead_letters=[DeadLetter(
                        tid, raw.device, raw.topic[:512], Reason.STORE_REJECTED, inner.message[:300],
                        raw.payload[:DEAD_PAYLOAD_BYTES], raw.received_us)])
                    try:
                        seq = await loop.run_in_executor(self._writer, self._store.commit, batch)
                    except Exception as other:
                        self._fail([p], other)
                        break
                    counts = {(tid, device): _Count(1, 0, [(raw.device, Reason.STORE_REJECTED.value)])}
                except Exception as other:
                    self._fail([p], other)
                    break
                self.last_seq = max(self.last_seq, seq)
                self.last_commit_us = self._clock.now_us()
                self.stats.commit_done(True)
                self._record(counts)
            else:
                if not p.future.done() and seq is not None:
                    p.future.set_result(seq)

    def _fail(self, group: list[_Pending], exc: Exception) -> None:
        self.stats.commit_done(False)
        err = exc if isinstance(exc, StoreUnavailable) else StoreUnavailable(f"commit failed: {exc}")
        for p in group:
            if not p.future.done():
                p.future.set_exception(err)

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
