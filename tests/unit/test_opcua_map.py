"""The plant file's ``opcua`` section: its checks, and plant apply's check of machines and measurements."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from shopfloor.connectors.opcua.dedup import Deduplicator
from shopfloor.connectors.opcua.quality import quality_of
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.opcua_map import OpcUaSpec, opcua_from_obj
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.records import Quality
from shopfloor.domain.tenancy import Role
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import InMemoryRegistry

M = "berlin/press-shop/line-1/press-01"


def section(**extra: Any) -> dict[str, Any]:
    return {"endpoint": "opc.tcp://plc-01:4840", "asset": M,
            "nodes": {"ns=2;s=Press.Temperature": {"measurement": "temperature"}}, **extra}


def test_a_minimal_section_gets_its_defaults() -> None:
    spec = opcua_from_obj(section())
    assert spec.security.policy.value == "None" and spec.username is None
    assert spec.node_asset("ns=2;s=Press.Temperature") == M
    assert spec.connection_count() == 1


@pytest.mark.parametrize(("extra", "words"), [
    ({"endpoint": "http://plc:4840"}, "opc.tcp://"),
    ({"nodes": {"Press.Temperature": {"measurement": "t"}}}, "not an OPC UA node id"),
    ({"nodes": {}}, "maps no node"),
    ({"asset": "berlin/press-shop"}, "machine path"),
    ({"security": {"policy": "Basic256Sha256"}}, "needs 'certificate' and 'private_key'"),
    ({"security": {"policy": "Basic128Rsa15"}}, "Basic128Rsa15"),
    ({"security": {"policy": "Basic256Sha256", "mode": "Encrypt", "certificate": "c", "private_key": "k"}}, "Encrypt"),
    ({"password": "x"}, "needs a 'username'"),
    ({"username": "u", "password": "x", "password_env": "P"}, "not both"),
    ({"username": "u", "password_env": "not a name"}, "environment variable name"),
    ({"nodes": {"ns=2;i=7": {"measurement": "t", "deadband": {"value": 120, "type": "percent"}}}}, "at most 100"),
    ({"nodes": {"ns=2;i=7": {"measurement": "t", "deadband": {"value": -1}}}}, "not negative"),
    ({"nodes": {"ns=2;i=7": {"measurement": "t", "scale": 0}}}, "scale 0"),
    ({"items_per_subscription": 0}, "at least 1"),
    ({"publishing_interval_ms": 0}, "positive"),
    ({"nodes": {"ns=2;i=7": {"measurement": "t", "unknown": 1}}}, "unknown"),
])
def test_bad_sections_are_refused_with_the_reason(extra: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidInput, match="opcua") as caught:
        opcua_from_obj(section(**extra))
    assert words in caught.value.message


def test_password_from_the_environment() -> None:
    spec = opcua_from_obj(section(username="edge", password_env="PLC_PW"))
    assert spec.resolve_password({"PLC_PW": "s3cret"}) == "s3cret"
    with pytest.raises(InvalidInput, match="PLC_PW"):
        spec.resolve_password({})


def test_connections_needed_for_many_tags() -> None:
    nodes = {f"ns=2;i={i}": {"measurement": "t"} for i in range(9001)}
    spec: OpcUaSpec = opcua_from_obj(section(nodes=nodes, items_per_subscription=1000, subscriptions_per_connection=3))
    assert spec.connection_count() == 4


@pytest.mark.parametrize(("code", "quality"), [
    (0x00000000, Quality.GOOD), (0x00A80000, Quality.GOOD),  # Good, GoodOverload-ish (severity bits 00)
    (0x40920000, Quality.UNCERTAIN), (0x408F0000, Quality.UNCERTAIN),
    (0x80000000, Quality.BAD), (0x808C0000, Quality.BAD), (0xC0000000, Quality.BAD),
])
def test_status_code_severity_is_the_quality(code: int, quality: Quality) -> None:
    assert quality_of(code) is quality


def test_dedup_by_node_and_source_timestamp() -> None:
    d = Deduplicator(per_node=3)
    assert d.first_time("a", 10) and d.first_time("b", 10)
    assert not d.first_time("a", 10) and d.dropped == 1  # the newest, again
    assert d.first_time("a", 5)  # older, never seen: out of order, kept
    for ts in (11, 12, 13):  # back-filled
        assert d.first_time("a", ts, remember=True)
    assert d.first_time("a", 20)
    assert not d.first_time("a", 12)  # a live notification repeating a back-filled one
    assert d.latest("a") == 20 and d.latest("c") is None
    d.first_time("a", 14, remember=True)  # only the newest 3 back-filled are remembered
    assert d.first_time("a", 11)


PLANT = """
asset_types:
  - name: press
    measurements: [{name: temperature, unit: degC}, {name: setpoint}]
sites:
  - name: berlin
    areas:
      - name: press-shop
        lines:
          - name: line-1
            machines: [{name: press-01, type: press}, {name: bare}]
devices:
  - name: plc-press-01
    assets: [berlin/press-shop/line-1/press-01]
    opcua:
      endpoint: opc.tcp://plc-01:4840
      asset: berlin/press-shop/line-1/press-01
      nodes:
        "ns=2;s=Press.Temperature": {measurement: temperature, deadband: {value: 0.5}}
        "ns=2;s=Press.Setpoint": {measurement: setpoint, writable: true}
"""


def _apply(doc: dict[str, Any]) -> Any:
    repo = InMemoryRegistry()
    reg = RegistryService(repo)
    reg.create_tenant(PLATFORM, "acme")
    _, token = reg.create_token(PLATFORM, "t", Role.ENGINEER, tenant_slug="acme")
    return PlantService(reg).apply(TokenAuthenticator(repo).context_for(token), plant_from_obj(doc)), repo


def test_plant_apply_accepts_nodes_of_existing_machines_and_measurements() -> None:
    result, _ = _apply(yaml.safe_load(PLANT))
    assert result.created["devices"] == 1


@pytest.mark.parametrize(("change", "words"), [
    ({"measurement": "pressure"}, "has no measurement 'pressure'"),
    ({"asset": "berlin/press-shop/line-1/press-09"}, "no machine at"),
    ({"asset": "berlin/press-shop/line-1/bare"}, "not among the device's assets"),
])
def test_plant_apply_refuses_nodes_of_missing_machines_or_measurements(change: dict[str, Any], words: str) -> None:
    doc = yaml.safe_load(PLANT)
    doc["devices"][0]["opcua"]["nodes"]["ns=2;s=Press.Temperature"].update(change)
    with pytest.raises(InvalidInput, match=re.escape("device 'plc-press-01': opcua: node 'ns=2;s=Press.Temperature'")) as caught:
        _apply(doc)
    assert words in caught.value.message


def test_plant_apply_refuses_a_measurement_of_an_untyped_machine() -> None:
    doc = yaml.safe_load(PLANT)
    doc["devices"][0]["assets"].append("berlin/press-shop/line-1/bare")
    doc["devices"][0]["opcua"]["nodes"]["ns=2;s=Press.Temperature"]["asset"] = "berlin/press-shop/line-1/bare"
    with pytest.raises(InvalidInput, match="has no measurement 'temperature'"):
        _apply(doc)
