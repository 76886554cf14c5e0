"""An MQTT connection that only publishes: how an API process sends NCMD/DCMD through an external broker.

``MqttPublisher`` implements ``ports.sparkplug.Publisher``: a paho MQTT 5 client in its own network
thread that reconnects by itself; a publish while the broker is away fails at once (a command is
not queued for later: the engineer should see it was not sent). Give it to ``SparkplugCommander``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from shopfloor.domain.errors import ShopfloorError

_log = logging.getLogger(__name__)


class PublisherUnavailable(ShopfloorError):
    status = 503
    title = "MQTT broker unavailable"


class MqttPublisher:
    def __init__(self, host: str, port: int, username: str | None, password: str | None, *,
                 client_id: str = "shopfloor-commands", tls: ssl.SSLContext | None = None,
                 keepalive_s: int = 30) -> None:
        self.host, self.port = host, port
        self._connected = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username is not None:
            client.username_pw_set(username, password)
        if tls is not None:
            client.tls_set_context(tls)
        client.reconnect_delay_set(1, 10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._client = client
        self._keepalive_s = keepalive_s

    def _on_connect(self, _c: mqtt.Client, _u: object, _f: mqtt.ConnectFlags, reason: ReasonCode,
                    _p: Properties | None) -> None:
        if reason.is_failure:
            _log.error("command publisher: the broker refused the connection: %s", reason)
            return
        self._connected.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: mqtt.DisconnectFlags, reason: ReasonCode,
                       _p: Properties | None) -> None:
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def start(self, wait_s: float = 5.0) -> bool:
        """Connect in the background; return whether the connection is up within ``wait_s``."""
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s)
        self._client.loop_start()
        return await asyncio.to_thread(self._connected.wait, wait_s)

    async def stop(self) -> None:
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if not self._connected.is_set():
            raise PublisherUnavailable(f"not connected to the MQTT broker at {self.host}:{self.port}")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise PublisherUnavailable(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
