"""Applying a plant file is idempotent; exporting and applying elsewhere gives the same plant."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest
import yaml

from shopfloor.domain.assets import Level, ValueType
from shopfloor.domain.credentials import verify_secret
from shopfloor.domain.errors import Forbidden, InvalidInput
from shopfloor.domain.plant import PlantSpec, machine_paths, plant_from_obj, plant_to_obj
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

PLANT_YAML = """
asset_types:
  - name: press
    description: Hydraulic press
    attributes: {ideal_cycle_s: 2.5, rated_kw: 40}
    measurements:
      - {name: temperature, unit: degC}
      - {name: running, type: boolean}
      - {name: recipe, type: string, description: active recipe}
    events: [tool_change]
  - name: oven
    measurements: [{name: zone_temp, unit: degC}]
sites:
  - name: berlin
    timezone: Europe/Berlin
    display_name: Berlin plant
    areas:
      - name: press-shop
        lines:
          - name: line-1
            attributes: {shift_model: 3x8}
            machines:
              - {name: press-01, type: press, display_name: Press 1, attributes: {ideal_cycle_s: 2.0}}
              - {name: press-02, type: press}
          - name: line-2
            machines:
              - {name: oven-01, type: oven}
  - name: austin
    timezone: America/Chicago
    areas:
      - name: assembly
        lines:
          - name: line-a
            machines: [{name: robot-1}]
devices:
  - name: plc-press-01
    assets: [berlin/press-shop/line-1/press-01]
    description: S7-1500
    opcua:
      endpoint: opc.tcp://10.0.0.5:4840
      asset: berlin/press-shop/line-1/press-01
      username: edge
      password_env: PRESS_UA_PASSWORD
      nodes:
        "ns=2;s=Press.Temp": {measurement: temperature, scale: 0.1, deadband: {value: 0.5}}
    modbus:
      host: 10.0.0.21
      unit: 3
      groups:
        - name: fast
          interval_s: 0.5
          registers:
            - {measurement: running, table: coil, address: 3, type: bool}
            - {measurement: temperature, address: 100, type: float32, word_order: little}
  - {name: gw-line-1, assets: [berlin/press-shop/line-1], gateway: true}
  - {name: spare, assets: [austin/assembly/line-a/robot-1], enabled: false}
"""


def plant_obj() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(PLANT_YAML)
    return obj


class Setup:
    def __init__(self) -> None:
        self.repo = InMemoryRegistry(clock=FixedClock())
        self.registry = RegistryService(self.repo)
        self.plant = PlantService(self.registry)

    def tenant(self, slug: str, role: Role = Role.ENGINEER) -> TenantContext:
        t = self.repo.find_tenant(slug) or self.registry.create_tenant(PLATFORM, slug)
        return TenantContext(t.id, t.slug, role, f"{slug}-ci")


@pytest.fixture
def s() -> Setup:
    return Setup()


def test_first_apply_creates_everything(s: Setup) -> None:
    ctx = s.tenant("acme")
    result = s.plant.apply(ctx, plant_from_obj(plant_obj()))
    assert result.created == {"asset_types": 2, "sites": 2, "areas": 2, "lines": 3, "machines": 4, "devices": 3,
                              "fieldbus": 1}
    assert result.updated == {} and result.unchanged == {}
    assert len(s.registry.list_assets(ctx, Level.MACHINE)) == 4
    press = s.repo.find_asset(ctx.require_tenant(), ("berlin", "press-shop", "line-1", "press-01"))
    assert press is not None
    assert (press.display_name, press.type_name, press.attributes) == ("Press 1", "press", {"ideal_cycle_s": 2.0})
    assert {x.measurement: x.type for x in s.registry.series_of(ctx, press.id)} == {
        "temperature": ValueType.NUMERIC, "running": ValueType.BOOLEAN, "recipe": ValueType.STRING}
    # each new device's secret comes back once, and matches its stored hash
    assert sorted(d.name for d in result.device_secrets) == ["gw-line-1", "plc-press-01", "spare"]
    for issued in result.device_secrets:
        dev = s.registry.device(ctx, issued.id)
        assert issued.username == dev.username == f"acme.{dev.name}"
        assert verify_secret(issued.secret, dev.secret_hash)
    by_name = {d.name: d for d in s.registry.list_devices(ctx)}
    assert by_name["gw-line-1"].gateway and not by_name["spare"].enabled
    sites = {a.name: a for a in s.registry.list_assets(ctx, Level.SITE)}
    assert (sites["berlin"].timezone, sites["austin"].timezone) == ("Europe/Berlin", "America/Chicago")


def test_applying_the_same_plant_twice_changes_nothing(s: Setup) -> None:
    ctx = s.tenant("acme")
    first = s.plant.apply(ctx, plant_from_obj(plant_obj()))
    hashes = {d.name: d.secret_hash for d in s.registry.list_devices(ctx)}
    version = s.repo.version()
    second = s.plant.apply(ctx, plant_from_obj(plant_obj()))
    assert second.created == {} and second.updated == {}
    assert second.unchanged == first.created
    assert second.device_secrets == []
    assert {d.name: d.secret_hash for d in s.registry.list_devices(ctx)} == hashes
    assert s.repo.version() == version  # not a single write


def test_changing_an_attribute_updates_that_asset_only(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant_obj()))
    obj = plant_obj()
    obj["sites"][0]["areas"][0]["lines"][0]["machines"][0]["attributes"]["ideal_cycle_s"] = 1.8
    obj["asset_types"][1]["measurements"].append({"name": "door_open", "type": "boolean"})
    obj["devices"][0]["description"] = "S7-1500F"
    result = s.plant.apply(ctx, plant_from_obj(obj))
    assert result.updated == {"machines": 1, "asset_types": 1, "devices": 1}
    assert result.created == {} and result.device_secrets == []
    assert result.unchanged["machines"] == 3
    press = s.repo.find_asset(ctx.require_tenant(), ("berlin", "press-shop", "line-1", "press-01"))
    assert press is not None and press.attributes == {"ideal_cycle_s": 1.8}
    oven = s.repo.find_asset(ctx.require_tenant(), ("berlin", "press-shop", "line-2", "oven-01"))
    assert oven is not None
    assert {x.measurement for x in s.registry.series_of(ctx, oven.id)} == {"zone_temp", "door_open"}
    plc = s.repo.find_device(ctx.require_tenant(), "plc-press-01")
    assert plc is not None and plc.description == "S7-1500F"
    again = s.plant.apply(ctx, plant_from_obj(obj))
    assert again.updated == {} and again.created == {}


def test_disabling_and_rebinding_a_device(s: Setup) -> None:
    ctx = s.tenant("acme")
    revoked: list[str] = []
    s.registry.on_device_revoked(lambda d: revoked.append(d.name))
    s.plant.apply(ctx, plant_from_obj(plant_obj()))
    revoked.clear()
    obj = plant_obj()
    obj["devices"][0]["enabled"] = False
    obj["devices"][1]["assets"] = ["berlin/press-shop/line-1", "berlin/press-shop/line-2"]
    result = s.plant.apply(ctx, plant_from_obj(obj))
    assert result.updated == {"devices": 2}
    assert sorted(revoked) == ["gw-line-1", "plc-press-01"]
    gw = s.repo.find_device(ctx.require_tenant(), "gw-line-1")
    assert gw is not None and len(gw.asset_ids) == 2


def test_new_things_are_added_and_nothing_is_deleted(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant_obj()))
    smaller = {"sites": [{"name": "berlin", "timezone": "Europe/Berlin", "display_name": "Berlin plant",
                          "areas": [{"name": "paint-shop"}]}]}
    result = s.plant.apply(ctx, plant_from_obj(smaller))
    assert result.created == {"areas": 1} and result.unchanged == {"sites": 1}
    assert len(s.registry.list_assets(ctx, Level.MACHINE)) == 4
    assert len(s.registry.list_devices(ctx)) == 3


def test_export_then_apply_on_a_fresh_tenant_round_trips(s: Setup) -> None:
    acme = s.tenant("acme")
    s.plant.apply(acme, plant_from_obj(plant_obj()))
    exported = s.plant.export(acme)
    text = yaml.safe_dump(plant_to_obj(exported), sort_keys=False)
    globex = s.tenant("globex")
    result = s.plant.apply(globex, plant_from_obj(yaml.safe_load(text)))
    assert result.updated == {} and result.unchanged == {}
    assert sum(result.created.values()) == 17
    assert s.plant.export(globex) == exported
    plc = next(d for d in exported.devices if d.name == "plc-press-01")  # the field-bus sections come back
    assert plant_to_obj(exported)["devices"][1]["opcua"] == plant_obj()["devices"][0]["opcua"]
    assert plc.modbus == plant_from_obj(plant_obj()).devices[0].modbus
    assert plc.opcua is not None and plc.opcua.password_env == "PRESS_UA_PASSWORD"  # a name, not a secret
    # and the export says what the file said (modulo defaults and ordering by name)
    assert {m[0] for m in machine_paths(exported)} == {m[0] for m in machine_paths(plant_from_obj(plant_obj()))}
    assert {(d.name, tuple(d.assets), d.gateway, d.enabled, d.description) for d in exported.devices} == {
        (d.name, tuple(d.assets), d.gateway, d.enabled, d.description)
        for d in plant_from_obj(plant_obj()).devices}
    assert s.plant.apply(globex, exported).unchanged == result.created


def test_export_is_json_serialisable_and_reloads(s: Setup) -> None:
    acme = s.tenant("acme")
    s.plant.apply(acme, plant_from_obj(plant_obj()))
    obj = plant_to_obj(s.plant.export(acme))
    assert plant_from_obj(msgspec.json.decode(msgspec.json.encode(obj))) == s.plant.export(acme)


def test_removing_a_machines_type_from_the_file_is_stable(s: Setup) -> None:
    ctx = s.tenant("acme")
    s.plant.apply(ctx, plant_from_obj(plant_obj()))
    obj = plant_obj()
    del obj["sites"][0]["areas"][0]["lines"][0]["machines"][1]["type"]
    s.plant.apply(ctx, plant_from_obj(obj))
    again = s.plant.apply(ctx, plant_from_obj(obj))
    assert again.updated == {} and again.created == {}


def test_a_device_listing_an_asset_twice_is_stable(s: Setup) -> None:
    ctx = s.tenant("acme")
    obj = plant_obj()
    obj["devices"][1]["assets"] = ["berlin/press-shop/line-1", "/berlin/press-shop/line-1/"]
    s.plant.apply(ctx, plant_from_obj(obj))
    again = s.plant.apply(ctx, plant_from_obj(obj))
    assert again.updated == {} and again.created == {}


@pytest.mark.parametrize(("change", "match"), [
    (lambda o: o["sites"][0]["areas"][0]["lines"][0]["machines"].append({"name": "x", "type": "lathe"}), "lathe"),
    (lambda o: o["devices"].append({"name": "ghost", "assets": ["berlin/nowhere"]}), "nowhere"),
    (lambda o: o["asset_types"][0]["measurements"].append({"name": "v", "type": "vector"}), "vector"),
    (lambda o: o["sites"][0].update(timezone="Europe/Atlantis"), "IANA"),
    (lambda o: o["sites"][0].update(name="Berlin Plant") or o["devices"].pop(0), "valid name"),  # no field bus on it
])
def test_invalid_plants_are_rejected(s: Setup, change: Any, match: str) -> None:
    obj = copy.deepcopy(plant_obj())
    change(obj)
    with pytest.raises(InvalidInput, match=match):
        s.plant.apply(s.tenant("acme"), plant_from_obj(obj))


def test_unknown_machine_type_is_caught_before_anything_is_written(s: Setup) -> None:
    ctx = s.tenant("acme")
    obj = plant_obj()
    obj["sites"][1]["areas"][0]["lines"][0]["machines"][0]["type"] = "lathe"
    with pytest.raises(InvalidInput):
        s.plant.apply(ctx, plant_from_obj(obj))
    assert s.registry.list_assets(ctx) == [] and s.registry.list_asset_types(ctx) == []


@pytest.mark.parametrize("doc", [
    {"sites": [{"name": "b", "colour": "red"}]},  # unknown field
    {"sites": "berlin"},
    {"devices": [{"name": "d"}]},  # no assets
    [1, 2],
    "just text",
])
def test_plant_documents_are_validated(doc: Any) -> None:
    with pytest.raises(InvalidInput):
        plant_from_obj(doc)


def test_an_empty_document_is_an_empty_plant() -> None:
    assert plant_from_obj(None) == PlantSpec()


def test_viewers_cannot_apply(s: Setup) -> None:
    with pytest.raises(Forbidden):
        s.plant.apply(s.tenant("acme", Role.VIEWER), plant_from_obj(plant_obj()))
    with pytest.raises(Forbidden):
        s.plant.apply(PLATFORM, plant_from_obj(plant_obj()))


def test_yaml_only_values_become_json_values(s: Setup) -> None:
    doc = yaml.safe_load("sites:\n  - name: berlin\n    attributes: {opened: 2019-04-01, shifts: !!set {a, b},"
                         " 7: seven, at: 2019-04-01 06:00:00}\n")
    spec = plant_from_obj(doc)
    assert spec.sites[0].attributes == {"opened": "2019-04-01", "shifts": ["a", "b"], "7": "seven",
                                        "at": "2019-04-01T06:00:00"}
    ctx = s.tenant("acme")
    s.plant.apply(ctx, spec)
    assert s.plant.apply(ctx, plant_from_obj(doc)).unchanged == {"sites": 1}


@pytest.mark.parametrize("text", [
    "sites:\n  - name: berlin\n    attributes: {x: .nan}\n",
    "sites:\n  - name: berlin\n    attributes: {x: !!binary aGVsbG8=}\n",
])
def test_values_json_cannot_hold_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        plant_from_obj(yaml.safe_load(text))


def test_alias_bombs_and_deep_nesting_are_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 leaves
    with pytest.raises(InvalidInput, match="aliases"):
        plant_from_obj(yaml.safe_load("\n".join(lines)))
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    with pytest.raises(InvalidInput, match="deeper"):
        plant_from_obj({"sites": [{"name": "b", "attributes": {"d": deep}}]})
