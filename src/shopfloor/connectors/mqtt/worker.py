"""An ingest worker: one member of an MQTT 5 shared subscription, acknowledging after commit.

Several worker processes (``ingest-0`` … ``ingest-{N-1}``) subscribe to ``$share/{group}/…`` on an
external broker (Mosquitto) and each gets a share of the JSON uplink topics. What makes that lossless:

* **Persistent sessions.** Each worker connects with a fixed client id, ``clean_start=False`` and a
  long Session Expiry Interval. Mosquitto hands shared messages round robin to every session in the
  group, connected or not, so a dead worker's share waits in its session (up to the broker's
  ``max_queued_messages``) together with the messages it had received but not acknowledged, and is
  delivered again when the worker comes back under the same id. A clean-session subscriber killed
  mid-stream would lose its in-flight QoS 1 messages.
* **Acknowledge after commit.** paho-mqtt 2 with ``manual_ack=True``: a message is PUBACKed only
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

QoS 2 is subscribed as QoS 1 (paho keeps its QoS 2 receive state only in memory, so a crash between
PUBREC and commit would lose a message); the store's idempotence makes QoS 1 exactly-once in effect.

Threads: paho's network loop runs in its own thread and only appends to a deque and wakes the event
loop; batching, the sink and acks run on the asyncio loop of the worker process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

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


class _QuietReconnects(logging.Filter):
    """paho 2.2 logs "Client is not connected" at ERROR on every reconnect attempt; we log those once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


_PAHO_LOG = _log.getChild("paho")
_PAHO_LOG.addFilter(_QuietReconnects())


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

        self._inbox: collections.deque[_Delivery] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._wake_pending = False
        self._wake_at = 1  # inbox length at which the network thread wakes the consumer
        self._stopping = asyncio.Event()
        self._failure: BaseException | None = None
        # The connection generation: bumped when a connection ends (paho thread), read when acking.
        self._gen = 0
        self._gen_lock = threading.Lock()
        self._outstanding: collections.Counter[int] = collections.Counter()  # gen -> unacked deliveries
        self._subscribe_mid: int | None = None
        self._retiring = False  # leave the share group, drain the session, then end it
        self._left_group = asyncio.Event()
        self._end_session = False
        self._last_delivery = time.monotonic()
        self._in_sink = 0  # batches handed to the sink and not yet settled
        self._unreachable = False  # the last connection attempt failed (logged once)

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        # Back in the share group quickly after a broker restart: Mosquitto 2.0 keeps a session's
        # messages across a restart but not its shared subscriptions, so until a worker subscribes
        # again, what devices publish matches nobody. paho sleeps these delays (floats work; its
        # hints say int).
        client.reconnect_delay_set(reconnect_min_s, max(reconnect_min_s, reconnect_max_s))  # type: ignore[arg-type]
        client.enable_logger(_PAHO_LOG)  # packet traces at DEBUG, errors in our callbacks at ERROR
        client.suppress_exceptions = True  # a bug in a callback is logged, it does not end the network thread
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        self._client = client

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume, commit and acknowledge until ``stop()``; reconnects by itself.

        Raises ``WorkerError`` when the broker refuses the subscriptions.
        """
        self._loop = asyncio.get_running_loop()
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.SessionExpiryInterval = self.session_expiry_s
        connect.ReceiveMaximum = self.receive_maximum
        _log.info("%s: connecting to %s:%d (group %s, batch %d, window %d)", self.client_id, self.host,
                  self.port, self.share_group, self.batch_max, self.receive_maximum)
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive_s, clean_start=False,
                                   properties=connect)
        self._client.loop_start()
        try:
            await self._consume()
        finally:
            self._stopping.set()  # also when cancelled: the disconnect below is ours
            end: Properties | None = None
            if self._end_session:
                end = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
                end.SessionExpiryInterval = 0
            with contextlib.suppress(Exception):
                # a stop keeps the session (its expiry was set at CONNECT); a retirement ends it
                self._client.disconnect(properties=end)
            await asyncio.to_thread(self._client.loop_stop)
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

    # -- paho thread ------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: object, flags: mqtt.ConnectFlags,
                    reason: ReasonCode, _props: Properties | None) -> None:
        if reason.is_failure:
            _log.error("%s: the broker refused the connection: %s", self.client_id, reason)
            return
        self.stats.connects += 1
        self._unreachable = False
        _log.info("%s: connected (session present: %s)", self.client_id, flags.session_present)
        if self._retiring:
            rc, mid = client.unsubscribe(self._filters())
        else:
            rc, mid = client.subscribe([(f, SubscribeOptions(qos=1)) for f in self._filters()])
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self._subscribe_mid = mid

    def _filters(self) -> list[str]:
        return [f"$share/{self.share_group}/{t}" for t in self.topics]

    def _on_unsubscribe(self, _client: mqtt.Client, _userdata: object, mid: int, _reasons: list[ReasonCode],
                        _props: Properties | None) -> None:
        if mid == self._subscribe_mid and self._loop is not None:
            _log.info("%s: left share group %s; draining its session", self.client_id, self.share_group)
            self._last_delivery = time.monotonic()  # the quiet period starts now
            self._loop.call_soon_threadsafe(self._left_group.set)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        level = logging.DEBUG if self._unreachable else logging.WARNING
        self._unreachable = True
        _log.log(level, "%s: cannot reach the broker at %s:%d; retrying", self.client_id, self.host, self.port)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, mid: int, reasons: list[ReasonCode],
                      _props: Properties | None) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [f"{t} ({r})" for t, r in zip(self.topics, reasons, strict=False) if r.is_failure]
        if refused:
            self._fail(WorkerError(f"{self.client_id}: the broker refused the subscription to "
                                   f"{', '.join(refused)}; the ingest user needs read access to them"))
            return
        _log.info("%s: subscribed to %d filter(s) in share group %s", self.client_id, len(self.topics),
                  self.share_group)
        if self._on_subscribed is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_subscribed)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, _props: Properties | None) -> None:
        with self._gen_lock:
            self._gen += 1  # from now on, acks for what this connection delivered are not sent
        self.stats.disconnects += 1
        if not self._stopping.is_set():
            _log.warning("%s: disconnected (%s); reconnecting", self.client_id, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers refuse such topics; keep it for the dead-letter log anyway
            topic = bytes(msg._topic).decode("utf-8", "replace")
        raw = RawMessage("", topic, bytes(msg.payload), time.time_ns() // 1000)
        self._last_delivery = time.monotonic()
        self.stats.received += 1
        if msg.dup:
            self.stats.redelivered += 1
        self._inbox.append(_Delivery(msg.mid, msg.qos, self._gen, raw))
        if len(self._inbox) >= self._wake_at and not self._wake_pending and self._loop is not None:
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _fail(self, exc: BaseException) -> None:
        if self._loop is None:
            return
        self._failure = exc
        self.stop()

    # -- event loop -------------------------------------------------------------------------------
    def _wake(self) -> None:
        self._wake_pending = False  # cleared before the consumer drains, so no append goes unnoticed
        self._arrived.set()

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
        sent = 0
        with self._gen_lock:  # the connection cannot end between the check and the queued PUBACK
            gen = self._gen
            for d in batch:
                if d.qos == 0:
                    continue
                if d.gen == gen:
                    self._client.ack(d.mid, d.qos)
                    sent += 1
                else:
                    self.stats.stale_acks += 1
        self.stats.acked += sent
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
