"""The whole embedded path: paho client → embedded broker → ingest → DuckDB, nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from shopfloor.bootstrap import Platform, build_platform
from shopfloor.config import Settings
from shopfloor.connectors.mqtt.embedded_broker import EmbeddedBroker
from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.tenancy import Role
from shopfloor.services.devices import DeviceAccessService
from shopfloor.services.registry import PLATFORM
from tests.conftest import free_port

pytestmark = pytest.mark.integration
N = 20_000


@dataclass
class Stack:
    platform: Platform
    broker: EmbeddedBroker
    port: int
    username: str
    secret: str
    series_id: int
    machine_topic: str
    other_topic: str


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    p = build_platform(Settings(data_dir=tmp_path, mqtt_port=free_port(), http_port=free_port()))
    reg = p.registry
    reg.create_tenant(PLATFORM, "acme")
    _, token = reg.create_token(PLATFORM, "t", Role.ADMIN, tenant_slug="acme")
    ctx = p.auth.context_for(token)
    reg.put_asset_type(ctx, "press", measurements=[MeasurementDef("temperature", "degC")])
    site = reg.create_asset(ctx, Level.SITE, "plant", timezone="Europe/Berlin")
    area = reg.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
    line = reg.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    m1 = reg.create_asset(ctx, Level.MACHINE, "press-01", parent_id=line.id, type_name="press")
    reg.create_asset(ctx, Level.MACHINE, "press-02", parent_id=line.id, type_name="press")
    dev, secret = reg.create_device(ctx, "press-01-plc", [m1.id])
    series = reg.series_of(ctx, m1.id)[0]
    broker = EmbeddedBroker("127.0.0.1", p.settings.mqtt_port, p.ingest, DeviceAccessService(p.cache, p.stats))
    await broker.start()
    prefix = "shopfloor/v1/acme/plant/press-shop/line-1"
    try:
        yield Stack(p, broker, broker.bound_port, dev.username, secret, series.id,
                    f"{prefix}/press-01/telemetry", f"{prefix}/press-02/telemetry")
    finally:
        await broker.stop()
        await p.ingest.drain()
        p.close()


def _client(s: Stack, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    c.username_pw_set(s.username, s.secret)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    return c


def _publish_all(s: Stack, n: int) -> tuple[int, float]:
    """Publish n QoS 1 messages; disconnect right after the last PUBACK. Returns (acked, seconds)."""
    acked = 0
    done = threading.Event()
    connected = threading.Event()

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object) -> None:
        if not rc.is_failure:
            connected.set()

    def on_publish(c: mqtt.Client, _u: object, _mid: int, _rc: object, _p: object) -> None:
        nonlocal acked
        acked += 1
        if acked == n:
            done.set()

    c = _client(s, "no-loss")
    c.on_connect, c.on_publish = on_connect, on_publish
    c.connect("127.0.0.1", s.port)
    c.loop_start()
    assert connected.wait(10), "device could not connect"
    base = int(time.time() * 1000) - n - 1000
    t0 = time.perf_counter()
    for i in range(n):
        payload = json.dumps({"ts": base + i, "values": {"temperature": i / 10}})
        c.publish(s.machine_topic, payload, qos=1)
    assert done.wait(300), f"only {acked} of {n} acknowledged"
    c.disconnect()
    c.loop_stop()
    return acked, time.perf_counter() - t0


async def test_20000_acknowledged_messages_are_stored_exactly_once(stack: Stack) -> None:
    acked, seconds = await asyncio.to_thread(_publish_all, stack, N)
    assert acked == N
    # nothing more to wait for: PUBACK came after the commit
    hist = stack.platform.historian
    assert hist.count_samples([stack.series_id]) == N
    rows = hist.raw(stack.series_id, 0, 2**62, limit=N + 10)
    assert len(rows) == N
    assert sorted(round(r.value * 10) for r in rows if r.value is not None) == list(range(N))
    print(f"\n{N} QoS 1 messages stored once in {seconds:.1f} s ({N / seconds:,.0f} msg/s)")


async def test_device_cannot_publish_outside_its_prefix(stack: Stack) -> None:
    got = await asyncio.to_thread(_publish_outside, stack)
    assert got == [], "a message outside the prefix was delivered"
    tenant = stack.platform.repo.find_tenant("acme")
    assert tenant is not None
    dead = stack.platform.historian.dead_letters(tenant.id, reason="outside_prefix")
    assert len(dead) == 1 and dead[0].topic == stack.other_topic
    other = stack.platform.repo.find_asset(tenant.id, ("plant", "press-shop", "line-1", "press-02"))
    assert other is not None
    other_series = [s.id for s in stack.platform.repo.list_series(tenant.id, other.id)]
    assert stack.platform.historian.count_samples(other_series) == 0


def _publish_outside(stack: Stack) -> list[bytes]:
    got: list[bytes] = []
    connected = threading.Event()
    acked = threading.Event()

    c = _client(stack, "prefix")
    c.on_connect = lambda *a: connected.set()
    c.on_publish = lambda *a: acked.set()
    c.on_message = lambda _c, _u, msg: got.append(msg.payload)
    c.connect("127.0.0.1", stack.port)
    c.loop_start()
    try:
        assert connected.wait(10)
        c.subscribe(stack.other_topic, qos=1)
        c.publish(stack.other_topic, json.dumps({"values": {"temperature": 1.0}}), qos=1)
        assert acked.wait(10)
        time.sleep(0.3)
    finally:
        c.disconnect()
        c.loop_stop()
    return got


async def test_wrong_secret_is_refused(stack: Stack) -> None:
    result = await asyncio.to_thread(_connect_with_wrong_secret, stack)
    assert result[0].is_failure


def _connect_with_wrong_secret(stack: Stack) -> list[mqtt.ReasonCode]:
    result: list[mqtt.ReasonCode] = []
    got = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="intruder", protocol=mqtt.MQTTv311)
    c.username_pw_set(stack.username, "not-the-secret")

    def on_connect(_c: mqtt.Client, _u: object, _f: object, rc: mqtt.ReasonCode, _p: object) -> None:
        result.append(rc)
        got.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", stack.port)
    c.loop_start()
    try:
        assert got.wait(10)
    finally:
        c.disconnect()
        c.loop_stop()
    return result
