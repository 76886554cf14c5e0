"""docs/modbus.md's plant file applies (its modbus section checked by plant apply), docs/edge.md's
edge.yaml resolves against it, and plant apply refuses maps that do not fit the plant."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from shopfloor.connectors.edge.config import resolve_edge_config
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.modbus_map import plan_reads
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import InMemoryRegistry

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _yaml(page: str) -> Any:
    return yaml.safe_load(re.findall(r"```yaml\n(.*?)```", (DOCS / page).read_text(), re.S)[0])


def _tenant() -> tuple[PlantService, TenantContext]:
    repo = InMemoryRegistry()
    reg = RegistryService(repo)
    reg.create_tenant(PLATFORM, "acme")
    _, token = reg.create_token(PLATFORM, "t", Role.ENGINEER, tenant_slug="acme")
    return PlantService(reg), TokenAuthenticator(repo).context_for(token)


def test_modbus_example_applies_and_plans_two_reads_for_the_fast_group() -> None:
    plant, ctx = _tenant()
    spec = plant_from_obj(_yaml("modbus.md"))
    result = plant.apply(ctx, spec)
    assert result.created["devices"] == 1
    modbus = spec.devices[0].modbus
    assert modbus is not None
    assert [(r.table, r.address, r.count) for r in plan_reads(modbus.groups[0].registers)] == [
        ("coil", 0, 1), ("holding", 0, 5)]


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["groups"][0]["registers"][0].update(measurement="colour"), "not a measurement"),
    (lambda d: d["groups"][0]["registers"][0].update(asset="qingdao/stamping/line-1/press-09"), "not bound"),
    (lambda d: d["groups"][0]["registers"][0].update(type="bool"), "bool"),
    (lambda d: d.update(port=70000), "port"),
])
def test_plant_apply_refuses_a_map_that_does_not_fit(edit: Any, message: str) -> None:
    plant, ctx = _tenant()
    obj = copy.deepcopy(_yaml("modbus.md"))
    edit(obj["devices"][0]["modbus"])
    with pytest.raises(InvalidInput, match=message):
        plant.apply(ctx, plant_from_obj(obj))


def test_edge_example_takes_its_sources_from_the_plant_file(tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text(yaml.safe_dump(_yaml("modbus.md")))
    (tmp_path / "press-01-plc.secret").write_text("s3cret\n")
    edge = resolve_edge_config(_yaml("edge.md"), tmp_path)
    assert edge.username == "acme.press-01-plc" and edge.password == "s3cret"
    assert edge.buffer_path == tmp_path / "edge-buffer.sqlite"
    [(spec, default)] = edge.modbus
    assert spec.name == "press-01-plc" and default == "qingdao/stamping/line-1/press-01"


@pytest.mark.parametrize(("change", "message"), [
    ({"device": None}, "go together"),
    ({"plant": None, "device": None}, "no sources"),
    ({"buffer": {"max_bytes": 10}}, "max_bytes"),
    ({"broker": {"port": 0}}, "broker.port"),
    ({"colour": 1}, "unknown field"),
    ({"device": "nobody"}, "no device 'nobody'"),
])
def test_bad_edge_configs_are_refused(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    (tmp_path / "plant.yaml").write_text(yaml.safe_dump(_yaml("modbus.md")))
    (tmp_path / "press-01-plc.secret").write_text("s3cret\n")
    obj = {k: v for k, v in {**_yaml("edge.md"), **change}.items() if v is not None}
    with pytest.raises(InvalidInput, match=message):
        resolve_edge_config(obj, tmp_path)


def test_edge_check_reads_the_documented_configuration(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from shopfloor.cli import app

    (tmp_path / "plant.yaml").write_text(yaml.safe_dump(_yaml("modbus.md")))
    (tmp_path / "press-01-plc.secret").write_text("s3cret\n")
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(_yaml("edge.md")))
    result = CliRunner().invoke(app, ["edge", "--config", str(tmp_path / "edge.yaml"), "--check"])
    assert result.exit_code == 0, result.output
    assert "1 Modbus device(s), 0 OPC UA server(s), 6 point(s), tenant acme" in " ".join(result.output.split())
    (tmp_path / "edge.yaml").write_text("tenant: acme\n")
    result = CliRunner().invoke(app, ["edge", "--config", str(tmp_path / "edge.yaml"), "--check"])
    assert result.exit_code != 0 and "no sources" in str(result.exception)
