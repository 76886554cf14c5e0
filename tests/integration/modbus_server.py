"""A real pymodbus server for tests: a register map laid out from (table, address, words) blocks.

Words are built by the tests with ``struct`` (the oracle), never by the code under test. Addresses
in ``busy`` answer with exception 6 (server device busy); reads touching ``slow`` sleep for
``slow_s`` before answering (a device that times out).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator.simdata import SimData
from pymodbus.simulator.simdevice import SimDevice
from pymodbus.simulator.simutils import DataType

TABLES = ("coil", "discrete", "holding", "input")


def words(fmt: str, *values: object) -> list[int]:
    """Big-endian registers of ``struct.pack(fmt, values)`` (fmt without byte-order prefix)."""
    packed = struct.pack(">" + fmt, *values)
    return list(struct.unpack(f">{len(packed) // 2}H", packed))


@dataclass
class ModbusTestServer:
    port: int
    blocks: dict[str, list[tuple[int, list[int]]]]  # table -> [(address, words or bits)]
    busy: set[int] = field(default_factory=set)
    slow: set[int] = field(default_factory=set)
    slow_s: float = 2.0
    device_id: int = 0  # 0: answers every unit id
    server: ModbusTcpServer | None = None

    async def _action(self, fc: int, start: int, address: int, count: int, regs: list[int],
                      set_values: object) -> ExcCodes | None:
        touched = set(range(address, address + count))
        if touched & self.busy:
            return ExcCodes.DEVICE_BUSY
        if touched & self.slow:
            await asyncio.sleep(self.slow_s)
        return None

    def _device(self) -> SimDevice:
        def sim(table: str) -> list[SimData]:
            bits = table in ("coil", "discrete")
            out = []
            for address, values in self.blocks.get(table, []):
                vals: list[bool] | list[int] = [bool(v) for v in values] if bits else list(values)
                out.append(SimData(address, values=vals, datatype=DataType.BITS if bits else DataType.REGISTERS))
            return out or [SimData(60000, values=[False] if bits else [0],
                                   datatype=DataType.BITS if bits else DataType.REGISTERS)]

        return SimDevice(self.device_id, simdata=(sim("coil"), sim("discrete"), sim("holding"), sim("input")),
                         action=self._action)

    async def start(self) -> None:
        self.server = ModbusTcpServer(self._device(), address=("127.0.0.1", self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


def blocks_of(entries: Iterable[tuple[str, int, list[int]]]) -> dict[str, list[tuple[int, list[int]]]]:
    out: dict[str, list[tuple[int, list[int]]]] = {}
    for table, address, values in entries:
        out.setdefault(table, []).append((address, values))
    return out
