"""The Modbus connector against a real pymodbus server on a free port: every type and byte/word order
decoded by our code, exception responses, timeouts, a server that goes away and comes back, many
devices at once, writes."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Sequence

import pytest

from shopfloor.connectors.modbus.adapter import PymodbusTransport
from shopfloor.connectors.modbus.device import ModbusDevice
from shopfloor.connectors.modbus.errors import ModbusWriteRefused
from shopfloor.connectors.modbus.source import ModbusSource, pymodbus_transport
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.modbus_map import ModbusSpec, PollGroup, RegisterSpec
from shopfloor.domain.records import Quality
from tests.conftest import free_port
from tests.integration.modbus_server import ModbusTestServer, blocks_of, words

pytestmark = pytest.mark.integration

M = "plant/shop/line-1/press-01"


def _swap(ws: list[int]) -> list[int]:
    return [((w & 0xFF) << 8) | (w >> 8) for w in ws]


# (measurement, table, address, words on the device, register spec fields, expected value)
CASES: list[tuple[str, str, int, list[int], dict[str, object], object]] = [
    ("i16", "holding", 0, words("h", -1234), {"type": "int16"}, -1234.0),
    ("u16", "holding", 1, words("H", 65000), {"type": "uint16"}, 65000.0),
    ("i32", "holding", 2, words("i", -123456789), {"type": "int32"}, -123456789.0),
    ("u32", "holding", 4, words("I", 4000000000), {"type": "uint32"}, 4000000000.0),
    ("f32", "holding", 6, words("f", 21.5), {"type": "float32"}, 21.5),
    ("f64", "holding", 8, words("d", -1e-3), {"type": "float64"}, -1e-3),
    ("f32_cdab", "holding", 12, words("f", 3.25)[::-1], {"type": "float32", "word_order": "little"}, 3.25),
    ("f32_badc", "holding", 14, _swap(words("f", -7.75)), {"type": "float32", "byte_order": "little"}, -7.75),
    ("i32_dcba", "holding", 16, _swap(words("i", 99999)[::-1]),
     {"type": "int32", "byte_order": "little", "word_order": "little"}, 99999.0),
    ("f64_le", "holding", 18, _swap(words("d", 6.02e23)[::-1]),
     {"type": "float64", "byte_order": "little", "word_order": "little"}, 6.02e23),
    ("scaled", "holding", 22, words("h", 215), {"type": "int16", "scale": 0.1, "offset": -5.0}, 16.5),
    ("program", "holding", 23, words("8s", b"P12-A\0\0\0"), {"type": "string", "length": 8}, "P12-A"),
    ("program_le", "holding", 27, _swap(words("4s", b"XY7\0")),
     {"type": "string", "length": 4, "byte_order": "little"}, "XY7"),
    ("in16", "input", 100, words("h", 42), {"type": "int16"}, 42.0),
    ("in_f32", "input", 101, words("f", 0.5), {"type": "float32"}, 0.5),
    ("door", "coil", 5, [1], {"type": "bool"}, True),
    ("lamp", "coil", 6, [0], {"type": "bool"}, False),
    ("estop", "discrete", 9, [1], {"type": "bool"}, True),
]


def _register(name: str, table: str, address: int, fields: dict[str, object]) -> RegisterSpec:
    return RegisterSpec(name, address, table=table, **fields)  # type: ignore[arg-type]


@pytest.fixture
async def server() -> AsyncIterator[ModbusTestServer]:
    entries = [(t, a, w) for _, t, a, w, _, _ in CASES]
    entries += [("holding", 200, [0] * 10), ("holding", 300, [0] * 4)]  # write area; busy/slow area
    srv = ModbusTestServer(free_port(), blocks_of(entries), busy={300}, slow={302}, slow_s=1.5)
    await srv.start()
    yield srv
    await srv.stop()


def _spec(port: int, registers: Sequence[RegisterSpec], **kw: object) -> ModbusSpec:
    return ModbusSpec("127.0.0.1", [PollGroup(list(registers), interval_s=0.2)], port=port, asset=M,
                      **kw)  # type: ignore[arg-type]


def _device(spec: ModbusSpec) -> ModbusDevice:
    return ModbusDevice(spec, pymodbus_transport(spec))


async def test_every_type_and_order_decodes_in_merged_reads(server: ModbusTestServer) -> None:
    regs = [_register(n, t, a, f) for n, t, a, _, f, _ in CASES]
    device = _device(_spec(server.port, regs, max_gap=4))
    readings = {r.measurement: r for r in await device.poll(0)}
    for name, *_, expected in CASES:
        r = readings[name]
        assert r.quality is Quality.GOOD, (name, device.counters.last_error)
        assert r.value == pytest.approx(expected) if isinstance(expected, float) else r.value == expected, name
        assert r.asset == M
    # holding 0..30 in one read, input 100..102 in one, the coils and the discrete input: 4 requests
    assert device.requests_per_poll() == [4]
    assert device.counters.requests == 4 and device.counters.values == len(CASES)
    await device.transport.close()


async def test_exception_responses_and_timeouts_become_bad_quality_and_counters(server: ModbusTestServer) -> None:
    regs = [_register("i16", "holding", 0, {"type": "int16"}),
            _register("missing", "holding", 150, {}),  # no such register on the device
            _register("busy", "holding", 300, {}),
            _register("slow", "holding", 302, {}),
            _register("in16", "input", 100, {"type": "int16"})]
    spec = _spec(server.port, regs, timeout_s=0.3, retries=1)
    device = _device(spec)
    readings = {r.measurement: r for r in await device.poll(0)}
    assert readings["i16"].quality is Quality.GOOD and readings["i16"].value == -1234.0
    for name in ("missing", "busy", "slow"):
        assert readings[name].quality is Quality.BAD and readings[name].value is None, name
    # the timeout (holding 302) gives up the rest of the poll: the input register reads bad too
    assert readings["in16"].quality is Quality.BAD
    failures = device.counters.failures
    assert failures["exception_illegal_data_address"] == 1
    assert failures["exception_server_device_busy"] == 1
    assert failures["timeout"] == 1 and device.counters.retries == 1
    assert device.counters.bad_values == 4
    # the next poll, without the slow register, is good again on the same connection
    await asyncio.sleep(1.5)  # let the late answer of the slow request arrive and be discarded
    device2 = ModbusDevice(_spec(server.port, [regs[0], regs[4]]), device.transport)
    again = await device2.poll(0)
    assert [r.quality for r in again] == [Quality.GOOD, Quality.GOOD]
    await device.transport.close()


async def test_a_server_that_goes_away_is_reconnected(server: ModbusTestServer) -> None:
    device = _device(_spec(server.port, [_register("i16", "holding", 0, {"type": "int16"})], timeout_s=0.3))
    assert (await device.poll(0))[0].quality is Quality.GOOD
    await server.stop()
    await asyncio.sleep(0.2)
    down = await device.poll(0)
    assert down[0].quality is Quality.BAD
    await server.start()
    got: list[Reading] = []
    for _ in range(40):  # back-off starts at 0.5 s
        got = await device.poll(0)
        if got[0].quality is Quality.GOOD:
            break
        await asyncio.sleep(0.1)
    assert got[0].quality is Quality.GOOD and got[0].value == -1234.0
    assert device.counters.connects == 2
    assert sum(device.counters.failures.values()) >= 1
    await device.transport.close()


async def test_nothing_listening_is_a_counted_connect_error() -> None:
    device = _device(_spec(free_port(), [_register("x", "holding", 0, {})], timeout_s=0.2))
    readings = await device.poll(0)
    assert readings[0].quality is Quality.BAD
    assert device.counters.failures["connect_error"] == 1


async def test_many_devices_poll_concurrently_and_writes_reach_the_server(server: ModbusTestServer) -> None:
    specs = []
    for i in range(20):
        regs = [_register("f32", "holding", 6, {"type": "float32"}),
                _register("setpoint", "holding", 200 + (i % 5) * 2, {"type": "int32", "writable": True}),
                _register("lamp", "coil", 6, {"type": "bool", "writable": True})]
        specs.append((ModbusSpec("127.0.0.1", [PollGroup(regs, interval_s=0.1)], port=server.port,
                                 asset=f"plant/shop/line-1/m{i}", name=f"plc-{i}"), ""))
    source = ModbusSource(specs)
    got: list[Reading] = []

    async def sink(batch: Sequence[Reading]) -> None:
        got.extend(batch)

    task = asyncio.create_task(source.run(sink))
    await asyncio.sleep(0.3)
    await source.write("plant/shop/line-1/m3", "setpoint", -70000)
    await source.write("plant/shop/line-1/m3", "lamp", True)
    with pytest.raises(ModbusWriteRefused):
        await source.write("plant/shop/line-1/m3", "f32", 1.0)  # not writable
    with pytest.raises(ModbusWriteRefused):
        await source.write("plant/shop/line-1/m3", "setpoint", 2.5)  # not an int32
    await asyncio.sleep(0.4)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    per_machine = {r.asset for r in got if r.quality is Quality.GOOD and r.measurement == "f32"}
    assert len(per_machine) == 20
    assert all(r.value == 21.5 for r in got if r.measurement == "f32")
    # the write is read back by every device sharing the register, and by the server itself
    assert any(r.asset.endswith("/m8") and r.measurement == "setpoint" and r.value == -70000.0 for r in got)
    assert any(r.measurement == "lamp" and r.value is True for r in got)
    probe = PymodbusTransport("127.0.0.1", server.port, 1, 1.0, 0)
    await probe.connect()
    assert struct.unpack(">i", struct.pack(">HH", *await probe.read("holding", 206, 2)))[0] == -70000
    await probe.close()
    counters = source.counters()
    assert counters["plc-3"]["writes"] == 2
    assert all(c["polls"] >= 3 for c in counters.values())
