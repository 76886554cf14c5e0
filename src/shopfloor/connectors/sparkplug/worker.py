"""Sparkplug ingest workers for server mode: each owns whole groups, as a Sparkplug host application.

A Sparkplug host keeps state per edge node (bdSeq, sequence numbers, aliases), so one node's
messages must all reach the same process, in order. A shared subscription deals messages round robin
and would split a node; instead worker ``i`` of ``N`` subscribes ``spBv1.0/{group}/#`` for every group
with ``worker_for_group(group, N) == i`` (a SHA-256 of the group id modulo N; see ``domain.sparkplug.worker_for_group``).
The groups are the registry's (each tenant's own, and every group a binding names); a worker looks
again every ``refresh_s`` and subscribes to new groups, and on every connect it unsubscribes the
groups that are no longer its own (after N changed).

Like the JSON ingest workers it uses a persistent session (client id ``sparkplug-{i}``,
``clean_start=False``, a long Session Expiry Interval) and acknowledges a message only after the
host committed it; a failed commit is retried with back-off, and the host restores its state so the
retry meets the same state. If the broker lost the session (``session present`` false on a
reconnect), the host marks every node stale and asks each for a rebirth.

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
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from shopfloor.connectors.sparkplug.host import SparkplugHost
from shopfloor.connectors.sparkplug.topics import NAMESPACE, state_topic
from shopfloor.domain.errors import InvalidInput, ShopfloorError, StoreUnavailable
from shopfloor.domain.sparkplug import groups_of_worker
from shopfloor.ports.ingest import RawMessage

_log = logging.getLogger(__name__)

DEFAULT_SESSION_EXPIRY_S = 7 * 86_400
_RETRY_MIN_S = 0.1


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


class PahoPublisher:
    """``ports.sparkplug.Publisher`` over a paho client (thread-safe publish)."""

    def __init__(self, client: mqtt.Client) -> None:
        self._client = client

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SparkplugWorkerError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")


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
        self.app = app
        self.stats = SparkplugWorkerStats()
        self._groups = groups
        self.batch_max = batch_max
        self.flush_s = flush_ms / 1000
        self.receive_maximum = receive_maximum
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.refresh_s = refresh_s
        self.retry_max_s = retry_max_s
        self._on_subscribed = on_subscribed

        self._inbox: collections.deque[_Delivery] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrived = asyncio.Event()
        self._wake_pending = False  # a wake-up of the loop is on its way (paho thread sets, loop clears)
        self._stopping = asyncio.Event()
        self._gen = 0
        self._gen_lock = threading.Lock()
        self._lock = threading.Lock()  # the subscription sets (paho thread and loop)
        self._mine: set[str] = set()  # filters this worker should hold
        self._others: set[str] = set()  # filters of groups that are not (or no longer) its own
        self._first_mid: int | None = None  # the subscribe of a connect, whose answer births our STATE
        self._connected_will_ts: int | None = None
        self._will_ts = 0
        self._ever_connected = False
        self.failure: BaseException | None = None

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.reconnect_delay_set(reconnect_min_s, max(reconnect_min_s, reconnect_max_s))  # type: ignore[arg-type]
        client.enable_logger(_log.getChild("paho"))
        client.suppress_exceptions = True
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._set_will()
        app.set_publisher(PahoPublisher(client))

    # -- lifecycle ------------------------------------------------------------------------------
    def my_groups(self, groups: Iterable[str]) -> list[str]:
        return groups_of_worker(groups, self.index, self.count)

    async def run(self) -> None:
        """Consume, commit and acknowledge until ``stop()``; reconnects by itself."""
        self._loop = asyncio.get_running_loop()
        await self._plan(await asyncio.to_thread(lambda: list(self._groups())))
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        _log.info("%s: host %s, groups %s", self.client_id, self.app.host_id, ", ".join(sorted(self._mine)) or "-")
        self._client.connect_async(self.host, self.port, keepalive=self.keepalive_s, clean_start=False,
                                   properties=props)
        self._client.loop_start()
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
                await asyncio.sleep(0.05)
            with contextlib.suppress(Exception):
                self._client.disconnect()
            await asyncio.to_thread(self._client.loop_stop)
            _log.info("%s: stopped; %s", self.client_id, self.stats)
        if self.failure is not None:
            raise self.failure

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            self._stopping.set()
            return
        loop.call_soon_threadsafe(self._stop_now)

    def _stop_now(self) -> None:
        self._stopping.set()
        self._arrived.set()

    # -- subscriptions ----------------------------------------------------------------------------
    async def _plan(self, groups: list[str]) -> tuple[set[str], set[str]]:
        """Work out which filters to hold; return (to subscribe, to unsubscribe) compared with now."""
        mine = {group_filter(g) for g in self.my_groups(groups)}
        others = {group_filter(g) for g in groups} - mine
        with self._lock:
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
            added, removed = await self._plan(groups)
            if not self._client.is_connected():
                continue  # the next connect subscribes everything
            if added:
                _log.info("%s: now also owns %s", self.client_id, ", ".join(sorted(added)))
                self._client.subscribe([(f, SubscribeOptions(qos=1, noLocal=True)) for f in sorted(added)])
            if removed:
                _log.info("%s: no longer owns %s", self.client_id, ", ".join(sorted(removed)))
                self._client.unsubscribe(sorted(removed))

    def _set_will(self) -> None:
        self._will_ts = max(time.time_ns() // 1_000_000, self._will_ts + 1)
        will = self.app.state_will(self._will_ts)
        self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    # -- paho thread --------------------------------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, _userdata: object, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    _props: Properties | None) -> None:
        if reason.is_failure:
            _log.error("%s: the broker refused the connection: %s", self.client_id, reason)
            return
        self.stats.connects += 1
        self._connected_will_ts = self._will_ts
        lost = self._ever_connected and not flags.session_present
        self._ever_connected = True
        _log.info("%s: connected (session present: %s)", self.client_id, flags.session_present)
        with self._lock:
            mine, others = sorted(self._mine), sorted(self._others)
        subs = [(state_topic(self.app.host_id), SubscribeOptions(qos=1))]
        subs += [(f, SubscribeOptions(qos=1, noLocal=True)) for f in mine]
        rc, mid = client.subscribe(subs)
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self._first_mid = mid
        if others:
            client.unsubscribe(others)
        if lost and self._loop is not None:
            self.stats.sessions_lost += 1
            asyncio.run_coroutine_threadsafe(self.app.session_lost(), self._loop)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: object, mid: int, reasons: list[ReasonCode],
                      _props: Properties | None) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            _log.error("%s: the broker refused subscriptions: %s; the service user needs read access to "
                       "spBv1.0/#", self.client_id, ", ".join(refused))
            if self._loop is not None:
                self.failure = SparkplugWorkerError(f"{self.client_id}: subscriptions refused: {', '.join(refused)}")
                self.stop()
            return
        if mid == self._first_mid and self._loop is not None and self._connected_will_ts is not None:
            ts = self._connected_will_ts
            asyncio.run_coroutine_threadsafe(self.app.announce(ts), self._loop)
            if self._on_subscribed is not None:
                self._loop.call_soon_threadsafe(self._on_subscribed)

    def _on_disconnect(self, _client: mqtt.Client, _userdata: object, _flags: mqtt.DisconnectFlags,
                       reason: ReasonCode, _props: Properties | None) -> None:
        with self._gen_lock:
            self._gen += 1
        self._set_will()  # the next connection's Will, with its own timestamp
        if not self._stopping.is_set():
            _log.warning("%s: disconnected (%s); reconnecting", self.client_id, reason)

    def _on_message(self, _client: mqtt.Client, _userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = bytes(msg._topic).decode("utf-8", "replace")
        self.stats.received += 1
        parts = topic.split("/", 2)
        if len(parts) == 3 and parts[1] != "STATE":
            with self._lock:
                foreign = group_filter(parts[1]) not in self._mine
            if foreign:  # its owner asks the node for a rebirth; we must not follow it too
                self.stats.foreign += 1
                if msg.qos:
                    self._client.ack(msg.mid, msg.qos)
                return
        self._inbox.append(_Delivery(msg.mid, msg.qos, self._gen, RawMessage("", topic, bytes(msg.payload),
                                                                             time.time_ns() // 1000)))
        if self._loop is not None and not self._wake_pending:  # one wake-up per loop turn, not per message
            self._wake_pending = True
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False  # cleared before the consumer drains, so no append goes unnoticed
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
            if self._inbox:
                continue
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
        with self._gen_lock:
            for d in batch:
                if d.qos == 0:
                    continue
                if d.gen == self._gen:
                    self._client.ack(d.mid, d.qos)
                    self.stats.acked += 1
                else:
                    self.stats.stale_acks += 1


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
