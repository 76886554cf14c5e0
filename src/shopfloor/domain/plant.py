"""The plant file: a whole plant (asset types, the ISA-95 tree, devices) as one document.

``shopfloor plant apply plant.yaml`` makes the registry match it, idempotently; ``plant export``
writes it back. The same structure is the simulator's input.
"""

from __future__ import annotations

import json
from datetime import date, time
from typing import Any

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.models import CostModel, ShiftCalendar
from shopfloor.domain.kpi_config import check_calendar, check_cost_model, prepare_calendar, prepare_cost_model
from shopfloor.domain.modbus_map import ModbusSpec
from shopfloor.domain.opcua_map import OpcUaSpec
from shopfloor.domain.sparkplug import SparkplugSpec

MAX_PLANT_VALUES = 2_000_000
MAX_PLANT_DEPTH = 64


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
    calendar: ShiftCalendar | None = None  # shifts, breaks, holidays (zone: the site's unless given)
    cost_model: CostModel | None = None  # tariff, labour rate, material cost, overhead
    areas: list[AreaSpec] = []


class DeviceSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: str
    assets: list[str]  # asset paths "site/area/line/machine" (or a line, for a gateway)
    gateway: bool = False
    enabled: bool = True
    description: str = ""
    sparkplug: SparkplugSpec | None = None  # the device is a Sparkplug edge node (docs/sparkplug.md)
    modbus: ModbusSpec | None = None  # the edge agent polls it over Modbus TCP (docs/modbus.md)
    opcua: OpcUaSpec | None = None  # the edge agent reads it from an OPC UA server (docs/opcua.md)


class PlantSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    asset_types: list[AssetTypeSpec] = []
    sites: list[SiteSpec] = []
    devices: list[DeviceSpec] = []
    rules: list[dict[str, Any]] = []  # alarm rules, by name (domain/alarms/rules.py; docs/alarms-api.md)
    version: int = 1


def plant_from_obj(obj: Any) -> PlantSpec:
    """Validate a parsed YAML/JSON document into a ``PlantSpec`` with a readable error.

    YAML has more types than JSON (dates, sets, non-string keys); the document is first brought
    to plain JSON values, since attributes are stored as JSON.
    """
    if obj is None:
        return PlantSpec()
    _check_size(obj)
    try:
        obj = json.loads(json.dumps(obj, default=_json_value, allow_nan=False))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"plant file: {exc}") from None
    obj = _prepare_sites(obj)
    try:
        spec = msgspec.convert(obj, PlantSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"plant file: {exc}") from None
    except InvalidInput as exc:  # a struct's own check (a bad wall time, weekday, negative rate)
        raise InvalidInput(f"plant file: {exc.message}") from None
    for site in spec.sites:
        if site.calendar is not None:
            check_calendar(site.calendar, f"plant file: site {site.name}: calendar")
        if site.cost_model is not None:
            check_cost_model(site.cost_model, f"plant file: site {site.name}: cost_model")
    return spec


def _prepare_sites(obj: Any) -> Any:
    """Sites' calendar and cost-model sections take the site's zone unless they name one."""
    if not isinstance(obj, dict) or not isinstance(obj.get("sites"), list):
        return obj
    sites = []
    for site in obj["sites"]:
        if isinstance(site, dict):
            tz = site.get("timezone", "UTC")
            tz = tz if isinstance(tz, str) else "UTC"
            site = dict(site)
            if "calendar" in site:
                site["calendar"] = prepare_calendar(site["calendar"], tz)
            if "cost_model" in site:
                site["cost_model"] = prepare_cost_model(site["cost_model"], tz)
        sites.append(site)
    return {**obj, "sites": sites}


def _check_size(obj: Any) -> None:
    """Refuse documents nested too deeply, or that YAML aliases blow up ("billion laughs")."""
    seen = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        seen += 1
        if seen > MAX_PLANT_VALUES:
            raise InvalidInput(f"plant file: more than {MAX_PLANT_VALUES} values once YAML aliases are expanded")
        if depth > MAX_PLANT_DEPTH:
            raise InvalidInput(f"plant file: nested deeper than {MAX_PLANT_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend((v, depth + 1) for v in value)


def _json_value(value: Any) -> Any:
    if isinstance(value, date | time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"a {type(value).__name__} value has no place in a plant file")


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
