"""Modbus TCP: shopfloor polls devices by their register maps (``domain.modbus_map``).

- ``adapter``: the only module that imports pymodbus (``PymodbusTransport``);
- ``transport``: the ``Transport`` port the poller talks through; ``fake``: one in memory;
- ``device``: one device's polling groups, decoding, quality and counters, writes;
- ``source``: many devices at once, as one source of ``Reading`` batches for the edge agent.
"""

from shopfloor.connectors.modbus.device import DeviceCounters, ModbusDevice
from shopfloor.connectors.modbus.errors import ModbusError
from shopfloor.connectors.modbus.source import ModbusSource

__all__ = ["DeviceCounters", "ModbusDevice", "ModbusError", "ModbusSource"]
