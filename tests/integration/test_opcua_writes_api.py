"""Writes to a machine's measurements: POST /assets/{id}/write is for engineers, is logged before it
is sent, and the command it publishes is what the edge agent's OPC UA handler executes on a real
asyncua server. (The MQTT hop between them is the edge agent's; here the published payload is
handed over directly.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.connectors.opcua import OpcUaSource, handle_command
from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.opcua_map import opcua_from_obj
from shopfloor.domain.tenancy import Role
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.history import HistoryService
from shopfloor.services.ingest import IngestService
from shopfloor.services.machine_writes import MachineWriteService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from tests.conftest import free_port
from tests.integration.opcua_server import PlcServer, node_id

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration
V1 = "/api/v1"
MACHINE = "plant/shop/line-1/press-1"


@dataclass
class Published:
    """The ``Publisher`` port, recording what would go to the broker."""

    messages: list[tuple[str, bytes, int, bool]] = field(default_factory=list)

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.messages.append((topic, payload, qos, retain))


@dataclass
class Api:
    client: TestClient
    historian: DuckDBHistorian
    published: Published
    tokens: dict[str, str]
    machine_id: int
    tenant_id: int

    def call(self, method: str, path: str, role: str = "engineer", **kwargs: Any) -> Any:
        return self.client.request(method, V1 + path, headers={"Authorization": f"Bearer {self.tokens[role]}"},
                                   **kwargs)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    db = Database(tmp_path / "shopfloor.duckdb")
    repo, historian, clock = DuckDBRegistry(db), DuckDBHistorian(db), SystemClock()
    stats, registry = IngestStats(clock), RegistryService(repo)
    cache = RegistryCache(repo, clock)
    ingest = IngestService(historian, cache, clock, stats)
    published = Published()
    services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                           TokenAuthenticator(repo), stats, invalidate=cache.invalidate,
                           machine_writes=MachineWriteService(registry, ingest, published, clock.now_us))
    tenant = registry.create_tenant(PLATFORM, "acme")
    tokens = {}
    for role in Role:
        _, tokens[role.value] = registry.create_token(PLATFORM, role.value, role, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(tokens["engineer"])
    registry.put_asset_type(ctx, "press", measurements=[MeasurementDef("setpoint", "bar"),
                                                        MeasurementDef("counter"),
                                                        MeasurementDef("running", type=ValueType.BOOLEAN)])
    site = registry.create_asset(ctx, Level.SITE, "plant", timezone="UTC")
    area = registry.create_asset(ctx, Level.AREA, "shop", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    machine = registry.create_asset(ctx, Level.MACHINE, "press-1", parent_id=line.id, type_name="press")
    client = TestClient(create_app(services), raise_server_exceptions=False)
    yield Api(client, historian, published, tokens, machine.id, tenant.id)
    client.close()
    asyncio.run(ingest.drain())
    ingest.close()
    historian.close()
    db.close()


async def _execute_on_plc(payload: bytes) -> tuple[dict[str, Any] | None, Any, Any]:
    plc = await PlcServer(free_port()).start()
    readings: list[Reading] = []

    async def sink(batch: Any) -> None:
        readings.extend(batch)

    spec = opcua_from_obj({"endpoint": plc.url, "asset": MACHINE, "nodes": {
        node_id("Setpoint"): {"measurement": "setpoint", "writable": True},
        node_id("Counter"): {"measurement": "counter", "scale": 0.5, "writable": True}}})
    source = OpcUaSource(spec, sink, watchdog_s=0.2)
    task = asyncio.create_task(source.run())
    try:
        await source.connected(15)
        reply = await handle_command(source, MACHINE, payload)
        return reply, await plc.get("Setpoint"), await plc.get("Counter")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await plc.stop()


def test_write_is_authorised_logged_published_and_executed_on_the_plc(api: Api) -> None:
    body = {"writes": [{"measurement": "setpoint", "value": 61.5}, {"measurement": "counter", "value": 21}]}
    assert api.call("POST", f"/assets/{api.machine_id}/write", "operator", json=body).status_code == 403
    assert api.published.messages == []
    r = api.call("POST", f"/assets/{api.machine_id}/write", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["topic"] == f"shopfloor/v1/acme/{MACHINE}/command"
    [(topic, payload, qos, retain)] = api.published.messages
    assert (topic, qos, retain) == (r.json()["topic"], 1, False)
    command = json.loads(payload)
    assert command["type"] == "opcua_write" and command["by"] == "engineer" and command["id"] == r.json()["id"]
    [event] = api.historian.events(api.tenant_id, kinds=["command"])  # logged before it was sent
    assert (event.asset_id, event.type, event.data["by"]) == (api.machine_id, "opcua_write", "engineer")
    assert event.data["writes"] == body["writes"]

    reply, setpoint, counter = asyncio.run(_execute_on_plc(payload))
    assert reply is not None and reply["status"] == "ok" and reply["id"] == command["id"], reply
    assert (setpoint, counter) == (61.5, 42)  # counter: 21 in measurement units, / scale 0.5 on the PLC


def test_bad_writes_are_refused_with_a_reason(api: Api) -> None:
    for body, status, words in [
        ({"writes": [{"measurement": "nope", "value": 1}]}, 422, "no measurement"),
        ({"writes": [{"measurement": "running", "value": 3}]}, 422, "boolean"),
        ({"writes": [{"measurement": "setpoint", "value": "high"}]}, 422, "numeric"),
        ({"writes": []}, 422, ""),
    ]:
        r = api.call("POST", f"/assets/{api.machine_id}/write", json=body)
        assert r.status_code == status and words in r.text, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = api.call("POST", "/assets/999999/write", json={"writes": [{"measurement": "setpoint", "value": 1}]})
    assert r.status_code == 404
    assert api.published.messages == []
    assert api.historian.events(api.tenant_id, kinds=["command"]) == []
