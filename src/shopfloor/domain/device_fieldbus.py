"""A device's field-bus sections as the registry keeps them: its ``opcua`` and ``modbus`` maps.

``plant apply`` stores the sections of the plant file's devices, ``plant export`` writes them
back, and the edge agent can fetch them (``GET /api/v1/devices/{id}/fieldbus``) instead of
reading a plant file. Secrets stay what the file says: an OPC UA ``password_env`` is a variable
name, read on the edge, never a value resolved by the platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.modbus_map import ModbusSpec
from shopfloor.domain.opcua_map import OpcUaSpec

T = TypeVar("T")


@dataclass(frozen=True)
class DeviceFieldbus:
    tenant_id: int
    device_id: int
    opcua: OpcUaSpec | None = None
    modbus: ModbusSpec | None = None

    @property
    def empty(self) -> bool:
        return self.opcua is None and self.modbus is None


def section_to_obj(section: OpcUaSpec | ModbusSpec | None) -> dict[str, Any] | None:
    """The section as JSON values (defaults left out, as in the plant file)."""
    if section is None:
        return None
    obj: dict[str, Any] = msgspec.to_builtins(section)
    return obj


def opcua_section(obj: Any) -> OpcUaSpec | None:
    """A stored ``opcua`` section read back (it was checked when it was stored)."""
    return None if obj is None else _convert(obj, OpcUaSpec)


def modbus_section(obj: Any) -> ModbusSpec | None:
    """A stored ``modbus`` section read back."""
    return None if obj is None else _convert(obj, ModbusSpec)


def _convert(obj: Any, kind: type[T]) -> T:
    try:
        return msgspec.convert(obj, kind)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"a stored field-bus section no longer reads: {exc}") from None
