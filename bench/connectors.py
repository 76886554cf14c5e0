"""Field-bus connectors: Modbus TCP registers/s with 100 simulated devices beside pymodbus's own ceiling,
and OPC UA notifications/s into the edge agent's disk buffer beside asyncua's own ceiling.

Run with the project's interpreter: ``.venv/bin/python bench/connectors.py [--seconds S] [--devices N]``.
A pymodbus server in its own process simulates the devices (one TCP connection each, 60 holding
registers: float32, int16, uint32 and uint16 values). In the same run:

1. the ceiling: a bare pymodbus client loop per device, reading the 60 registers back to back;
2. shopfloor: ``ModbusSource`` polling the same devices (one group, interval 1 ms, so as fast as it
   can), decoding 40 values per read with our own code into ``Reading`` batches.

3. OPC UA (bench/opcua.py's server process, ``--opcua-tags`` Double variables rewritten as fast as
   it can): asyncua's bare subscription that only counts, beside ``OpcUaSource`` feeding the edge
   agent's sink, which groups the readings into telemetry messages and appends them to the SQLite
   buffer (the agent's store; nothing is published, so the broker is not measured).

Writes the "Connectors" section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import multiprocessing
import os
import platform
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from perfdoc import write_section
from shopfloor.connectors.edge.agent import EdgeAgent
from shopfloor.connectors.edge.buffer import DiskBuffer
from shopfloor.connectors.edge.link import LinkSettings
from shopfloor.connectors.modbus.source import ModbusSource
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.modbus_map import ModbusSpec, PollGroup, RegisterSpec

ROOT = Path(__file__).resolve().parents[1]

WORDS = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _serve(port: int) -> None:
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator.simdata import SimData
    from pymodbus.simulator.simdevice import SimDevice
    from pymodbus.simulator.simutils import DataType

    async def main() -> None:
        device = SimDevice(0, simdata=([SimData(0, values=[False], datatype=DataType.BITS)],
                                       [SimData(0, values=[False], datatype=DataType.BITS)],
                                       [SimData(0, values=[(i * 7919) % 65536 for i in range(WORDS)],
                                                datatype=DataType.REGISTERS)],
                                       [SimData(0, values=[0], datatype=DataType.REGISTERS)]))
        server = ModbusTcpServer(device, address=("127.0.0.1", port))
        await server.serve_forever()

    asyncio.run(main())


def _registers() -> list[RegisterSpec]:
    regs = [RegisterSpec(f"f{i}", 2 * i, type="float32") for i in range(10)]  # words 0-19
    regs += [RegisterSpec(f"i{i}", 20 + i, type="int16", scale=0.1) for i in range(10)]  # 20-29
    regs += [RegisterSpec(f"u{i}", 30 + 2 * i, type="uint32") for i in range(10)]  # 30-49
    regs += [RegisterSpec(f"w{i}", 50 + i, type="uint16") for i in range(10)]  # 50-59
    return regs


async def _bare(port: int, devices: int, seconds: float) -> tuple[int, int]:
    """pymodbus alone: each client reads the 60 words back to back. Returns (requests, words)."""
    from pymodbus.client import AsyncModbusTcpClient

    clients = [AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0, reconnect_delay=0)
               for _ in range(devices)]
    for c in clients:
        await c.connect()
    counts = [0] * devices
    stop_at = time.perf_counter() + seconds

    async def loop(i: int) -> None:
        c = clients[i]
        while time.perf_counter() < stop_at:
            r = await c.read_holding_registers(0, count=WORDS, device_id=1 + i % 247)
            if not r.isError() and len(r.registers) == WORDS:
                counts[i] += 1

    await asyncio.gather(*(loop(i) for i in range(devices)))
    for c in clients:
        c.close()
    return sum(counts), sum(counts) * WORDS


async def _shopfloor(port: int, devices: int, seconds: float) -> tuple[int, int, int, int]:
    """ModbusSource over the same devices. Returns (requests, words, good values, bad values)."""
    regs = _registers()
    specs = [(ModbusSpec("127.0.0.1", [PollGroup(regs, interval_s=0.0001)], port=port, unit=1 + i % 247,
                         timeout_s=5, retries=0, asset=f"bench/area/line/m{i}", name=f"plc-{i}"), "")
             for i in range(devices)]
    source = ModbusSource(specs)
    good = bad = 0

    async def sink(batch: Sequence[Reading]) -> None:
        nonlocal good, bad
        for r in batch:
            if r.value is None:
                bad += 1
            else:
                good += 1

    task = asyncio.create_task(source.run(sink))
    await asyncio.sleep(1.0)  # connect and warm up
    c0 = sum(d.counters.requests for d in source.devices)
    g0 = good
    await asyncio.sleep(seconds)
    requests = sum(d.counters.requests for d in source.devices) - c0
    values = good - g0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return requests, requests * WORDS, values, bad


def _opcua_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_opcua", Path(__file__).with_name("opcua.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_opcua"] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


async def _opcua_into_buffer(ob: Any, url: str, tags: int, seconds: float, publishing_ms: float,
                             buffer: Path) -> tuple[float, int]:
    """Notifications/s that ``OpcUaSource`` delivers through the edge agent's sink into its disk buffer."""
    from shopfloor.connectors.opcua import OpcUaSource
    from shopfloor.domain.opcua_map import opcua_from_obj

    agent = EdgeAgent("bench", [], DiskBuffer(buffer, 10**11), LinkSettings("127.0.0.1", 1, "bench"))
    count = 0

    async def sink(readings: Sequence[Reading]) -> None:
        nonlocal count
        await agent.sink(readings)
        count += len(readings)

    spec = opcua_from_obj({"endpoint": url, "asset": "bench/area/line/machine",
                           "publishing_interval_ms": publishing_ms, "sampling_interval_ms": 0,
                           "items_per_subscription": 1000, "subscriptions_per_connection": max(1, -(-tags // 1000)),
                           "nodes": {ob.node_id(i): {"measurement": f"tag{i}"} for i in range(tags)}})
    source = OpcUaSource(spec, sink, timeout_s=10)
    task = asyncio.create_task(source.run())
    try:
        await source.connected(60)
        await asyncio.sleep(1.0)
        n0, m0, t0 = count, agent.stats.messages, time.perf_counter()
        await asyncio.sleep(seconds)
        return (count - n0) / (time.perf_counter() - t0), agent.stats.messages - m0
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        agent.buffer.close()


def _opcua(tags: int, seconds: float, publishing_ms: float) -> tuple[float, float, int]:
    ob = _opcua_bench()
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    with ob.server_process(tags) as (url, _counter), tempfile.TemporaryDirectory() as tmp:
        top = asyncio.run(ob.ceiling(url, tags, seconds, publishing_ms))
        ours, messages = asyncio.run(_opcua_into_buffer(ob, url, tags, seconds, publishing_ms,
                                                        Path(tmp) / "edge.sqlite"))
    return top, ours, messages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0, help="measuring time of each case")
    ap.add_argument("--devices", type=int, default=100, help="simulated Modbus devices (TCP connections)")
    ap.add_argument("--opcua-tags", type=int, default=2000, help="OPC UA variables (0: skip the OPC UA cases)")
    ap.add_argument("--publishing-ms", type=float, default=100.0, help="OPC UA publishing interval")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/PERFORMANCE.md")
    args = ap.parse_args()
    port = _free_port()
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    server.start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    try:
        load0 = os.getloadavg()[0]
        breq, bwords = asyncio.run(_bare(port, args.devices, args.seconds))
        sreq, swords, values, bad = asyncio.run(_shopfloor(port, args.devices, args.seconds))
    finally:
        server.terminate()
        server.join(5)
    ua = _opcua(args.opcua_tags, args.seconds, args.publishing_ms) if args.opcua_tags else None
    load1 = os.getloadavg()[0]
    s = args.seconds
    machine = f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"
    lines = [
        "## Connectors", "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}; load average {load0:.1f} → {load1:.1f}.",
        f"Run: `.venv/bin/python bench/connectors.py` ({args.devices} simulated Modbus devices, one TCP "
        f"connection each, served by one pymodbus server process; {WORDS} holding registers = 40 values "
        f"per read; {s:.0f} s per case). Compare rows of this run with each other, not across runs.", "",
        "| case | reads/s | registers/s | values/s |", "|---|---:|---:|---:|",
        f"| pymodbus bare client loop (the ceiling) | {breq / s:,.0f} | {bwords / s:,.0f} | — |",
        f"| shopfloor `ModbusSource` (plan, poll, decode, readings) | {sreq / s:,.0f} | {swords / s:,.0f} | "
        f"{values / s:,.0f} |",
        "", f"shopfloor reaches {sreq / max(breq, 1):.0%} of the bare client's reads/s"
        + (f"; {bad} readings were bad (timeouts)." if bad else "; no bad readings."),
    ]
    if ua is not None:
        top, ours, messages = ua
        lines += [
            "", f"OPC UA: {args.opcua_tags:,} Double variables rewritten as fast as the server process can "
            f"(bench/opcua.py's server), one subscription per 1,000 (publishing {args.publishing_ms:.0f} ms, "
            "sampling 0), one connection.", "",
            "| case | notifications/s | of the ceiling |", "|---|---:|---:|",
            f"| asyncua bare subscription, handler only counts (the ceiling) | {top:,.0f} | 100 % |",
            f"| `OpcUaSource` → edge agent → telemetry JSON → SQLite buffer ({messages / s:,.0f} messages/s) "
            f"| {ours:,.0f} | {ours / max(top, 1):.0%} |",
        ]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "PERFORMANCE.md", "Connectors", section)


if __name__ == "__main__":
    main()
