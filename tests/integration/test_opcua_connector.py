"""The OPC UA connector against a real asyncua server started by each test on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua

from shopfloor.connectors.opcua import OpcUaAuthError, OpcUaSecurityError, OpcUaSource, OpcUaWriteError, handle_command
from shopfloor.connectors.opcua.mapping import datetime_us
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.opcua_map import OpcUaSpec, opcua_from_obj
from shopfloor.domain.records import Quality
from tests.conftest import free_port
from tests.integration.opcua_server import PlcServer, make_cert, node_id
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration
MACHINE = "berlin/press-shop/line-1/press-01"


class Collect:
    """A ReadingSink that keeps every batch."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.batches = 0
        self._changed = asyncio.Event()

    async def __call__(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)
        self.batches += 1
        self._changed.set()

    def of(self, measurement: str) -> list[Reading]:
        return [r for r in self.readings if r.measurement == measurement]

    async def until(self, check: Callable[[], bool], within: float = 10.0) -> None:
        async def wait() -> None:
            while not check():
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(wait(), within)
        except TimeoutError:
            raise AssertionError(f"timed out; readings so far: {self.readings}") from None


def spec(url: str, **extra: Any) -> OpcUaSpec:
    nodes = {
        node_id("Temperature"): {"measurement": "temperature"},
        node_id("Pressure"): {"measurement": "pressure", "scale": 0.1, "offset": 1.0},
        node_id("Running"): {"measurement": "running"},
        node_id("Recipe"): {"measurement": "recipe"},
        node_id("Setpoint"): {"measurement": "setpoint", "writable": True},
        node_id("Counter"): {"measurement": "counter", "scale": 0.5, "writable": True},
    }
    nodes.update(extra.pop("nodes", {}))
    return opcua_from_obj({"endpoint": url, "asset": MACHINE, "publishing_interval_ms": 50,
                           "sampling_interval_ms": 0, "nodes": nodes, **extra})


@contextlib.asynccontextmanager
async def running(source: OpcUaSource) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(source.run())
    try:
        await source.connected(15)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def plc() -> AsyncIterator[PlcServer]:
    server = await PlcServer(free_port()).start()
    yield server
    await server.stop()


async def test_subscription_delivers_values_with_source_timestamps_quality_and_scaling(plc: PlcServer) -> None:
    sink = Collect()
    source = OpcUaSource(spec(plc.url), sink, watchdog_s=0.2)
    async with running(source):
        await sink.until(lambda: len({r.measurement for r in sink.readings}) == 6)  # initial values
        t0 = dt.datetime(2026, 11, 23, 8, 0, 0, 125000, tzinfo=dt.UTC)
        await plc.set("Temperature", 71.5, t0)
        await plc.set("Pressure", 42.0, t0 + dt.timedelta(seconds=1))
        await plc.set("Running", True, t0 + dt.timedelta(seconds=2))
        await plc.set("Recipe", "P12", t0 + dt.timedelta(seconds=3))
        await plc.set("Temperature", 72.0, t0 + dt.timedelta(seconds=4), status=ua.StatusCodes.UncertainLastUsableValue)
        await plc.set("Temperature", 0.0, t0 + dt.timedelta(seconds=5), status=ua.StatusCodes.BadSensorFailure)
        await sink.until(lambda: len(sink.of("temperature")) >= 4)
        await sink.until(lambda: len(sink.of("recipe")) >= 2)
    temps = sink.of("temperature")[1:]
    us = datetime_us(t0)
    assert [(r.ts_us, r.value, r.quality) for r in temps] == [
        (us, 71.5, Quality.GOOD), (us + 4_000_000, 72.0, Quality.UNCERTAIN), (us + 5_000_000, None, Quality.BAD)]
    assert all(r.asset == MACHINE for r in sink.readings)
    assert sink.of("pressure")[-1][2:] == (us + 1_000_000, pytest.approx(42.0 * 0.1 + 1.0), Quality.GOOD)
    assert sink.of("running")[-1].value is True
    assert sink.of("recipe")[-1].value == "P12"
    assert source.links[0].subscriptions == 1
    assert source.links[0].monitored == 6 and source.links[0].polled == []


async def test_absolute_deadband_suppresses_small_changes(plc: PlcServer) -> None:
    sink = Collect()
    extra = {"nodes": {node_id("Temperature"): {"measurement": "temperature", "deadband": {"value": 1.0}}}}
    source = OpcUaSource(spec(plc.url, **extra), sink, watchdog_s=0.2)
    async with running(source):
        await sink.until(lambda: len(sink.of("temperature")) == 1)
        for value in (20.5, 20.9, 22.0, 22.6, 19.0):
            await plc.set("Temperature", value)
            await asyncio.sleep(0.15)  # past a publishing interval, so each change is sampled alone
        await sink.until(lambda: len(sink.of("temperature")) >= 3)
        await asyncio.sleep(0.3)
    assert [r.value for r in sink.of("temperature")] == [20.0, 22.0, 19.0]


async def test_basic256sha256_sign_and_encrypt_with_self_signed_certificates(tmp_path: Path) -> None:
    server_cert = make_cert(tmp_path, "plc", "urn:shopfloor:test:plc-server")
    client_cert = make_cert(tmp_path, "shopfloor", "urn:shopfloor:test:edge")
    plc = await PlcServer(free_port(), cert=server_cert).start()
    try:
        security = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": str(client_cert.cert),
                    "private_key": str(client_cert.key), "server_certificate": str(server_cert.cert)}
        sink = Collect()
        source = OpcUaSource(spec(plc.url, security=security), sink, watchdog_s=0.2)
        async with running(source):
            await plc.set("Temperature", 33.0)
            await sink.until(lambda: any(r.value == 33.0 for r in sink.of("temperature")))
            client = source.links[0].client
            assert client is not None
            assert client.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
            assert client.security_policy.URI.endswith("#Basic256Sha256")
        # without security the same server is refused (it offers only Basic256Sha256)
        with pytest.raises(OpcUaSecurityError, match="offers no endpoint with this security policy"):
            await asyncio.wait_for(OpcUaSource(spec(plc.url), Collect()).run(), 15)
    finally:
        await plc.stop()


async def test_username_password_and_a_wrong_password_refused_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    plc = await PlcServer(free_port(), users={"edge": "s3cret"}).start()
    try:
        monkeypatch.setenv("PLC_PASSWORD", "s3cret")
        sink = Collect()
        source = OpcUaSource(spec(plc.url, username="edge", password_env="PLC_PASSWORD"), sink, watchdog_s=0.2)
        async with running(source):
            await plc.set("Temperature", 44.0)
            await sink.until(lambda: any(r.value == 44.0 for r in sink.of("temperature")))
        bad = OpcUaSource(spec(plc.url, username="edge", password="wrong"), Collect())
        with pytest.raises(OpcUaAuthError, match="refused the user") as caught:
            await asyncio.wait_for(bad.run(), 15)
        assert "password" in caught.value.message
    finally:
        await plc.stop()


async def test_server_restart_reconnects_and_backfills_the_gap_from_history_without_duplicates(tmp_path: Path) -> None:
    port, front = free_port(), free_port()
    history = tmp_path / "plc-history.sqlite"
    plc = await PlcServer(port, history_db=history).start()
    proxy = await TcpProxy(front, port).start()
    sink = Collect()
    source = OpcUaSource(spec(f"opc.tcp://127.0.0.1:{front}/plc"), sink, watchdog_s=0.2, min_backoff_s=0.2,
                         max_backoff_s=0.5)
    # source timestamps after every value the server has had (its initial ones included), and off a whole
    # second (sqlite3 cannot read back a whole second with a zone)
    base = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).replace(microsecond=1000)
    try:
        async with running(source):
            for i in range(3):
                await plc.set("Temperature", 100.0 + i, base + dt.timedelta(milliseconds=100 * i))
                await asyncio.sleep(0.1)
            await sink.until(lambda: any(r.value == 102.0 for r in sink.of("temperature")))
            proxy.cut()  # the link goes, then the PLC restarts
            await plc.stop()
            await asyncio.sleep(0.6)
            plc = await PlcServer(port, history_db=history).start()
            await asyncio.sleep(0.2)  # its history subscription is in place
            for i in range(3, 8):  # changes while shopfloor cannot see the server
                await plc.set("Temperature", 100.0 + i, base + dt.timedelta(milliseconds=100 * i))
                await asyncio.sleep(0.25)  # the test server historizes through a queue of one
            historized = [dv.Value.Value for dv in await plc.nodes["Temperature"].read_raw_history()]
            proxy.restore()
            await sink.until(lambda: source.stats.reconnects >= 1 and any(r.value == 107.0 for r in sink.of("temperature")))
            await source.connected(10)
            await plc.set("Temperature", 108.0, base + dt.timedelta(milliseconds=800))
            await sink.until(lambda: any(r.value == 108.0 for r in sink.of("temperature")))
            await asyncio.sleep(0.3)
    finally:
        await proxy.stop()
        await plc.stop()
    temps = sink.of("temperature")
    keys = [(r.measurement, r.ts_us) for r in sink.readings]
    assert len(keys) == len(set(keys)), "a (node, source timestamp) arrived twice"
    values = [r.value for r in temps]
    gap = [v for v in historized if v in {103.0, 104.0, 105.0, 106.0, 107.0}]
    assert len(gap) >= 3, historized  # (all five unless the box is too busy for the test server)
    for v in [100.0, 101.0, 102.0, *gap, 108.0]:
        assert values.count(v) == 1, (v, values)
    assert source.stats.backfilled >= len(gap)
    assert source.stats.gaps_marked == 0
    assert source.links[0].subscriptions == 1  # re-created on the new server
    filled = [r.ts_us for r in temps if r.value in gap]
    assert filled == sorted(filled)


async def test_reconnect_without_history_marks_the_gap_bad(plc: PlcServer) -> None:
    front = free_port()
    proxy = await TcpProxy(front, plc.port).start()
    sink = Collect()
    source = OpcUaSource(spec(f"opc.tcp://127.0.0.1:{front}/plc"), sink, watchdog_s=0.2, min_backoff_s=0.2,
                         max_backoff_s=0.5)
    try:
        async with running(source):
            await sink.until(lambda: len(sink.of("temperature")) == 1)
            proxy.cut()
            await asyncio.sleep(0.8)
            await plc.set("Temperature", 55.0)
            proxy.restore()
            await sink.until(lambda: any(r.value == 55.0 for r in sink.of("temperature")), 15)
    finally:
        await proxy.stop()
    temps = sink.of("temperature")
    assert [r.quality for r in temps] == [Quality.GOOD, Quality.BAD, Quality.GOOD]
    assert temps[1].value is None and temps[0].ts_us < temps[1].ts_us < temps[2].ts_us
    assert source.stats.gaps_marked == 6  # one per node


async def test_writes_through_the_source_and_the_command_handler(plc: PlcServer) -> None:
    sink = Collect()
    source = OpcUaSource(spec(plc.url), sink, watchdog_s=0.2)
    async with running(source):
        await source.write(node_id("Setpoint"), 61.5)
        assert await plc.get("Setpoint") == 61.5
        reply = await handle_command(source, MACHINE, b'{"id": "c-1", "type": "opcua_write", "by": "alice", '
                                                      b'"writes": [{"measurement": "counter", "value": 21}]}')
        assert reply is not None and reply["status"] == "ok" and reply["id"] == "c-1"
        assert await plc.get("Counter") == 42  # 21 / scale 0.5
        with pytest.raises(OpcUaWriteError, match="not writable"):
            await source.write(node_id("Temperature"), 1.0)
        refused = await handle_command(source, MACHINE, b'{"id": "c-2", "type": "opcua_write", '
                                                        b'"writes": [{"measurement": "counter", "value": 1.25}]}')
        assert refused is not None and refused["status"] == "error" and "whole number" in refused["error"]
        unknown = await handle_command(source, MACHINE, b'{"type": "opcua_write", '
                                                        b'"writes": [{"measurement": "nope", "value": 1}]}')
        assert unknown is not None and unknown["status"] == "error" and "no OPC UA node" in unknown["error"]
        assert await handle_command(source, MACHINE, b'{"type": "reboot"}') is None
        garbage = await handle_command(source, MACHINE, b"\xff{")
        assert garbage is not None and garbage["status"] == "error"
        await sink.until(lambda: any(r.value == 61.5 for r in sink.of("setpoint")))


async def test_many_tags_spread_over_connections_and_subscriptions() -> None:
    plc = await PlcServer(free_port(), extra=60).start()
    try:
        nodes = {node_id(f"Tag{i:05d}"): {"measurement": f"tag{i}"} for i in range(60)}
        sink = Collect()
        s = opcua_from_obj({"endpoint": plc.url, "asset": MACHINE, "publishing_interval_ms": 50, "nodes": nodes,
                            "items_per_subscription": 10, "subscriptions_per_connection": 2})
        source = OpcUaSource(s, sink, watchdog_s=0.2)
        assert s.connection_count() == 3
        async with running(source):
            await sink.until(lambda: len(sink.readings) >= 60)
            for i in range(60):
                await plc.set(f"Tag{i:05d}", float(i + 1))
            await sink.until(lambda: len(sink.readings) >= 120)
        assert [link.subscriptions for link in source.links] == [2, 2, 2]
        assert sorted(r.value for r in sink.readings if r.value) == [float(i + 1) for i in range(60)]
    finally:
        await plc.stop()
