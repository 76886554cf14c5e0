"""A Sparkplug edge node on a real broker, for integration tests: a paho client driving ``EdgeNodeSim``,
with its NDEATH as the MQTT Will, answering rebirth requests, keeping the values the host must store."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from shopfloor.connectors.sparkplug.codec import decode_payload
from shopfloor.connectors.sparkplug.host_messages import REBIRTH_METRIC
from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.testing.sparkplug_edge import EdgeNodeSim, MetricDef


class Edge:
    """An edge node on the broker: an MQTT 5 client with its NDEATH as Will, answering rebirth requests."""

    def __init__(self, port: int, username: str, secret: str, group: str, *, mqtt5: bool = True) -> None:
        self.port, self.username, self.secret, self.mqtt5 = port, username, secret, mqtt5
        self.sim = EdgeNodeSim(group, username.split(".", 1)[1],
                               metrics={"Oil/Temp": MetricDef(1, DataType.INT32)},
                               devices={"Press2": {"force": MetricDef(10, DataType.DOUBLE),
                                                   "running": MetricDef(11, DataType.BOOLEAN)}})
        self.lock = threading.RLock()
        self.expected: list[tuple[str, int, float]] = []  # (machine/measurement, ts_us, value) to be stored
        self.dropped: list[tuple[str, int, float]] = []  # sent while the node was stale
        self.rebirths = 0
        self.commands: list[tuple[str, bytes]] = []  # every NCMD/DCMD received
        self.states: list[tuple[str, bytes]] = []  # every STATE received
        self.values = {"temp": 200, "force": 1.0, "running": True}
        self._ts = int(time.time() * 1000) - 60_000
        self.client: mqtt.Client | None = None

    def ts(self) -> int:
        self._ts += 1
        return self._ts

    def connect(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{self.username}",
                             protocol=mqtt.MQTTv5 if self.mqtt5 else mqtt.MQTTv311)
        client.username_pw_set(self.username, self.secret)
        topic, payload = self.sim.will()
        client.will_set(topic, payload, qos=1, retain=False)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", self.port, 30)
        client.loop_start()
        node = self.sim.node
        client.subscribe([(f"spBv1.0/{node.group}/NCMD/{node.edge_node}", 1),
                          (f"spBv1.0/{node.group}/DCMD/{node.edge_node}/#", 1), ("spBv1.0/STATE/#", 1)])
        if not subscribed.wait(5):
            client.loop_stop()
            client.disconnect()
            raise AssertionError("no SUBACK (connection refused?)")
        self.client = client
        self.births()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        if "/STATE/" in msg.topic:
            self.states.append((msg.topic, bytes(msg.payload)))
            return
        self.commands.append((msg.topic, bytes(msg.payload)))
        if "/NCMD/" not in msg.topic:
            return
        metric = decode_payload(msg.payload).metric(REBIRTH_METRIC)
        if metric is not None and metric.value is True:
            with self.lock:
                self.rebirths += 1
                self.births()

    def _send(self, message: tuple[str, bytes]) -> None:
        assert self.client is not None
        self.client.publish(message[0], message[1], qos=0)

    def births(self) -> None:
        with self.lock:
            t = self.ts()
            v = self.values
            self._send(self.sim.nbirth({"Oil/Temp": v["temp"]}, t))
            self._send(self.sim.dbirth("Press2", {"force": v["force"], "running": v["running"]}, t))
            self._expect(t, keep=True)

    def data(self, *, keep: bool = True) -> None:
        with self.lock:
            v = self.values
            v["temp"] += 1
            v["force"] += 0.5
            v["running"] = not v["running"]
            t = self.ts()
            self._send(self.sim.ndata({"Oil/Temp": v["temp"]}, t))
            self._send(self.sim.ddata("Press2", {"force": v["force"], "running": v["running"]}, t))
            self._expect(t, keep=keep)

    def _expect(self, t: int, *, keep: bool) -> None:
        v = self.values
        rows = [("press-1/temperature", t * 1000, v["temp"] * 0.1), ("press-2/force", t * 1000, v["force"]),
                ("press-2/running", t * 1000, 1.0 if v["running"] else 0.0)]
        (self.expected if keep else self.dropped).extend(rows)

    def gap(self) -> None:
        """Lose a message: the next data carries a sequence gap and is not stored."""
        with self.lock:
            self.sim.skip()
            self.data(keep=False)

    def die(self) -> None:
        """Drop the connection so that the broker publishes the Will (MQTT 5: DISCONNECT with reason
        0x04; MQTT 3.1.1: the TCP connection just ends)."""
        assert self.client is not None
        if self.mqtt5:
            self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=4))
        else:
            sock = self.client.socket()
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.client.loop_stop()
        self.client = None

    def reconnect(self) -> None:
        self.sim.reconnect()
        self.connect()

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.disconnect()
            self.client.loop_stop()


