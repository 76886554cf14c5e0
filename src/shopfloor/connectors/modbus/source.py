"""Many Modbus devices polled concurrently as one source of readings, with writes routed by measurement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from shopfloor.connectors.modbus.device import ModbusDevice
from shopfloor.connectors.modbus.errors import ModbusWriteRefused
from shopfloor.connectors.modbus.transport import Transport
from shopfloor.domain.fieldbus import ReadingSink
from shopfloor.domain.modbus_map import ModbusSpec, RegisterSpec, registers_of

TransportFactory = Callable[[ModbusSpec], Transport]


def pymodbus_transport(spec: ModbusSpec) -> Transport:
    from shopfloor.connectors.modbus.adapter import PymodbusTransport

    return PymodbusTransport(spec.host, spec.port, spec.unit, spec.timeout_s, spec.retries)


class ModbusSource:
    """Polls every device of ``specs`` (each with its default asset) and writes to their registers."""

    name = "modbus"

    def __init__(self, specs: Sequence[tuple[ModbusSpec, str]],
                 transport_factory: TransportFactory = pymodbus_transport) -> None:
        self.devices = [ModbusDevice(spec, transport_factory(spec), default_asset=default)
                        for spec, default in specs]
        self._points: dict[tuple[str, str], tuple[ModbusDevice, RegisterSpec]] = {}
        for device in self.devices:
            for reg in registers_of(device.spec):
                self._points[(device.asset_of(reg), reg.measurement)] = (device, reg)

    def points(self) -> list[tuple[str, str]]:
        """The (machine path, measurement) pairs this source feeds."""
        return list(self._points)

    def writable(self, asset: str, measurement: str) -> bool:
        found = self._points.get((asset, measurement))
        return found is not None and found[1].writable

    async def run(self, sink: ReadingSink) -> None:
        """Poll all devices until cancelled; one device's trouble never stops another."""
        async with asyncio.TaskGroup() as tg:
            for device in self.devices:
                tg.create_task(device.run(sink), name=f"modbus {device.label}")

    async def write(self, asset: str, measurement: str, value: float | bool | str) -> None:
        found = self._points.get((asset, measurement))
        if found is None:
            raise ModbusWriteRefused(f"no Modbus register feeds {asset} {measurement}")
        device, reg = found
        await device.write(reg, value)

    def counters(self) -> dict[str, dict[str, object]]:
        return {d.label: d.counters.as_dict() for d in self.devices}
