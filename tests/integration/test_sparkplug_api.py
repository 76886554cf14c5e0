"""The Sparkplug routes and ``shopfloor sparkplug`` commands against the real API app over DuckDB:
listing and approving quarantined edge nodes, mappings, and audited NCMD/DCMD commands."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from shopfloor import cli_sparkplug
from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.cli import app as cli_app
from shopfloor.client import ApiClient
from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.sparkplug import Approval, SparkplugNode
from shopfloor.domain.tenancy import Role
from shopfloor.ports.sparkplug import MetricWrite
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.history import HistoryService
from shopfloor.services.ingest import IngestService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.sparkplug import SparkplugCommandService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.registry import DuckDBRegistry

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

V1 = "/api/v1"
LINE = "plant/shop/line-1"


@dataclass
class Commands:
    """The ``SparkplugCommands`` port, recording what would be published."""

    sent: list[tuple[str, str, str | None, list[MetricWrite]]] = field(default_factory=list)

    async def send(self, group: str, edge_node: str, device: str | None, writes: Sequence[MetricWrite]) -> str:
        self.sent.append((group, edge_node, device, list(writes)))
        return f"spBv1.0/{group}/{'DCMD' if device else 'NCMD'}/{edge_node}" + (f"/{device}" if device else "")


@dataclass
class Api:
    client: TestClient
    repo: DuckDBRegistry
    historian: DuckDBHistorian
    commands: Commands
    tokens: dict[str, str]  # role -> token of tenant acme
    devices: dict[str, int]
    tenant_id: int

    def call(self, method: str, path: str, role: str = "engineer", **kwargs: Any) -> Any:
        return self.client.request(method, V1 + path, headers={"Authorization": f"Bearer {self.tokens[role]}"},
                                   **kwargs)


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    db = Database(tmp_path / "shopfloor.duckdb")
    repo, historian, clock = DuckDBRegistry(db), DuckDBHistorian(db), SystemClock()
    stats, registry = IngestStats(clock), RegistryService(repo)
    cache = RegistryCache(repo, clock)
    plant = PlantService(registry)
    commands = Commands()
    ingest = IngestService(historian, cache, clock, stats)
    services = ApiServices(registry, plant, HistoryService(registry, historian), TokenAuthenticator(repo), stats,
                           invalidate=cache.invalidate,
                           sparkplug_commands=SparkplugCommandService(plant.sparkplug, ingest, commands, clock.now_us))
    tenant = registry.create_tenant(PLATFORM, "acme")
    tokens = {}
    for role in Role:
        _, tokens[role.value] = registry.create_token(PLATFORM, role.value, role, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(tokens["engineer"])
    registry.put_asset_type(ctx, "press", measurements=[MeasurementDef("temperature", "degC")])
    site = registry.create_asset(ctx, Level.SITE, "plant", timezone="UTC")
    area = registry.create_asset(ctx, Level.AREA, "shop", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    for name in ("press-1", "press-2"):
        registry.create_asset(ctx, Level.MACHINE, name, parent_id=line.id, type_name="press")
    devices = {name: registry.create_device(ctx, name, [line.id], gateway=True)[0].id for name in ("gw", "plc")}
    # plc spoke Sparkplug unannounced: the host put it in quarantine with what its births declared
    repo.set_sparkplug_node(tenant.id, devices["plc"], SparkplugNode(
        tenant.id, devices["plc"], "acme", "plc", Approval.QUARANTINED, seen={"": ["Temp"], "P2": ["T"]}))
    client = TestClient(create_app(services), raise_server_exceptions=False)
    made = Api(client, repo, historian, commands, tokens, devices, tenant.id)

    def cli_client(url: str | None, token: str | None) -> ApiClient:
        c = ApiClient(url or "http://testserver", token)
        c.http.close()
        c.http = TestClient(client.app, base_url="http://testserver/api/v1",
                            headers={"Authorization": f"Bearer {token}"}, raise_server_exceptions=False)
        return c

    monkeypatch.setattr(cli_sparkplug, "api_client", cli_client)
    monkeypatch.setattr(cli_sparkplug, "console", Console(width=250, force_terminal=False, color_system=None))
    yield made
    client.close()
    asyncio.run(ingest.drain())
    ingest.close()
    historian.close()
    db.close()


def run(*args: str) -> tuple[int, str, BaseException | None]:
    r = CliRunner().invoke(cli_app, list(args))
    return r.exit_code, r.stdout, r.exception


def test_quarantine_listed_approved_and_rejected(api: Api) -> None:
    r = api.call("GET", "/sparkplug/nodes?status=quarantined", "viewer")
    assert r.status_code == 200
    body = r.json()
    assert body["group"] == "acme"
    assert [(n["device_id"], n["edge_node"], n["status"], n["seen"]) for n in body["nodes"]] == [
        (api.devices["plc"], "plc", "quarantined", {"": ["Temp"], "P2": ["T"]})]
    plc = api.devices["plc"]
    assert api.call("POST", f"/devices/{plc}/sparkplug/approve", "operator").status_code == 403
    r = api.call("POST", f"/devices/{plc}/sparkplug/approve",
                 json={"node": f"{LINE}/press-1", "metrics": {"Temp": {"measurement": "temperature", "scale": 0.1}}})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["mapping"]["node"] == f"{LINE}/press-1"
    assert api.call("GET", "/sparkplug/nodes?status=quarantined", "viewer").json()["nodes"] == []
    assert api.call("GET", "/sparkplug/nodes?status=bogus", "viewer").status_code == 422
    assert api.call("DELETE", f"/devices/{plc}/sparkplug").status_code == 204
    assert api.call("GET", f"/devices/{plc}/sparkplug", "viewer").status_code == 404


def test_mapping_put_and_its_checks(api: Api) -> None:
    gw = api.devices["gw"]
    r = api.call("PUT", f"/devices/{gw}/sparkplug", json={"edge_node": "GW-1", "devices": {"P2": f"{LINE}/press-2"}})
    assert r.status_code == 200, r.text
    assert (r.json()["group"], r.json()["edge_node"], r.json()["status"]) == ("acme", "GW-1", "approved")
    for bad in ({"group": "globex"}, {"devices": {"P2": f"{LINE}/press-9"}}, {"edge_node": "a b"}, {"nope": 1}):
        r = api.call("PUT", f"/devices/{gw}/sparkplug", json=bad)
        assert r.status_code == 422, (bad, r.text)
    r = api.call("PUT", f"/devices/{api.devices['plc']}/sparkplug", json={"edge_node": "GW-1"})
    assert r.status_code == 409
    assert api.call("PUT", f"/devices/{gw}/sparkplug", "viewer", json={}).status_code == 403
    assert api.call("GET", "/devices/9999/sparkplug", "viewer").status_code == 404


def test_commands_are_authorised_and_logged(api: Api) -> None:
    gw = api.devices["gw"]
    api.call("PUT", f"/devices/{gw}/sparkplug", json={"devices": {"P2": f"{LINE}/press-2"}})
    body = {"device": "P2", "metrics": [{"name": "Setpoint", "value": 1.5, "datatype": "Float"},
                                        {"name": "Run", "value": True}]}
    assert api.call("POST", f"/devices/{gw}/sparkplug/command", "operator", json=body).status_code == 403
    assert api.commands.sent == []
    r = api.call("POST", f"/devices/{gw}/sparkplug/command", json=body)
    assert r.status_code == 202, r.text
    assert r.json()["topic"] == "spBv1.0/acme/DCMD/gw/P2"
    assert api.commands.sent == [("acme", "gw", "P2", [MetricWrite("Setpoint", 1.5, "Float"),
                                                       MetricWrite("Run", True)])]
    [event] = api.historian.events(api.tenant_id, kinds=["command"])
    press2 = api.repo.find_asset(api.tenant_id, (*LINE.split("/"), "press-2"))
    assert press2 is not None and event.asset_id == press2.id and event.type == "sparkplug_write"
    assert event.data["by"] == "engineer" and event.data["metrics"][1] == {"name": "Run", "value": True}
    r = api.call("POST", f"/devices/{gw}/sparkplug/command", json={"metrics": [{"name": "Node Control/Rebirth",
                                                                               "value": True}]})
    assert r.status_code == 202 and r.json()["topic"] == "spBv1.0/acme/NCMD/gw"
    events = api.call("GET", "/events?kind=command", "viewer")
    assert events.status_code == 200 and len(events.json()) == 2  # the audit trail, through the API

    plc = api.devices["plc"]  # in quarantine: no commands until approved
    assert api.call("POST", f"/devices/{plc}/sparkplug/command", json=body).status_code == 409
    assert api.call("POST", f"/devices/{gw}/sparkplug/command", json={"metrics": []}).status_code == 422
    assert api.call("POST", f"/devices/{gw}/sparkplug/command",
                    json={"device": "a/b", "metrics": [{"name": "x", "value": 1}]}).status_code == 422
    assert len(api.commands.sent) == 2


def test_cli(api: Api, tmp_path: Path) -> None:
    token = api.tokens["engineer"]
    code, out, exc = run("sparkplug", "nodes", "--quarantined", "--token", token)
    assert code == 0, (out, exc)
    assert "plc" in out and "quarantined" in out and "(node): 1 metric(s)" in out
    mapping = tmp_path / "plc.yaml"
    mapping.write_text(f"sparkplug:\n  node: {LINE}/press-1\n  metrics: {{Temp: temperature}}\n")
    code, out, exc = run("sparkplug", "approve", str(api.devices["plc"]), "--mapping", str(mapping), "--token", token)
    assert code == 0, (out, exc)
    assert "acme/plc approved" in out
    code, out, exc = run("sparkplug", "command", str(api.devices["plc"]), "--metric", "Setpoint=2.5:Double",
                         "--metric", "Mode=auto", "--token", token, "--json")
    assert code == 0, (out, exc)
    sent = json.loads(out)
    assert sent["topic"] == "spBv1.0/acme/NCMD/plc" and sent["metrics"][0] == {"name": "Setpoint", "value": 2.5,
                                                                               "datatype": "Double"}
    code, out, exc = run("sparkplug", "nodes", "--token", api.tokens["viewer"], "--json")
    assert code == 0 and json.loads(out)["nodes"][0]["status"] == "approved"
    code, out, exc = run("sparkplug", "remove", str(api.devices["plc"]), "--token", api.tokens["viewer"])
    assert code != 0 and "403" in str(exc)
