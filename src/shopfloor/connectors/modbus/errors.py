"""What can go wrong talking Modbus TCP, under one root; the adapter translates pymodbus's errors
into these, so nothing outside the adapter sees the library."""

from __future__ import annotations

from shopfloor.domain.errors import ShopfloorError

#: Modbus exception codes by their names in the specification
EXCEPTION_NAMES = {
    1: "illegal_function", 2: "illegal_data_address", 3: "illegal_data_value", 4: "server_device_failure",
    5: "acknowledge", 6: "server_device_busy", 8: "memory_parity_error", 10: "gateway_path_unavailable",
    11: "gateway_target_failed_to_respond",
}


class ModbusError(ShopfloorError):
    """Root of the Modbus connector's errors."""

    status = 502
    title = "Modbus device error"
    counter = "error"


class ModbusTimeout(ModbusError):
    """The device did not answer in time (after the configured retries)."""

    counter = "timeout"


class ModbusLinkError(ModbusError):
    """No TCP connection to the device (refused, unreachable, closed)."""

    counter = "connect_error"


class ModbusExceptionResponse(ModbusError):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int, what: str) -> None:
        self.code = code
        self.counter = f"exception_{EXCEPTION_NAMES.get(code, str(code))}"
        super().__init__(f"{what}: Modbus exception {code} ({EXCEPTION_NAMES.get(code, 'unknown')})")


class ModbusWriteRefused(ModbusError):
    """A command asked to write something the map does not allow or cannot encode."""

    status = 422
    title = "Write refused"
    counter = "write_refused"
