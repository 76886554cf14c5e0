"""The embedded MQTT 3.1.1 broker: amqtt in-process, fed into the ingest ``MessageSink``.

What we add to amqtt, and where:

* **No loss.** amqtt PUBACKs an inbound QoS 1 PUBLISH as soon as the message sits in an in-memory
  queue. ``_IngestHandler`` replaces the inbound branch of the QoS 0/1/2 flows: the message goes to
  ``sink.submit_messages`` first, and only when that returns is it PUBACKed (QoS 1) or PUBRECed
  (QoS 2). If the sink raises, nothing is acknowledged and the connection is closed, so the client
  sends the message again. Every PUBLISH already runs in its own task; those that reach the sink
  in one loop turn, from any connection, go to it in one call (in the order they were read: one
  decode pass and one commit, not one per message); acknowledgements still leave in that order
  (MQTT-4.6.0-2/3). Each submit is shielded: a dropped connection does not cancel
  a commit the sink has started.
* **Who may connect and where they may write.** A gate reads the CONNECT before amqtt does, so a
  client with bad credentials never touches amqtt's session table; the auth plugin checks again
  inside amqtt. A device may publish and subscribe only under ``access.publish_prefixes``; its Last
  Will must lie there too. A Sparkplug grant among the prefixes (``domain.sparkplug.node_grant``)
  lets it publish its edge node's births, data and deaths and receive its NCMD/DCMD and the hosts'
  STATE, nothing more. A client id that belongs to another user's session is refused.
* **Everything a device sends reaches the sink**, the Last Will included; messages outside the prefix
  or over ``max_payload`` are acknowledged (so 3.1.1 clients do not retry forever) but never
  broadcast: the sink dead-letters them.
* **The GIL.** The broker's event loop is busy with Python work for every packet, and the store
  commits in another thread that gives the GIL back at each call into the database; with the
  interpreter's default switch interval (5 ms) every one of those hand-backs waits up to 5 ms
  behind the loop, which made a commit several times slower than alone. While a broker runs, the
  switch interval is short (``connectors/gil.py``).
* An expired keep-alive closes the connection (amqtt ignores it), so a device that loses power
  without a FIN still gets its Will published; a disconnect that arrives while amqtt is still
  starting the handler is kept instead of dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import BrokerError
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    CONNECTION_ACCEPTED,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    ConnackPacket,
)
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import CONNECT
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import INCOMING, Session

from shopfloor.connectors import gil
from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.sparkplug import publish_allowed, receive_allowed, subscribe_allowed
from shopfloor.ports.ingest import DeviceAccess, MessageSink, RawMessage

DEFAULT_PORT = 11883  # not 1883: the project machines run a system Mosquitto there
DEFAULT_MAX_PAYLOAD = 256 * 1024
_CONNECT_TIMEOUT_S = 10.0  # a TCP connection must send CONNECT within this
_CUT_TIMEOUT_S = 5.0
_STOP_DRAIN_S = 5.0
_PREFIXES = "shopfloor.prefixes"  # Session.attributes key

_log = logging.getLogger(__name__)


class BrokerStartError(ShopfloorError):
    """The embedded MQTT broker could not start."""

    status = 503
    title = "MQTT broker unavailable"


class MqttPortInUse(BrokerStartError):
    """Another process (often a system Mosquitto) already listens on the MQTT port."""


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]
    """amqtt auth plugin: ``DeviceAccess.authenticate``, no anonymous clients, Will inside the prefix."""

    @dataclass
    class Config:
        owner: Any = None  # the EmbeddedBroker; given in the plugin config, so each broker has its own

    async def authenticate(self, *, session: Session) -> bool:
        owner = cast(EmbeddedBroker, self.config.owner)
        code, prefixes = await owner._verdict(session.username, session.password, session.client_id,
                                        session.will_topic if session.will_flag else None)
        if code != CONNECTION_ACCEPTED:
            return False
        session.attributes[_PREFIXES] = prefixes
        return True


class DeviceTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """amqtt topic plugin: publish, subscribe and receive only under the device's prefixes."""

    @dataclass
    class Config:
        owner: Any = None

    async def topic_filtering(self, *, session: Session | None = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        if session is None or not topic:
            return False
        prefixes: tuple[str, ...] = session.attributes.get(_PREFIXES, ())
        if action == Action.SUBSCRIBE:
            return subscribe_allowed(topic, prefixes)
        if action == Action.RECEIVE:
            return receive_allowed(topic, prefixes)
        return publish_allowed(topic, prefixes)


class _RewindableReader(ReaderAdapter):  # type: ignore[misc]
    """Keeps what it reads until ``rewind()``, then serves those bytes again before the stream's.

    The gate reads the CONNECT through it; after the rewind amqtt reads the same CONNECT.
    """

    def __init__(self, inner: ReaderAdapter) -> None:
        self._inner = inner
        self._kept = bytearray()
        self._recording = True

    def rewind(self) -> None:
        self._recording = False

    async def read(self, n: int = -1) -> bytes:
        if self._recording or not self._kept:
            chunk = cast(bytes, await self._inner.read(n))
            if self._recording:
                self._kept += chunk
            return chunk
        take = len(self._kept) if n < 0 else min(n, len(self._kept))
        out = bytes(self._kept[:take])
        del self._kept[:take]
        if n < 0 or take < n:
            out += cast(bytes, await self._inner.read(n if n < 0 else n - take))
        return out

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class _IngestHandler(BrokerProtocolHandler):  # type: ignore[misc]
    """One client connection: inbound PUBLISH goes to the sink before it is acknowledged."""

    def __init__(self, plugins_manager: Any, owner: EmbeddedBroker, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(plugins_manager, loop=loop)
        self._owner = owner
        self.username: str | None = None  # set once the CONNACK accepted the connection
        self.client_id: str | None = None
        self._prefixes: tuple[str, ...] = ()
        self._submissions: set[asyncio.Future[None]] = set()
        self._ack_turn: asyncio.Future[None] | None = None  # done when the previous ack has gone out
        self._refused = False  # a submit failed: acknowledge nothing more on this connection
        self._closer: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()  # set when an accepted connection has ended
        self._acks = bytearray()  # PUBACK/PUBREC/PUBCOMP bytes to write at the end of this loop turn
        self._started = False
        self._early_end: tuple[DisconnectPacket | None] | None = None  # ended before start() finished

    async def mqtt_connack_authorize(self, authorize: bool) -> None:
        await super().mqtt_connack_authorize(authorize)
        if authorize and self.session is not None and self.session.username:
            self.username = self.session.username
            self.client_id = self.session.client_id
            self._prefixes = self.session.attributes.get(_PREFIXES, ())
            self._owner._connection_opened(self)

    async def start(self) -> None:
        await super().start()
        self._started = True
        if self._early_end is not None:
            await super().handle_disconnect(self._early_end[0])

    async def handle_disconnect(self, disconnect: DisconnectPacket | None) -> None:
        # amqtt creates its disconnect waiter only at the end of start(); an end (DISCONNECT, EOF, a
        # cut) that comes earlier would be dropped and leave a session nobody closes. Keep it for later.
        if not self._started:
            if self._early_end is None:
                self._early_end = (disconnect,)
            return
        await super().handle_disconnect(disconnect)

    def handle_read_timeout(self) -> None:
        # No packet for 1.5 keep-alive periods: the client is gone (MQTT-3.1.2-24); amqtt ignores it.
        if self._closer is None:
            self._closer = asyncio.ensure_future(self.handle_connection_closed())

    async def cut(self) -> None:
        await self.handle_connection_closed()

    # --- inbound PUBLISH flows (outbound ones stay amqtt's) ---

    async def _handle_qos0_message_flow(self, app_message: Any) -> None:
        if app_message.direction != INCOMING:
            await super()._handle_qos0_message_flow(app_message)
            return
        if await self._submit(app_message, close_on_failure=False):  # QoS 0 is never retried anyway
            self._deliver(app_message)

    async def _handle_qos1_message_flow(self, app_message: Any) -> None:
        if app_message.direction != INCOMING:
            await super()._handle_qos1_message_flow(app_message)
            return
        previous, mine = self._take_ack_turn()
        try:
            if not await self._submit(app_message):
                return
            if previous is not None:
                await previous
            if not self._refused:
                self._deliver(app_message)
                app_message.puback_packet = self._ack(PubackPacket.build(app_message.packet_id))
        finally:
            if not mine.done():
                mine.set_result(None)

    async def _handle_qos2_message_flow(self, app_message: Any) -> None:
        if app_message.direction != INCOMING or self.session is None:
            await super()._handle_qos2_message_flow(app_message)
            return
        packet_id = app_message.packet_id
        known = self.session.inflight_in.get(packet_id)
        if known is app_message:
            return  # redelivery of a stored message after a reconnect: wait for the client's PUBREL
        previous, mine = self._take_ack_turn()
        try:
            if known is None:  # a DUP re-send of a message already submitted is not submitted again
                if not await self._submit(app_message):
                    return
                self.session.inflight_in[packet_id] = app_message
            if previous is not None:
                await previous
            if not self._refused:
                app_message.pubrec_packet = self._ack(PubrecPacket.build(packet_id))
        finally:
            if not mine.done():
                mine.set_result(None)

    async def handle_pubrel(self, pubrel: Any) -> None:
        message = self.session.inflight_in.pop(pubrel.packet_id, None) if self.session else None
        if message is not None:
            message.pubrel_packet = pubrel
            self._deliver(message)
        self._ack(PubcompPacket.build(pubrel.packet_id))  # also for unknown ids

    def _ack(self, packet: Any) -> Any:
        """Queue an acknowledgement; those completed in one loop turn leave in one write, in order."""
        if not self._acks:
            self._loop.call_soon(self._flush_acks)
        self._acks += packet.to_bytes()
        return packet

    def _flush_acks(self) -> None:
        data = bytes(self._acks)
        self._acks.clear()
        if self.writer is not None:
            try:
                self.writer.write(data)
            except Exception as exc:  # the connection is going away; the client will re-send
                _log.debug("could not write acknowledgements to %s: %r", self.username, exc)

    def _take_ack_turn(self) -> tuple[asyncio.Future[None] | None, asyncio.Future[None]]:
        previous, mine = self._ack_turn, self._loop.create_future()
        self._ack_turn = mine
        return previous, mine

    async def _submit(self, app_message: Any, *, close_on_failure: bool = True) -> bool:
        raw = RawMessage(self.username or "", app_message.topic, bytes(app_message.data),
                         self._owner.now_us())
        done = self._owner._submit_gathered(raw)
        self._submissions.add(done)
        done.add_done_callback(self._submissions.discard)
        try:
            await asyncio.shield(done)
        except Exception as exc:
            _log.warning("sink did not take a message from %s on %s (%s); not acknowledged%s", self.username,
                         raw.topic, exc, ", closing the connection" if close_on_failure else "")
            if close_on_failure and not self._refused:
                self._refused = True
                await self.handle_connection_closed()
            return False
        return True

    def _deliver(self, app_message: Any) -> None:
        """Queue for amqtt's broadcast to subscribers, if the message may be broadcast at all."""
        topic: str = app_message.topic
        if (self.session is None or not publish_allowed(topic, self._prefixes) or "+" in topic or "#" in topic
                or len(app_message.data) > self._owner.max_payload):
            return
        self.session.delivered_message_queue.put_nowait(app_message)

    def submit_will(self, session: Session) -> None:
        """Hand the Last Will to the sink in the background, after this connection's last messages."""
        if self.username is None or session.will_topic is None:
            return
        will = RawMessage(self.username, session.will_topic, bytes(session.will_message or b""),
                          self._owner.now_us())
        self._owner._track(self._submit_will(will, list(self._submissions)))

    async def _submit_will(self, will: RawMessage, before: list[asyncio.Future[None]]) -> None:
        if before:
            await asyncio.wait(before)
        try:
            await self._owner._submit([will])
        except Exception:
            _log.exception("sink did not take the Last Will of %s on %s", will.device, will.topic)


class _AmqttBroker(Broker):  # type: ignore[misc]
    """amqtt's Broker with our connection gate, handler and disconnect hooks."""

    def __init__(self, config: dict[str, Any], owner: EmbeddedBroker) -> None:
        super().__init__(config)
        self._owner = owner

    def bound_port(self) -> int:
        server = self._servers["default"].instance
        return int(server.sockets[0].getsockname()[1])

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        stream, out = _RewindableReader(StreamReaderAdapter(reader)), StreamWriterAdapter(writer)
        try:
            connect = await asyncio.wait_for(ConnectPacket.from_stream(stream), _CONNECT_TIMEOUT_S)
            if connect.fixed_header.packet_type != CONNECT:
                raise ValueError("first packet is not CONNECT")
        except Exception as exc:
            _log.debug("no valid CONNECT from %s: %r", writer.get_extra_info("peername"), exc)
            with contextlib.suppress(Exception):
                await out.close()
            return
        if connect.proto_name == "MQTT" and connect.proto_level == 4:  # amqtt answers the other cases
            code, _ = await self._owner._verdict(connect.username, connect.password, connect.client_id,
                                           connect.will_topic if connect.will_flag else None)
            if code != CONNECTION_ACCEPTED:
                _log.info("refused MQTT connection of %r from %s (CONNACK %d)", connect.username,
                          writer.get_extra_info("peername"), code)
                with contextlib.suppress(Exception):
                    await ConnackPacket.build(0, code).to_stream(out)
                    await out.close()
                return
        stream.rewind()
        await self._client_connected(listener_name, stream, out)

    async def _initialize_client_session(self, reader: Any, writer: Any, remote_address: str,
                                         remote_port: int) -> tuple[_IngestHandler, Session]:
        _unused, session = await super()._initialize_client_session(reader, writer, remote_address,
                                                                    remote_port)
        if session.keep_alive > 0:  # amqtt waits exactly one period; MQTT-3.1.2-24 says one and a half
            session.keep_alive = (session.keep_alive * 3 + 1) // 2
        return _IngestHandler(self.plugins_manager, self._owner, self._loop), session

    async def _handle_client_session(self, reader: Any, writer: Any, client_session: Session,
                                     handler: Any, server: Any, listener_name: str) -> None:
        try:
            await super()._handle_client_session(reader, writer, client_session, handler, server,
                                                 listener_name)
        finally:
            if isinstance(handler, _IngestHandler):
                if handler.username is not None:
                    self._owner._connection_closed(handler, client_session.clean_session is True,
                                                   self._sessions.get(handler.client_id, (None, None))[1])
                elif self._sessions.get(client_session.client_id, (None, None))[1] is handler:
                    del self._sessions[client_session.client_id]  # refused: amqtt left it "connected"

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        # amqtt 0.12 calls this after a SUBACK and also, at every new connection, for every filter that
        # any session subscribed to, and then sends the new client every retained message matching
        # them, unchecked. Send only for the session's own subscriptions what it may receive.
        topic_filter, qos = subscription
        mine = any(s.client_id == session.client_id for s, _ in self._subscriptions.get(topic_filter, ()))
        handler = self._get_handler(session)
        if not mine or handler is None:
            return
        prefixes: tuple[str, ...] = session.attributes.get(_PREFIXES, ())
        sends = [asyncio.ensure_future(handler.mqtt_publish(r.topic, r.data, min(qos, r.qos or qos), retain=True))
                 for topic, r in list(self._retained_messages.items())
                 if self._matches(topic, topic_filter) and receive_allowed(topic, prefixes)]
        if sends:
            await asyncio.wait(sends)

    async def _handle_disconnect(self, client_session: Session, handler: Any,
                                 disconnect_waiter: asyncio.Future[Any]) -> None:
        graceful = isinstance(disconnect_waiter.result(), DisconnectPacket)
        if (not graceful and client_session.will_flag and isinstance(handler, _IngestHandler)
                and not self._owner.stopping):
            handler.submit_will(client_session)
        await super()._handle_disconnect(client_session, handler, disconnect_waiter)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a group's failure as seen: its handlers report it, or are gone."""
    if not future.cancelled():
        future.exception()


class _DropStartupTraceback(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "Broker startup failed"


class EmbeddedBroker:
    """An MQTT 3.1.1 broker in this process that commits every accepted message through ``sink``.

    Implements ``BrokerControl``. ``access.connection_changed(username, True)`` is called when a
    user's first live connection is accepted, ``False`` when its last one ends.
    """

    def __init__(self, host: str, port: int, sink: MessageSink, access: DeviceAccess, *,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, clock: Callable[[], int] | None = None,
                 amqtt_log_level: int = logging.WARNING) -> None:
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self._sink = sink
        self._access = access
        self._clock = clock
        self._broker: _AmqttBroker | None = None
        self._live: dict[str, set[_IngestHandler]] = {}
        self._client_owners: dict[str, str] = {}  # client id -> username of its live or stored session
        self._submissions: set[asyncio.Task[None]] = set()
        self._group: tuple[list[RawMessage], asyncio.Future[None]] | None = None  # this loop turn's messages
        self.stopping = False
        for name in ("amqtt", "transitions"):
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET:
                logger.setLevel(amqtt_log_level)

    # --- lifecycle ---

    @property
    def running(self) -> bool:
        return self._broker is not None

    @property
    def bound_port(self) -> int:
        """The port actually listened on (differs from ``port`` when that was 0)."""
        return self._require_broker().bound_port()

    async def start(self) -> None:
        if self._broker is not None:
            return
        bind = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        plugins = {f"{__name__}.{plugin.__name__}": {"owner": self}
                   for plugin in (DeviceAuthPlugin, DeviceTopicPlugin)}
        config = {
            "listeners": {"default": {"type": "tcp", "bind": bind}},
            "plugins": plugins,
            "timeout_disconnect_delay": 0,
        }
        broker = _AmqttBroker(config, self)
        quiet = _DropStartupTraceback()
        amqtt_log = logging.getLogger("amqtt.broker")
        amqtt_log.addFilter(quiet)
        try:
            await broker.start()
        except BrokerError as exc:
            raise self._start_error(exc) from exc
        finally:
            amqtt_log.removeFilter(quiet)
        self._broker = broker
        gil.acquire()
        _log.info("embedded MQTT broker listening on %s:%d", self.host, self.bound_port)

    def _start_error(self, exc: BrokerError) -> BrokerStartError:
        cause = exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.EADDRINUSE:
            return MqttPortInUse(f"MQTT port {self.port} is already in use (another broker?); "
                                 "choose another with --mqtt-port")
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else str(cause or exc)
        return BrokerStartError(f"cannot start the MQTT broker on {self.host}:{self.port}: {reason}")

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is None:
            return
        self.stopping = True  # a shutdown is not a device dying: no Will goes to the sink
        try:
            await broker.shutdown()
            # amqtt ends client tasks after shutdown returns; let them and started commits finish
            await self._wait_closed([h for hs in self._live.values() for h in hs], list(self._submissions),
                                    _STOP_DRAIN_S)
        finally:
            for username in list(self._live):
                del self._live[username]
                self._notify(username, False)
            self.stopping = False
            gil.release()

    # --- BrokerControl ---

    async def disconnect_client(self, username: str) -> int:
        handlers = list(self._live.get(username, ()))
        for handler in handlers:
            await handler.cut()
        await self._wait_closed(handlers, [], _CUT_TIMEOUT_S)
        return len(handlers)

    @staticmethod
    async def _wait_closed(handlers: list[_IngestHandler], tasks: list[asyncio.Task[None]],
                           limit_s: float) -> None:
        waiters = [asyncio.ensure_future(h.closed.wait()) for h in handlers]
        if waiters or tasks:
            await asyncio.wait([*waiters, *tasks], timeout=limit_s)
        for waiter in waiters:
            waiter.cancel()

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        broker = self._require_broker()
        await broker.internal_message_broadcast(topic, payload, qos)
        if retain:
            await broker.retain_message(None, topic, payload, qos)

    # --- used by the handler and plugins ---

    def now_us(self) -> int:
        return self._clock() if self._clock is not None else time.time_ns() // 1000

    def _submit(self, messages: list[RawMessage]) -> asyncio.Task[None]:
        return self._track(self._sink.submit_messages(messages))

    def _submit_gathered(self, raw: RawMessage) -> asyncio.Future[None]:
        """Submit ``raw`` together with every other message accepted in this loop turn, from any
        connection: one sink call (one decode pass, one commit) for all of them. The future, shared by
        the group, completes when the sink has taken them all, or fails for all of them."""
        group = self._group
        if group is None:
            loop = asyncio.get_running_loop()
            group = self._group = ([], loop.create_future())
            group[1].add_done_callback(_retrieve)
            loop.call_soon(self._flush_group)
        group[0].append(raw)
        return group[1]

    def _flush_group(self) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        messages, done = group

        def settle(task: asyncio.Task[None]) -> None:
            if done.done():
                return
            if task.cancelled():
                done.cancel()
            elif (exc := task.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(None)

        self._submit(messages).add_done_callback(settle)

    def _track(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task that ``stop`` waits for."""
        task = asyncio.ensure_future(work)
        self._submissions.add(task)
        task.add_done_callback(self._submission_done)
        return task

    def _submission_done(self, task: asyncio.Task[None]) -> None:
        self._submissions.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved; whoever awaited it reports it

    async def _credentials(self, username: str, password: str) -> tuple[str, ...] | None:
        """The user's topic prefixes if the credentials are good, else None; raises if it cannot tell."""
        if not self._access.authenticate(username, password):
            return None
        return tuple(self._access.publish_prefixes(username))

    async def _verdict(self, username: str | None, password: str | None, client_id: str | None,
                       will_topic: str | None) -> tuple[int, tuple[str, ...]]:
        """CONNACK return code for a CONNECT, and the user's prefixes when accepted."""
        if not username:
            return NOT_AUTHORIZED, ()
        try:
            granted = await self._credentials(username, password or "")
        except Exception:
            _log.exception("device access check failed for %r", username)
            return SERVER_UNAVAILABLE, ()
        if granted is None:
            return BAD_USERNAME_PASSWORD, ()
        prefixes = granted
        owner = self._client_owners.get(client_id) if client_id else None
        if owner is not None and owner != username:
            _log.warning("user %r tried to take over client id %r of user %r", username, client_id, owner)
            return IDENTIFIER_REJECTED, ()
        if will_topic is not None and (not publish_allowed(will_topic, prefixes) or "+" in will_topic
                                       or "#" in will_topic):
            return NOT_AUTHORIZED, ()
        return CONNECTION_ACCEPTED, prefixes

    def _connection_opened(self, handler: _IngestHandler) -> None:
        username = cast(str, handler.username)
        if handler.client_id:
            self._client_owners[handler.client_id] = username
        handlers = self._live.setdefault(username, set())
        handlers.add(handler)
        if len(handlers) == 1:
            self._notify(username, True)

    def _connection_closed(self, handler: _IngestHandler, clean_session: bool, current: object) -> None:
        username = cast(str, handler.username)
        handler.closed.set()
        if clean_session and handler.client_id and current in (None, handler):
            self._client_owners.pop(handler.client_id, None)  # nothing of the session is kept
        handlers = self._live.get(username)
        if handlers is None or handler not in handlers:
            return
        handlers.discard(handler)
        if not handlers:
            del self._live[username]
            self._notify(username, False)

    def _notify(self, username: str, connected: bool) -> None:
        try:
            self._access.connection_changed(username, connected)
        except Exception:
            _log.exception("connection_changed(%r, %s) failed", username, connected)

    def _require_broker(self) -> _AmqttBroker:
        if self._broker is None:
            raise BrokerStartError("the MQTT broker is not running")
        return self._broker
