"""An in-memory ``Transport`` for unit tests: tables of words, and scripted failures."""

from __future__ import annotations

from collections.abc import Sequence

from shopfloor.connectors.modbus.errors import ModbusError, ModbusExceptionResponse, ModbusLinkError


class FakeTransport:
    def __init__(self, tables: dict[str, dict[int, int]] | None = None) -> None:
        self.tables: dict[str, dict[int, int]] = tables or {"holding": {}, "input": {}, "coil": {}, "discrete": {}}
        self.fail_next: list[ModbusError] = []  # raised by the next calls of read/write, in order
        self.refuse_connect = False
        self.reads: list[tuple[str, int, int]] = []
        self._connected = False
        self.retries_used = 0

    @property
    def connected(self) -> bool:
        return self._connected

    async def connect(self) -> None:
        if self.refuse_connect:
            raise ModbusLinkError("fake: connection refused")
        self._connected = True

    async def read(self, table: str, address: int, count: int) -> list[int]:
        self.reads.append((table, address, count))
        if self.fail_next:
            exc = self.fail_next.pop(0)
            if isinstance(exc, ModbusLinkError):
                self._connected = False
            raise exc
        data = self.tables.setdefault(table, {})
        if any(a not in data for a in range(address, address + count)):
            raise ModbusExceptionResponse(2, f"read {count} {table} from {address}")
        return [data[a] for a in range(address, address + count)]

    async def write(self, table: str, address: int, values: Sequence[int]) -> None:
        if self.fail_next:
            raise self.fail_next.pop(0)
        for i, v in enumerate(values):
            self.tables.setdefault(table, {})[address + i] = v

    async def close(self) -> None:
        self._connected = False
