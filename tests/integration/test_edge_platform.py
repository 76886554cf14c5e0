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
from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.records import Quality
from shopfloor.domain.tenancy import Role
from shopfloor.edgeboot import build_agent
from shopfloor.ports.sparkplug import MetricWrite
from shopfloor.services.registry import PLATFORM
from tests.conftest import free_port
from tests.integration.modbus_server import ModbusTestServer, blocks_of, words

pytestmark = pytest.mark.integration

PRESS = "plant/shop/line-1/press-1"
PRESS2 = "plant/shop/line-1/press-2"


def plant(modbus_port: int) -> dict[str, Any]:
    return {
        "asset_types": [{"name": "press", "measurements": [
            {"name": "temperature", "unit": "degC"}, {"name": "force", "unit": "kN"},
            {"name": "running", "type": "boolean"}]}],
        "sites": [{"name": "plant", "areas": [{"name": "shop", "lines": [{"name": "line-1", "machines": [
            {"name": "press-1", "type": "press"}, {"name": "press-2", "type": "press"}]}]}]}],
        "devices": [
            {"name": "press-gw", "assets": [PRESS, PRESS2], "gateway": True, "modbus": {
                "host": "127.0.0.1", "port": modbus_port, "asset": PRESS, "groups": [{"interval_s": 0.2, "registers": [
                    {"measurement": "temperature", "address": 0, "type": "int16", "scale": 0.1},
                    {"measurement": "force", "address": 1, "type": "float32"},
                    {"measurement": "running", "table": "coil", "address": 0, "type": "bool"},
                    {"measurement": "temperature", "address": 3, "type": "int16", "scale": 0.1, "asset": PRESS2}]}]},
             "sparkplug": {"node": PRESS, "devices": {"Press2": PRESS2}}},
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
    server = ModbusTestServer(free_port(), blocks_of([("holding", 0, words("h", 215) + words("f", 12.5) + words("h", -35)),
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
                        "opcua": stack.plant["devices"][1]["opcua"], "modbus": None, "sparkplug": None}
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
    try:
        assert await eventually(lambda: arrived(stack)), "the values did not arrive"
    finally:
        stop.set()
        await task
        agent.buffer.close()
    assert agent.describe()["dropped"] == 0


WANT = {(PRESS, "temperature"): 21.5, (PRESS, "force"): 12.5, (PRESS, "running"): 1.0,
        (PRESS2, "temperature"): -3.5}


def arrived(s: Stack) -> bool:
    ids = {s.series(*point): value for point, value in WANT.items()}
    latest = s.platform.historian.latest(list(ids))
    return all(i in latest and latest[i].value == v and latest[i].quality == Quality.GOOD for i, v in ids.items())


async def test_the_edge_agent_as_a_sparkplug_edge_node(stack: Stack, tmp_path: Path) -> None:
    documented = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", (DOCS / "edge.md").read_text(), re.S)[2])
    assert (documented["protocol"], documented["device"]) == ("sparkplug", "press-gw")  # docs/edge.md's example
    edge = await asyncio.to_thread(resolve_edge_config, {**edge_yaml(stack), "protocol": documented["protocol"]},
                                   tmp_path)
    assert edge.sparkplug is not None and (edge.sparkplug.group, edge.sparkplug.edge_node) == ("acme", "press-gw")
    agent = build_agent(edge)
    assert agent.sparkplug is not None
    node = agent.sparkplug.node
    assert node.devices == {PRESS: None, PRESS2: "Press2"}
    assert node.types[(PRESS, "running")] is DataType.BOOLEAN and node.types[(PRESS, "force")] is DataType.DOUBLE
    t = stack.platform.repo.find_tenant("acme")
    assert t is not None
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        assert await eventually(lambda: arrived(stack)), "the values did not arrive"
        births = agent.sparkplug.births
        # the host took the births: both machines online (this mode publishes no JSON status)
        online = {e.asset_id for e in stack.platform.historian.events(t.id, kinds=["status"]) if e.type == "online"}
        assert online == {asset_id(stack, PRESS), asset_id(stack, PRESS2)}
        # the platform asks for a rebirth (an NCMD, as its API sends it): births again, data goes on
        gw = stack.platform.repo.find_device(t.id, "press-gw")
        assert gw is not None and stack.platform.sparkplug_commands is not None
        ctx = stack.platform.auth.context_for(stack.tokens[Role.ENGINEER])
        await stack.platform.sparkplug_commands.command(ctx, gw.id, None, [MetricWrite("Node Control/Rebirth", True)])
        assert await eventually(lambda: agent.sparkplug is not None and agent.sparkplug.rebirths == 1)
        assert agent.sparkplug.births == births + 1
        before = len(samples(stack, PRESS2, "temperature"))
        assert await eventually(lambda: len(samples(stack, PRESS2, "temperature")) >= before + 3)

        # the broker drops the connection: the Will (NDEATH, bdSeq 0) takes the node offline; the agent
        # reconnects with bdSeq 1, is born again, and what it buffered meanwhile arrives
        assert stack.platform.broker is not None and agent.link is not None
        await stack.platform.broker.disconnect_client("acme.press-gw")
        assert await eventually(lambda: agent.link is not None and agent.link.connects == 2)
        assert node.bd_seq == 1
        assert await eventually(lambda: any(e.type == "offline" for e in stack.platform.historian.events(
            t.id, kinds=["status"])))
        before = len(samples(stack, PRESS2, "temperature"))
        assert await eventually(lambda: len(samples(stack, PRESS2, "temperature")) >= before + 3)
    finally:
        stop.set()
        await task
        agent.buffer.close()
    counters = agent.describe()
    assert counters["dropped"] == 0 and counters["buffered"] == 0
    # every reading arrived once (a sample per series and timestamp), with its value; the others are the
    # host's bad markers where a session ended (the rebirth's new NBIRTH, the NDEATH)
    for point in WANT:
        got = samples(stack, *point)
        good = [v for _, v, q in got if q == Quality.GOOD]
        assert set(good) == {WANT[point]} and len(good) >= 5
        assert all(v is None and q == Quality.BAD for _, v, q in got if q != Quality.GOOD)
        assert 1 <= len(got) - len(good) <= 2
    dead = stack.platform.historian.dead_letters(t.id)
    assert dead == [], dead[:3]


def asset_id(s: Stack, machine: str) -> int:
    t = s.platform.repo.find_tenant("acme")
    assert t is not None
    found = s.platform.repo.find_asset(t.id, tuple(machine.split("/")))
    assert found is not None
    return found.id


def samples(s: Stack, machine: str, measurement: str) -> list[tuple[int, float | None, int]]:
    return [(x.ts_us, x.value, x.quality) for x in s.platform.historian.raw(s.series(machine, measurement), 0, 2**62)]


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
    with pytest.raises(InvalidInput, match="go together"):
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
