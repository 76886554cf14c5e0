"""The edge agent takes its sources from the platform: a whole platform (HTTP API, embedded broker,
DuckDB) serves the device's field-bus sections that ``plant apply`` stored; the agent fetches them
with an engineer token, polls a real pymodbus server and its values arrive as the machine's
measurements."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shopfloor.bootstrap import Platform, build_platform, serve
from shopfloor.config import Settings
from shopfloor.connectors.edge.config import resolve_edge_config
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.records import Quality
from shopfloor.domain.tenancy import Role
from shopfloor.edgeboot import build_agent
from shopfloor.services.registry import PLATFORM
from tests.conftest import free_port
from tests.integration.modbus_server import ModbusTestServer, blocks_of, words

pytestmark = pytest.mark.integration

PRESS = "plant/shop/line-1/press-1"


def plant(modbus_port: int) -> dict[str, Any]:
    return {
        "asset_types": [{"name": "press", "measurements": [
            {"name": "temperature", "unit": "degC"}, {"name": "force", "unit": "kN"},
            {"name": "running", "type": "boolean"}]}],
        "sites": [{"name": "plant", "areas": [{"name": "shop", "lines": [{"name": "line-1", "machines": [
            {"name": "press-1", "type": "press"}, {"name": "press-2", "type": "press"}]}]}]}],
        "devices": [
            {"name": "press-gw", "assets": [PRESS], "modbus": {
                "host": "127.0.0.1", "port": modbus_port, "groups": [{"interval_s": 0.2, "registers": [
                    {"measurement": "temperature", "address": 0, "type": "int16", "scale": 0.1},
                    {"measurement": "force", "address": 1, "type": "float32"},
                    {"measurement": "running", "table": "coil", "address": 0, "type": "bool"}]}]}},
            {"name": "ua-gw", "assets": ["plant/shop/line-1/press-2"], "opcua": {
                "endpoint": "opc.tcp://10.0.0.5:4840", "asset": "plant/shop/line-1/press-2",
                "username": "edge", "password_env": "PRESS_UA_PASSWORD",
                "nodes": {"ns=2;s=Press.Temp": {"measurement": "temperature", "scale": 0.1}}}},
        ],
    }


@dataclass
class Stack:
    platform: Platform
    url: str
    tokens: dict[Role, str]
    secrets: dict[str, str]
    plant: dict[str, Any]

    def series(self, machine: str, measurement: str) -> int:
        t = self.platform.repo.find_tenant("acme")
        assert t is not None
        asset = self.platform.repo.find_asset(t.id, tuple(machine.split("/")))
        assert asset is not None
        return next(s.id for s in self.platform.repo.list_series(t.id, asset.id) if s.measurement == measurement)


async def eventually(predicate: Callable[[], bool], within: float = 20.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.05)
    return predicate()


@pytest.fixture
async def plc() -> AsyncIterator[ModbusTestServer]:
    server = ModbusTestServer(free_port(), blocks_of([("holding", 0, words("h", 215) + words("f", 12.5)),
                                                      ("coil", 0, [1])]))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def stack(tmp_path: Path, plc: ModbusTestServer) -> AsyncIterator[Stack]:
    p = build_platform(Settings(data_dir=tmp_path / "platform", mqtt_port=free_port(), http_port=free_port()))
    reg = p.registry
    reg.create_tenant(PLATFORM, "acme")
    tokens = {role: reg.create_token(PLATFORM, role.value, role, tenant_slug="acme")[1]
              for role in (Role.ENGINEER, Role.VIEWER)}
    obj = plant(plc.port)
    applied = p.plant.apply(p.auth.context_for(tokens[Role.ENGINEER]), plant_from_obj(obj))
    secrets = {s.name: s.secret for s in applied.device_secrets}
    stop = asyncio.Event()
    up = asyncio.Event()
    task = asyncio.create_task(serve(p, stop, started=lambda _p: up.set()))
    try:
        await asyncio.wait_for(up.wait(), 30)
        yield Stack(p, f"http://127.0.0.1:{p.settings.http_port}", tokens, secrets, obj)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        p.close()


DOCS = Path(__file__).resolve().parents[2] / "docs"


def edge_yaml(s: Stack, device: str = "press-gw", token: Role = Role.ENGINEER) -> dict[str, Any]:
    """docs/edge.md's example of sources from the platform, pointed at this platform."""
    obj: dict[str, Any] = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", (DOCS / "edge.md").read_text(), re.S)[1])
    assert obj["platform_api"]["token_env"] == "SHOPFLOOR_TOKEN"
    del obj["password_file"], obj["platform_api"]["token_env"]
    obj["broker"]["port"] = s.platform.settings.mqtt_port
    obj["platform_api"]["url"] = s.url
    obj["platform_api"]["token"] = s.tokens[token]
    return {**obj, "device": device, "password": s.secrets[device], "buffer": {"path": f"{device}.sqlite"}}


async def test_the_fieldbus_endpoint_answers_engineers_with_the_stored_sections(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url + "/api/v1") as http:
        auth = {"Authorization": f"Bearer {stack.tokens[Role.ENGINEER]}"}
        devices = {d["name"]: d["id"] for d in (await http.get("/devices", headers=auth)).json()}
        r = await http.get(f"/devices/{devices['ua-gw']}/fieldbus", headers=auth)
        assert r.status_code == 200
        body = r.json()
        assert body == {"device_id": devices["ua-gw"], "device": "ua-gw", "assets": ["plant/shop/line-1/press-2"],
                        "opcua": stack.plant["devices"][1]["opcua"], "modbus": None}
        assert body["opcua"]["password_env"] == "PRESS_UA_PASSWORD"  # a name, never a value
        viewer = {"Authorization": f"Bearer {stack.tokens[Role.VIEWER]}"}
        denied = await http.get(f"/devices/{devices['ua-gw']}/fieldbus", headers=viewer)
        assert denied.status_code == 403 and denied.headers["content-type"].startswith("application/problem+json")
        missing = await http.get("/devices/9999/fieldbus", headers=auth)
        assert missing.status_code == 404


async def test_the_edge_agent_takes_its_sources_from_the_platform(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "plant.yaml").write_text(yaml.safe_dump(stack.plant))
    for device in ("press-gw", "ua-gw"):  # the same sources as from the plant file
        fetched = await asyncio.to_thread(resolve_edge_config, edge_yaml(stack, device), tmp_path)
        local = {**edge_yaml(stack, device), "plant": "plant.yaml"}
        del local["platform_api"]
        from_file = resolve_edge_config(local, tmp_path)
        assert (fetched.modbus, fetched.opcua) == (from_file.modbus, from_file.opcua)
        assert len(fetched.modbus) + len(fetched.opcua) == 1
    assert fetched.opcua[0][0].password_env == "PRESS_UA_PASSWORD"

    edge = await asyncio.to_thread(resolve_edge_config, edge_yaml(stack), tmp_path)
    agent = build_agent(edge)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    want = {"temperature": 21.5, "force": 12.5, "running": 1.0}
    ids = {m: stack.series(PRESS, m) for m in want}

    def arrived() -> bool:
        latest = stack.platform.historian.latest(list(ids.values()))
        return all(i in latest and latest[i].value == want[m] and latest[i].quality == Quality.GOOD
                   for m, i in ids.items())

    try:
        assert await eventually(arrived), stack.platform.historian.latest(list(ids.values()))
    finally:
        stop.set()
        await task
        agent.buffer.close()
    assert agent.describe()["dropped"] == 0


async def test_platform_errors_are_clear_and_a_restart_offline_uses_the_last_fetch(
        stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    by_env = edge_yaml(stack)
    by_env["platform_api"] = {"url": stack.url, "token_env": "SHOPFLOOR_TOKEN"}  # as in docs/edge.md
    monkeypatch.delenv("SHOPFLOOR_TOKEN", raising=False)
    with pytest.raises(InvalidInput, match="'SHOPFLOOR_TOKEN' \\(token_env\\) is not set"):
        resolve_edge_config(by_env, tmp_path)
    monkeypatch.setenv("SHOPFLOOR_TOKEN", stack.tokens[Role.ENGINEER])
    assert len((await asyncio.to_thread(resolve_edge_config, by_env, tmp_path)).modbus) == 1
    with pytest.raises(InvalidInput, match="403"):
        await asyncio.to_thread(resolve_edge_config, edge_yaml(stack, token=Role.VIEWER), tmp_path)
    obj = edge_yaml(stack)
    obj["device"] = "nobody"
    with pytest.raises(InvalidInput, match="no device 'nobody'"):
        await asyncio.to_thread(resolve_edge_config, obj, tmp_path)
    with pytest.raises(InvalidInput, match="'device' goes with"):
        resolve_edge_config({k: v for k, v in edge_yaml(stack).items() if k != "device"}, tmp_path)
    with pytest.raises(InvalidInput, match="not both"):
        resolve_edge_config({**edge_yaml(stack), "plant": "plant.yaml"}, tmp_path)

    online = await asyncio.to_thread(resolve_edge_config, edge_yaml(stack), tmp_path)
    gone = edge_yaml(stack)
    gone["platform_api"]["url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    offline = resolve_edge_config(gone, tmp_path)
    assert offline.modbus == online.modbus  # the sources fetched before, kept beside the buffer
    fresh = {**gone, "buffer": {"path": "elsewhere.sqlite"}}
    with pytest.raises(InvalidInput, match="cannot reach"):
        resolve_edge_config(fresh, tmp_path)
