"""The embedded MQTT broker, driven by real paho-mqtt clients over TCP on free ports.

Tests taking ``start_broker`` run twice: with the broker in this process (``EmbeddedBroker``) and in a
child process of its own (``BrokerProcess``, the platform's default); the sink and access stay here.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from shopfloor.connectors.mqtt.broker_process import BrokerProcess
from shopfloor.connectors.mqtt.embedded_broker import (
    DEFAULT_PORT,
    BrokerStartError,
    EmbeddedBroker,
    MqttPortInUse,
)
from shopfloor.domain.errors import ShopfloorError
from shopfloor.ports.ingest import RawMessage
from shopfloor.testing.recording_sink import RecordingSink

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
M1 = "shopfloor/v1/acme/s1/a1/l1/m1"
M2 = "shopfloor/v1/acme/s1/a1/l1/m2"
USERS = {  # username -> (password, prefixes)
    "dev1": ("pw1", (M1,)),
    "dev2": ("pw2", (M2,)),
    "observer": ("pw-obs", ("shopfloor/v1/acme",)),
}


class FakeAccess:
    """``DeviceAccess`` over a dict; records connection changes."""

    def __init__(self, users: dict[str, tuple[str, tuple[str, ...]]] | None = None) -> None:
        self.users = dict(USERS if users is None else users)
        self.events: list[tuple[str, bool]] = []

    def authenticate(self, username: str, password: str) -> bool:
        return username in self.users and self.users[username][0] == password

    def publish_prefixes(self, username: str) -> tuple[str, ...]:
        return self.users[username][1] if username in self.users else ()

    def connection_changed(self, username: str, connected: bool) -> None:
        self.events.append((username, connected))


class Device:
    """A paho client in its own network thread; callbacks land in thread-safe events."""

    def __init__(self, port: int, username: str | None = None, password: str | None = None, *,
                 client_id: str = "", clean_session: bool = True, will: tuple[str, bytes] | None = None,
                 keepalive: int = 30, max_inflight: int = 20) -> None:
        self.port, self.keepalive = port, keepalive
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session)
        if username is not None:
            self.client.username_pw_set(username, password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.reconnect_delay_set(1, 2)
        self.connack = threading.Event()
        self.connack_rc: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.acked_at: dict[int, float] = {}  # mid -> time.monotonic() when its ack arrived
        self.all_acked = threading.Event()
        self.expected_acks = 0
        self.received: list[tuple[str, bytes]] = []
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.suback = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode,
                    props: object) -> None:
        self.connack_rc = rc
        self.connack.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode,
                       props: object) -> None:
        self.disconnected.set()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, rc: ReasonCode,
                    props: object) -> None:
        self.acked_at[mid] = time.monotonic()
        if self.expected_acks and len(self.acked_at) >= self.expected_acks:
            self.all_acked.set()

    def _on_subscribe(self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode],
                      props: object) -> None:
        self.subacks[mid] = codes
        self.suback.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        self.received.append((message.topic, bytes(message.payload)))

    async def connect(self, within: float = 5.0) -> ReasonCode:
        await asyncio.to_thread(self.client.connect, HOST, self.port, self.keepalive)
        self.client.loop_start()
        assert await asyncio.to_thread(self.connack.wait, within), "no CONNACK"
        assert self.connack_rc is not None
        return self.connack_rc

    async def subscribe(self, topic_filter: str) -> ReasonCode:
        self.suback.clear()
        _, mid = self.client.subscribe(topic_filter, qos=1)
        for _ in range(500):
            if mid in self.subacks:
                return self.subacks[mid][0]
            await asyncio.to_thread(self.suback.wait, 0.01)
        raise AssertionError("no SUBACK")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> int:
        return self.client.publish(topic, payload, qos=qos).mid

    async def wait_acked(self, count: int, within: float) -> bool:
        self.expected_acks = count
        if len(self.acked_at) >= count:
            return True
        return await asyncio.to_thread(self.all_acked.wait, within)

    def drop(self) -> None:
        """Vanish without DISCONNECT: stop the network thread, then close the socket."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.client.disconnect()  # first: it also wakes the network thread, so the stop is quick
        self.client.loop_stop()


async def eventually(predicate: Callable[[], bool], within: float = 5.0) -> bool:
    for _ in range(int(within / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


Broker = EmbeddedBroker | BrokerProcess
BrokerFactory = Callable[..., Awaitable[Broker]]
KINDS: dict[str, type[Broker]] = {"in-process": EmbeddedBroker, "child-process": BrokerProcess}


@pytest.fixture
async def devices() -> AsyncIterator[list[Device]]:
    made: list[Device] = []
    yield made
    for device in made:
        await asyncio.to_thread(device.close)


@pytest.fixture(params=list(KINDS))
async def start_broker(request: pytest.FixtureRequest) -> AsyncIterator[BrokerFactory]:
    started: list[Broker] = []

    async def start(sink: RecordingSink, access: FakeAccess, port: int = 0, **kwargs: Any) -> Broker:
        broker = KINDS[request.param](HOST, port, sink, access, **kwargs)
        await broker.start()
        started.append(broker)
        return broker

    yield start
    for broker in started:
        await broker.stop()


def device(devices: list[Device], broker: Broker, username: str | None, password: str | None = None,
           **kwargs: object) -> Device:
    if username is not None and password is None:
        password = USERS[username][0]
    made = Device(broker.bound_port, username, password, **kwargs)  # type: ignore[arg-type]
    devices.append(made)
    return made


# --- 1. no acknowledged message is lost -------------------------------------------------------


async def test_20k_qos1_messages_all_reach_the_sink_before_their_puback(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    n = 20_000
    sink, access = RecordingSink(commit_delay=0.002), FakeAccess()
    broker = await start_broker(sink, access)
    dev = device(devices, broker, "dev1", max_inflight=1000)
    assert not (await dev.connect()).is_failure
    payloads = [b'{"values": {"seq": %d}}' % i for i in range(n)]
    sent: dict[int, bytes] = {}

    def publish_all() -> None:
        for payload in payloads:
            sent[dev.publish(f"{M1}/telemetry", payload)] = payload

    started = time.monotonic()
    await asyncio.to_thread(publish_all)
    assert await dev.wait_acked(n, within=240), f"only {len(dev.acked_at)} of {n} acknowledged"
    elapsed = time.monotonic() - started
    dev.client.disconnect()  # at once: whatever was acknowledged must already be in the sink

    committed = Counter(sink.payloads())
    missing = [p for p in payloads if committed[p] == 0]
    duplicates = sum(c - 1 for c in committed.values() if c > 1)
    late = [mid for mid, acked in dev.acked_at.items()
            if sent[mid] not in sink.committed_at or not sink.committed_at[sent[mid]] <= acked]
    print(f"\n20k QoS 1: {n / elapsed:,.0f} msg/s ({elapsed:.1f} s), duplicates {duplicates}, "
          f"sink calls {sink.calls}, max concurrent submits {sink.max_in_flight}")
    assert not missing, f"{len(missing)} acknowledged messages never reached the sink"
    assert not late, f"{len(late)} PUBACKs arrived before their commit"
    assert duplicates == 0
    assert len(sink.messages) == n
    assert sink.max_in_flight > 1, "a client's in-flight messages must be submitted concurrently"
    assert [m.payload for m in sink.arrivals] == payloads, "submitted in the order they were sent"
    assert list(dev.acked_at) == sorted(dev.acked_at), "PUBACKs leave in PUBLISH order (MQTT-4.6)"
    assert {m.device for m in sink.messages} == {"dev1"}


async def test_nothing_is_acknowledged_until_the_sink_has_committed(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink = RecordingSink()
    sink.gate.clear()  # every commit hangs until the gate opens
    broker = await start_broker(sink, FakeAccess())
    dev = device(devices, broker, "dev1", max_inflight=100)
    await dev.connect()
    for i in range(50):
        dev.publish(f"{M1}/telemetry", b"%d" % i)
    assert await eventually(lambda: len(sink.arrivals) == 50)  # all submitted
    await asyncio.sleep(0.5)
    assert dev.acked_at == {}, "a PUBACK left before its commit"
    assert sink.messages == []
    sink.gate.set()
    assert await dev.wait_acked(50, within=10)
    assert len(sink.messages) == 50


async def test_qos0_and_qos2_messages_reach_the_sink(start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink = RecordingSink(commit_delay=0.01)
    before_us = time.time_ns() // 1000
    broker = await start_broker(sink, FakeAccess())
    dev = device(devices, broker, "dev1")
    await dev.connect()
    dev.publish(f"{M1}/telemetry", b"qos0", qos=0)
    dev.publish(f"{M1}/telemetry", b"qos2", qos=2)
    assert await dev.wait_acked(2, within=5)  # paho reports QoS 0 as sent, QoS 2 on PUBCOMP
    assert await eventually(lambda: sorted(sink.payloads()) == [b"qos0", b"qos2"])
    assert all(before_us <= m.received_us <= time.time_ns() // 1000 for m in sink.messages)


async def test_an_oversized_message_goes_to_the_sink_but_not_to_subscribers(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink = RecordingSink()
    broker = await start_broker(sink, FakeAccess(), max_payload=1000)
    observer = device(devices, broker, "observer")
    await observer.connect()
    await observer.subscribe(f"{M1}/#")
    dev = device(devices, broker, "dev1")
    await dev.connect()
    dev.publish(f"{M1}/telemetry", b"x" * 1001)
    dev.publish(f"{M1}/telemetry", b"small")
    assert await dev.wait_acked(2, within=5)
    assert await eventually(lambda: len(observer.received) == 1)
    await asyncio.sleep(0.2)
    assert observer.received == [(f"{M1}/telemetry", b"small")]
    assert sorted(len(p) for p in sink.payloads()) == [5, 1001]  # the sink dead-letters it as too large


# --- 7. a sink that raises: no PUBACK, and the client's re-send gets through -------------------


async def test_a_failing_sink_means_no_puback_and_the_client_sends_again(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    store_down = True
    sink = RecordingSink(fail=lambda m: store_down and m.payload == b"poison")
    broker = await start_broker(sink, FakeAccess())
    dev = device(devices, broker, "dev1")
    await dev.connect()
    dev.publish(f"{M1}/telemetry", b"fine")
    assert await dev.wait_acked(1, within=5)
    dev.all_acked.clear()
    poison = dev.publish(f"{M1}/telemetry", b"poison")
    assert await eventually(lambda: sink.failures >= 1)
    assert not await dev.wait_acked(2, within=1.0), "a message the sink refused was acknowledged"
    assert poison not in dev.acked_at
    assert await asyncio.to_thread(dev.disconnected.wait, 5), "the broker should close the connection"
    store_down = False  # the store is back: paho reconnects and re-sends the unacknowledged message
    assert await dev.wait_acked(2, within=10)
    assert sink.payloads().count(b"poison") == 1


# --- 2. authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(("username", "password", "reason"), [
    ("dev1", "wrong", "Bad user name or password"),
    ("nobody", "pw1", "Bad user name or password"),
    (None, None, "Not authorized"),
])
async def test_bad_credentials_are_refused(start_broker: BrokerFactory, devices: list[Device],
                                           username: str | None, password: str | None, reason: str) -> None:
    access = FakeAccess()
    broker = await start_broker(RecordingSink(), access)
    dev = device(devices, broker, username, password)
    rc = await dev.connect()
    dev.client.loop_stop()
    assert rc.is_failure
    assert rc == ReasonCode(rc.packetType, reason)
    assert access.events == []


async def test_a_broken_device_registry_answers_server_unavailable(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    class BrokenAccess(FakeAccess):
        def authenticate(self, username: str, password: str) -> bool:
            raise RuntimeError("registry down")

    broker = await start_broker(RecordingSink(), BrokenAccess())
    dev = device(devices, broker, "dev1")
    assert (await dev.connect()) == ReasonCode(PacketTypes.CONNACK, "Server unavailable")
    dev.client.loop_stop()


async def test_a_will_outside_the_prefix_or_a_stolen_client_id_is_refused(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    broker = await start_broker(RecordingSink(), FakeAccess())
    rogue = device(devices, broker, "dev1", will=(f"{M2}/status", b"offline"))
    assert (await rogue.connect()) == ReasonCode(PacketTypes.CONNACK, "Not authorized")
    rogue.client.loop_stop()
    owner = device(devices, broker, "dev1", client_id="gw-7", clean_session=False)
    assert not (await owner.connect()).is_failure
    assert (await owner.subscribe(f"{M1}/command")).value == 1
    thief = device(devices, broker, "dev2", client_id="gw-7", clean_session=False)
    assert (await thief.connect()) == ReasonCode(PacketTypes.CONNACK, "Client identifier not valid")
    thief.client.loop_stop()
    assert not owner.disconnected.is_set()


# --- 3. topic prefixes --------------------------------------------------------------------------


async def test_a_device_stays_under_its_prefix(start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink = RecordingSink()
    broker = await start_broker(sink, FakeAccess())
    observer = device(devices, broker, "observer")
    await observer.connect()
    assert (await observer.subscribe("shopfloor/v1/acme/#")).value == 1
    dev = device(devices, broker, "dev1")
    await dev.connect()
    dev.publish(f"{M2}/telemetry", b"outside")
    dev.publish(f"{M1}/telemetry", b"inside")
    assert await dev.wait_acked(2, within=5)  # the outside one is acknowledged too (no endless retry)
    assert await eventually(lambda: len(observer.received) >= 1)
    await asyncio.sleep(0.3)
    assert observer.received == [(f"{M1}/telemetry", b"inside")]
    assert sorted((m.topic, m.payload) for m in sink.messages) == [
        (f"{M1}/telemetry", b"inside"), (f"{M2}/telemetry", b"outside")]  # the sink dead-letters it

    assert (await dev.subscribe(f"{M2}/#")).is_failure
    assert (await dev.subscribe("#")).is_failure
    assert (await dev.subscribe("shopfloor/v1/acme/+/a1/l1/m1/command")).is_failure
    assert not (await dev.subscribe(f"{M1}/command")).is_failure
    await broker.publish(f"{M1}/command", b'{"cmd": "stop"}')  # BrokerControl.publish reaches it
    assert await eventually(lambda: (f"{M1}/command", b'{"cmd": "stop"}') in dev.received)
    assert sink.on_topic(f"{M1}/command") == []  # internal publishes are not ingested


# --- 4. Last Will -------------------------------------------------------------------------------


async def test_the_last_will_reaches_the_sink_and_subscribers(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink = RecordingSink(commit_delay=0.005)
    broker = await start_broker(sink, FakeAccess())
    observer = device(devices, broker, "observer")
    await observer.connect()
    await observer.subscribe(f"{M1}/status")
    dev = device(devices, broker, "dev1", will=(f"{M1}/status", b"offline"))
    await dev.connect()
    dev.publish(f"{M1}/status", b"online")
    assert await dev.wait_acked(1, within=5)
    dev.drop()
    assert await eventually(lambda: len(sink.on_topic(f"{M1}/status")) == 2)
    assert [m.payload for m in sink.on_topic(f"{M1}/status")] == [b"online", b"offline"]
    assert sink.on_topic(f"{M1}/status")[1] == RawMessage("dev1", f"{M1}/status", b"offline",
                                                          sink.on_topic(f"{M1}/status")[1].received_us)
    assert await eventually(lambda: (f"{M1}/status", b"offline") in observer.received)


async def test_a_silent_device_times_out_and_its_will_is_published(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink, access = RecordingSink(), FakeAccess()
    broker = await start_broker(sink, access)
    dev = device(devices, broker, "dev1", will=(f"{M1}/status", b"offline"), keepalive=1)
    await dev.connect()
    dev.client.loop_stop()  # no more PINGREQ, and no FIN either: like a device losing power
    assert await eventually(lambda: len(sink.on_topic(f"{M1}/status")) == 1, within=6)
    # the session's end is reported beside the will (not ordered with it: wait for both)
    assert await eventually(lambda: access.events == [("dev1", True), ("dev1", False)])
    dev.drop()


async def test_stopping_the_broker_marks_devices_offline_without_their_will(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink, access = RecordingSink(), FakeAccess()
    broker = await start_broker(sink, access)
    dev = device(devices, broker, "dev1", will=(f"{M1}/status", b"offline"))
    await dev.connect()
    await broker.stop()
    assert access.events == [("dev1", True), ("dev1", False)]
    assert sink.messages == []  # a shutdown is not the device dying
    assert await asyncio.to_thread(dev.disconnected.wait, 5)
    dev.client.loop_stop()


async def test_a_clean_disconnect_sends_no_will(start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink, access = RecordingSink(), FakeAccess()
    broker = await start_broker(sink, access)
    dev = device(devices, broker, "dev1", will=(f"{M1}/status", b"offline"))
    await dev.connect()
    dev.client.disconnect()
    assert await eventually(lambda: access.events == [("dev1", True), ("dev1", False)])
    await asyncio.sleep(0.2)
    assert sink.messages == []


# --- 5. disconnect_client -----------------------------------------------------------------------


async def test_disconnect_client_cuts_a_live_session(start_broker: BrokerFactory, devices: list[Device]) -> None:
    access = FakeAccess()
    broker = await start_broker(RecordingSink(), access)
    dev = device(devices, broker, "dev1")
    await dev.connect()
    assert await eventually(lambda: access.events == [("dev1", True)])
    assert await broker.disconnect_client("dev1") == 1
    assert access.events == [("dev1", True), ("dev1", False)]
    assert await asyncio.to_thread(dev.disconnected.wait, 5)
    dev.client.loop_stop()
    assert await broker.disconnect_client("dev1") == 0
    assert await broker.disconnect_client("nobody") == 0


async def test_connection_changed_follows_the_first_and_last_live_connection(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    access = FakeAccess()
    broker = await start_broker(RecordingSink(), access)
    first, second = device(devices, broker, "dev1"), device(devices, broker, "dev1")
    await first.connect()
    await second.connect()
    first.client.disconnect()
    await asyncio.to_thread(first.disconnected.wait, 5)
    await asyncio.sleep(0.2)
    assert access.events == [("dev1", True)]
    second.drop()
    assert await eventually(lambda: access.events == [("dev1", True), ("dev1", False)])


# --- 6. port clash, and several brokers in one process ------------------------------------------


async def test_a_port_in_use_gives_one_clear_line(start_broker: BrokerFactory) -> None:
    first = await start_broker(RecordingSink(), FakeAccess())
    kind = type(first)
    with pytest.raises(MqttPortInUse):
        await kind(HOST, first.bound_port, RecordingSink(), FakeAccess()).start()
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = kind(HOST, port, RecordingSink(), FakeAccess())
        with pytest.raises(MqttPortInUse) as caught:
            await broker.start()
    message = str(caught.value)
    assert message == f"MQTT port {port} is already in use (another broker?); choose another with --mqtt-port"
    assert isinstance(caught.value, ShopfloorError)
    assert not broker.running
    assert DEFAULT_PORT == 11883


@pytest.mark.parametrize("kind", list(KINDS))
async def test_control_calls_on_a_stopped_broker_fail_clearly(kind: str) -> None:
    broker = KINDS[kind](HOST, 0, RecordingSink(), FakeAccess())
    with pytest.raises(BrokerStartError, match="not running"):
        await broker.publish(f"{M1}/command", b"{}")
    await broker.stop()  # stopping a broker that never started is fine


async def test_two_brokers_in_one_process_keep_their_own_devices_and_sinks(
        start_broker: BrokerFactory, devices: list[Device]) -> None:
    sink_a, sink_b = RecordingSink(), RecordingSink()
    broker_a = await start_broker(sink_a, FakeAccess({"dev1": USERS["dev1"]}))
    broker_b = await start_broker(sink_b, FakeAccess({"dev2": USERS["dev2"]}))
    on_a = device(devices, broker_a, "dev1")
    assert not (await on_a.connect()).is_failure
    assert (await device(devices, broker_b, "dev1").connect()).is_failure
    on_b = device(devices, broker_b, "dev2")
    assert not (await on_b.connect()).is_failure
    on_a.publish(f"{M1}/telemetry", b"a")
    on_b.publish(f"{M2}/telemetry", b"b")
    assert await on_a.wait_acked(1, within=5)
    assert await on_b.wait_acked(1, within=5)
    assert sink_a.payloads() == [b"a"]
    assert sink_b.payloads() == [b"b"]


async def test_messages_accepted_in_one_loop_turn_share_one_sink_call() -> None:
    """The broker hands the sink what all connections read in one loop turn at once (in order); a
    failing call fails every message of its group, and nothing of the next group."""
    sink = RecordingSink(fail=lambda m: m.payload == b"bad")
    broker = EmbeddedBroker(HOST, 0, sink, FakeAccess())

    def raw(payload: bytes) -> RawMessage:
        return RawMessage("dev1", f"{M1}/telemetry", payload, 0)

    first = [broker._submit_gathered(raw(b"%d" % i)) for i in range(3)]
    assert first[0] is first[1] is first[2]  # one group, one outcome
    await first[0]
    assert sink.calls == 1 and sink.payloads() == [b"0", b"1", b"2"]

    failing = [broker._submit_gathered(raw(p)) for p in (b"x", b"bad")]
    with pytest.raises(ShopfloorError, match="simulated store outage"):
        await failing[0]
    assert failing[1].exception() is failing[0].exception()
    after = broker._submit_gathered(raw(b"y"))
    await after
    assert sink.calls == 3 and sink.payloads() == [b"0", b"1", b"2", b"y"]


async def test_the_gil_switch_interval_is_short_while_a_broker_runs() -> None:
    """The commit thread and the broker's loop share the GIL: a 5 ms switch interval makes each of
    the commit's hand-backs wait behind the loop. Lowered while any broker runs, then put back."""
    import sys

    from shopfloor.connectors.gil import SWITCH_INTERVAL_S

    before = sys.getswitchinterval()
    assert before > SWITCH_INTERVAL_S  # the interpreter's default
    first, second = (EmbeddedBroker(HOST, 0, RecordingSink(), FakeAccess()) for _ in range(2))
    await first.start()
    await second.start()
    assert sys.getswitchinterval() <= SWITCH_INTERVAL_S + 1e-9
    await first.stop()
    assert sys.getswitchinterval() <= SWITCH_INTERVAL_S + 1e-9  # the other one still runs
    await second.stop()
    assert sys.getswitchinterval() == before
