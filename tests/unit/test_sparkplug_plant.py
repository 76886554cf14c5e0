"""The plant file's ``sparkplug`` section of a device: applied idempotently, exported, checked against the
tenant (its group ids, machines that exist); and the binding use cases behind the API (approve, remove)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from shopfloor.domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from shopfloor.domain.plant import plant_from_obj, plant_to_obj
from shopfloor.domain.sparkplug import Approval, MetricMap, SparkplugNode, SparkplugSpec
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

PLANT = """
asset_types:
  - name: press
    measurements: [{name: temperature, unit: degC}, {name: force, unit: kN}]
sites:
  - name: berlin
    areas:
      - name: press-shop
        lines:
          - name: line-1
            machines: [{name: press-01, type: press}, {name: press-02, type: press}]
devices:
  - name: press-gw
    assets: [berlin/press-shop/line-1]
    gateway: true
    sparkplug:
      node: berlin/press-shop/line-1/press-01
      devices:
        Press 2: berlin/press-shop/line-1/press-02
      metrics:
        Oil/Temp: {measurement: temperature, scale: 0.1}
        Force: force
        Debug: null
  - name: plc-01
    assets: [berlin/press-shop/line-1/press-01]
"""


def plant(**device_changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(PLANT)
    obj["devices"][0]["sparkplug"].update(device_changes)
    return obj


class Setup:
    def __init__(self) -> None:
        self.repo = InMemoryRegistry(clock=FixedClock())
        self.registry = RegistryService(self.repo)
        self.plant = PlantService(self.registry)
        self.bindings = self.plant.sparkplug

    def tenant(self, slug: str = "acme", role: Role = Role.ENGINEER) -> TenantContext:
        t = self.repo.find_tenant(slug) or self.registry.create_tenant(PLATFORM, slug)
        return TenantContext(t.id, t.slug, role, f"{slug}-ci")


@pytest.fixture
def s() -> Setup:
    return Setup()


def test_apply_binds_the_device_as_an_approved_edge_node(s: Setup) -> None:
    ctx = s.tenant()
    result = s.plant.apply(ctx, plant_from_obj(plant()))
    assert result.created["sparkplug_nodes"] == 1
    [node] = s.bindings.nodes(ctx)
    gw = s.repo.find_device(ctx.require_tenant(), "press-gw")
    assert gw is not None
    assert (node.device_id, node.group, node.edge_node, node.status) == (gw.id, "acme", "press-gw", Approval.APPROVED)
    assert node.mapping.devices == {"Press 2": "berlin/press-shop/line-1/press-02"}
    assert node.mapping.metric_map("Oil/Temp") == MetricMap("temperature", 0.1)
    assert (node.mapping.group, node.mapping.edge_node) == ("acme", "press-gw")  # written out

    version = s.repo.version()
    again = s.plant.apply(ctx, plant_from_obj(plant()))
    assert again.unchanged["sparkplug_nodes"] == 1 and "sparkplug_nodes" not in again.updated
    assert s.repo.version() == version

    changed = s.plant.apply(ctx, plant_from_obj(plant(edge_node="Press-GW", group="acme.north")))
    assert changed.updated["sparkplug_nodes"] == 1
    assert [(n.group, n.edge_node) for n in s.bindings.nodes(ctx)] == [("acme.north", "Press-GW")]


def test_export_round_trips_the_section(s: Setup) -> None:
    ctx = s.tenant()
    s.plant.apply(ctx, plant_from_obj(plant()))
    exported = plant_to_obj(s.plant.export(ctx))
    gw = next(d for d in exported["devices"] if d["name"] == "press-gw")
    assert gw["sparkplug"] == {"edge_node": "press-gw", "group": "acme", "node": "berlin/press-shop/line-1/press-01",
                               "devices": {"Press 2": "berlin/press-shop/line-1/press-02"},
                               "metrics": {"Oil/Temp": {"measurement": "temperature", "scale": 0.1},
                                           "Force": "force", "Debug": None}}
    assert "sparkplug" not in next(d for d in exported["devices"] if d["name"] == "plc-01")
    other = s.tenant("globex")
    gw["sparkplug"]["group"] = "globex"  # another tenant has its own group
    result = s.plant.apply(other, plant_from_obj(yaml.safe_load(yaml.safe_dump(exported))))
    assert result.created["sparkplug_nodes"] == 1
    assert [n.group for n in s.bindings.nodes(other)] == ["globex"]


@pytest.mark.parametrize(("change", "match"), [
    ({"group": "globex"}, "not one of tenant 'acme'"),
    ({"edge_node": "press gw"}, "edge node id"),
    ({"node": "berlin/press-shop/line-1/press-99"}, "no machine at"),
    ({"devices": {"P": "berlin/press-shop/line-1"}}, "machine path"),
    ({"metrics": {"x": {"measurement": "t", "scale": float("inf")}}}, "not JSON"),
    ({"bogus": 1}, "unknown field"),
])
def test_invalid_sections_are_refused(s: Setup, change: dict[str, Any], match: str) -> None:
    obj = plant(**change)
    with pytest.raises(InvalidInput, match=match):
        s.plant.apply(s.tenant(), plant_from_obj(obj))


def test_the_same_edge_node_twice_conflicts(s: Setup) -> None:
    obj = plant()
    obj["devices"][1]["sparkplug"] = {"edge_node": "press-gw"}
    with pytest.raises(Conflict, match="acme/press-gw is already another device"):
        s.plant.apply(s.tenant(), plant_from_obj(obj))


def test_the_docs_example_applies(s: Setup) -> None:
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "sparkplug.md").read_text()
    [block] = re.findall(r"```yaml\n(.*?)```", page, re.S)
    doc = yaml.safe_load(block)
    doc["asset_types"] = [{"name": "press", "measurements": [{"name": "oil_temperature"}, {"name": "force"}]}]
    doc["sites"] = [{"name": "qingdao", "areas": [{"name": "stamping", "lines": [{"name": "line-1", "machines": [
        {"name": "press-01", "type": "press"}, {"name": "press-02", "type": "press"}]}]}]}]
    ctx = s.tenant("acme")
    assert s.plant.apply(ctx, plant_from_obj(doc)).created["sparkplug_nodes"] == 1
    [node] = s.bindings.nodes(ctx)
    assert node.mapping.metric_map("Hydraulics/Oil Temp") == MetricMap("oil_temperature", 0.1)
    assert node.mapping.metric_map("Diagnostics/Counter") is None


def test_approving_and_removing_a_quarantined_node(s: Setup) -> None:
    ctx = s.tenant()
    s.plant.apply(ctx, plant_from_obj(yaml.safe_load(PLANT.split("devices:")[0] + "devices:\n"
                                                     "  - {name: plc-01, assets: [berlin/press-shop/line-1/press-01]}\n")))
    tid = ctx.require_tenant()
    plc = s.repo.find_device(tid, "plc-01")
    assert plc is not None
    s.repo.set_sparkplug_node(tid, plc.id, SparkplugNode(tid, plc.id, "acme", "plc-01", Approval.QUARANTINED,
                                                         seen={"": ["Temp"]}))
    assert [n.device_id for n in s.bindings.nodes(ctx, Approval.QUARANTINED)] == [plc.id]
    with pytest.raises(Forbidden):
        s.bindings.approve(s.tenant(role=Role.OPERATOR), plc.id)
    node = s.bindings.approve(ctx, plc.id, SparkplugSpec(node="berlin/press-shop/line-1/press-01",
                                                         metrics={"Temp": "temperature"}))
    assert node.approved and node.seen == {"": ["Temp"]} and (node.group, node.edge_node) == ("acme", "plc-01")
    assert s.bindings.nodes(ctx, Approval.QUARANTINED) == []
    s.bindings.remove(ctx, plc.id)
    with pytest.raises(NotFound):
        s.bindings.node(ctx, plc.id)
    with pytest.raises(NotFound):
        s.bindings.remove(s.tenant("globex"), plc.id)
