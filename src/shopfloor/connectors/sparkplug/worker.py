"""Sparkplug ingest workers for server mode: each owns whole groups, as a Sparkplug host application.

A Sparkplug host keeps state per edge node (bdSeq, sequence numbers, aliases), so one node's
messages must all reach the same process, in order. A shared subscription deals messages round robin
and would split a node; instead worker ``i`` of ``N`` subscribes ``spBv1.0/{group}/#`` for every group
with ``worker_for_group(group, N) == i`` (a SHA-256 of the group id modulo N; see ``domain.sparkplug.worker_for_group``).
The groups are the registry's (each tenant's own, and every group a binding names); a worker looks
again every ``refresh_s`` and subscribes to new groups, and on every connect it unsubscribes the
groups that are no longer its own (after N changed).

Like the JSON ingest workers it uses a persistent session (client id ``sparkplug-{i}``,
``clean_start=False``, a long Session Expiry Interval) over their MQTT 5 connection
(``connectors/mqtt/link.py``: a TCP read's messages are handled on the event loop that commits, with
no thread between), and acknowledges a message only after the host committed it; a failed commit
is retried with back-off, and the host restores its state so the retry meets the same state. If
the broker lost the session (``session present`` false on a reconnect), the host marks every node
stale and asks each for a rebirth.

Host duties on the wire: the worker connects with its STATE death as the MQTT Will
(``spBv1.0/STATE/{host_id}``, QoS 1, retained, ``online: false``), publishes the STATE birth with
the same timestamp once subscribed, renews the Will's timestamp for each reconnect, and publishes its
death itself when it stops (a clean disconnect sends no Will). Each worker is a host of its own:
``host_id`` is ``{host_id}-{i}`` when there are several.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import signal
import ssl
import time
from collections.abc import Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import mqtt5

from shopfloor.connectors.mqtt.link import LinkClosed, MqttLink, close_quietly, keep_connected, refused, serve
from shopfloor.connectors.sparkplug.host import SparkplugHost
from shopfloor.connectors.sparkplug.topics import NAMESPACE, state_topic
from shopfloor.domain.errors import InvalidInput, ShopfloorError, StoreUnavailable
from shopfloor.domain.sparkplug import groups_of_worker
from shopfloor.ports.ingest import RawMessage

_log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 7 * 86_400
_RETRY_MIN_S = 0.1
_SUBSCRIBE_TIMEOUT_S = 30.0
_PUBLISH_TIMEOUT_S = 10.0


def client_id_for(index: int) -> str:
    return f"sparkplug-{index}"


def host_id_for(host_id: str, index: int, count: int) -> str:
    """The STATE host id of worker ``index`` of ``count``: the host id itself for a single worker."""
    return host_id if count == 1 else f"{host_id}-{index}"


def group_filter(group: str) -> str:
    return f"{NAMESPACE}/{group}/#"


class SparkplugWorkerError(ShopfloorError):
    status = 503
    title = "Sparkplug worker failed"


class LinkPublisher:
    """``ports.sparkplug.Publisher`` over the worker's current MQTT connection (QoS 1 waits for the
    broker's PUBACK); raises ``SparkplugWorkerError`` while there is none."""

    def __init__(self, link: Callable[[], MqttLink | None], timeout_s: float = _PUBLISH_TIMEOUT_S) -> None:
        self._link = link
        self._timeout_s = timeout_s

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        link = self._link()
        if link is None or not link.is_open:
            raise SparkplugWorkerError(f"publish to {topic} failed: not connected to the broker")
        try:
            async with asyncio.timeout(self._timeout_s):
                await link.publish(topic, payload, qos=min(qos, 1), retain=retain)
        except (LinkClosed, TimeoutError) as exc:
            raise SparkplugWorkerError(f"publish to {topic} failed: {exc or 'no PUBACK in time'}") from exc


@dataclass(slots=True)
class _Delivery:
    mid: int
    qos: int
    gen: int
    raw: RawMessage


@dataclass(slots=True)
class SparkplugWorkerStats:
    received: int = 0
    committed: int = 0
    acked: int = 0
    stale_acks: int = 0
    failures: int = 0
    foreign: int = 0  # messages of groups this worker no longer owns (queued before N changed): dropped
    connects: int = 0
    sessions_lost: int = 0


class SparkplugWorker:
    """Worker ``index`` of ``count``: subscribes its groups and feeds ``host``; see the module docstring."""

    def __init__(self, index: int, count: int, host: str, port: int, username: str | None, password: str | None,
                 app: SparkplugHost, groups: Callable[[], Iterable[str]], *, batch_max: int = 500,
                 flush_ms: float = 20.0, receive_maximum: int = 2000,
                 session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S, keepalive_s: int = 30, refresh_s: float = 2.0,
                 reconnect_min_s: float = 0.1, reconnect_max_s: float = 2.0, retry_max_s: float = 10.0,
                 tls: ssl.SSLContext | None = None, on_subscribed: Callable[[], None] | None = None) -> None:
        if not 0 <= index < count:
            raise InvalidInput(f"worker index {index} is not in 0..{count - 1}")
        if not 1 <= batch_max < receive_maximum <= 65_535:
            raise InvalidInput("need 1 <= batch_max < receive_maximum <= 65535")
        self.index, self.count = index, count
        self.client_id = client_id_for(index)
        self.host, self.port = host, port
        self.username, self.password, self.tls = username, password, tls
        self.app = app
        self.stats = SparkplugWorkerStats()
        self._groups = groups
        self.batch_max = batch_max
        self.flush_s = flush_ms / 1000
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.refresh_s = refresh_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = max(reconnect_min_s, reconnect_max_s)
        self.retry_max_s = retry_max_s
        self._on_subscribed = on_subscribed

        self._inbox: collections.deque[_Delivery] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._stopping = asyncio.Event()
        self._gen = 0  # the connection generation: bumped when a connection ends, compared when acking
        self._link: MqttLink | None = None
        self._mine: set[str] = set()  # filters this worker should hold
        self._others: set[str] = set()  # filters of groups that are not (or no longer) its own
        self._will_ts = 0
        self._ever_connected = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        app.set_publisher(LinkPublisher(lambda: self._link))

    # -- lifecycle ------------------------------------------------------------------------------
    def my_groups(self, groups: Iterable[str]) -> list[str]:
        return groups_of_worker(groups, self.index, self.count)

    async def run(self) -> None:
        """Consume, commit and acknowledge until ``stop()``; reconnects by itself."""
        self._loop = asyncio.get_running_loop()
        self._plan(await asyncio.to_thread(lambda: list(self._groups())))
        _log.info("%s: host %s, groups %s", self.client_id, self.app.host_id, ", ".join(sorted(self._mine)) or "-")
        connection = self._loop.create_task(self._connect_loop())
        refresher = self._loop.create_task(self._refresh())
        try:
            await self._consume()
        finally:
            self._stopping.set()
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await refresher
            with contextlib.suppress(Exception):
                await self.app.retire()  # our STATE death: a clean disconnect sends no Will
            await close_quietly(self._link)  # the session stays (its expiry was set at CONNECT)
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection
            for task in list(self._tasks):
                task.cancel()
            _log.info("%s: stopped; %s", self.client_id, self.stats)
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        """Stop taking batches and disconnect; safe from any thread."""
        loop = self._loop
        if loop is None:
            self._stopping.set()
            return
        loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self._stopping.set()
        self._arrived.set()

    def _spawn(self, work: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- subscriptions ----------------------------------------------------------------------------
    def _plan(self, groups: list[str]) -> tuple[set[str], set[str]]:
        """Work out which filters to hold; return (to subscribe, to unsubscribe) compared with now."""
        mine = {group_filter(g) for g in self.my_groups(groups)}
        others = {group_filter(g) for g in groups} - mine
        added, removed = mine - self._mine, self._mine - mine
        self._mine, self._others = mine, others | removed
        return added, removed

    async def _refresh(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.refresh_s)
            try:
                groups = await asyncio.to_thread(lambda: list(self._groups()))
            except Exception as exc:  # the registry is away: keep what we have
                _log.warning("%s: cannot read the Sparkplug groups: %s", self.client_id, exc)
                continue
            added, removed = self._plan(groups)
            link = self._link
            if link is None or not link.is_open:
                continue  # the next connect subscribes everything
            try:
                async with asyncio.timeout(_SUBSCRIBE_TIMEOUT_S):
                    if added:
                        _log.info("%s: now also owns %s", self.client_id, ", ".join(sorted(added)))
                        if not self._granted(await link.subscribe(sorted(added), qos=1, no_local=True), sorted(added)):
                            return
                    if removed:
                        _log.info("%s: no longer owns %s", self.client_id, ", ".join(sorted(removed)))
                        await link.unsubscribe(sorted(removed))
            except (LinkClosed, TimeoutError):
                continue  # the next connect subscribes everything

    def _next_will(self) -> mqtt5.Will:
        """The STATE death of the next connection, with a timestamp of its own."""
        self._will_ts = max(time.time_ns() // 1_000_000, self._will_ts + 1)
        will = self.app.state_will(self._will_ts)
        return mqtt5.Will(will.topic, payload=will.payload, qos=mqtt5.QoS(min(will.qos, 1)), retain=will.retain)

    def _granted(self, reasons: list[int], filters: list[str]) -> bool:
        """False (and the worker stops with a failure) when the broker refused a subscription."""
        denied = refused(filters, reasons)
        if not denied:
            return True
        _log.error("%s: the broker refused subscriptions: %s; the service user needs read access to "
                   "spBv1.0/#", self.client_id, ", ".join(denied))
        self.failure = SparkplugWorkerError(f"{self.client_id}: subscriptions refused: {', '.join(denied)}")
        self._stop_now()
        return False

    # -- the connection ---------------------------------------------------------------------------
    async def _connect_loop(self) -> None:
        """Connect (with the STATE death as Will), subscribe, wait for the end, reconnect with back-off."""
        async def open_link() -> tuple[MqttLink, bool]:
            return await MqttLink.open(
                self.host, self.port, client_id=self.client_id, on_publish=self._on_publish,
                username=self.username, password=self.password, clean_start=False,
                session_expiry_s=self.session_expiry_s, receive_maximum=self.receive_maximum,
                keepalive_s=self.keepalive_s, tls=self.tls, will=self._next_will())

        await keep_connected(open_link, self._connected, self._stopping, name=self.client_id,
                             where=f"{self.host}:{self.port}", min_s=self.reconnect_min_s,
                             max_s=self.reconnect_max_s)

    async def _connected(self, link: MqttLink, session_present: bool) -> None:
        will_ts = self._will_ts  # the Will this connection was opened with
        self._link = link
        self.stats.connects += 1
        lost = self._ever_connected and not session_present
        self._ever_connected = True
        _log.info("%s: connected (session present: %s)", self.client_id, session_present)
        try:
            await serve(link, lambda: self._subscribe(link, lost, will_ts), name=self.client_id,
                        timeout_s=_SUBSCRIBE_TIMEOUT_S)
        finally:
            self._gen += 1  # from now on, acks for what this connection delivered are not sent
            self._link = None
            if not self._stopping.is_set():
                _log.warning("%s: disconnected; reconnecting", self.client_id)

    async def _subscribe(self, link: MqttLink, lost: bool, will_ts: int) -> bool:
        """Our STATE topic and our groups' filters, leave the groups no longer ours, then the STATE
        birth (and, if the broker lost our session, rebirth requests); False when refused."""
        mine, others = sorted(self._mine), sorted(self._others)
        state = state_topic(self.app.host_id)
        if not self._granted(await link.subscribe([state], qos=1), [state]):
            return False
        if mine and not self._granted(await link.subscribe(mine, qos=1, no_local=True), mine):
            return False
        if others:
            await link.unsubscribe(others)
        if lost:
            self.stats.sessions_lost += 1
            self._spawn(self.app.session_lost())
        self._spawn(self.app.announce(will_ts))  # our STATE birth, with this connection's Will's timestamp
        if self._on_subscribed is not None:
            self._on_subscribed()
        return True

    def _on_publish(self, topic: str, payload: bytes, qos: int, packet_id: int, _dup: bool) -> None:
        """A delivery (on the event loop, from the connection's read)."""
        self.stats.received += 1
        parts = topic.split("/", 2)
        if len(parts) == 3 and parts[1] != "STATE" and group_filter(parts[1]) not in self._mine:
            # its owner asks the node for a rebirth; we must not follow it too
            self.stats.foreign += 1
            if qos and self._link is not None:
                self._link.ack((packet_id,))
            return
        self._inbox.append(_Delivery(packet_id, qos, self._gen, RawMessage("", topic, payload,
                                                                           time.time_ns() // 1000)))
        self._arrived.set()

    # -- event loop -------------------------------------------------------------------------------
    async def _consume(self) -> None:
        while not self._stopping.is_set():
            batch = await self._gather()
            if not batch:
                continue
            if await self._commit(batch):
                self._ack(batch)

    async def _gather(self) -> list[_Delivery]:
        batch: list[_Delivery] = []
        deadline: float | None = None
        while not self._stopping.is_set() and len(batch) < self.batch_max:
            while self._inbox and len(batch) < self.batch_max:
                batch.append(self._inbox.popleft())
            if len(batch) >= self.batch_max:
                break
            if batch and deadline is None:
                deadline = time.monotonic() + self.flush_s
            self._arrived.clear()
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        return batch

    async def _commit(self, batch: list[_Delivery]) -> bool:
        raws = [d.raw for d in batch]
        delay = _RETRY_MIN_S
        while True:
            try:
                await self.app.submit_messages(raws)
            except StoreUnavailable as exc:
                self.stats.failures += 1
                _log.warning("%s: store unavailable, %d message(s) kept, retry in %.1f s: %s", self.client_id,
                             len(raws), delay, exc)
            except Exception:
                self.stats.failures += 1
                _log.exception("%s: the host failed on %d message(s); kept", self.client_id, len(raws))
            else:
                self.stats.committed += len(raws)
                return True
            if self._stopping.is_set():
                return False  # not acknowledged: the broker keeps them in our session
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay * (0.5 + random.random()))
            delay = min(delay * 2, self.retry_max_s)

    def _ack(self, batch: list[_Delivery]) -> None:
        """PUBACK the batch's QoS 1 deliveries of the current connection in one write."""
        gen, link = self._gen, self._link
        current = [d.mid for d in batch if d.qos and d.gen == gen]
        stale = sum(1 for d in batch if d.qos and d.gen != gen)
        self.stats.stale_acks += stale
        if current and link is not None:
            sent = link.ack(current)
            self.stats.acked += sent
            self.stats.stale_acks += len(current) - sent


# -- processes ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SparkplugWorkerSettings:
    """How a Sparkplug worker reaches the broker; picklable, for spawned processes."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    host_id: str = "shopfloor"
    batch_max: int = 500
    flush_ms: float = 20.0
    receive_maximum: int = 2000
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    keepalive_s: int = 30
    refresh_s: float = 2.0
    tls: bool = False
    tls_ca_file: str | None = None

    def __repr__(self) -> str:  # never print the password
        return (f"SparkplugWorkerSettings(host={self.host!r}, port={self.port}, username={self.username!r}, "
                f"host_id={self.host_id!r})")


@dataclass(frozen=True, slots=True)
class HostParts:
    """What the composition root gives a worker: the host (without a publisher) and the groups."""

    host: SparkplugHost
    groups: Callable[[], Iterable[str]]


HostFactory = Callable[[str], AbstractAsyncContextManager[HostParts]]  # host id -> parts


def run_sparkplug_worker(index: int, count: int, settings: SparkplugWorkerSettings, factory: HostFactory, *,
                         on_subscribed: Callable[[], None] | None = None) -> None:
    """Run Sparkplug worker ``index`` of ``count`` in this process until SIGTERM or SIGINT."""
    asyncio.run(_serve(index, count, settings, factory, on_subscribed))


async def _serve(index: int, count: int, settings: SparkplugWorkerSettings, factory: HostFactory,
                 on_subscribed: Callable[[], None] | None) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    worker: SparkplugWorker | None = None

    def stop() -> None:
        stopping.set()
        if worker is not None:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        delay = 0.5
        while not stopping.is_set():
            try:
                async with factory(host_id_for(settings.host_id, index, count)) as parts:
                    tls = ssl.create_default_context(cafile=settings.tls_ca_file) if settings.tls else None
                    worker = SparkplugWorker(
                        index, count, settings.host, settings.port, settings.username, settings.password,
                        parts.host, parts.groups, batch_max=settings.batch_max, flush_ms=settings.flush_ms,
                        receive_maximum=settings.receive_maximum, session_expiry_s=settings.session_expiry_s,
                        keepalive_s=settings.keepalive_s, refresh_s=settings.refresh_s, tls=tls,
                        on_subscribed=on_subscribed)
                    if not stopping.is_set():
                        await worker.run()
                    return
            except StoreUnavailable as exc:
                if worker is not None:
                    raise
                _log.warning("sparkplug-%d: store unavailable at start, retry in %.1f s: %s", index, delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, 10.0)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
