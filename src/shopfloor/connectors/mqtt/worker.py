"""An ingest worker: one member of an MQTT 5 shared subscription, acknowledging after commit.

Several worker processes (``ingest-0`` … ``ingest-{N-1}``) subscribe to ``$share/{group}/…`` on an
external broker (Mosquitto) and each gets a share of the JSON uplink topics. What makes that lossless:

* **Persistent sessions.** Each worker connects with a fixed client id, ``clean_start=False`` and a
  long Session Expiry Interval. Mosquitto hands shared messages round robin to every session in the
  group, connected or not, so a dead worker's share waits in its session (up to the broker's
  ``max_queued_messages``) together with the messages it had received but not acknowledged, and is
  delivered again when the worker comes back under the same id. A clean-session subscriber killed
  mid-stream would lose its in-flight QoS 1 messages.
* **Acknowledge after commit.** A message is PUBACKed only
  after the sink (``MessageSink.submit_messages``) returned, that is after the store committed it.
  If the sink raises (``StoreUnavailable`` when the database is away), the batch is kept and tried
  again with back-off; nothing is acknowledged and nothing is dropped.
* **A bounded window.** The worker announces a Receive Maximum, so the broker has at most that many
  unacknowledged messages out to it. Messages gather into a batch that is handed to the sink when it
  holds ``batch_max`` messages, when the window is full (nothing more will come before an ack), or
  ``flush_ms`` after its first message. The window is larger than a batch, so the next batches fill
  while one commits (``pipeline`` batches may be with the sink at once; acks still leave in order).
* **Acks belong to a connection.** A packet id is only meaningful on the connection that delivered
  it; after a reconnect the broker may reuse it for another message. Every delivery carries the
  connection's generation, and an ack whose generation is stale is not sent (the broker delivers that
  message again and the store, being idempotent, keeps it once).

QoS 2 is subscribed as QoS 1 (a QoS 2 receive state kept only in memory would lose a message to a
crash between PUBREC and commit); the store's idempotence makes QoS 1 exactly-once in effect.

One thread: the connection (``link.py``, an asyncio protocol over the ``mqtt5`` codec) hands every
PUBLISH of a TCP read to this worker on the event loop that also batches, commits and acknowledges,
so no message crosses a thread and the acks of a batch leave in one write.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shopfloor.connectors.mqtt.link import MqttLink, close_quietly, keep_connected, refused, serve
from shopfloor.domain.errors import InvalidInput, ShopfloorError, StoreUnavailable
from shopfloor.domain.topics import ROOT, UPLINK_KINDS
from shopfloor.ports.ingest import MessageSink, RawMessage

_log = logging.getLogger(__name__)

#: One filter per uplink kind: ``+/+/+/+/+/+`` alone would also match the downlink ``…/command``.
DEFAULT_TOPICS: tuple[str, ...] = tuple(f"{ROOT}/+/+/+/+/+/{kind.value}" for kind in sorted(UPLINK_KINDS))
DEFAULT_SHARE_GROUP = "ingest"
DEFAULT_BATCH_MAX = 5000  # messages per commit: a commit has a fixed cost, so fewer and larger
DEFAULT_RECEIVE_MAXIMUM = 15000
DEFAULT_SESSION_EXPIRY_S = 7 * 86_400
MAX_RECEIVE_MAXIMUM = 65_535
_RETRY_MIN_S = 0.1
_SUBSCRIBE_TIMEOUT_S = 30.0


class WorkerError(ShopfloorError):
    """The ingest worker cannot do its job (the broker refused its subscriptions)."""

    status = 503
    title = "Ingest worker failed"


def client_id_for(index: int) -> str:
    """The fixed MQTT client id of worker ``index``: its session lives under this name."""
    return f"ingest-{index}"


@dataclass(slots=True)
class WorkerStats:
    received: int = 0
    redelivered: int = 0  # deliveries with the DUP flag: sent before, not acknowledged by us
    committed: int = 0  # messages handed to the sink and committed
    acked: int = 0
    stale_acks: int = 0  # committed on a connection that has since gone: the broker sends them again
    batches: int = 0
    sink_failures: int = 0
    connects: int = 0
    disconnects: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass(slots=True)
class _Delivery:
    mid: int
    qos: int
    gen: int
    raw: RawMessage


class IngestWorker:
    """One shared-subscription member that commits through ``sink`` before it acknowledges."""

    def __init__(self, index: int, host: str, port: int, username: str | None, password: str | None,
                 sink: MessageSink, *, share_group: str = DEFAULT_SHARE_GROUP,
                 topics: Sequence[str] = DEFAULT_TOPICS, batch_max: int = DEFAULT_BATCH_MAX,
                 flush_ms: float = 20.0, receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM, pipeline: int = 2,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S, keepalive_s: int = 30,
                 reconnect_min_s: float = 0.1, reconnect_max_s: float = 2.0, retry_max_s: float = 10.0, tls: ssl.SSLContext | None = None,
                 on_subscribed: Callable[[], None] | None = None) -> None:
        if index < 0:
            raise InvalidInput(f"worker index must be >= 0, not {index}")
        if batch_max < 1:
            raise InvalidInput(f"batch_max must be >= 1, not {batch_max}")
        if not batch_max < receive_maximum <= MAX_RECEIVE_MAXIMUM:
            raise InvalidInput(f"receive_maximum must be above batch_max ({batch_max}) and at most "
                               f"{MAX_RECEIVE_MAXIMUM}, not {receive_maximum}")
        if pipeline < 1:
            raise InvalidInput(f"pipeline must be >= 1, not {pipeline}")
        if not share_group or any(c in share_group for c in "/+#"):
            raise InvalidInput(f"share group {share_group!r} must be a non-empty name without / + #")
        if not topics:
            raise InvalidInput("an ingest worker needs at least one topic filter")
        self.index = index
        self.client_id = client_id_for(index)
        self.host, self.port = host, port
        self.share_group = share_group
        self.topics = tuple(topics)
        self.batch_max = batch_max
        self.flush_s = flush_ms / 1000
        self.receive_maximum = receive_maximum
        self.pipeline = pipeline
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.retry_max_s = retry_max_s
        self.stats = WorkerStats()
        self._sink = sink
        self._on_subscribed = on_subscribed

        self.username, self.password, self.tls = username, password, tls
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = max(reconnect_min_s, reconnect_max_s)

        self._inbox: collections.deque[_Delivery] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._wake_at = 1  # inbox length at which a delivery wakes the consumer
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        # The connection generation: bumped when a connection ends, read when acking.
        self._gen = 0
        self._link: MqttLink | None = None
        self._outstanding: collections.Counter[int] = collections.Counter()  # gen -> unacked deliveries
        self._retiring = False  # leave the share group, drain the session, then end it
        self._left_group = asyncio.Event()
        self._end_session = False
        self._last_delivery = time.monotonic()
        self._in_sink = 0  # batches handed to the sink and not yet settled

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume, commit and acknowledge until ``stop()``; reconnects by itself.

        Raises ``WorkerError`` when the broker refuses the subscriptions.
        """
        self._loop = asyncio.get_running_loop()
        _log.info("%s: connecting to %s:%d (group %s, batch %d, window %d)", self.client_id, self.host,
                  self.port, self.share_group, self.batch_max, self.receive_maximum)
        connection = self._loop.create_task(self._connect_loop())
        try:
            await self._consume()
        finally:
            self._stopping.set()  # also when cancelled: the disconnect below is ours
            # a stop keeps the session (its expiry was set at CONNECT); a retirement ends it
            await close_quietly(self._link, 0 if self._end_session else None)
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection
            _log.info("%s: stopped; %s", self.client_id, self.describe())
        if self._failure is not None:
            raise self._failure

    async def retire(self, quiet_s: float = 2.0) -> None:
        """Take this worker out of the group for good, without losing its share.

        Connects under the worker's client id, unsubscribes from the share group (so the broker
        routes nothing new to this session), commits and acknowledges what the session still holds
        until nothing has arrived for ``quiet_s`` and nothing is outstanding, then disconnects with
        a Session Expiry Interval of 0, which ends the session. Use it when the number of workers
        goes down: the session of a worker that never comes back keeps receiving its share.
        """
        self._retiring = True
        run = asyncio.ensure_future(self.run())
        try:
            while not run.done():
                if self._left_group.is_set() and self._drained(quiet_s):
                    self._end_session = True
                    self.stop()
                    break
                await asyncio.wait({run}, timeout=0.1)
        finally:
            await run
        _log.info("%s: retired; its session is gone", self.client_id)

    def _drained(self, quiet_s: float) -> bool:
        return (time.monotonic() - self._last_delivery >= quiet_s and not self._inbox
                and self._outstanding[self._gen] == 0 and self._in_sink == 0)

    def stop(self) -> None:
        """Stop taking batches; finish (and acknowledge) those with the sink, then disconnect.

        Safe to call from any thread and from a signal handler on the worker's loop.
        """
        loop = self._loop
        if loop is None:
            self._stopping.set()
        elif _on_loop(loop):
            self._stopping.set()
            self._arrived.set()
        else:
            loop.call_soon_threadsafe(self.stop)

    def describe(self) -> str:
        s = self.stats
        elapsed = max(time.monotonic() - s.started, 1e-9)
        return (f"received {s.received} (redelivered {s.redelivered}), committed {s.committed} in "
                f"{s.batches} batches ({s.committed / elapsed:,.0f} msg/s), acked {s.acked}, stale acks "
                f"{s.stale_acks}, sink failures {s.sink_failures}, connects {s.connects}")

    # -- the connection ---------------------------------------------------------------------------
    async def _connect_loop(self) -> None:
        """Connect, (un)subscribe, wait for the connection to end, reconnect with back-off.

        Back in the share group quickly after a broker restart: Mosquitto 2.0 keeps a session's
        messages across a restart but not its shared subscriptions, so until a worker subscribes
        again, what devices publish matches nobody.
        """
        await keep_connected(
            lambda: MqttLink.open(
                self.host, self.port, client_id=self.client_id, on_publish=self._on_publish,
                username=self.username, password=self.password, clean_start=False,
                session_expiry_s=self.session_expiry_s, receive_maximum=self.receive_maximum,
                keepalive_s=self.keepalive_s, tls=self.tls),
            self._connected, self._stopping, name=self.client_id, where=f"{self.host}:{self.port}",
            min_s=self.reconnect_min_s, max_s=self.reconnect_max_s)

    async def _connected(self, link: MqttLink, session_present: bool) -> None:
        self._link = link
        self.stats.connects += 1
        _log.info("%s: connected (session present: %s)", self.client_id, session_present)
        try:
            await serve(link, lambda: self._subscribe(link), name=self.client_id, timeout_s=_SUBSCRIBE_TIMEOUT_S)
        finally:
            self._gen += 1  # from now on, acks for what this connection delivered are not sent
            self._link = None
            self.stats.disconnects += 1
            if not self._stopping.is_set():
                _log.warning("%s: disconnected; reconnecting", self.client_id)

    async def _subscribe(self, link: MqttLink) -> bool:
        """Join the share group (or, retiring, leave it); False when the broker refused."""
        if self._retiring:
            await link.unsubscribe(self._filters())
            _log.info("%s: left share group %s; draining its session", self.client_id, self.share_group)
            self._last_delivery = time.monotonic()  # the quiet period starts now
            self._left_group.set()
            return True
        reasons = await link.subscribe(self._filters(), qos=1)
        denied = refused(self.topics, reasons)
        if denied:
            self._fail(WorkerError(f"{self.client_id}: the broker refused the subscription to "
                                   f"{', '.join(denied)}; the ingest user needs read access to them"))
            return False
        _log.info("%s: subscribed to %d filter(s) in share group %s", self.client_id, len(self.topics),
                  self.share_group)
        if self._on_subscribed is not None:
            self._on_subscribed()
        return True

    def _filters(self) -> list[str]:
        return [f"$share/{self.share_group}/{t}" for t in self.topics]

    def _on_publish(self, topic: str, payload: bytes, qos: int, packet_id: int, dup: bool) -> None:
        """A delivery (on the event loop, from the connection's read)."""
        self._last_delivery = time.monotonic()
        self.stats.received += 1
        if dup:
            self.stats.redelivered += 1
        self._inbox.append(_Delivery(packet_id, qos, self._gen, RawMessage("", topic, payload, time.time_ns() // 1000)))
        if len(self._inbox) >= self._wake_at:
            self._arrived.set()

    def _fail(self, exc: BaseException) -> None:
        if self._loop is None:
            return
        self._failure = exc
        self.stop()

    # -- event loop -------------------------------------------------------------------------------
    def _drain_into(self, batch: list[_Delivery], limit: int) -> None:
        inbox = self._inbox
        while inbox and len(batch) < limit:
            d = inbox.popleft()
            if d.qos:
                self._outstanding[d.gen] += 1
            batch.append(d)

    def _window_full(self) -> bool:
        return self._outstanding[self._gen] >= self.receive_maximum

    async def _consume(self) -> None:
        """Gather batches and hand them to the sink; an acker settles them in arrival order."""
        loop = asyncio.get_running_loop()
        slots = asyncio.Semaphore(self.pipeline)
        in_sink: asyncio.Queue[tuple[list[_Delivery], asyncio.Task[bool]] | None] = asyncio.Queue()
        acker = loop.create_task(self._settle(in_sink, slots))
        try:
            while not self._stopping.is_set():
                await slots.acquire()
                batch = await self._gather()
                if not batch or self._stopping.is_set():
                    slots.release()
                    self._forget(batch)  # not handed over: the broker delivers them again
                    break
                self._in_sink += 1
                in_sink.put_nowait((batch, loop.create_task(self._commit(batch))))
        finally:
            in_sink.put_nowait(None)
            await acker  # batches the sink has started finish, so their messages are acknowledged

    async def _settle(self, in_sink: asyncio.Queue[tuple[list[_Delivery], asyncio.Task[bool]] | None],
                      slots: asyncio.Semaphore) -> None:
        while (item := await in_sink.get()) is not None:
            batch, task = item
            if await task:
                self._ack(batch)
            else:
                self._forget(batch)
            self._in_sink -= 1
            slots.release()

    async def _gather(self) -> list[_Delivery]:
        """The next batch: full, window full, or ``flush_s`` after its first message.

        The network thread wakes this loop only when it has enough to finish the batch (or, when
        idle, on the first message), not for every message.
        """
        batch: list[_Delivery] = []
        deadline = 0.0
        while not self._stopping.is_set():
            if not batch:
                self._drain_into(batch, self.batch_max)
                if batch:
                    deadline = time.monotonic() + self.flush_s
            if len(batch) >= self.batch_max or (batch and self._window_full()):
                break
            missing = min(self.batch_max - len(batch), self.receive_maximum - self._outstanding[self._gen])
            self._wake_at = max(1, missing) if batch else 1
            self._arrived.clear()
            had = len(batch)
            self._drain_into(batch, self.batch_max)  # what came before the new threshold was set
            if len(batch) != had:
                if not had:
                    deadline = time.monotonic() + self.flush_s
                continue
            if not batch:
                await self._arrived.wait()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
            self._drain_into(batch, self.batch_max)
            if time.monotonic() >= deadline:
                break
        return batch

    async def _commit(self, batch: list[_Delivery]) -> bool:
        """Hand ``batch`` to the sink until it commits; False only when stopping first."""
        raws = [d.raw for d in batch]
        delay = _RETRY_MIN_S
        while True:
            try:
                await self._sink.submit_messages(raws)
            except StoreUnavailable as exc:
                self.stats.sink_failures += 1
                _log.warning("%s: store unavailable, %d message(s) kept, retry in %.1f s: %s", self.client_id,
                             len(raws), delay, exc)
            except Exception:
                self.stats.sink_failures += 1
                _log.exception("%s: the sink failed on %d message(s); kept, retry in %.1f s", self.client_id,
                               len(raws), delay)
            else:
                self.stats.committed += len(raws)
                self.stats.batches += 1
                return True
            if self._stopping.is_set():
                return False  # not acknowledged: the broker keeps them in our session
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * (0.5 + random.random()))
            delay = min(delay * 2, self.retry_max_s)

    def _ack(self, batch: list[_Delivery]) -> None:
        gen, link = self._gen, self._link
        current = [d.mid for d in batch if d.qos and d.gen == gen]
        self.stats.stale_acks += sum(1 for d in batch if d.qos and d.gen != gen)
        sent = link.ack(current) if link is not None else 0
        self.stats.acked += sent
        self.stats.stale_acks += len(current) - sent  # the connection ended before they could leave
        self._forget(batch)

    def _forget(self, batch: list[_Delivery]) -> None:
        for d in batch:
            if d.qos:
                self._outstanding[d.gen] -= 1
        for gen in [g for g, n in self._outstanding.items() if n <= 0 and g != self._gen]:
            del self._outstanding[gen]


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
