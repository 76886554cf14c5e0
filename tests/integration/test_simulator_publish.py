"""The simulator against a real Mosquitto: every machine publishes, and every payload is valid."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.domain.assets import ValueType
from shopfloor.domain.payloads import Decoder, MachineInfo, MeasurementSlot
from shopfloor.domain.plant import PlantSpec, machine_paths
from shopfloor.domain.timeutil import now_us
from shopfloor.domain.topics import ROOT, Kind, parse_topic
from shopfloor.sim import default_plant
from shopfloor.sim.publisher import Simulator
from tests.conftest import free_port, need

pytestmark = pytest.mark.integration

TENANT = "acme"


def _mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


@pytest.fixture
def broker_port(tmp_path: Path) -> Iterator[int]:
    """Our own throwaway Mosquitto on a free port, anonymous allowed, stopped by its pid."""
    binary = _mosquitto()
    need(binary is not None, "the mosquitto binary (apt-get install mosquitto)")
    assert binary is not None
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    log = (tmp_path / "mosquitto.log").open("wb")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {proc.returncode}: {(tmp_path / 'mosquitto.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mosquitto did not start listening within 10 s")
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


class Recorder:
    """A subscriber that keeps every message under the tenant's topics."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-recorder")
        self.client.on_connect = lambda c, *_: c.subscribe(f"{ROOT}/{TENANT}/#", qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the recorder could not subscribe"

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), msg.retain))

    def snapshot(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, predicate: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.05)
        return predicate(self.snapshot())

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def recorder(broker_port: int) -> Iterator[Recorder]:
    rec = Recorder(broker_port)
    yield rec
    rec.close()


def _infos(plant: PlantSpec) -> dict[str, MachineInfo]:
    ids = itertools.count(1)
    return {t.name: MachineInfo(1, next(ids), {m.name: MeasurementSlot(next(ids), ValueType(m.type))
                                               for m in t.measurements}, frozenset(t.events))
            for t in plant.asset_types}


def _statuses(messages: list[tuple[str, bytes, bool]], machine: str) -> list[bytes]:
    return [p for t, p, _ in messages if t.endswith(f"/{machine}/status")]


def test_every_machine_publishes_valid_messages(broker_port: int, recorder: Recorder) -> None:
    plant = default_plant()
    secrets = {d.name: f"secret-{d.name}" for d in plant.devices}
    sim = Simulator(plant, TENANT, secrets, "127.0.0.1", broker_port, tick_s=0.5, speed=30, seed=1)
    sim.start()
    try:
        assert sim.wait_connected(10), sim.connection_errors()
        time.sleep(3)
    finally:
        sim.stop()
    paths = machine_paths(plant)
    assert recorder.wait_for(lambda ms: all(_statuses(ms, m.name)[-1:] == [b"offline"] for _, m in paths), 10)

    messages = recorder.snapshot()
    types = {"/".join(p): m.type for p, m in paths}
    infos = _infos(plant)
    decoder = Decoder()
    seen: dict[str, set[Kind]] = {name: set() for name in types}
    now = now_us()
    for topic, payload, _ in messages:
        addr = parse_topic(topic)
        assert addr.tenant == TENANT
        machine = "/".join(addr.path)
        machine_type = types[machine]
        assert machine_type is not None
        batch = decoder.decode(addr.kind, payload, infos[machine_type], device="sim", topic=topic, now_us=now)
        assert batch.dead_letters == [], (topic, payload)
        seen[machine].add(addr.kind)
    for machine, kinds in seen.items():
        assert {Kind.TELEMETRY, Kind.STATE, Kind.STATUS} <= kinds, machine
    for _, m in paths:
        assert _statuses(messages, m.name)[0] == b"online"

    st = sim.stats()
    assert st.devices == 7 and st.machines == 12 and st.ticks >= 5
    assert st.dropped == 0
    assert st.acked == st.messages + st.status_messages  # everything was acknowledged before DISCONNECT
    telemetry = [p for t, p, _ in messages if t.endswith("/telemetry")]
    assert len(telemetry) == st.messages - sum(1 for t, _, _ in messages
                                                if not t.endswith(("/telemetry", "/status")))


def test_a_gateway_that_drops_leaves_its_will_on_the_first_machine(broker_port: int,
                                                                   recorder: Recorder) -> None:
    plant = default_plant()
    plant.devices = [d for d in plant.devices if d.gateway]
    sim = Simulator(plant, TENANT, {}, "127.0.0.1", broker_port)
    sim.connect()
    try:
        assert sim.serve_until(lambda: sim.wait_connected(0), 10)
        assert recorder.wait_for(lambda ms: len([t for t, p, _ in ms if p == b"online"]) == 6, 5)
        (link,) = sim.links
        assert link.client is not None
        sock = link.client.socket()
        assert isinstance(sock, socket.socket)
        sock.shutdown(socket.SHUT_RDWR)  # the network goes away without a DISCONNECT
        assert recorder.wait_for(lambda ms: _statuses(ms, "press-2")[-1:] == [b"offline"], 10)
        assert all(_statuses(recorder.snapshot(), f"{m}-2") == [b"online"] for m in ("moulding", "packing"))
    finally:
        sim.disconnect(timeout=1)
