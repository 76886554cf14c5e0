"""The edge agent's MQTT connection to the platform (paho-mqtt, its network loop in a thread).

Callbacks arrive on the asyncio loop: ``on_ack(mid)`` for each PUBACK, ``on_message(topic,
payload)`` for each command. ``connected`` is an ``asyncio.Event`` set while a session is up. paho
re-sends unacknowledged QoS 1 messages, in order, after a reconnect; the forwarder only bounds how
many it hands over at a time.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    keepalive_s: int = 30
    window: int = 100  # QoS 1 messages in flight at most


class MqttLink:
    def __init__(self, settings: LinkSettings, *, on_ack: Callable[[int], None],
                 on_message: Callable[[str, bytes], None], subscriptions: Sequence[str] = (),
                 will: tuple[str, bytes] | None = None, on_connect: Callable[[], None] | None = None,
                 will_retain: bool = True, next_will: Callable[[], tuple[str, bytes]] | None = None,
                 resend: bool = True) -> None:
        """``next_will`` gives the Will of the next connection (called in paho's thread after a
        disconnect: Sparkplug's bdSeq); ``resend=False`` drops what was unacknowledged at a reconnect
        instead of sending it again (the caller sends it anew, re-encoded for the new session)."""
        self.settings = settings
        self.connected = asyncio.Event()
        self.connects = 0
        self._loop = asyncio.get_running_loop()
        self._on_ack = on_ack
        self._on_message = on_message
        self._on_connect_cb = on_connect
        self._subscriptions = list(subscriptions)
        self._will_retain = will_retain
        self._next_will = next_will
        self._resend = resend
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id, clean_session=True,
                        protocol=mqtt.MQTTv311)
        if settings.username is not None:
            c.username_pw_set(settings.username, settings.password)
        if settings.tls:
            c.tls_set_context(ssl.create_default_context(cafile=settings.ca_file))
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=will_retain)
        c.max_inflight_messages_set(settings.window)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 10)
        c.on_connect = self._connected
        c.on_disconnect = self._disconnected
        c.on_publish = self._published
        c.on_message = self._message
        self._client = c

    def start(self) -> None:
        self._client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s)
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes) -> int:
        """Hand a QoS 1 message to paho; returns its message id (PUBACK reports it to ``on_ack``)."""
        info = self._client.publish(topic, payload, qos=1)
        return int(info.mid)

    def publish_now(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """A message outside the buffer (status): sent if connected, never stored."""
        self._client.publish(topic, payload, qos=1, retain=retain)

    async def stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)
        self.connected.clear()

    # -- paho's thread ----------------------------------------------------------------------------
    def _connected(self, client: mqtt.Client, _u: object, _f: mqtt.ConnectFlags, rc: ReasonCode,
                   _p: object) -> None:
        if rc.is_failure:
            _log.warning("edge: the broker refused the connection: %s", rc)
            return
        if not self._resend:
            client.drop_out_messages()
        for topic in self._subscriptions:
            client.subscribe(topic, qos=1)
        self._loop.call_soon_threadsafe(self._up)

    def _up(self) -> None:
        self.connects += 1
        self.connected.set()
        if self._on_connect_cb is not None:
            self._on_connect_cb()

    def _disconnected(self, _c: mqtt.Client, _u: object, _f: mqtt.DisconnectFlags, rc: ReasonCode,
                      _p: object) -> None:
        self._loop.call_soon_threadsafe(self.connected.clear)
        if self._next_will is not None:
            topic, payload = self._next_will()
            self._client.will_set(topic, payload, qos=1, retain=self._will_retain)
        _log.info("edge: disconnected from the broker (%s); reconnecting", rc)

    def _published(self, _c: mqtt.Client, _u: object, mid: int, _rc: ReasonCode, _p: object) -> None:
        self._loop.call_soon_threadsafe(self._on_ack, mid)

    def _message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._loop.call_soon_threadsafe(self._on_message, msg.topic, bytes(msg.payload))
