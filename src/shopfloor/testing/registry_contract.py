"""The contract every ``RegistryRepository`` must pass.

Subclass ``RegistryContract`` in a test module (its name starting with ``Test``) and give it a
``registry`` fixture that returns a new, empty registry for each test.

Orderings the contract fixes: tenants, tokens and series by id; asset types and devices by name;
assets by path (tree order).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from shopfloor.domain.assets import Asset, AssetType, Level, MeasurementDef, ValueType
from shopfloor.domain.device_fieldbus import DeviceFieldbus
from shopfloor.domain.errors import Conflict, NotFound
from shopfloor.domain.modbus_map import ModbusSpec, PollGroup, RegisterSpec
from shopfloor.domain.opcua_map import Deadband, NodeMap, OpcUaSpec
from shopfloor.domain.sparkplug import Approval, MetricMap, SparkplugNode, SparkplugSpec
from shopfloor.domain.tenancy import Role, Tenant
from shopfloor.ports.registry import RegistryRepository

N = ValueType.NUMERIC


@dataclass(frozen=True)
class Plant:
    tenant: Tenant
    site: Asset
    area: Asset
    line: Asset
    machine: Asset


def make_plant(registry: RegistryRepository, slug: str = "acme") -> Plant:
    """A tenant with one site/area/line/machine branch."""
    tenant = registry.create_tenant(slug, slug.title())
    t = tenant.id
    site = registry.create_asset(t, None, Level.SITE, "berlin", timezone="Europe/Berlin")
    area = registry.create_asset(t, site.id, Level.AREA, "press-shop")
    line = registry.create_asset(t, area.id, Level.LINE, "line-1")
    machine = registry.create_asset(t, line.id, Level.MACHINE, "press-01", display_name="Press 1",
                                    attributes={"ideal_cycle_s": 2.5})
    return Plant(tenant, site, area, line, machine)


def press_type(tenant_id: int, name: str = "press") -> AssetType:
    return AssetType(
        tenant_id=tenant_id, name=name, description="A hydraulic press",
        attributes={"ideal_cycle_s": 2.5, "rated_kw": 40, "tags": ["a", "b"], "nested": {"ok": True}},
        measurements=(MeasurementDef("temperature", "degC", N, "oil temperature"),
                      MeasurementDef("running", "", ValueType.BOOLEAN)),
        events=("state", "count"),
    )


class RegistryContract:
    # -- tenants -------------------------------------------------------------------------------

    def test_tenants_round_trip(self, registry: RegistryRepository) -> None:
        a = registry.create_tenant("acme", "ACME Corp")
        b = registry.create_tenant("globex", "Globex")
        assert a.id != b.id
        assert a.created_at.tzinfo is not None
        assert registry.get_tenant(a.id) == a
        assert registry.find_tenant("globex") == b
        assert registry.list_tenants() == [a, b]
        assert registry.get_tenant(9999) is None
        assert registry.find_tenant("nobody") is None

    def test_duplicate_tenant_slug_conflicts(self, registry: RegistryRepository) -> None:
        registry.create_tenant("acme", "ACME")
        with pytest.raises(Conflict):
            registry.create_tenant("acme", "Another ACME")
        assert len(registry.list_tenants()) == 1

    # -- tokens --------------------------------------------------------------------------------

    def test_tokens_are_found_by_hash_and_listed_per_owner(self, registry: RegistryRepository) -> None:
        acme = registry.create_tenant("acme", "ACME")
        globex = registry.create_tenant("globex", "Globex")
        platform = registry.create_token(None, "root", Role.ADMIN, "h-root")
        t1 = registry.create_token(acme.id, "ci", Role.ENGINEER, "h-ci")
        t2 = registry.create_token(globex.id, "viewer", Role.VIEWER, "h-view")
        assert platform.is_platform and not t1.is_platform
        assert t1.role is Role.ENGINEER and not t1.revoked and t1.created_at.tzinfo is not None
        assert registry.find_token("h-ci") == t1
        assert registry.find_token("h-unknown") is None
        assert registry.list_tokens(None) == [platform]
        assert registry.list_tokens(acme.id) == [t1]
        assert registry.list_tokens(globex.id) == [t2]

    def test_revoked_token_is_not_found_but_still_listed(self, registry: RegistryRepository) -> None:
        acme = registry.create_tenant("acme", "ACME")
        token = registry.create_token(acme.id, "ci", Role.OPERATOR, "h-ci")
        registry.revoke_token(acme.id, token.id)
        assert registry.find_token("h-ci") is None
        [listed] = registry.list_tokens(acme.id)
        assert listed.id == token.id and listed.revoked

    def test_revoke_only_within_the_owner(self, registry: RegistryRepository) -> None:
        acme = registry.create_tenant("acme", "ACME")
        globex = registry.create_tenant("globex", "Globex")
        tenant_token = registry.create_token(acme.id, "ci", Role.ADMIN, "h-ci")
        platform_token = registry.create_token(None, "root", Role.ADMIN, "h-root")
        with pytest.raises(NotFound):
            registry.revoke_token(globex.id, tenant_token.id)
        with pytest.raises(NotFound):
            registry.revoke_token(None, tenant_token.id)
        with pytest.raises(NotFound):
            registry.revoke_token(acme.id, platform_token.id)
        with pytest.raises(NotFound):
            registry.revoke_token(acme.id, 9999)
        assert registry.find_token("h-ci") == tenant_token
        assert registry.find_token("h-root") == platform_token
        registry.revoke_token(None, platform_token.id)
        assert registry.find_token("h-root") is None

    def test_token_conflicts_and_missing_tenant(self, registry: RegistryRepository) -> None:
        acme = registry.create_tenant("acme", "ACME")
        registry.create_token(acme.id, "ci", Role.ADMIN, "h-ci")
        with pytest.raises(Conflict):
            registry.create_token(None, "other", Role.VIEWER, "h-ci")
        with pytest.raises(NotFound):
            registry.create_token(9999, "ghost", Role.VIEWER, "h-ghost")

    # -- asset types ---------------------------------------------------------------------------

    def test_asset_type_round_trip_and_replace(self, registry: RegistryRepository) -> None:
        acme = registry.create_tenant("acme", "ACME")
        stored = registry.put_asset_type(press_type(acme.id))
        assert stored == press_type(acme.id)
        assert registry.get_asset_type(acme.id, "press") == stored
        assert stored.measurement("running") == MeasurementDef("running", "", ValueType.BOOLEAN)
        changed = AssetType(tenant_id=acme.id, name="press", description="v2",
                            measurements=(MeasurementDef("power", "kW"),))
        assert registry.put_asset_type(changed) == changed
        assert registry.get_asset_type(acme.id, "press") == changed
        assert registry.get_asset_type(acme.id, "lathe") is None

    def test_asset_types_listed_by_name_and_deleted(self, registry: RegistryRepository) -> None:
        acme = registry.create_tenant("acme", "ACME")
        for name in ("welder", "lathe", "press"):
            registry.put_asset_type(press_type(acme.id, name))
        assert [t.name for t in registry.list_asset_types(acme.id)] == ["lathe", "press", "welder"]
        registry.delete_asset_type(acme.id, "lathe")
        assert registry.get_asset_type(acme.id, "lathe") is None
        with pytest.raises(NotFound):
            registry.delete_asset_type(acme.id, "lathe")
        with pytest.raises(NotFound):
            registry.put_asset_type(press_type(9999))

    def test_asset_type_in_use_cannot_be_deleted(self, registry: RegistryRepository) -> None:
        plant = make_plant(registry)
        t = plant.tenant.id
        registry.put_asset_type(press_type(t))
        registry.update_asset(t, plant.machine.id, type_name="press")
        with pytest.raises(Conflict):
            registry.delete_asset_type(t, "press")
        assert registry.get_asset_type(t, "press") is not None

    def test_stored_values_are_not_shared_with_callers(self, registry: RegistryRepository) -> None:
        plant = make_plant(registry)
        t = plant.tenant.id
        attributes = {"ideal_cycle_s": 1.0}
        machine = registry.update_asset(t, plant.machine.id, attributes=attributes)
        attributes["ideal_cycle_s"] = 99.0
        machine.attributes["ideal_cycle_s"] = 42.0
        asset_type = registry.put_asset_type(press_type(t))
        asset_type.attributes["rated_kw"] = 0
        again = registry.get_asset(t, plant.machine.id)
        assert again is not None and again.attributes == {"ideal_cycle_s": 1.0}
        assert registry.get_asset_type(t, "press") == press_type(t)

    # -- assets --------------------------------------------------------------------------------

    def test_asset_tree_paths_and_find(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        assert p.site.path == ("berlin",) and p.site.parent_id is None and p.site.level is Level.SITE
        assert p.machine.path == ("berlin", "press-shop", "line-1", "press-01")
        assert p.machine.parent_id == p.line.id and p.machine.level is Level.MACHINE
        assert p.machine.display_name == "Press 1" and p.machine.attributes == {"ideal_cycle_s": 2.5}
        assert p.site.timezone == "Europe/Berlin" and p.machine.timezone is None
        assert registry.get_asset(t, p.machine.id) == p.machine
        assert registry.find_asset(t, ["berlin", "press-shop", "line-1", "press-01"]) == p.machine
        assert registry.find_asset(t, ("berlin",)) == p.site
        assert registry.find_asset(t, ("press-01",)) is None
        assert registry.find_asset(t, ("berlin", "line-1")) is None
        assert registry.find_asset(t, ()) is None
        assert registry.get_asset(t, 9999) is None

    def test_sibling_names_are_unique_sites_included(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        with pytest.raises(Conflict):
            registry.create_asset(t, p.line.id, Level.MACHINE, "press-01")
        with pytest.raises(Conflict):
            registry.create_asset(t, None, Level.SITE, "berlin")
        other_line = registry.create_asset(t, p.area.id, Level.LINE, "line-2")
        twin = registry.create_asset(t, other_line.id, Level.MACHINE, "press-01")
        assert twin.path == ("berlin", "press-shop", "line-2", "press-01")
        other = registry.create_tenant("globex", "Globex")
        assert registry.create_asset(other.id, None, Level.SITE, "berlin").path == ("berlin",)

    def test_create_needs_an_existing_parent_in_the_tenant(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        with pytest.raises(NotFound):
            registry.create_asset(p.tenant.id, 9999, Level.AREA, "x")
        other = registry.create_tenant("globex", "Globex")
        with pytest.raises(NotFound):
            registry.create_asset(other.id, p.site.id, Level.AREA, "sneaky")
        with pytest.raises(NotFound):
            registry.create_asset(9999, None, Level.SITE, "ghost")

    def test_update_asset_changes_only_what_is_given(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        registry.put_asset_type(press_type(t))
        updated = registry.update_asset(t, p.machine.id, type_name="press")
        assert updated == Asset(p.machine.id, t, p.line.id, Level.MACHINE, "press-01", p.machine.path,
                                "Press 1", "press", {"ideal_cycle_s": 2.5}, None)
        updated = registry.update_asset(t, p.machine.id, display_name="Big press",
                                        attributes={"x": [1, None]})
        assert (updated.display_name, updated.type_name, updated.attributes) == ("Big press", "press",
                                                                                  {"x": [1, None]})
        site = registry.update_asset(t, p.site.id, timezone="UTC")
        assert site.timezone == "UTC" and site.path == ("berlin",)
        assert registry.get_asset(t, p.machine.id) == updated
        with pytest.raises(NotFound):
            registry.update_asset(t, 9999, display_name="x")

    def test_list_assets_filters_and_tree_order(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        press2 = registry.create_asset(t, p.line.id, Level.MACHINE, "press-02")
        aachen = registry.create_asset(t, None, Level.SITE, "aachen")
        all_assets = registry.list_assets(t)
        assert [a.path_str for a in all_assets] == [
            "aachen", "berlin", "berlin/press-shop", "berlin/press-shop/line-1",
            "berlin/press-shop/line-1/press-01", "berlin/press-shop/line-1/press-02",
        ]
        assert registry.list_assets(t, level=Level.SITE) == [aachen, p.site]
        assert registry.list_assets(t, parent_id=p.line.id) == [p.machine, press2]
        assert registry.list_assets(t, level=Level.LINE, parent_id=p.area.id) == [p.line]
        assert registry.list_assets(t, level=Level.AREA, parent_id=p.line.id) == []

    def test_delete_asset_refuses_children_and_bound_devices(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        with pytest.raises(Conflict):
            registry.delete_asset(t, p.line.id)
        device = registry.create_device(t, "plc-1", "acme.plc-1", "hash", [p.machine.id])
        with pytest.raises(Conflict):
            registry.delete_asset(t, p.machine.id)
        assert registry.get_asset(t, p.machine.id) == p.machine
        registry.update_device(t, device.id, asset_ids=[])
        registry.delete_asset(t, p.machine.id)
        assert registry.get_asset(t, p.machine.id) is None
        with pytest.raises(NotFound):
            registry.delete_asset(t, p.machine.id)

    def test_delete_asset_removes_its_series(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        registry.ensure_series(t, p.machine.id, "temperature", "degC", N)
        kept = registry.ensure_series(t, p.line.id, "output", "parts", N)
        registry.delete_asset(t, p.machine.id)
        assert registry.list_series(t) == [kept]

    def test_ids_are_not_reused_after_delete(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        registry.delete_asset(t, p.machine.id)
        again = registry.create_asset(t, p.line.id, Level.MACHINE, "press-01")
        assert again.id > p.machine.id

    # -- series --------------------------------------------------------------------------------

    def test_ensure_series_is_idempotent(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        temp = registry.ensure_series(t, p.machine.id, "temperature", "degC", N)
        assert (temp.tenant_id, temp.asset_id, temp.measurement, temp.unit, temp.type) == (
            t, p.machine.id, "temperature", "degC", N)
        version = registry.version()
        assert registry.ensure_series(t, p.machine.id, "temperature", "degC", N) == temp
        assert registry.version() == version
        running = registry.ensure_series(t, p.machine.id, "running", "", ValueType.BOOLEAN)
        other_asset = registry.ensure_series(t, p.line.id, "temperature", "degC", N)
        assert len({temp.id, running.id, other_asset.id}) == 3
        assert registry.get_series(t, temp.id) == temp
        assert registry.list_series(t) == [temp, running, other_asset]
        assert registry.list_series(t, p.machine.id) == [temp, running]
        assert registry.get_series(t, 9999) is None

    def test_ensure_series_updates_unit_and_type(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        temp = registry.ensure_series(t, p.machine.id, "temperature", "degC", N)
        version = registry.version()
        changed = registry.ensure_series(t, p.machine.id, "temperature", "K", N)
        assert changed.id == temp.id and changed.unit == "K"
        assert registry.version() > version
        assert registry.get_series(t, temp.id) == changed

    def test_ensure_series_needs_the_tenants_asset(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        with pytest.raises(NotFound):
            registry.ensure_series(p.tenant.id, 9999, "temperature", "degC", N)

    def test_concurrent_ensure_series_gives_one_id(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        names = [f"m{i % 5}" for i in range(40)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            made = list(pool.map(lambda m: registry.ensure_series(t, p.machine.id, m, "", N), names))
        ids = {s.measurement: s.id for s in made}
        assert all(ids[s.measurement] == s.id for s in made)
        assert len(registry.list_series(t)) == 5

    # -- devices -------------------------------------------------------------------------------

    def test_device_round_trip(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        gw = registry.create_device(t, "gw-1", "acme.gw-1", "hash-1", [p.machine.id, p.line.id],
                                    gateway=True, description="edge gateway")
        assert (gw.tenant_id, gw.name, gw.username, gw.secret_hash) == (t, "gw-1", "acme.gw-1", "hash-1")
        assert gw.asset_ids == (p.machine.id, p.line.id) and gw.gateway and gw.enabled
        assert gw.description == "edge gateway" and gw.created_at is not None
        plc = registry.create_device(t, "plc-1", "acme.plc-1", "hash-2", [p.machine.id])
        assert not plc.gateway
        assert registry.get_device(t, gw.id) == gw
        assert registry.find_device(t, "plc-1") == plc
        assert registry.find_device_by_username("acme.gw-1") == gw
        assert registry.list_devices(t) == [gw, plc]
        assert registry.get_device(t, 9999) is None
        assert registry.find_device(t, "nope") is None
        assert registry.find_device_by_username("acme.nope") is None

    def test_device_name_and_username_conflicts(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        globex = registry.create_tenant("globex", "Globex")
        registry.create_device(p.tenant.id, "plc-1", "acme.plc-1", "h", [])
        with pytest.raises(Conflict):
            registry.create_device(p.tenant.id, "plc-1", "acme.plc-1b", "h", [])
        with pytest.raises(Conflict):
            registry.create_device(globex.id, "other", "acme.plc-1", "h", [])
        same_name = registry.create_device(globex.id, "plc-1", "globex.plc-1", "h", [])
        assert same_name.tenant_id == globex.id

    def test_update_device_changes_only_what_is_given(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        first, second = "hash-1", "hash-2"
        device = registry.create_device(t, "plc-1", "acme.plc-1", first, [p.machine.id])
        updated = registry.update_device(t, device.id, enabled=False)
        assert not updated.enabled and updated.secret_hash == first and updated.asset_ids == (p.machine.id,)
        updated = registry.update_device(t, device.id, secret_hash=second,
                                         asset_ids=[p.line.id, p.machine.id], description="moved")
        assert (updated.secret_hash, updated.asset_ids, updated.description, updated.enabled) == (
            second, (p.line.id, p.machine.id), "moved", False)
        assert updated.created_at == device.created_at and updated.username == device.username
        assert registry.get_device(t, device.id) == updated
        with pytest.raises(NotFound):
            registry.update_device(t, 9999, enabled=True)
        with pytest.raises(NotFound):
            registry.update_device(t, device.id, asset_ids=[9999])

    def test_delete_device(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        device = registry.create_device(t, "plc-1", "acme.plc-1", "h", [p.machine.id])
        registry.delete_device(t, device.id)
        assert registry.get_device(t, device.id) is None
        assert registry.find_device_by_username("acme.plc-1") is None
        with pytest.raises(NotFound):
            registry.delete_device(t, device.id)
        registry.delete_asset(t, p.machine.id)  # no longer bound

    # -- Sparkplug edge nodes ------------------------------------------------------------------

    def test_sparkplug_node_round_trip_replace_and_remove(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        gw = registry.create_device(t, "gw-1", "acme.gw-1", "h", [p.line.id], gateway=True)
        plc = registry.create_device(t, "plc-1", "acme.plc-1", "h", [p.machine.id])
        mapping = SparkplugSpec(edge_node="GW-1", devices={"Press 1": "berlin/press-shop/line-1/press-01"},
                                metrics={"Oil/Temp": MetricMap("temperature", scale=0.1, offset=-2.5),
                                         "Force": "force", "Debug": None})
        node = SparkplugNode(t, gw.id, "acme", "GW-1", Approval.QUARANTINED, mapping,
                             seen={"": ["bdSeq", "Uptime"], "Press 1": ["Oil/Temp"]})
        stored = registry.set_sparkplug_node(t, gw.id, node)
        assert stored == node
        other = registry.set_sparkplug_node(t, plc.id, SparkplugNode(0, 0, "acme.north", "plc-1"))
        assert other == SparkplugNode(t, plc.id, "acme.north", "plc-1")  # ids come from the arguments
        assert registry.list_sparkplug_nodes(t) == [node, other]
        assert registry.list_sparkplug_nodes() == [node, other]
        approved = SparkplugNode(t, gw.id, "acme", "GW-1", Approval.APPROVED, mapping)
        assert registry.set_sparkplug_node(t, gw.id, approved) == approved
        moved = SparkplugNode(t, gw.id, "acme.north", "GW-1")
        assert registry.set_sparkplug_node(t, gw.id, moved) == moved
        assert registry.list_sparkplug_nodes(t) == [moved, other]
        assert registry.set_sparkplug_node(t, plc.id, None) is None
        assert registry.list_sparkplug_nodes(t) == [moved]
        assert registry.set_sparkplug_node(t, plc.id, None) is None  # removing nothing is fine

    # -- field-bus sections --------------------------------------------------------------------

    def test_fieldbus_sections_round_trip_replace_and_remove(self, registry: RegistryRepository) -> None:
        p = make_plant(registry)
        t = p.tenant.id
        gw = registry.create_device(t, "gw-1", "acme.gw-1", "h", [p.line.id], gateway=True)
        plc = registry.create_device(t, "plc-1", "acme.plc-1", "h", [p.machine.id])
        ua = OpcUaSpec("opc.tcp://10.0.0.5:4840", {
            "ns=2;s=Press.Temp": NodeMap("temperature", scale=0.1, deadband=Deadband(0.5)),
            "ns=2;i=17": NodeMap("force", asset="berlin/press-shop/line-1/press-01", writable=True)},
            username="edge", password_env="PRESS_UA_PASSWORD", publishing_interval_ms=250.0)
        mb = ModbusSpec("10.0.0.21", [PollGroup([RegisterSpec("temperature", 100, type="float32", word_order="little",
                                                               scale=1e20)], name="fast", interval_s=0.5)],
                        port=5020, unit=3)
        both = registry.set_device_fieldbus(t, gw.id, DeviceFieldbus(0, 0, ua, mb))
        assert both == DeviceFieldbus(t, gw.id, ua, mb)  # ids come from the arguments
        only_modbus = registry.set_device_fieldbus(t, plc.id, DeviceFieldbus(t, plc.id, modbus=mb))
        assert registry.list_device_fieldbus(t) == [both, only_modbus]
        assert registry.list_device_fieldbus(t)[0].opcua.password_env == "PRESS_UA_PASSWORD"  # type: ignore[union-attr]
        replaced = DeviceFieldbus(t, gw.id, opcua=ua)
        assert registry.set_device_fieldbus(t, gw.id, replaced) == replaced
        assert registry.list_device_fieldbus(t) == [replaced, only_modbus]
        assert registry.set_device_fieldbus(t, plc.id, DeviceFieldbus(t, plc.id)) is None  # empty: removed
        assert registry.set_device_fieldbus(t, plc.id, None) is None  # removing nothing is fine
        assert registry.list_device_fieldbus(t) == [replaced]
        registry.delete_device(t, gw.id)
        assert registry.list_device_fieldbus(t) == []

    def test_fieldbus_sections_belong_to_a_device_of_the_tenant(self, registry: RegistryRepository) -> None:
        a, b = make_plant(registry, "acme"), make_plant(registry, "globex")
        dev = registry.create_device(a.tenant.id, "plc-1", "acme.plc-1", "h", [a.machine.id])
        sections = DeviceFieldbus(0, 0, modbus=ModbusSpec("plc", [PollGroup([RegisterSpec("t", 0)])]))
        with pytest.raises(NotFound):
            registry.set_device_fieldbus(b.tenant.id, dev.id, sections)
        with pytest.raises(NotFound):
            registry.set_device_fieldbus(a.tenant.id, 9999, sections)
        with pytest.raises(NotFound):
            registry.set_device_fieldbus(b.tenant.id, dev.id, None)
        version = registry.version()
        registry.set_device_fieldbus(a.tenant.id, dev.id, sections)
        assert registry.version() != version
        assert registry.list_device_fieldbus(b.tenant.id) == []
        assert [f.device_id for f in registry.list_device_fieldbus(a.tenant.id)] == [dev.id]

    def test_sparkplug_edge_node_is_unique_on_the_broker(self, registry: RegistryRepository) -> None:
        a = make_plant(registry, "acme")
        b = make_plant(registry, "globex")
        d1 = registry.create_device(a.tenant.id, "gw-1", "acme.gw-1", "h", [a.line.id])
        d2 = registry.create_device(a.tenant.id, "gw-2", "acme.gw-2", "h", [a.line.id])
        d3 = registry.create_device(b.tenant.id, "gw-3", "globex.gw-3", "h", [b.line.id])
        registry.set_sparkplug_node(a.tenant.id, d1.id, SparkplugNode(0, 0, "acme", "edge"))
        before = registry.version()
        with pytest.raises(Conflict):
            registry.set_sparkplug_node(a.tenant.id, d2.id, SparkplugNode(0, 0, "acme", "edge"))
        with pytest.raises(Conflict):
            registry.set_sparkplug_node(b.tenant.id, d3.id, SparkplugNode(0, 0, "acme", "edge"))
        assert registry.version() == before
        registry.set_sparkplug_node(a.tenant.id, d2.id, SparkplugNode(0, 0, "acme", "Edge"))  # ids are case-sensitive
        assert [n.device_id for n in registry.list_sparkplug_nodes()] == [d2.id, d1.id]  # "Edge" < "edge"

    def test_sparkplug_node_belongs_to_a_device_of_the_tenant(self, registry: RegistryRepository) -> None:
        a = make_plant(registry, "acme")
        b = make_plant(registry, "globex")
        dev = registry.create_device(a.tenant.id, "gw-1", "acme.gw-1", "h", [a.line.id])
        with pytest.raises(NotFound):
            registry.set_sparkplug_node(b.tenant.id, dev.id, SparkplugNode(0, 0, "globex", "gw-1"))
        with pytest.raises(NotFound):
            registry.set_sparkplug_node(a.tenant.id, 9999, SparkplugNode(0, 0, "acme", "x"))
        with pytest.raises(NotFound):
            registry.set_sparkplug_node(b.tenant.id, dev.id, None)
        registry.set_sparkplug_node(a.tenant.id, dev.id, SparkplugNode(0, 0, "acme", "gw-1"))
        assert registry.list_sparkplug_nodes(b.tenant.id) == []
        registry.delete_device(a.tenant.id, dev.id)
        assert registry.list_sparkplug_nodes() == []
        again = registry.create_device(a.tenant.id, "gw-9", "acme.gw-9", "h", [a.line.id])
        registry.set_sparkplug_node(a.tenant.id, again.id, SparkplugNode(0, 0, "acme", "gw-1"))  # free again

    # -- tenant isolation ----------------------------------------------------------------------

    def test_tenants_cannot_reach_each_others_data(self, registry: RegistryRepository) -> None:
        a = make_plant(registry, "acme")
        b = make_plant(registry, "globex")
        ta, tb = a.tenant.id, b.tenant.id
        registry.put_asset_type(press_type(ta, "press-a"))
        series = registry.ensure_series(ta, a.machine.id, "temperature", "degC", N)
        device = registry.create_device(ta, "plc-a", "acme.plc-a", "h", [a.machine.id])
        token = registry.create_token(ta, "ci", Role.ADMIN, "h-a")

        assert registry.get_asset(tb, a.machine.id) is None
        assert registry.get_series(tb, series.id) is None
        assert registry.get_device(tb, device.id) is None
        assert registry.find_device(tb, "plc-a") is None
        assert registry.get_asset_type(tb, "press-a") is None
        assert a.machine.id not in {x.id for x in registry.list_assets(tb)}
        assert registry.list_assets(tb, parent_id=a.line.id) == []
        assert registry.list_series(tb) == [] and registry.list_series(tb, a.machine.id) == []
        assert registry.list_devices(tb) == []
        assert registry.list_tokens(tb) == []
        assert registry.list_asset_types(tb) == []

        with pytest.raises(NotFound):
            registry.update_asset(tb, a.machine.id, display_name="pwned")
        with pytest.raises(NotFound):
            registry.delete_asset(tb, a.machine.id)
        with pytest.raises(NotFound):
            registry.ensure_series(tb, a.machine.id, "stolen", "", N)
        with pytest.raises(NotFound):
            registry.update_device(tb, device.id, enabled=False)
        with pytest.raises(NotFound):
            registry.delete_device(tb, device.id)
        with pytest.raises(NotFound):
            registry.create_device(tb, "spy", "globex.spy", "h", [a.machine.id])
        with pytest.raises(NotFound):
            registry.update_device(tb, registry.create_device(tb, "own", "globex.own", "h", []).id,
                                   asset_ids=[a.machine.id])
        with pytest.raises(NotFound):
            registry.delete_asset_type(tb, "press-a")
        with pytest.raises(NotFound):
            registry.revoke_token(tb, token.id)

        assert registry.get_asset(ta, a.machine.id) == a.machine
        assert registry.get_device(ta, device.id) == device
        assert registry.list_series(ta) == [series]
        assert registry.find_token("h-a") == token
        assert registry.get_asset_type(ta, "press-a") is not None

    # -- version -------------------------------------------------------------------------------

    def test_version_changes_on_every_write(self, registry: RegistryRepository) -> None:
        seen = [registry.version()]

        def changed() -> None:
            now = registry.version()
            assert now > seen[-1]
            seen.append(now)

        acme = registry.create_tenant("acme", "ACME")
        changed()
        token = registry.create_token(acme.id, "ci", Role.ADMIN, "h")
        changed()
        registry.revoke_token(acme.id, token.id)
        changed()
        registry.put_asset_type(press_type(acme.id))
        changed()
        site = registry.create_asset(acme.id, None, Level.SITE, "berlin")
        changed()
        registry.update_asset(acme.id, site.id, display_name="Berlin")
        changed()
        registry.ensure_series(acme.id, site.id, "power", "kW", N)
        changed()
        device = registry.create_device(acme.id, "plc", "acme.plc", "h", [site.id])
        changed()
        registry.update_device(acme.id, device.id, enabled=False)
        changed()
        registry.set_sparkplug_node(acme.id, device.id, SparkplugNode(acme.id, device.id, "acme", "plc"))
        changed()
        registry.set_sparkplug_node(acme.id, device.id, None)
        changed()
        registry.delete_device(acme.id, device.id)
        changed()
        registry.delete_asset(acme.id, site.id)
        changed()
        registry.delete_asset_type(acme.id, "press")
        changed()

        registry.list_assets(acme.id)
        registry.find_tenant("acme")
        assert registry.version() == seen[-1]  # reads change nothing
        with pytest.raises(Conflict):
            registry.create_tenant("acme", "again")
        assert registry.version() == seen[-1]  # neither does a refused write
