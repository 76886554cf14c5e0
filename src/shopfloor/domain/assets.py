"""The ISA-95 asset tree, asset types and their measurements, devices, series."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class Level(enum.StrEnum):
    SITE = "site"
    AREA = "area"
    LINE = "line"
    MACHINE = "machine"

    @property
    def depth(self) -> int:
        return _DEPTH[self]

    @property
    def parent_level(self) -> Level | None:
        return _PARENT[self]


_DEPTH = {Level.SITE: 0, Level.AREA: 1, Level.LINE: 2, Level.MACHINE: 3}
_PARENT: dict[Level, Level | None] = {
    Level.SITE: None,
    Level.AREA: Level.SITE,
    Level.LINE: Level.AREA,
    Level.MACHINE: Level.LINE,
}


class ValueType(enum.StrEnum):
    NUMERIC = "numeric"
    BOOLEAN = "boolean"
    STRING = "string"


class MachineState(enum.StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    SETUP = "setup"
    STARVED = "starved"
    BLOCKED = "blocked"
    PLANNED_STOP = "planned_stop"
    UNPLANNED_STOP = "unplanned_stop"


@dataclass(frozen=True, slots=True)
class MeasurementDef:
    name: str
    unit: str = ""
    type: ValueType = ValueType.NUMERIC
    description: str = ""


@dataclass(frozen=True, slots=True)
class AssetType:
    tenant_id: int
    name: str
    description: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    measurements: tuple[MeasurementDef, ...] = ()
    events: tuple[str, ...] = ()

    def measurement(self, name: str) -> MeasurementDef | None:
        for m in self.measurements:
            if m.name == name:
                return m
        return None


@dataclass(frozen=True, slots=True)
class Asset:
    id: int
    tenant_id: int
    parent_id: int | None
    level: Level
    name: str  # slug, unique among siblings; part of the topic
    path: tuple[str, ...]  # slugs from the site down to this asset
    display_name: str = ""
    type_name: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    timezone: str | None = None  # sites only: an IANA zone

    @property
    def path_str(self) -> str:
        return "/".join(self.path)


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    tenant_id: int
    name: str
    username: str  # broker username: "{tenant}.{device}"
    secret_hash: str
    asset_ids: tuple[int, ...]
    enabled: bool = True
    gateway: bool = False
    created_at: datetime | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Series:
    id: int
    tenant_id: int
    asset_id: int
    measurement: str
    unit: str = ""
    type: ValueType = ValueType.NUMERIC


def device_username(tenant_slug: str, device_name: str) -> str:
    return f"{tenant_slug}.{device_name}"
