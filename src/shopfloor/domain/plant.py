"""The plant file: a whole plant (asset types, the ISA-95 tree, devices) as one document.

``shopfloor plant apply plant.yaml`` makes the registry match it, idempotently; ``plant export``
writes it back. The same structure is the simulator's input.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shopfloor.domain.errors import InvalidInput


class MeasurementSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    unit: str = ""
    type: str = "numeric"  # numeric | boolean | string
    description: str = ""


class AssetTypeSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    description: str = ""
    attributes: dict[str, Any] = {}
    measurements: list[MeasurementSpec] = []
    events: list[str] = []


class MachineSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    type: str | None = None
    display_name: str = ""
    attributes: dict[str, Any] = {}


class LineSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    display_name: str = ""
    attributes: dict[str, Any] = {}
    machines: list[MachineSpec] = []


class AreaSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    display_name: str = ""
    attributes: dict[str, Any] = {}
    lines: list[LineSpec] = []


class SiteSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    timezone: str = "UTC"
    display_name: str = ""
    attributes: dict[str, Any] = {}
    areas: list[AreaSpec] = []


class DeviceSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    assets: list[str]  # asset paths "site/area/line/machine" (or a line, for a gateway)
    gateway: bool = False
    enabled: bool = True
    description: str = ""


class PlantSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    asset_types: list[AssetTypeSpec] = []
    sites: list[SiteSpec] = []
    devices: list[DeviceSpec] = []
    version: int = 1


def plant_from_obj(obj: Any) -> PlantSpec:
    """Validate a parsed YAML/JSON document into a ``PlantSpec`` with a readable error."""
    if obj is None:
        return PlantSpec()
    try:
        return msgspec.convert(obj, PlantSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"plant file: {exc}") from None


def plant_to_obj(spec: PlantSpec) -> dict[str, Any]:
    result: dict[str, Any] = msgspec.to_builtins(spec)
    return result


def machine_paths(spec: PlantSpec) -> list[tuple[tuple[str, str, str, str], MachineSpec]]:
    """Every machine of the plant with its (site, area, line, machine) path."""
    out = []
    for s in spec.sites:
        for a in s.areas:
            for ln in a.lines:
                for m in ln.machines:
                    out.append(((s.name, a.name, ln.name, m.name), m))
    return out
