"""A lean MQTT 5 client connection on asyncio, for the ingest workers' receive path.

paho-mqtt runs a network thread that selects, reads and handles one packet per turn and sends a
PUBACK per message; in Python on a 2-core box that is ~140 µs a message (~7,000 messages/s), below
what Mosquitto delivers and what the ingest service decodes. This connection parses packets with
``mqtt5`` (a sans-I/O MQTT 5 codec in Rust, ~1 µs a packet), handles a whole TCP read at once on the
event loop that also batches and commits (no thread hop, no lock), and writes the acknowledgements of
a committed batch in one write.

It is a client for workers, not a general one: CONNECT (persistent or clean session, Session Expiry,
Receive Maximum, user/password, TLS, a Will), SUBSCRIBE (optionally No Local) and UNSUBSCRIBE
awaiting their acknowledgements, incoming PUBLISH at QoS 0 and 1 handed to a callback, PUBACK on
request, QoS 1 PUBLISH awaiting its PUBACK, keep-alive pings, DISCONNECT with an optional Session
Expiry. Reconnecting is the owner's job: ``closed`` completes when the connection ends, for
whatever reason.

A packet the codec cannot read (a protocol violation by the broker) ends the connection, as MQTT 5
asks of a receiver of a malformed packet.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import mqtt5

_log = logging.getLogger(__name__)

#: ``on_publish(topic, payload, qos, packet_id, duplicate)``; packet_id is 0 for QoS 0.
OnPublish = Callable[[str, bytes, int, int, bool], None]


class LinkRefused(ConnectionError):
    """The broker answered CONNECT with a failure reason code."""

    def __init__(self, reason: mqtt5.ConnAckReasonCode) -> None:
        super().__init__(f"the broker refused the connection: {reason.name} ({int(reason)})")
        self.reason = reason


class LinkClosed(ConnectionError):
    """The connection ended while a request was waiting for its answer."""


class MqttLink(asyncio.Protocol):
    """One MQTT 5 connection. Open it with :meth:`open`; all methods run on its event loop."""

    def __init__(self, on_publish: OnPublish, keepalive_s: int) -> None:
        self._on_publish = on_publish
        self.keepalive_s = keepalive_s
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._connack: asyncio.Future[mqtt5.ConnAckPacket] = self._loop.create_future()
        self._waiters: dict[tuple[type, int], asyncio.Future[object]] = {}
        self._ids = itertools.cycle(range(1, 65536))
        self._last_out = time.monotonic()
        self._ping_sent: float | None = None
        self._pinger: asyncio.Task[None] | None = None
        self.server_disconnect: mqtt5.DisconnectReasonCode | None = None
        #: Completes (with the reason, or None for an orderly close) when the connection has ended.
        self.closed: asyncio.Future[BaseException | None] = self._loop.create_future()

    # -- opening and closing ---------------------------------------------------------------------
    @classmethod
    async def open(cls, host: str, port: int, *, client_id: str, on_publish: OnPublish,
                   username: str | None = None, password: str | None = None, clean_start: bool = True,
                   session_expiry_s: int = 0, receive_maximum: int = 65535, keepalive_s: int = 30,
                   tls: ssl.SSLContext | None = None, will: mqtt5.Will | None = None,
                   timeout_s: float = 10.0) -> tuple[MqttLink, bool]:
        """Connect, send CONNECT (with ``will``, the message the broker publishes if the connection
        ends without DISCONNECT) and wait for CONNACK; return (link, session_present).

        Raises ``OSError``/``TimeoutError`` when the broker cannot be reached, ``LinkRefused`` when it
        refuses the connection.
        """
        loop = asyncio.get_running_loop()
        link = cls(on_publish, keepalive_s)
        async with asyncio.timeout(timeout_s):
            await loop.create_connection(lambda: link, host, port, ssl=tls,
                                         server_hostname=host if tls is not None else None)
            link._send(mqtt5.ConnectPacket(
                client_id, username=username, password=password.encode() if password is not None else None,
                clean_start=clean_start, keep_alive=keepalive_s, session_expiry_interval=session_expiry_s,
                receive_max=receive_maximum, will=will).write())
            try:
                connack = await asyncio.shield(link._connack)
            except BaseException:
                link.abort()
                raise
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            link.abort()
            raise LinkRefused(connack.reason_code)
        if keepalive_s > 0:
            link._pinger = loop.create_task(link._keep_alive())
        return link, connack.session_present

    def disconnect(self, session_expiry_s: int | None = None) -> None:
        """Send DISCONNECT (``session_expiry_s`` 0 ends the session) and close."""
        if self._transport is None or self._transport.is_closing():
            return
        self._send(mqtt5.DisconnectPacket(session_expiry_interval=session_expiry_s).write())
        self._transport.close()

    def abort(self) -> None:
        """Close without DISCONNECT (the broker then sends the Will, if any)."""
        if self._transport is not None:
            self._transport.abort()

    @property
    def is_open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    # -- requests ----------------------------------------------------------------------------------
    async def subscribe(self, filters: Sequence[str], qos: int = 1, no_local: bool = False) -> list[int]:
        """SUBSCRIBE and wait for SUBACK; return its reason codes (>= 0x80: refused). With
        ``no_local`` the broker does not send this connection's own publications back to it."""
        pid = next(self._ids)
        wanted = mqtt5.QoS(qos)
        packet = mqtt5.SubscribePacket(pid, [mqtt5.TopicFilter(f, max_qos=wanted, no_local=no_local) for f in filters])
        suback = await self._request(mqtt5.SubAckPacket, pid, packet.write())
        assert isinstance(suback, mqtt5.SubAckPacket)
        return [int(r) for r in suback.reason_codes]

    async def unsubscribe(self, filters: Sequence[str]) -> list[int]:
        """UNSUBSCRIBE and wait for UNSUBACK; return its reason codes."""
        pid = next(self._ids)
        unsuback = await self._request(mqtt5.UnsubAckPacket, pid, mqtt5.UnsubscribePacket(pid, list(filters)).write())
        assert isinstance(unsuback, mqtt5.UnsubAckPacket)
        return [int(r) for r in unsuback.reason_codes]

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """PUBLISH; at QoS 1 wait for the PUBACK (raises ``LinkClosed`` if the connection ends first)."""
        if qos == 0:
            self._send(mqtt5.PublishPacket(topic, payload, retain=retain).write())
            return
        pid = next(self._ids)
        packet = mqtt5.PublishPacket(topic, payload, qos=mqtt5.QoS.AT_LEAST_ONCE, retain=retain, packet_id=pid)
        puback = await self._request(mqtt5.PubAckPacket, pid, packet.write())
        assert isinstance(puback, mqtt5.PubAckPacket)
        if int(puback.reason_code) >= 0x80:
            raise LinkClosed(f"the broker refused a publication to {topic}: {puback.reason_code.name}")

    def ack(self, packet_ids: Iterable[int]) -> int:
        """PUBACK these QoS 1 deliveries in one write; returns how many (0 if the link is closed)."""
        if not self.is_open:
            return 0
        acks = [_puback(pid) for pid in packet_ids]
        if acks:
            self._send(b"".join(acks))
        return len(acks)

    async def _request(self, answer: type, pid: int, data: bytes) -> object:
        if not self.is_open:
            raise LinkClosed("the connection to the broker is closed")
        waiter: asyncio.Future[object] = self._loop.create_future()
        self._waiters[(answer, pid)] = waiter
        self._send(data)
        try:
            return await waiter
        finally:
            self._waiters.pop((answer, pid), None)

    def _send(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)
        self._last_out = time.monotonic()

    async def _keep_alive(self) -> None:
        """PINGREQ when nothing was sent for the keep-alive period; no answer within it ends the link."""
        period = float(self.keepalive_s)
        while self.is_open:
            await asyncio.sleep(min(period / 2, 5.0))
            now = time.monotonic()
            if self._ping_sent is not None and now - self._ping_sent > period:
                _log.warning("no PINGRESP from the broker within %d s; closing the connection", self.keepalive_s)
                self.abort()
                return
            if self._ping_sent is None and now - self._last_out >= period / 2 and self.is_open:
                self._ping_sent = now
                self._send(_PINGREQ)

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        view = memoryview(buf)
        pos, end = 0, len(buf)
        on_publish = self._on_publish
        publish_type = mqtt5.PublishPacket
        try:
            while pos < end:
                try:
                    packet, n = mqtt5.read(view[pos:])
                except IndexError:  # an incomplete packet: wait for the rest
                    break
                pos += n
                if type(packet) is publish_type:
                    on_publish(packet.topic, packet.payload, int(packet.qos), packet.packet_id or 0,
                               packet.duplicate)
                else:
                    self._control(packet)
        except ValueError as exc:
            _log.error("a malformed packet from the broker (%s); closing the connection", exc)
            view.release()
            self._buf = b""
            self.abort()
            return
        view.release()
        self._buf = buf[pos:] if pos < end else b""

    def _control(self, packet: object) -> None:
        if isinstance(packet, mqtt5.ConnAckPacket):
            if not self._connack.done():
                self._connack.set_result(packet)
        elif isinstance(packet, mqtt5.PingRespPacket):
            self._ping_sent = None
        elif isinstance(packet, (mqtt5.SubAckPacket, mqtt5.UnsubAckPacket, mqtt5.PubAckPacket)):
            waiter = self._waiters.get((type(packet), packet.packet_id))
            if waiter is not None and not waiter.done():
                waiter.set_result(packet)
        elif isinstance(packet, mqtt5.DisconnectPacket):
            self.server_disconnect = packet.reason_code
            _log.warning("the broker disconnected us: %s%s", packet.reason_code.name,
                         f" ({packet.reason_str})" if packet.reason_str else "")
            self.abort()
        else:
            _log.warning("unexpected %s from the broker; closing the connection", type(packet).__name__)
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._transport = None
        failure = LinkClosed("the connection to the broker ended")
        if not self._connack.done():
            self._connack.set_exception(ConnectionError(str(exc) if exc else "the broker closed the connection"))
            self._connack.exception()  # retrieved: nobody may be waiting any more
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(failure)
        if self._pinger is not None:
            self._pinger.cancel()
        if not self.closed.done():
            self.closed.set_result(exc)


_PINGREQ = mqtt5.PingReqPacket().write()


def _puback(pid: int) -> bytes:
    """PUBACK with reason Success and no properties: the 4-byte form MQTT 5 allows (3.2.2.1)."""
    return b"\x40\x02" + pid.to_bytes(2, "big")


async def close_quietly(link: MqttLink | None, session_expiry_s: int | None = None) -> None:
    """Disconnect ``link`` if open and wait (briefly) for the connection to end."""
    if link is None:
        return
    link.disconnect(session_expiry_s)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0):
            await asyncio.shield(link.closed)


def refused(filters: Sequence[str], reasons: Sequence[int]) -> list[str]:
    """The filters a SUBACK refused (reason code 0x80 or above), each with its reason, for messages."""
    return [f"{f} (reason {r:#x})" for f, r in zip(filters, reasons, strict=False) if r >= 0x80]


async def keep_connected(open_link: Callable[[], Awaitable[tuple[MqttLink, bool]]],
                         connected: Callable[[MqttLink, bool], Awaitable[None]], stopping: asyncio.Event, *,
                         name: str, where: str, min_s: float, max_s: float) -> None:
    """Until ``stopping`` is set: open a link and hand it (with ``session_present``) to ``connected``,
    which returns when the connection has ended; after a failed attempt wait, from ``min_s``
    doubling up to ``max_s``. An unreachable broker is logged as a warning once, then at debug
    level until a connection succeeds; a refusal every time."""
    delay = min_s
    unreachable = False
    while not stopping.is_set():
        try:
            link, present = await open_link()
        except LinkRefused as exc:
            _log.error("%s: %s; retrying", name, exc)
        except (OSError, TimeoutError) as exc:
            _log.log(logging.DEBUG if unreachable else logging.WARNING,
                     "%s: cannot reach the broker at %s (%s); retrying", name, where, exc or type(exc).__name__)
            unreachable = True
        else:
            delay, unreachable = min_s, False
            await connected(link, present)
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), delay)
        delay = min(delay * 2, max_s)


async def serve(link: MqttLink, setup: Callable[[], Awaitable[bool]], *, name: str, timeout_s: float) -> None:
    """Run ``setup`` (the connection's (un)subscriptions; False: give this connection up) with at
    most ``timeout_s`` for the broker's answers, then wait for the connection to end. Returns when
    it has ended, the link aborted (if it still was open)."""
    try:
        async with asyncio.timeout(timeout_s):
            if not await setup():
                return
        await link.closed
    except LinkClosed:
        pass
    except TimeoutError:
        _log.warning("%s: no answer to (UN)SUBSCRIBE within %.0f s; reconnecting", name, timeout_s)
    finally:
        link.abort()  # no-op when already closed
