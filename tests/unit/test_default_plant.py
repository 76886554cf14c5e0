"""The default plant file, the synthetic large plant, and how the simulator binds devices to machines."""

from __future__ import annotations

import math

import pytest
import yaml

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.plant import machine_paths, plant_from_obj, plant_to_obj
from shopfloor.domain.slugs import check_slug
from shopfloor.domain.topics import Kind
from shopfloor.sim import default_plant, default_plant_text
from shopfloor.sim.publisher import Simulator, scaled_plant

BASE_UNITS = {"power": "kW", "energy": "kWh", "temperature": "degC", "vibration": "mm/s"}


def test_loads_with_the_plant_file_validator() -> None:
    plant = plant_from_obj(yaml.safe_load(default_plant_text()))
    assert plant == default_plant()
    assert plant_from_obj(plant_to_obj(plant)) == plant
    (site,) = plant.sites
    assert (site.name, site.timezone) == ("qingdao", "Asia/Shanghai")
    lines = [ln for area in site.areas for ln in area.lines]
    assert len(lines) == 2
    assert all(len(ln.machines) == 6 for ln in lines)


def test_asset_types_declare_attributes_and_measurements() -> None:
    plant = default_plant()
    types = {t.name: t for t in plant.asset_types}
    assert set(types) == {"press", "injection_moulding", "brazing", "assembly", "leak_test", "packing"}
    kinds = set()
    for t in types.values():
        assert t.attributes["ideal_cycle_time_s"] > 0 and t.attributes["rated_power_kw"] > 0
        assert t.attributes.get("labour_per_shift", 1) >= 1
        units = {m.name: m.unit for m in t.measurements}
        assert {k: units.get(k) for k in BASE_UNITS} == BASE_UNITS, t.name
        assert len(units) == len(t.measurements), f"{t.name}: duplicate measurement"
        kinds |= {m.type for m in t.measurements}
        check_slug(t.name.replace("_", "-"), "asset type")
    assert kinds == {"numeric", "boolean", "string"}
    assert {m.unit for m in types["press"].measurements if m.name == "pressure"} == {"bar"}
    assert any(m.name == "mould_temperature" for m in types["injection_moulding"].measurements)
    assert any(m.name == "leak_rate" for m in types["leak_test"].measurements)


def test_every_machine_is_typed_and_named_as_a_slug() -> None:
    plant = default_plant()
    type_names = {t.name for t in plant.asset_types}
    paths = machine_paths(plant)
    assert len(paths) == 12
    for path, m in paths:
        assert m.type in type_names
        for part in path:
            check_slug(part, "asset name")
    assert len({m.name for _, m in paths}) == 12


def test_line_one_has_a_plc_per_machine_and_line_two_one_gateway() -> None:
    plant = default_plant()
    by_line: dict[str, list[str]] = {}
    for path, _ in machine_paths(plant):
        by_line.setdefault(path[2], []).append("/".join(path))
    plcs = [d for d in plant.devices if not d.gateway]
    gateways = [d for d in plant.devices if d.gateway]
    assert sorted(a for d in plcs for a in d.assets) == sorted(by_line["line-1"])
    assert all(len(d.assets) == 1 for d in plcs)
    assert [(g.name, g.assets) for g in gateways] == [("gw-line-2", ["qingdao/assembly-hall/line-2"])]
    for d in plant.devices:
        check_slug(d.name, "device name")


def test_simulator_binds_devices_to_their_machines_and_topics() -> None:
    sim = Simulator(default_plant(), "acme", {}, "127.0.0.1", 1)
    links = {ln.device: ln for ln in sim.links}
    assert len(links) == 7
    gw = links["gw-line-2"]
    assert gw.username == "acme.gw-line-2"
    assert [m.model.profile.name for m in gw.machines] == [
        "press-2", "moulding-2", "brazing-2", "assembly-2", "leak-test-2", "packing-2"]
    assert gw.machines[0].status_topic == "shopfloor/v1/acme/qingdao/assembly-hall/line-2/press-2/status"
    assert links["plc-press-1"].machines[0].topics[Kind.TELEMETRY] == \
        "shopfloor/v1/acme/qingdao/assembly-hall/line-1/press-1/telemetry"
    custom = Simulator(default_plant(), "acme", {}, "h", 1, username_for=lambda d: f"x:{d}")
    assert custom.links[0].username == "x:plc-press-1"
    # without a connection a tick still steps the machines but publishes nothing
    sim.tick(1_717_365_900_000, 1.0)
    st = sim.stats()
    assert (st.ticks, st.messages, st.machines, st.devices) == (1, 0, 12, 7)
    assert st.points == sum(len(t.measurements) for t in default_plant().asset_types) * 2


def test_simulator_rejects_bad_settings() -> None:
    with pytest.raises(InvalidInput):
        Simulator(default_plant(), "acme", {}, "h", 1, speed=0)
    with pytest.raises(InvalidInput):
        Simulator(default_plant(), "acme", {}, "h", 1, telemetry_batch=0)


@pytest.mark.parametrize(("machines", "gateways"), [(10_000, 200), (10, 3), (5, 10), (1, 1), (101, 4)])
def test_scaled_plant_spreads_machines_over_gateway_lines(machines: int, gateways: int) -> None:
    plant = scaled_plant(machines, gateways)
    assert plant_from_obj(plant_to_obj(plant)) == plant
    paths = machine_paths(plant)
    assert len(paths) == machines
    assert len({p for p, _ in paths}) == machines
    per_line = math.ceil(machines / gateways)
    assert len(plant.devices) <= gateways
    assert all(d.gateway and len(d.assets) == 1 for d in plant.devices)
    lines = [ln for s in plant.sites for a in s.areas for ln in a.lines]
    assert len(lines) == len(plant.devices)
    assert all(len(ln.machines) == per_line for ln in lines[:-1])
    assert 1 <= len(lines[-1].machines) <= per_line
    if machines <= 1000:
        assert Simulator(plant, "t", {}, "h", 1).stats().machines == machines


def test_scaled_plant_needs_machines_and_gateways() -> None:
    with pytest.raises(InvalidInput):
        scaled_plant(0, 1)
    with pytest.raises(InvalidInput):
        scaled_plant(1, 0)
