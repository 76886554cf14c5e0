"""The only module that imports pymodbus (pinned in pyproject.toml: it changes its API in most
minor releases). Everything it raises is a ``ModbusError``; the rest of the connector deals in
tables, addresses and 16-bit words.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from shopfloor.connectors.modbus.errors import ModbusExceptionResponse, ModbusLinkError, ModbusTimeout

_log = logging.getLogger(__name__)
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its errors reach us as exceptions, counted


class PymodbusTransport:
    """A ``Transport`` over pymodbus's asyncio TCP client; reconnecting is the poller's business."""

    def __init__(self, host: str, port: int, unit: int, timeout_s: float, retries: int) -> None:
        self.host, self.port, self.unit = host, port, unit
        self._client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=retries,
                                            reconnect_delay=0, name=f"{host}:{port}")
        self._retries = retries
        self._retries_used = 0

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    @property
    def retries_used(self) -> int:
        return self._retries_used

    async def connect(self) -> None:
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise ModbusLinkError(f"{self.host}:{self.port}: {exc}") from None
        if not ok:
            raise ModbusLinkError(f"{self.host}:{self.port}: cannot connect")

    async def read(self, table: str, address: int, count: int) -> list[int]:
        c = self._client
        calls = {"holding": c.read_holding_registers, "input": c.read_input_registers,
                 "coil": c.read_coils, "discrete": c.read_discrete_inputs}
        what = f"read {count} {table} from {address}"
        response = await self._call(what, calls[table](address, count=count, device_id=self.unit))
        if table in ("coil", "discrete"):
            return [1 if b else 0 for b in response.bits[:count]]
        words: list[int] = list(response.registers)
        if len(words) != count:
            raise ModbusTimeout(f"{what}: {len(words)} registers came back")
        return words

    async def write(self, table: str, address: int, values: Sequence[int]) -> None:
        c = self._client
        what = f"write {len(values)} {table} at {address}"
        if table == "coil":
            if len(values) == 1:
                await self._call(what, c.write_coil(address, bool(values[0]), device_id=self.unit))
            else:
                await self._call(what, c.write_coils(address, [bool(v) for v in values], device_id=self.unit))
        elif table == "holding" and len(values) == 1:  # function 6: what every device supports
            await self._call(what, c.write_register(address, values[0], device_id=self.unit))
        elif table == "holding":
            await self._call(what, c.write_registers(address, list(values), device_id=self.unit))
        else:
            raise ModbusLinkError(f"{what}: the {table} table is read-only")

    async def _call(self, what: str, request: Any) -> Any:
        try:
            response = await request
        except ModbusIOException as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # pymodbus turns our cancellation into an error
                raise asyncio.CancelledError from None
            if not self._client.connected:
                raise ModbusLinkError(f"{what}: connection lost ({exc})") from None
            self._retries_used += self._retries
            raise ModbusTimeout(f"{what}: no answer ({exc})") from None
        except ConnectionException as exc:
            raise ModbusLinkError(f"{what}: {exc}") from None
        except (ModbusException, OSError) as exc:
            raise ModbusLinkError(f"{what}: {exc}") from None
        if response is None:
            raise ModbusTimeout(f"{what}: no answer")
        self._retries_used += int(getattr(response, "retries", 0) or 0)
        if response.isError():
            raise ModbusExceptionResponse(int(getattr(response, "exception_code", 0)), what)
        return response

    async def close(self) -> None:
        self._client.close()
