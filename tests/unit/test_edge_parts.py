"""The edge agent's parts without a broker: the disk buffer (real SQLite), the forwarder's rewind, telemetry grouping,
commands routed to the owning source (a Modbus source over the fake transport)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from shopfloor.connectors.edge.agent import EdgeAgent
from shopfloor.connectors.edge.buffer import DiskBuffer
from shopfloor.connectors.edge.forwarder import Forwarder
from shopfloor.connectors.edge.link import LinkSettings
from shopfloor.connectors.edge.messages import telemetry_messages
from shopfloor.connectors.modbus.device import ModbusDevice
from shopfloor.connectors.modbus.errors import ModbusExceptionResponse, ModbusLinkError, ModbusTimeout
from shopfloor.connectors.modbus.fake import FakeTransport
from shopfloor.connectors.modbus.source import ModbusSource
from shopfloor.domain.assets import ValueType
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.modbus_map import ModbusSpec, PollGroup, RegisterSpec
from shopfloor.domain.payloads import Decoder, MachineInfo, MeasurementSlot
from shopfloor.domain.records import Quality
from shopfloor.domain.topics import parse_topic

M = "s/a/l/m1"


def test_buffer_keeps_order_drops_oldest_when_full_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "b.sqlite"
    buf = DiskBuffer(path, 64 * 1024)
    msgs = [(f"t/{i}", b"x" * 1000) for i in range(100)]  # ~100 KB into 64 KiB
    buf.append(msgs[:50])
    assert buf.dropped == 0 and len(buf) == 50
    dropped = buf.append(msgs[50:])
    assert dropped == buf.dropped > 0 and buf.size_bytes <= 64 * 1024
    rows = buf.after(0, 1000)
    assert [t for _, t, _ in rows] == [t for t, _ in msgs[dropped:]]  # the newest, in order
    buf.delete([rows[0][0], rows[1][0], 10**9])
    buf.close()
    again = DiskBuffer(path, 64 * 1024)
    assert len(again) == 100 - dropped - 2 and again.dropped == dropped
    assert again.after(rows[1][0], 1)[0][1] == rows[2][1]
    again.close()


def test_readings_become_one_message_per_machine_with_records_per_moment() -> None:
    readings = [Reading(M, "temperature", 1_000_000, 21.5), Reading(M, "door_open", 1_000_000, True),
                Reading("s/a/l/m2", "program", 1_000_000, "P1"), Reading(M, "temperature", 2_000_000, 22.0),
                Reading(M, "pressure", 2_000_000, None, Quality.BAD),
                Reading(M, "pressure", 3_000_000, 1.5, Quality.UNCERTAIN)]
    messages, empty = telemetry_messages("acme", readings)
    assert empty == 1
    assert [t for t, _ in messages] == ["shopfloor/v1/acme/s/a/l/m1/telemetry", "shopfloor/v1/acme/s/a/l/m2/telemetry"]
    body = json.loads(messages[0][1])
    assert body == [{"ts": "1970-01-01T00:00:01Z", "values": {"temperature": 21.5, "door_open": True}},
                    {"ts": "1970-01-01T00:00:02Z", "values": {"temperature": 22.0}},
                    {"ts": "1970-01-01T00:00:03Z", "values": {"pressure": 1.5}, "quality": "uncertain"}]
    # the platform's own decoder takes them as they are
    slots = {n: MeasurementSlot(i, ValueType.BOOLEAN if n == "door_open" else ValueType.NUMERIC)
             for i, n in enumerate(["temperature", "door_open", "pressure"])}
    batch = Decoder().decode(parse_topic(messages[0][0]).kind, messages[0][1], MachineInfo(1, 1, slots),
                             device="d", topic=messages[0][0], now_us=4_000_000)
    assert batch.dead_letters == [] and len(batch.samples) == 4
    assert batch.samples.quality[-1] == Quality.UNCERTAIN


def _source(transport: FakeTransport) -> ModbusSource:
    spec = ModbusSpec("h", [PollGroup([RegisterSpec("setpoint", 20, type="int16", scale=0.1, writable=True),
                                       RegisterSpec("temperature", 0, type="int16")])], asset=M)
    return ModbusSource([(spec, "")], lambda _: transport)


async def test_commands_write_through_the_owning_source_and_reply(tmp_path: Path) -> None:
    transport = FakeTransport({"holding": {0: 215, 20: 0}})
    agent = EdgeAgent("acme", [_source(transport)], DiskBuffer(tmp_path / "b", 10**6),
                      LinkSettings("127.0.0.1", 1, "x"), clock=lambda: 10.0)
    await agent._command(M, b'{"id": "c-1", "write": {"setpoint": 72.5}}')
    assert transport.tables["holding"][20] == 725
    await agent._command(M, b'{"id": "c-2", "write": {"temperature": 1}}')  # not writable
    await agent._command(M, b'{"id": "c-3", "write": {"setpoint": 1e9}}')  # does not fit an int16
    await agent._command(M, b'not json')
    await agent._command(M, b'{"id": "c-5", "write": {"setpoint": [1]}}')
    replies = [(t, json.loads(p)) for _, t, p in agent.buffer.after(0, 10)]
    assert all(t == f"shopfloor/v1/acme/{M}/command/reply" for t, _ in replies)
    assert [(r["id"], r["status"]) for _, r in replies] == [("c-1", "ok"), ("c-2", "error"), ("c-3", "error"),
                                                           (None, "error"), ("c-5", "error")]
    assert "not a writable point" in replies[1][1]["error"] and "int16" in replies[2][1]["error"]
    assert replies[0][1]["ts"] == "1970-01-01T00:00:10Z"
    assert agent.stats.commands == {"ok": 1, "error": 4}
    assert transport.tables["holding"][20] == 725


async def test_device_failures_are_bad_quality_and_counted_never_raised() -> None:
    transport = FakeTransport({"holding": {0: 1, 1: 2, 5: 3}, "coil": {0: 1}})
    regs = [RegisterSpec("a", 0), RegisterSpec("b", 1), RegisterSpec("c", 5), RegisterSpec("d", 0, table="coil", type="bool")]
    device = ModbusDevice(ModbusSpec("h", [PollGroup(regs)], asset=M), transport)
    assert [r.value for r in await device.poll(0)] == [True, 1.0, 2.0, 3.0]
    transport.fail_next = [ModbusExceptionResponse(6, "x")]  # the coil read: busy
    assert [r.quality for r in await device.poll(0)] == [Quality.BAD, Quality.GOOD, Quality.GOOD, Quality.GOOD]
    transport.fail_next = [ModbusTimeout("slow")]  # the first read times out: the rest is not tried
    assert all(r.quality is Quality.BAD for r in await device.poll(0))
    assert transport.reads[-1] == ("coil", 0, 1)
    transport.fail_next = [ModbusLinkError("gone")]
    transport.refuse_connect = True
    await device.poll(0)
    assert all(r.value is None for r in await device.poll(0))  # back-off: not even tried
    c = device.counters
    assert c.failures == {"exception_server_device_busy": 1, "timeout": 1, "connect_error": 1}
    assert c.polls == 5 and c.values == 7 and c.bad_values == 13
    assert msgspec.json.encode(c.as_dict())


@pytest.mark.parametrize("value", [2, "on"])
async def test_a_coil_takes_only_true_or_false(value: object) -> None:
    transport = FakeTransport({"coil": {0: 0}})
    device = ModbusDevice(ModbusSpec("h", [PollGroup([RegisterSpec("lamp", 0, table="coil", type="bool",
                                                                   writable=True)])], asset=M), transport)
    from shopfloor.connectors.modbus.errors import ModbusWriteRefused

    with pytest.raises(ModbusWriteRefused):
        await device.write(device.spec.groups[0].registers[0], value)  # type: ignore[arg-type]
    await device.write(device.spec.groups[0].registers[0], True)
    assert transport.tables["coil"][0] == 1


class _Link:
    """A publisher that records what it is handed (mids 1, 2, ...)."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.connected.set()
        self.sent: list[str] = []

    def publish(self, topic: str, payload: bytes) -> int:
        self.sent.append(topic)
        return len(self.sent)


async def test_a_rewound_forwarder_sends_what_was_in_flight_again_in_order(tmp_path: Path) -> None:
    buf = DiskBuffer(tmp_path / "b.sqlite", 64 * 1024)
    buf.append([(f"t/{i}", b"x") for i in range(5)])
    fwd, link = Forwarder(buf, window=3), _Link()
    task = asyncio.create_task(fwd.run(link))
    for _ in range(100):
        if len(link.sent) == 3:
            break
        await asyncio.sleep(0.01)
    fwd.on_ack(1)  # t/0 acknowledged; the rest in flight when the link drops them
    link.connected.clear()
    await asyncio.sleep(0.05)
    before = len(link.sent)
    assert link.sent[:3] == ["t/0", "t/1", "t/2"] and before in (3, 4)
    fwd.rewind()
    link.connected.set()
    for _ in range(200):
        if len(link.sent) == before + 3:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    task.cancel()
    assert link.sent[before:] == ["t/1", "t/2", "t/3"]  # again, oldest first, within the window
    assert fwd.inflight == 3 and len(buf) == 4
    buf.close()
