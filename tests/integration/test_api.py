"""The HTTP API over real DuckDB stores: auth, roles, CRUD, plant files, tenancy, history, hostile input."""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from httpx import Response
from starlette.exceptions import StarletteDeprecationWarning

from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.api.timeparams import iso
from shopfloor.domain.credentials import verify_secret
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.history import HistoryService
from shopfloor.services.ingest import IngestService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.registry import DuckDBRegistry

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx is what we ship
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

V1 = "/api/v1"
PROBLEM = "application/problem+json"
MACHINE_TOPIC = "shopfloor/v1/{tenant}/berlin/press-shop/line-1/press-01"

PLANT = """
asset_types:
  - name: press
    attributes: {ideal_cycle_s: 2.5}
    measurements:
      - {name: temperature, unit: degC}
      - {name: running, type: boolean}
      - {name: recipe, type: string}
    events: [tool_change]
sites:
  - name: berlin
    timezone: Europe/Berlin
    areas:
      - name: press-shop
        lines:
          - name: line-1
            machines:
              - {name: press-01, type: press, display_name: Press 1}
              - {name: press-02, type: press}
devices:
  - {name: plc-1, assets: [berlin/press-shop/line-1/press-01]}
"""


@dataclass
class Api:
    client: TestClient
    root: str
    clock: SystemClock
    historian: DuckDBHistorian
    cache: RegistryCache
    stats: IngestStats

    def request(self, method: str, path: str, token: str | None, **kwargs: Any) -> Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, V1 + path if not path.startswith("/api") else path,
                                   headers=headers, **kwargs)

    def get(self, path: str, token: str | None, **kw: Any) -> Response:
        return self.request("GET", path, token, **kw)

    def post(self, path: str, token: str | None, **kw: Any) -> Response:
        return self.request("POST", path, token, **kw)

    def ok(self, method: str, path: str, token: str | None, status: int = 200, **kw: Any) -> Any:
        r = self.request(method, path, token, **kw)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def tenant(self, slug: str) -> str:
        """A new tenant; returns its first admin token."""
        self.ok("POST", "/tenants", self.root, 201, json={"slug": slug, "name": slug.title()})
        body = self.ok("POST", f"/tenants/{slug}/tokens", self.root, 201, json={"name": "admin", "role": "admin"})
        token: str = body["token"]
        return token

    def token(self, admin: str, role: str) -> str:
        body = self.ok("POST", "/tokens", admin, 201, json={"name": f"{role}-token", "role": role})
        assert body["role"] == role
        token: str = body["token"]
        return token

    def ingest(self, messages: list[RawMessage]) -> None:
        async def run() -> None:
            svc = IngestService(self.historian, self.cache, self.clock, self.stats)
            try:
                await svc.submit_messages(messages)
            finally:
                svc.close()

        self.cache.invalidate()
        asyncio.run(run())


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from _api(tmp_path)


def _api(tmp_path: Path) -> Iterator[Api]:
    db = Database(tmp_path / "shopfloor.duckdb")
    repo = DuckDBRegistry(db)
    historian = DuckDBHistorian(db)
    clock = SystemClock()
    stats = IngestStats(clock)
    cache = RegistryCache(repo, clock)
    registry = RegistryService(repo)
    services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                           TokenAuthenticator(repo), stats, invalidate=cache.invalidate)
    client = TestClient(create_app(services), raise_server_exceptions=False)
    root = registry.issue_platform_token("root").secret
    yield Api(client, root, clock, historian, cache, stats)
    client.close()
    historian.close()
    db.close()


@dataclass
class Plant:
    admin: str
    machine: dict[str, Any]
    series: dict[str, int]
    device: dict[str, Any]
    topic: str


def with_plant(api: Api, slug: str = "acme") -> Plant:
    admin = api.tenant(slug)
    applied = api.ok("PUT", "/plant", admin, content=PLANT.encode(), headers={"content-type": "application/yaml"})
    [secret] = applied["device_secrets"]
    [machine] = [m for m in api.ok("GET", "/assets?level=machine", admin) if m["name"] == "press-01"]
    series = {s["measurement"]: s["id"] for s in api.ok("GET", f"/assets/{machine['id']}/series", admin)}
    device = api.ok("GET", f"/devices/{secret['id']}", admin)
    return Plant(admin, machine, series, device, MACHINE_TOPIC.format(tenant=slug))


def assert_problem(r: Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


# -- authentication and roles ------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer sft_not-a-real-token"}, {"Authorization": "Bearer nonsense"},
    {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "},
])
def test_401_without_or_with_a_bad_token(api: Api, headers: dict[str, str]) -> None:
    r = api.client.get(f"{V1}/assets", headers=headers)
    assert_problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"


def test_platform_creates_tenants_and_their_tokens(api: Api) -> None:
    t = api.ok("POST", "/tenants", api.root, 201, json={"slug": "acme", "name": "ACME Corp"})
    assert (t["slug"], t["name"]) == ("acme", "ACME Corp")
    assert_problem(api.post("/tenants", api.root, json={"slug": "acme"}), 409)
    tok = api.ok("POST", "/tenants/acme/tokens", api.root, 201, json={"name": "first", "role": "admin"})
    assert tok["token"].startswith("sft_") and tok["tenant_id"] == t["id"] and tok["role"] == "admin"
    admin = tok["token"]
    assert api.ok("GET", "/tenants", admin) == [t]
    assert api.ok("GET", "/tenants/acme", admin) == t
    # a tenant token may not create tenants nor tokens for other tenants
    assert_problem(api.post("/tenants", admin, json={"slug": "evil"}), 403)
    assert_problem(api.post("/tenants/acme/tokens", admin, json={"name": "x", "role": "admin"}), 403)
    assert_problem(api.post("/tenants/nobody/tokens", api.root, json={"name": "x"}), 404)
    # the platform token has no tenant data of its own
    assert_problem(api.get("/assets", api.root), 403)
    api.tenant("globex")
    assert [x["slug"] for x in api.ok("GET", "/tenants", api.root)] == ["acme", "globex"]
    assert_problem(api.get("/tenants/globex", admin), 404)


def test_tenant_admin_creates_engineer_and_viewer_tokens(api: Api) -> None:
    admin = api.tenant("acme")
    engineer = api.token(admin, "engineer")
    viewer = api.token(admin, "viewer")
    names = {t["name"]: t for t in api.ok("GET", "/tokens", admin)}
    assert set(names) == {"admin", "engineer-token", "viewer-token"}
    assert all("token" not in t for t in names.values())  # the secret is never listed
    for tok in (engineer, viewer):
        assert_problem(api.post("/tokens", tok, json={"name": "x", "role": "admin"}), 403)
        assert_problem(api.get("/tokens", tok), 403)
    assert api.ok("GET", "/assets", viewer) == []
    # viewers read, engineers write
    body = assert_problem(api.post("/assets", viewer, json={"level": "site", "name": "berlin"}), 403)
    assert "viewer" in body["detail"]
    api.ok("POST", "/assets", engineer, 201, json={"level": "site", "name": "berlin"})
    assert [a["name"] for a in api.ok("GET", "/assets", viewer)] == ["berlin"]
    # revoking a token locks it out at once
    api.ok("DELETE", f"/tokens/{names['viewer-token']['id']}", admin, 204)
    assert_problem(api.get("/assets", viewer), 401)
    assert_problem(api.request("DELETE", "/tokens/99999", admin), 404)


def test_session_cookie_authenticates_too(api: Api) -> None:
    admin = api.tenant("acme")
    api.client.cookies.set("shopfloor_session", admin)
    try:
        assert api.client.get(f"{V1}/assets").status_code == 200
    finally:
        api.client.cookies.clear()


# -- CRUD ------------------------------------------------------------------------------------


def test_asset_type_crud(api: Api) -> None:
    admin = api.tenant("acme")
    body = {"name": "press", "description": "Hydraulic", "attributes": {"ideal_cycle_s": 2.5},
            "measurements": [{"name": "temperature", "unit": "degC"}, {"name": "running", "type": "boolean"}],
            "events": ["tool_change"]}
    created = api.ok("PUT", "/asset-types/press", admin, json=body)
    assert created["measurements"][1] == {"name": "running", "unit": "", "type": "boolean", "description": ""}
    assert api.ok("GET", "/asset-types/press", admin) == created
    assert api.ok("GET", "/asset-types", admin) == [created]
    replaced = api.ok("PUT", "/asset-types/press", admin, json={**body, "description": "Servo"})
    assert replaced["description"] == "Servo"
    assert_problem(api.request("PUT", "/asset-types/oven", admin, json=body), 422)  # name mismatch
    dup = {**body, "measurements": [{"name": "t"}, {"name": "t"}]}
    assert_problem(api.request("PUT", "/asset-types/press", admin, json=dup), 422)
    assert_problem(api.get("/asset-types/oven", admin), 404)
    # in use: cannot delete
    site = api.ok("POST", "/assets", admin, 201, json={"level": "site", "name": "s"})
    area = api.ok("POST", "/assets", admin, 201, json={"level": "area", "name": "a", "parent_id": site["id"]})
    line = api.ok("POST", "/assets", admin, 201, json={"level": "line", "name": "l", "parent_id": area["id"]})
    m = api.ok("POST", "/assets", admin, 201, json={"level": "machine", "name": "m", "parent_id": line["id"],
                                                     "type": "press"})
    assert_problem(api.request("DELETE", "/asset-types/press", admin), 409)
    api.ok("DELETE", f"/assets/{m['id']}", admin, 204)
    api.ok("DELETE", "/asset-types/press", admin, 204)
    assert api.ok("GET", "/asset-types", admin) == []


def test_asset_crud_and_tree_rules(api: Api) -> None:
    admin = api.tenant("acme")
    site = api.ok("POST", "/assets", admin, 201, json={"level": "site", "name": "berlin",
                                                       "timezone": "Europe/Berlin", "display_name": "Berlin"})
    assert (site["path"], site["timezone"], site["parent_id"]) == ("berlin", "Europe/Berlin", None)
    area = api.ok("POST", "/assets", admin, 201, json={"level": "area", "name": "press-shop",
                                                       "parent_id": site["id"]})
    line = api.ok("POST", "/assets", admin, 201, json={"level": "line", "name": "line-1", "parent_id": area["id"]})
    machines = [api.ok("POST", "/assets", admin, 201, json={"level": "machine", "name": f"press-0{i}",
                                                            "parent_id": line["id"],
                                                            "attributes": {"ideal_cycle_s": i}})
                for i in (1, 2)]
    assert machines[0]["path"] == "berlin/press-shop/line-1/press-01"
    assert machines[0]["display_name"] == "press-01"  # the name stands in for a missing display name
    listed = api.ok("GET", "/assets?level=machine", admin)
    assert [m["id"] for m in listed] == [m["id"] for m in machines]
    assert [a["id"] for a in api.ok("GET", f"/assets?parent_id={line['id']}", admin)] == [m["id"] for m in machines]
    assert len(api.ok("GET", "/assets", admin)) == 5
    assert api.ok("GET", f"/assets/{machines[0]['id']}", admin) == machines[0]
    patched = api.ok("PATCH", f"/assets/{machines[0]['id']}", admin,
                     json={"display_name": "Press 1", "attributes": {"ideal_cycle_s": 1.5}})
    assert (patched["display_name"], patched["attributes"]) == ("Press 1", {"ideal_cycle_s": 1.5})
    assert api.ok("PATCH", f"/assets/{site['id']}", admin, json={"timezone": "Asia/Tokyo"})["timezone"] == \
        "Asia/Tokyo"
    # the rules come back as 4xx with a message
    assert_problem(api.request("PATCH", f"/assets/{line['id']}", admin, json={"timezone": "Asia/Tokyo"}), 422)
    assert_problem(api.request("PATCH", f"/assets/{site['id']}", admin, json={"timezone": "Mars/Base"}), 422)
    assert_problem(api.post("/assets", admin, json={"level": "machine", "name": "x", "parent_id": area["id"]}), 422)
    assert_problem(api.post("/assets", admin, json={"level": "area", "name": "x"}), 422)
    assert_problem(api.post("/assets", admin, json={"level": "site", "name": "x", "timezone": "Nowhere/Town"}),
                   422)
    assert_problem(api.post("/assets", admin, json={"level": "machine", "name": "press-01",
                                                     "parent_id": line["id"]}), 409)
    assert_problem(api.request("DELETE", f"/assets/{line['id']}", admin), 409)
    api.ok("DELETE", f"/assets/{machines[1]['id']}", admin, 204)
    assert_problem(api.get(f"/assets/{machines[1]['id']}", admin), 404)


def test_device_crud_secret_shown_once_rotate_disable(api: Api) -> None:
    p = with_plant(api)
    created = api.ok("POST", "/devices", p.admin, 201, json={"name": "plc-2", "asset_ids": [p.machine["id"]],
                                                             "description": "spare"})
    secret = created["secret"]
    assert created["username"] == "acme.plc-2" and created["enabled"] and len(secret) >= 24
    shown = api.ok("GET", f"/devices/{created['id']}", p.admin)
    assert "secret" not in shown and secret not in json.dumps(shown)
    assert secret not in json.dumps(api.ok("GET", "/devices", p.admin))
    assert [d["name"] for d in api.ok("GET", "/devices", p.admin)] == ["plc-1", "plc-2"]
    assert_problem(api.post("/devices", p.admin, json={"name": "plc-2", "asset_ids": [p.machine["id"]]}), 409)
    rotated = api.ok("POST", f"/devices/{created['id']}/rotate-secret", p.admin)
    assert rotated["secret"] != secret and rotated["id"] == created["id"]
    off = api.ok("PATCH", f"/devices/{created['id']}", p.admin, json={"enabled": False})
    assert off["enabled"] is False
    assert api.ok("PATCH", f"/devices/{created['id']}", p.admin, json={"enabled": True})["enabled"] is True
    # a device is bound to one asset unless it is a gateway
    machines = [m["id"] for m in api.ok("GET", "/assets?level=machine", p.admin)]
    assert_problem(api.post("/devices", p.admin, json={"name": "two", "asset_ids": machines}), 422)
    gw = api.ok("POST", "/devices", p.admin, 201, json={"name": "gw", "asset_ids": machines, "gateway": True})
    assert gw["asset_ids"] == machines and gw["gateway"]
    viewer = api.token(p.admin, "viewer")
    assert_problem(api.post(f"/devices/{created['id']}/rotate-secret", viewer), 403)
    api.ok("DELETE", f"/devices/{created['id']}", p.admin, 204)
    assert_problem(api.get(f"/devices/{created['id']}", p.admin), 404)


def test_rotated_secret_is_what_the_store_verifies(api: Api) -> None:
    p = with_plant(api)
    rotated = api.ok("POST", f"/devices/{p.device['id']}/rotate-secret", p.admin)
    api.cache.invalidate()
    stored = api.cache.device(p.device["username"])
    assert stored is not None and verify_secret(rotated["secret"], stored.device.secret_hash)


# -- plant files -------------------------------------------------------------------------------


def test_put_plant_twice_is_idempotent_and_get_exports_it(api: Api) -> None:
    admin = api.tenant("acme")
    yaml_headers = {"content-type": "application/yaml"}
    first = api.ok("PUT", "/plant", admin, content=PLANT.encode(), headers=yaml_headers)
    assert first["created"] == {"asset_types": 1, "sites": 1, "areas": 1, "lines": 1, "machines": 2, "devices": 1}
    assert [d["name"] for d in first["device_secrets"]] == ["plc-1"]
    second = api.ok("PUT", "/plant", admin, content=PLANT.encode(), headers=yaml_headers)
    assert second["created"] == {} and second["updated"] == {} and second["device_secrets"] == []
    assert second["unchanged"] == first["created"]
    exported = api.client.get(f"{V1}/plant", headers={"Authorization": f"Bearer {admin}"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("application/yaml")
    doc = yaml.safe_load(exported.text)
    assert doc == yaml.safe_load(yaml.safe_dump(api.ok("GET", "/plant?format=json", admin)))
    assert {m["name"] for m in doc["sites"][0]["areas"][0]["lines"][0]["machines"]} == {"press-01", "press-02"}
    # the export applies cleanly to another tenant and exports the same
    other = api.tenant("globex")
    api.ok("PUT", "/plant", other, content=exported.content, headers=yaml_headers)
    assert api.client.get(f"{V1}/plant", headers={"Authorization": f"Bearer {other}"}).text == exported.text
    # JSON bodies work as well
    as_json = api.ok("PUT", "/plant", admin, json=doc)
    assert as_json["created"] == {} and as_json["updated"] == {}
    viewer = api.token(admin, "viewer")
    assert_problem(api.request("PUT", "/plant", viewer, content=PLANT.encode()), 403)


def test_oversized_plant_file_is_413(api: Api) -> None:
    admin = api.tenant("acme")
    body = b"# " + b"x" * (20 * 1024 * 1024) + b"\nsites: []\n"
    assert_problem(api.request("PUT", "/plant", admin, content=body), 413)


@pytest.mark.parametrize("body", [
    b"sites: [", b"\xff\xfe", b"- just\n- a list\n", b"sites:\n  - name: Not A Slug\n",
    b"sites:\n  - name: b\n    colour: red\n", b"!!python/object/apply:os.system ['true']\n",
    b"sites:\n  - name: b\n    timezone: Atlantis/City\n",
    b"devices:\n  - {name: d, assets: [no/such/path]}\n",
    b"sites: " + b"[" * 5000 + b"]" * 5000,
])
def test_bad_plant_files_are_422(api: Api, body: bytes) -> None:
    admin = api.tenant("acme")
    assert_problem(api.request("PUT", "/plant", admin, content=body), 422)


# -- tenant isolation --------------------------------------------------------------------------


def test_another_tenant_gets_404_for_ids_it_does_not_own(api: Api) -> None:
    a = with_plant(api, "acme")
    b = with_plant(api, "globex")
    mid, sid, did = a.machine["id"], a.series["temperature"], a.device["id"]
    api.ingest([RawMessage(a.device["username"], f"{a.topic}/telemetry", b'{"values": {"temperature": 5}}',
                           api.clock.now_us())])
    for method, path, kw in [
        ("GET", f"/assets/{mid}", {}), ("GET", f"/assets/{mid}/latest", {}), ("GET", f"/assets/{mid}/series", {}),
        ("PATCH", f"/assets/{mid}", {"json": {"display_name": "mine"}}), ("DELETE", f"/assets/{mid}", {}),
        ("GET", f"/series/{sid}/history", {}), ("GET", f"/series/{sid}/history?interval=1m", {}),
        ("GET", f"/events?asset_id={mid}", {}),
        ("GET", f"/devices/{did}", {}), ("PATCH", f"/devices/{did}", {"json": {"enabled": False}}),
        ("POST", f"/devices/{did}/rotate-secret", {}), ("DELETE", f"/devices/{did}", {}),
        ("POST", "/assets", {"json": {"level": "machine", "name": "x", "parent_id": a.machine["parent_id"]}}),
        ("POST", "/devices", {"json": {"name": "spy", "asset_ids": [mid]}}),
        ("DELETE", f"/tokens/{api.ok('GET', '/tokens', a.admin)[0]['id']}", {}),
    ]:
        assert_problem(api.request(method, path, b.admin, **kw), 404)
    # B sees only its own things, and none of A's data
    assert {m["id"] for m in api.ok("GET", "/assets?level=machine", b.admin)}.isdisjoint({mid})
    assert api.ok("GET", "/events", b.admin) == []
    assert api.ok("GET", "/dead-letters", b.admin) == []
    assert api.ok("GET", "/ingest/stats", b.admin)["messages_total"] == 0
    # and A's things are untouched
    assert api.ok("GET", f"/assets/{mid}", a.admin) == a.machine
    assert api.ok("GET", f"/devices/{did}", a.admin)["enabled"] is True
    latest = api.ok("GET", f"/assets/{mid}/latest", a.admin)
    assert {v["measurement"]: v["value"] for v in latest["values"]}["temperature"] == 5.0


# -- data: ingest through the service, read over HTTP ---------------------------------------------


def test_latest_history_events_dead_letters_and_stats(api: Api) -> None:
    p = with_plant(api)
    user = p.device["username"]
    now = api.clock.now_us()
    minute = 60_000_000
    t0 = (now - 10 * minute) // minute * minute
    temps = [(t0, 10.0), (t0 + 10_000_000, 20.0), (t0 + 40_000_000, 40.0)]

    def msg(kind: str, payload: Any, device: str = user) -> RawMessage:
        return RawMessage(device, f"{p.topic}/{kind}", json.dumps(payload).encode(), now)

    api.ingest([
        msg("telemetry", [{"ts": iso(ts), "values": {"temperature": v}} for ts, v in temps]),
        msg("telemetry", {"ts": t0 // 1000 + 45_000, "values": {"running": True, "recipe": "A-12",
                                                                "temperature": "hot"}}),
        msg("state", {"ts": iso(t0 + 5_000_000), "state": "unplanned_stop", "reason": "jam"}),
        msg("count", {"ts": iso(t0 + 6_000_000), "good": 5, "reject": 1}),
        msg("event", {"ts": iso(t0 + 7_000_000), "type": "tool_change", "tool": 3}),
        msg("status", "online"),
        msg("telemetry", {"values": {"temperature": 1}}, device="acme.stranger"),
    ])

    # latest values, state and status of the machine
    latest = api.ok("GET", f"/assets/{p.machine['id']}/latest", p.admin)
    values = {v["measurement"]: v for v in latest["values"]}
    assert (values["temperature"]["value"], values["temperature"]["ts"]) == (40.0, iso(temps[-1][0]))
    assert values["temperature"]["series_id"] == p.series["temperature"]
    assert (values["running"]["value"], values["recipe"]["value"]) == (True, "A-12")
    assert (latest["state"], latest["state_reason"], latest["state_since"]) == ("unplanned_stop", "jam",
                                                                                iso(t0 + 5_000_000))
    assert latest["status"] == "online"
    other = next(m for m in api.ok("GET", "/assets?level=machine", p.admin) if m["id"] != p.machine["id"])
    idle = api.ok("GET", f"/assets/{other['id']}/latest", p.admin)
    assert idle["state"] is None and all(v["value"] is None for v in idle["values"])

    sid = p.series["temperature"]
    window = f"from={iso(t0)}&to={iso(t0 + minute)}"
    raw = api.ok("GET", f"/series/{sid}/history?{window}", p.admin)
    assert raw["series"]["measurement"] == "temperature" and raw["buckets"] is None
    assert [(pt["ts"], pt["value"]) for pt in raw["points"]] == [(iso(ts), v) for ts, v in temps]
    ms_window = f"from={t0 // 1000}&to={(t0 + minute) // 1000}"
    assert api.ok("GET", f"/series/{sid}/history?{ms_window}", p.admin)["points"] == raw["points"]
    assert len(api.ok("GET", f"/series/{sid}/history?{window}&limit=2", p.admin)["points"]) == 2

    def bucket(agg: str, extra: str = "") -> dict[str, Any]:
        body = api.ok("GET", f"/series/{sid}/history?{window}&interval=1m&agg={agg}{extra}", p.admin)
        assert (body["agg"], body["interval"], body["points"]) == (agg, "1m", None)
        [b] = body["buckets"]
        assert (b["start"], b["end"]) == (iso(t0), iso(t0 + minute))
        return b

    vals = [v for _, v in temps]
    assert bucket("avg")["value"] == pytest.approx(sum(vals) / len(vals))
    assert bucket("avg")["count"] == len(vals)
    assert bucket("min")["value"] == min(vals) and bucket("max")["value"] == max(vals)
    assert bucket("sum")["value"] == pytest.approx(sum(vals))
    assert bucket("count")["value"] == len(vals)
    assert (bucket("first")["value"], bucket("last")["value"]) == (vals[0], vals[-1])

    def twa(staleness_us: int) -> float:
        """Each value holds until the next sample, the bucket's end or the staleness limit."""
        ends = [ts for ts, _ in temps[1:]] + [t0 + minute]
        spans = [(min(end, ts + staleness_us) - ts, v) for (ts, v), end in zip(temps, ends, strict=True)]
        return sum(d * v for d, v in spans) / sum(d for d, _ in spans)

    assert bucket("twa")["value"] == pytest.approx(twa(300_000_000))
    assert bucket("twa", "&staleness=5")["value"] == pytest.approx(twa(5_000_000))
    assert twa(300_000_000) != pytest.approx(sum(vals) / len(vals))  # the data tells twa from avg

    thirds = api.ok("GET", f"/series/{sid}/history?{window}&interval=20s&agg=avg", p.admin)["buckets"]
    assert [(b["value"], b["count"]) for b in thirds] == [(pytest.approx(15.0), 2), (None, 0), (40.0, 1)]

    # events, oldest first, filtered by asset and kind
    events = api.ok("GET", "/events", p.admin)
    assert [(e["kind"], e["type"]) for e in events] == [("state", "unplanned_stop"), ("count", "delta"),
                                                        ("event", "tool_change"), ("status", "online")]
    assert all(e["asset_id"] == p.machine["id"] for e in events)
    counts = api.ok("GET", f"/events?asset_id={p.machine['id']}&kind=count", p.admin)
    assert [e["data"] for e in counts] == [{"mode": "delta", "good": 5, "reject": 1}]
    in_window = api.ok("GET", f"/events?from={iso(t0 + 5_500_000)}&to={iso(t0 + 6_500_000)}", p.admin)
    assert [e["kind"] for e in in_window] == ["count"]

    # dead letters: the wrong type is the tenant's; the unknown device belongs to no tenant
    dead = api.ok("GET", "/dead-letters", p.admin)
    assert [(d["device"], d["reason"]) for d in dead] == [(user, "wrong_type")]
    assert "hot" in dead[0]["payload"] and dead[0]["topic"] == f"{p.topic}/telemetry"
    assert api.ok("GET", "/dead-letters?reason=too_old", p.admin) == []

    stats = api.ok("GET", "/ingest/stats", p.admin)
    assert (stats["messages_total"], stats["rejected_total"]) == (6, 1)
    assert stats["points_total"] == len(temps) + 2 + 4  # samples + running/recipe + four events
    assert stats["rejects"] == [{"device": user, "reason": "wrong_type", "count": 1}]
    device = api.ok("GET", f"/devices/{p.device['id']}", p.admin)
    assert device["rejects"] == 1 and device["last_message"] is not None

    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    lines = dict(line.rsplit(" ", 1) for line in metrics.text.splitlines() if line and not line.startswith("#"))
    assert float(lines["shopfloor_ingest_messages_total"]) == 7  # the unknown device's message too
    assert float(lines["shopfloor_ingest_rejected_total"]) == 2
    assert float(lines["shopfloor_store_commits_total"]) >= 1


# -- hostile input ---------------------------------------------------------------------------------

HUGE = 2**70
HOSTILE: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/assets", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("POST", "/assets", {"content": b"", "headers": {"content-type": "application/json"}}),
    ("POST", "/assets", {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}),
    ("POST", "/assets", {"json": ["a", "list"]}),
    ("POST", "/assets", {"json": {"level": "site", "name": "berlin"}}),  # exists: 409
    ("POST", "/assets", {"json": {"level": "site", "name": "x", "bogus": 1}}),
    ("POST", "/assets", {"json": {"level": "galaxy", "name": "x"}}),
    ("POST", "/assets", {"json": {"level": "site", "name": 5}}),
    ("POST", "/assets", {"json": {"level": "site", "name": "x" * 100}}),
    ("POST", "/assets", {"json": {"level": "area", "name": "x", "parent_id": HUGE}}),
    ("POST", "/assets", {"json": {"level": "area", "name": "x", "parent_id": 1e308}}),
    ("POST", "/assets", {"json": {"level": "area", "name": "x", "parent_id": "{m}"}}),
    ("POST", "/assets", {"json": {"level": "site", "name": "x", "timezone": "America"}}),
    ("POST", "/assets", {"content": b'{"level": "site", "name": "x", "attributes": {"a": ' + b"[" * 10_000
                         + b"]" * 10_000 + b"}}", "headers": {"content-type": "application/json"}}),
    ("GET", "/assets/not-an-int", {}),
    ("GET", "/assets/1.5", {}),
    ("GET", f"/assets/{HUGE}", {}),
    ("GET", "/assets/-1", {}),
    ("GET", "/assets?level=galaxy", {}),
    ("GET", "/assets?parent_id=abc", {}),
    ("PATCH", "/assets/{m}", {"json": {"timezone": "Europe/Berlin"}}),
    ("PATCH", "/assets/{m}", {"json": {"attributes": "not a dict"}}),
    ("PATCH", "/assets/{m}", {"json": {"type": "no-such-type"}}),
    ("DELETE", f"/assets/{HUGE}", {}),
    ("PUT", "/asset-types/press", {"json": {"name": "press", "measurements": [{"name": "t", "type": "complex"}]}}),
    ("PUT", "/asset-types/press", {"json": {"name": "press", "measurements": "t"}}),
    ("PUT", "/asset-types/Bad%20Name", {"json": {"name": "Bad Name"}}),
    ("POST", "/devices", {"json": {"name": "d", "asset_ids": []}}),
    ("POST", "/devices", {"json": {"name": "d", "asset_ids": [HUGE]}}),
    ("POST", "/devices", {"json": {"name": "d", "asset_ids": "{m}"}}),
    ("POST", "/devices", {"json": {"name": "d", "asset_ids": ["{m}x"]}}),
    ("PATCH", "/devices/{d}", {"json": {"enabled": [1]}}),
    ("PATCH", "/devices/{d}", {"json": {"asset_ids": []}}),
    ("PATCH", f"/devices/{HUGE}", {"json": {"enabled": False}}),
    ("POST", "/devices/abc/rotate-secret", {}),
    ("POST", "/tokens", {"json": {"name": "x", "role": "superuser"}}),
    ("POST", "/tokens", {"json": {"name": ""}}),
    ("DELETE", "/tokens/abc", {}),
    ("GET", "/series/{s}/history?from=yesterday", {}),
    ("GET", "/series/{s}/history?to=2024-13-45T00:00:00Z", {}),
    ("GET", "/series/{s}/history?from=2024-01-01T00:00:00", {}),  # no offset
    ("GET", "/series/{s}/history?from=1e400", {}),
    ("GET", "/series/{s}/history?from=%C2%B2", {}),  # "²" passes str.isdigit() but is no number
    ("GET", "/events?to=-%C2%B2", {}),
    ("GET", "/series/{s}/history?from=99999999999999999999999999", {}),
    ("GET", "/series/{s}/history?from=-99999999999999&to=0&interval=1d", {}),
    ("GET", "/series/{s}/history?from=9999-12-29T00:00:00Z&to=9999-12-31T00:00:00Z&interval=1h", {}),
    ("GET", "/series/{s}/history?from=9999-12-01T00:00:00Z&to=9999-12-29T00:00:00Z&interval=1mo", {}),
    ("GET", "/series/{s}/history?interval=0s", {}),
    ("GET", "/series/{s}/history?interval=-5m", {}),
    ("GET", "/series/{s}/history?interval=5x", {}),
    ("GET", "/series/{s}/history?interval=99999999999999999999s", {}),
    ("GET", "/series/{s}/history?interval=999999999h", {}),
    ("GET", "/series/{s}/history?interval=1s&from=2000-01-01T00:00:00Z&to=2024-01-01T00:00:00Z", {}),
    ("GET", "/series/{s}/history?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z", {}),
    ("GET", "/series/{s}/history?from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z&interval=1h", {}),
    ("GET", "/series/{s}/history?agg=median&interval=1m", {}),
    ("GET", "/series/{s}/history?limit=0", {}),
    ("GET", "/series/{s}/history?limit=1000000000", {}),
    ("GET", "/series/{s}/history?interval=1m&agg=twa&staleness=0", {}),
    ("GET", "/series/{s}/history?interval=1m&agg=twa&staleness=99999999999", {}),
    ("GET", "/series/abc/history", {}),
    ("GET", f"/series/{HUGE}/history", {}),
    ("GET", "/events?from=soon", {}),
    ("GET", "/events?asset_id=abc", {}),
    ("GET", f"/events?asset_id={HUGE}", {}),
    ("GET", "/events?limit=-1", {}),
    ("GET", "/events?from=-99999999999999999", {}),
    ("GET", "/dead-letters?limit=0", {}),
    ("GET", "/dead-letters?limit=abc", {}),
    ("POST", "/tenants", {"json": {"slug": "../etc"}}),
]


def _fill(body: Any, ids: dict[str, str]) -> Any:
    """Put real ids where a hostile body says "{m}" (the machine's id, as a number)."""
    if isinstance(body, dict):
        return {k: _fill(v, ids) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill(v, ids) for v in body]
    return int(ids["m"]) if body == "{m}" else body


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, Plant]]:
    """One plant for all hostile requests (each of which must change nothing)."""
    for api in _api(tmp_path_factory.mktemp("hostile")):
        plant = with_plant(api)
        before = api.ok("GET", "/plant?format=json", plant.admin)
        yield api, plant
        assert api.ok("GET", "/plant?format=json", plant.admin) == before


@pytest.mark.parametrize(("method", "path", "kw"), HOSTILE, ids=[f"{m} {p}"[:80] for m, p, _ in HOSTILE])
def test_hostile_input_is_4xx_never_500(hostile: tuple[Api, Plant], method: str, path: str,
                                        kw: dict[str, Any]) -> None:
    api, p = hostile
    ids = {"m": str(p.machine["id"]), "s": str(p.series["temperature"]), "d": str(p.device["id"])}
    path = path.format(**ids)
    if "json" in kw:
        kw = {**kw, "json": _fill(kw["json"], ids)}
    r = api.request(method, path, p.admin if not path.startswith("/tenants") else api.root, **kw)
    assert 400 <= r.status_code < 500, r.text
    assert_problem(r, r.status_code)


# -- documents and health --------------------------------------------------------------------------


def test_openapi_document_loads(api: Api) -> None:
    doc = api.client.get(f"{V1}/openapi.json").json()
    assert doc["info"]["title"] == "shopfloor"
    for path in ("/api/v1/assets", "/api/v1/assets/{asset_id}/latest", "/api/v1/series/{series_id}/history",
                 "/api/v1/plant", "/api/v1/devices/{device_id}/rotate-secret", "/api/v1/events"):
        assert path in doc["paths"]
    assert api.client.get(f"{V1}/docs").status_code == 200


def test_health_and_metrics_need_no_token(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    ready = api.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    metrics = api.client.get("/metrics")
    assert metrics.status_code == 200
    assert "# TYPE shopfloor_ingest_messages_total counter" in metrics.text
    assert "shopfloor_devices_online 0.0" in metrics.text


def test_unknown_routes_are_problems_too(api: Api) -> None:
    assert_problem(api.client.get(f"{V1}/nothing-here"), 404)
    assert_problem(api.client.delete("/healthz"), 405)
