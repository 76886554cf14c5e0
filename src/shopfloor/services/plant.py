"""Apply a whole plant file to the registry idempotently, and export the registry as one.

Sites' shift calendars and cost models live in the site's attributes under reserved keys
(``domain.kpi_config``): the file and the API show them as sections, and an apply that leaves a
section out keeps the stored one (nothing is deleted by an apply).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shopfloor.domain import kpi_config
from shopfloor.domain.assets import Asset, Device, Level, MeasurementDef, ValueType
from shopfloor.domain.device_fieldbus import DeviceFieldbus
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.models import CostModel, ShiftCalendar
from shopfloor.domain.modbus_map import ModbusSpec, asset_of, check_modbus, registers_of
from shopfloor.domain.opcua_map import check_opcua
from shopfloor.domain.plant import (
    AreaSpec,
    AssetTypeSpec,
    DeviceSpec,
    LineSpec,
    MachineSpec,
    MeasurementSpec,
    PlantSpec,
    SiteSpec,
    machine_paths,
)
from shopfloor.domain.sparkplug import check_spec
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.plant_fieldbus import check_fieldbus_targets
from shopfloor.services.registry import IssuedSecret, RegistryService
from shopfloor.services.sparkplug import SparkplugBindings


@dataclass(slots=True)
class ApplyResult:
    created: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    device_secrets: list[IssuedSecret] = field(default_factory=list)

    def count(self, what: str, outcome: str) -> None:
        bucket = {"created": self.created, "updated": self.updated, "unchanged": self.unchanged}[outcome]
        bucket[what] = bucket.get(what, 0) + 1


class PlantService:
    def __init__(self, registry: RegistryService) -> None:
        self.registry = registry
        self.sparkplug = SparkplugBindings(registry)

    def apply(self, ctx: TenantContext, spec: PlantSpec) -> ApplyResult:
        """Make the registry contain everything in ``spec``; nothing is deleted.

        New devices get a fresh secret (returned once); existing devices keep theirs.
        """
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        reg, repo = self.registry, self.registry.repo
        result = ApplyResult()
        self._check_types_known(tid, spec)
        _check_kpi_attributes(spec)
        for d in spec.devices:
            if d.sparkplug is not None:
                check_spec(d.sparkplug, f"device {d.name!r}: sparkplug")
            if d.modbus is not None:
                self._check_modbus(tid, spec, d, d.modbus)
            if d.opcua is not None:
                check_opcua(d.opcua, f"device {d.name!r}: opcua")
        check_fieldbus_targets(self.registry.repo, tid, spec)
        for ts in spec.asset_types:
            measurements = [_measurement(ts.name, m) for m in ts.measurements]
            existing = repo.get_asset_type(tid, ts.name)
            new = (ts.description, dict(ts.attributes), tuple(measurements), tuple(ts.events))
            if existing and (existing.description, existing.attributes, existing.measurements,
                             existing.events) == new:
                result.count("asset_types", "unchanged")
                continue
            reg.put_asset_type(ctx, ts.name, description=ts.description, attributes=ts.attributes,
                               measurements=measurements, events=ts.events)
            result.count("asset_types", "updated" if existing else "created")
        for site in spec.sites:
            s = self._asset(ctx, result, None, Level.SITE, site.name, site.display_name, None,
                            self._site_attributes(tid, site), site.timezone)
            for area in site.areas:
                a = self._asset(ctx, result, s, Level.AREA, area.name, area.display_name, None, area.attributes)
                for line in area.lines:
                    ln = self._asset(ctx, result, a, Level.LINE, line.name, line.display_name, None,
                                     line.attributes)
                    for m in line.machines:
                        self._asset(ctx, result, ln, Level.MACHINE, m.name, m.display_name, m.type,
                                    m.attributes)
        for d in spec.devices:
            self._device(ctx, result, d)
        for d in spec.devices:
            if d.sparkplug is not None:
                device = repo.find_device(tid, d.name)
                if device is None:  # created just above
                    raise InvalidInput(f"device {d.name!r} vanished during the apply")
                before = self.sparkplug.stored(device)
                _, changed = self.sparkplug.put(ctx, device.id, d.sparkplug)
                result.count("sparkplug_nodes", "unchanged" if not changed else "updated" if before else "created")
        for d in spec.devices:
            if d.opcua is not None or d.modbus is not None:
                self._fieldbus(tid, result, d)
        return result

    def _fieldbus(self, tenant_id: int, result: ApplyResult, d: DeviceSpec) -> None:
        """Store the device's field-bus sections; a section the file leaves out keeps what is stored."""
        repo = self.registry.repo
        device = repo.find_device(tenant_id, d.name)
        if device is None:  # created just above
            raise InvalidInput(f"device {d.name!r} vanished during the apply")
        before = next((f for f in repo.list_device_fieldbus(tenant_id) if f.device_id == device.id), None)
        wanted = DeviceFieldbus(tenant_id, device.id,
                                d.opcua if d.opcua is not None else before.opcua if before else None,
                                d.modbus if d.modbus is not None else before.modbus if before else None)
        if wanted == before:
            result.count("fieldbus", "unchanged")
            return
        repo.set_device_fieldbus(tenant_id, device.id, wanted)
        result.count("fieldbus", "updated" if before else "created")

    def device_fieldbus(self, ctx: TenantContext, device_id: int) -> tuple[Device, list[str], DeviceFieldbus | None]:
        """The device, its asset paths and its stored field-bus sections (engineers: the edge agent's
        token); what ``GET /devices/{id}/fieldbus`` answers."""
        ctx.require(Role.ENGINEER)
        device = self.registry.device(ctx, device_id)
        repo = self.registry.repo
        paths = []
        for asset_id in device.asset_ids:
            asset = repo.get_asset(device.tenant_id, asset_id)
            if asset is not None:
                paths.append(asset.path_str)
        sections = next((f for f in repo.list_device_fieldbus(device.tenant_id) if f.device_id == device.id), None)
        return device, paths, sections

    def _site_attributes(self, tenant_id: int, site: SiteSpec) -> dict[str, Any]:
        """The site's attributes with its calendar and cost model under their reserved keys; a
        section the file leaves out keeps what is stored."""
        existing = self.registry.repo.find_asset(tenant_id, (site.name,))
        stored = existing.attributes if existing else {}
        out = dict(site.attributes)
        sections: dict[str, dict[str, Any] | None] = {
            kpi_config.CALENDAR: None if site.calendar is None else kpi_config.calendar_to_obj(site.calendar),
            kpi_config.COST_MODEL: None if site.cost_model is None else kpi_config.cost_model_to_obj(site.cost_model),
        }
        for key, section in sections.items():
            if section is not None:
                out[key] = section
            elif key in stored:
                out[key] = stored[key]
        return out

    # -- one site's calendar and cost model (GET/PUT /sites/{id}/calendar and /cost-model) ------
    def site_calendar(self, ctx: TenantContext, site_id: int) -> ShiftCalendar | None:
        site = self._site(ctx, site_id)
        return kpi_config.site_calendar(site.attributes, site.timezone)

    def put_site_calendar(self, ctx: TenantContext, site_id: int, obj: Any) -> ShiftCalendar | None:
        """Replace the site's calendar with ``obj`` (JSON; the site's zone unless it names one), or
        remove it with None (then every moment counts as scheduled)."""
        site = self._site(ctx, site_id)
        cal = None if obj is None else kpi_config.decode_calendar(obj, site.timezone or "UTC")
        self._put_section(ctx, site, kpi_config.CALENDAR, None if cal is None else kpi_config.calendar_to_obj(cal))
        return cal

    def site_cost_model(self, ctx: TenantContext, site_id: int) -> CostModel | None:
        site = self._site(ctx, site_id)
        return kpi_config.site_cost_model(site.attributes, site.timezone)

    def put_site_cost_model(self, ctx: TenantContext, site_id: int, obj: Any) -> CostModel | None:
        """Replace the site's cost model with ``obj`` (JSON), or remove it with None."""
        site = self._site(ctx, site_id)
        model = None if obj is None else kpi_config.decode_cost_model(obj, site.timezone or "UTC")
        self._put_section(ctx, site, kpi_config.COST_MODEL,
                          None if model is None else kpi_config.cost_model_to_obj(model))
        return model

    def _site(self, ctx: TenantContext, site_id: int) -> Asset:
        site = self.registry.asset(ctx, site_id)
        if site.level is not Level.SITE:
            raise InvalidInput(f"asset {site_id} is a {site.level.value}; calendars and cost models belong to sites")
        return site

    def _put_section(self, ctx: TenantContext, site: Asset, key: str, value: dict[str, Any] | None) -> None:
        ctx.require(Role.ENGINEER)
        attributes = {k: v for k, v in site.attributes.items() if k != key}
        if value is not None:
            attributes[key] = value
        if attributes != site.attributes:
            self.registry.update_asset(ctx, site.id, attributes=attributes)

    def _check_modbus(self, tenant_id: int, spec: PlantSpec, d: DeviceSpec, modbus: ModbusSpec) -> None:
        """The device's register map is sound, and feeds only measurements of machines it is bound to."""
        where = f"device {d.name!r}: modbus"
        default = d.assets[0] if len(d.assets) == 1 else ""
        check_modbus(modbus, where, default)
        bound = [tuple(x for x in p.split("/") if x) for p in d.assets]
        types = {"/".join(path): m.type for path, m in machine_paths(spec)}
        declared = {t.name: {m.name for m in t.measurements} for t in spec.asset_types}
        for reg in registers_of(modbus):
            asset = asset_of(reg, modbus) or default
            path = tuple(x for x in asset.split("/") if x)
            if not any(path[:len(b)] == b for b in bound):
                raise InvalidInput(f"{where}: register {reg.measurement!r} feeds {asset}, which the device is "
                                   "not bound to (its assets, or machines under them)")
            key = "/".join(path)
            if key in types:
                type_name = types[key]
            else:
                found = self.registry.repo.find_asset(tenant_id, path)
                type_name = found.type_name if found else None
            if type_name is None:
                raise InvalidInput(f"{where}: register {reg.measurement!r}: {asset} is not a typed machine "
                                   "of the file or the registry")
            if type_name in declared:
                names = declared[type_name]
            else:
                stored = self.registry.repo.get_asset_type(tenant_id, type_name)
                names = {m.name for m in stored.measurements} if stored else set()
            if reg.measurement not in names:
                raise InvalidInput(f"{where}: {reg.measurement!r} is not a measurement of {asset}'s type "
                                   f"{type_name!r}")

    def _check_types_known(self, tenant_id: int, spec: PlantSpec) -> None:
        known = {t.name for t in spec.asset_types}
        for s in spec.sites:
            for a in s.areas:
                for ln in a.lines:
                    for m in ln.machines:
                        if (m.type and m.type not in known
                                and self.registry.repo.get_asset_type(tenant_id, m.type) is None):
                            raise InvalidInput(f"machine {s.name}/{a.name}/{ln.name}/{m.name}: asset type "
                                               f"{m.type!r} is neither in the file nor in the registry")

    def _asset(self, ctx: TenantContext, result: ApplyResult, parent: Asset | None, level: Level, name: str,
               display_name: str, type_name: str | None, attributes: dict[str, Any],
               timezone: str | None = None) -> Asset:
        tid = ctx.require_tenant()
        path = (*parent.path, name) if parent else (name,)
        existing = self.registry.repo.find_asset(tid, path)
        if existing is None:
            result.count(level.value + "s", "created")
            return self.registry.create_asset(ctx, level, name, parent_id=parent.id if parent else None,
                                              display_name=display_name, type_name=type_name,
                                              attributes=attributes, timezone=timezone)
        # a missing type (like a missing time zone) leaves the stored one alone: the registry
        # cannot un-type an asset, so comparing it would report "updated" on every apply
        same = (existing.display_name == display_name and existing.attributes == attributes
                and (type_name is None or existing.type_name == type_name)
                and (timezone is None or existing.timezone == timezone))
        if same:
            result.count(level.value + "s", "unchanged")
            return existing
        result.count(level.value + "s", "updated")
        return self.registry.update_asset(ctx, existing.id, display_name=display_name, type_name=type_name,
                                          attributes=attributes, timezone=timezone)

    def _device(self, ctx: TenantContext, result: ApplyResult, d: DeviceSpec) -> None:
        tid = ctx.require_tenant()
        asset_ids = []
        for p in d.assets:
            asset = self.registry.repo.find_asset(tid, tuple(x for x in p.split("/") if x))
            if asset is None:
                raise InvalidInput(f"device {d.name!r}: no asset at path {p!r}")
            if asset.id not in asset_ids:  # the registry keeps each asset once
                asset_ids.append(asset.id)
        existing = self.registry.repo.find_device(tid, d.name)
        if existing is None:
            dev, secret = self.registry.create_device(ctx, d.name, asset_ids, gateway=d.gateway,
                                                      description=d.description)
            if not d.enabled:
                self.registry.update_device(ctx, dev.id, enabled=False)
            result.device_secrets.append(IssuedSecret(dev.id, dev.name, secret, dev.username))
            result.count("devices", "created")
            return
        if (list(existing.asset_ids) == asset_ids and existing.enabled == d.enabled
                and existing.description == d.description):
            result.count("devices", "unchanged")
            return
        self.registry.update_device(ctx, existing.id, enabled=d.enabled, asset_ids=asset_ids,
                                    description=d.description)
        result.count("devices", "updated")

    def export(self, ctx: TenantContext) -> PlantSpec:
        tid = ctx.require_tenant()
        repo = self.registry.repo
        types = [
            AssetTypeSpec(t.name, t.description, dict(t.attributes),
                          [MeasurementSpec(m.name, m.unit, m.type.value, m.description) for m in t.measurements],
                          list(t.events))
            for t in repo.list_asset_types(tid)
        ]
        assets = repo.list_assets(tid)
        children: dict[int | None, list[Asset]] = {}
        for a in sorted(assets, key=lambda a: a.name):
            children.setdefault(a.parent_id, []).append(a)
        sites = []
        for s in children.get(None, []):
            areas = []
            for a in children.get(s.id, []):
                lines = []
                for ln in children.get(a.id, []):
                    machines = [MachineSpec(m.name, m.type_name, m.display_name, dict(m.attributes))
                                for m in children.get(ln.id, [])]
                    lines.append(LineSpec(ln.name, ln.display_name, dict(ln.attributes), machines))
                areas.append(AreaSpec(a.name, a.display_name, dict(a.attributes), lines))
            attributes = {k: v for k, v in s.attributes.items() if k not in kpi_config.SECTIONS}
            sites.append(SiteSpec(s.name, s.timezone or "UTC", s.display_name, attributes,
                                  calendar=kpi_config.site_calendar(s.attributes, s.timezone),
                                  cost_model=kpi_config.site_cost_model(s.attributes, s.timezone), areas=areas))
        by_id = {a.id: a for a in assets}
        nodes = {n.device_id: n.mapping for n in repo.list_sparkplug_nodes(tid) if n.approved}
        fieldbus = {f.device_id: f for f in repo.list_device_fieldbus(tid)}
        devices = []
        for d in sorted(repo.list_devices(tid), key=lambda d: d.name):
            fb = fieldbus.get(d.id)
            devices.append(DeviceSpec(d.name, [by_id[i].path_str for i in d.asset_ids if i in by_id], d.gateway,
                                      d.enabled, d.description, nodes.get(d.id),
                                      modbus=fb.modbus if fb else None, opcua=fb.opcua if fb else None))
        return PlantSpec(types, sites, devices)


def _check_kpi_attributes(spec: PlantSpec) -> None:
    """Every KPI attribute of the file is valid before anything is written."""
    for t in spec.asset_types:
        kpi_config.check_attributes(t.attributes, f"asset type {t.name}")
    for s in spec.sites:
        for key, section in kpi_config.SECTIONS.items():
            if key in s.attributes:
                raise InvalidInput(f"site {s.name}: {key!r} is kept by shopfloor; write a {section!r} section "
                                   "for the site instead")
        kpi_config.check_attributes(s.attributes, f"site {s.name}")
        for a in s.areas:
            kpi_config.check_attributes(a.attributes, f"area {s.name}/{a.name}")
            for ln in a.lines:
                kpi_config.check_attributes(ln.attributes, f"line {s.name}/{a.name}/{ln.name}")
                for m in ln.machines:
                    kpi_config.check_attributes(m.attributes, f"machine {s.name}/{a.name}/{ln.name}/{m.name}")


def _measurement(type_name: str, m: MeasurementSpec) -> MeasurementDef:
    try:
        vt = ValueType(m.type)
    except ValueError:
        raise InvalidInput(f"asset type {type_name!r}, measurement {m.name!r}: type {m.type!r} must be "
                           "numeric, boolean or string") from None
    return MeasurementDef(m.name, m.unit, vt, m.description)
