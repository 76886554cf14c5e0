"""The KPI API over DuckDB: site calendars and cost models, KPIs by shift, back-fill through
POST /messages (tenant rules, hostile input, late data recomputing a closed shift), and the
lighthouse comparison of docs/kpis.md through /kpis/compare."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from httpx import Response
from starlette.exceptions import StarletteDeprecationWarning

from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.api.timeparams import iso
from shopfloor.domain.kpi.models import PeriodInputs
from shopfloor.ports.kpi import KpiRequest, KpiSource
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.clock import SystemClock
from shopfloor.services.history import HistoryService
from shopfloor.services.ingest import IngestService
from shopfloor.services.kpi_tiles import TiledKpiSource
from shopfloor.services.kpis import KpiService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.kpi import DuckDBKpiSource
from shopfloor.storage.duckdb.kpi_tiles import DuckDBKpiTileStore
from shopfloor.storage.duckdb.registry import DuckDBRegistry
from shopfloor.testing.kpi_reference_source import ReferenceKpiSource
from tests.unit.test_kpi_docs import lighthouse

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

V1 = "/api/v1"
H = 3_600_000_000
DAY = 24 * H
PROBLEM = "application/problem+json"
MACHINE = "berlin/assembly/line-1/cell-1"

PLANT = """
asset_types:
  - name: cell
    attributes: {ideal_cycle_time_s: 60}
    measurements:
      - {name: energy, unit: kWh}
      - {name: temperature, unit: degC}
sites:
  - name: berlin
    calendar:
      shifts:
        - {name: early, start: "06:00", end: "14:00"}
        - {name: late, start: "14:00", end: "22:00"}
    cost_model: {currency: EUR, tariff: {default_price: 0.25}, labour_rate: 40, overhead_per_hour: 50,
                 default_material_cost: 1.5}
    areas:
      - name: assembly
        lines:
          - name: line-1
            machines:
              - {name: cell-1, type: cell}
              - {name: cell-2, type: cell}
"""


@dataclass
class Api:
    client: TestClient
    root: str
    historian: DuckDBHistorian
    tiles: TiledKpiSource | None = None

    def request(self, method: str, path: str, token: str | None, **kwargs: Any) -> Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.request(method, V1 + path, headers=headers, **kwargs)

    def ok(self, method: str, path: str, token: str | None, status: int = 200, **kw: Any) -> Any:
        r = self.request(method, path, token, **kw)
        assert r.status_code == status, r.text
        return r.json() if r.content else None

    def problem(self, method: str, path: str, token: str | None, status: int, **kw: Any) -> str:
        r = self.request(method, path, token, **kw)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == PROBLEM
        detail: str = r.json()["detail"]
        return detail

    def tenant(self, slug: str) -> dict[str, str]:
        """A tenant with the plant applied; its admin, engineer and viewer tokens."""
        self.ok("POST", "/tenants", self.root, 201, json={"slug": slug})
        admin = self.ok("POST", f"/tenants/{slug}/tokens", self.root, 201, json={"name": "a", "role": "admin"})["token"]
        tokens = {"admin": admin}
        for role in ("engineer", "viewer"):
            tokens[role] = self.ok("POST", "/tokens", admin, 201, json={"name": role, "role": role})["token"]
        self.ok("PUT", "/plant", admin, content=PLANT.encode(), headers={"content-type": "application/yaml"})
        return tokens

    def asset(self, token: str, path: str) -> dict[str, Any]:
        found: dict[str, Any] = next(a for a in self.ok("GET", "/assets", token) if a["path"] == path)
        return found


def _app(tmp_path: Path, *, ingest: bool = True, kpis: bool = True,
         source: KpiSource | None = None, sql: bool = False, tiled: bool = False) -> Iterator[Api]:
    db = Database(tmp_path / "shopfloor.duckdb")
    repo = DuckDBRegistry(db)
    historian = DuckDBHistorian(db)
    clock = SystemClock()
    tiles = None
    if tiled:  # closed windows answered from kept tiles, over the SQL source
        tiles = TiledKpiSource(DuckDBKpiSource(db), DuckDBKpiTileStore(db), historian.last_seq, clock)
        source = tiles
    stats = IngestStats(clock)
    cache = RegistryCache(repo, clock)
    registry = RegistryService(repo)
    sink = IngestService(historian, cache, clock, stats)
    services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                           TokenAuthenticator(repo), stats, invalidate=cache.invalidate,
                           ingest=sink if ingest else None,
                           kpis=KpiService(registry, source or (DuckDBKpiSource(db) if sql else
                                                                ReferenceKpiSource(historian, historian)),
                                           clock, historian) if kpis else None)
    root = registry.issue_platform_token("root").secret
    with TestClient(create_app(services), raise_server_exceptions=False) as client:
        yield Api(client, root, historian, tiles)
    sink.close()
    historian.close()


@pytest.fixture(params=["reference", "duckdb", "tiled"])
def api(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Api]:
    yield from _app(tmp_path, sql=request.param == "duckdb", tiled=request.param == "tiled")


def topic(tenant: str, kind: str, machine: str = MACHINE) -> str:
    return f"shopfloor/v1/{tenant}/{machine}/{kind}"


def day_start(days_ago: int) -> int:
    now = SystemClock().now_us()
    return now - now % DAY - days_ago * DAY


def msg(tenant: str, kind: str, payload: Any, machine: str = MACHINE) -> dict[str, Any]:
    return {"topic": topic(tenant, kind, machine), "payload": payload}


def at(d: int, hours: float) -> str:
    return iso(d + round(hours * H))


def post(api: Api, token: str, messages: Sequence[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = api.ok("POST", "/messages", token, json=list(messages))
    return body


# -- site configuration ------------------------------------------------------------------------------
def test_site_calendar_and_cost_model_routes(api: Api) -> None:
    t = api.tenant("acme")
    site = api.asset(t["viewer"], "berlin")
    cal = api.ok("GET", f"/sites/{site['id']}/calendar", t["viewer"])
    assert cal["timezone"] == "UTC" and [s["name"] for s in cal["shifts"]] == ["early", "late"]
    new = {"timezone": "Europe/Berlin", "holidays": ["2026-12-25"],
           "shifts": [{"name": "day", "start": "07:00", "end": "15:30", "weekdays": [1, 2, 3, 4, 5],
                       "breaks": [{"start": "11:00", "end": "11:30"}]}]}
    stored = api.ok("PUT", f"/sites/{site['id']}/calendar", t["engineer"], json=new)
    assert stored["shifts"][0]["breaks"] == [{"start": "11:00", "end": "11:30"}]
    assert api.ok("GET", f"/sites/{site['id']}/calendar", t["viewer"]) == stored
    assert "calendar" in api.ok("GET", "/plant?format=json", t["viewer"])["sites"][0]
    assert "kpi_calendar" in api.ok("GET", f"/assets/{site['id']}", t["viewer"])["attributes"]
    api.problem("PUT", f"/sites/{site['id']}/calendar", t["viewer"], 403, json=new)
    assert "holiday" in api.problem("PUT", f"/sites/{site['id']}/calendar", t["engineer"], 422,
                                    json={"holidays": ["someday"]})
    api.problem("PUT", f"/sites/{site['id']}/calendar", t["engineer"], 422, json=[1, 2])
    line = api.asset(t["viewer"], "berlin/assembly/line-1")
    assert "belong to sites" in api.problem("GET", f"/sites/{line['id']}/calendar", t["viewer"], 422)
    model = api.ok("PUT", f"/sites/{site['id']}/cost-model", t["engineer"],
                   json={"currency": "USD", "labour_rate": 30, "tariff": {"default_price": 0.1}})
    assert model["tariff"]["timezone"] == "UTC" and model["currency"] == "USD"
    assert api.ok("GET", f"/sites/{site['id']}/cost-model", t["viewer"]) == model
    assert "negative" in api.problem("PUT", f"/sites/{site['id']}/cost-model", t["engineer"], 422,
                                     json={"labour_rate": -1})
    api.ok("DELETE", f"/sites/{site['id']}/calendar", t["engineer"], 204)
    assert "no shift calendar" in api.problem("GET", f"/sites/{site['id']}/calendar", t["viewer"], 404)
    api.ok("DELETE", f"/sites/{site['id']}/cost-model", t["engineer"], 204)
    api.problem("GET", f"/sites/{site['id']}/cost-model", t["viewer"], 404)
    rival = api.tenant("rival")
    api.problem("GET", f"/sites/{site['id']}/cost-model", rival["admin"], 404)
    api.problem("PUT", f"/sites/{site['id']}/calendar", rival["admin"], 404, json=new)


# -- back-fill and KPIs --------------------------------------------------------------------------------
def test_backfill_then_kpis_by_shift_and_late_data_recomputes_a_closed_shift(api: Api) -> None:
    t = api.tenant("acme")
    d = day_start(2)
    report = post(api, t["engineer"], [
        msg("acme", "event", {"ts": at(d, 5), "type": "work_order_start", "order_id": "O1", "product": "A"}),
        msg("acme", "state", [{"ts": at(d, 6), "state": "running"}, {"ts": at(d, 10), "state": "idle"},
                              {"ts": at(d, 14), "state": "running"}, {"ts": at(d, 22), "state": "planned_stop"}]),
        msg("acme", "count", {"ts": at(d, 9), "good": 200, "reject": 40}),
        msg("acme", "count", {"ts": at(d, 20), "good": 400}),
        msg("acme", "event", [{"ts": at(d, 6), "type": "clock_in", "operator": "ann"},
                              {"ts": at(d, 22), "type": "clock_out", "operator": "ann"}]),
        msg("acme", "telemetry", [{"ts": at(d, h), "values": {"energy": 500.0 + 10 * (h - 6)}} for h in (6, 14, 22)]),
    ])
    assert report == {"received": 6, "accepted": 6, "rejected": 0, "samples": 3, "events": 9, "reasons": {},
                      "errors": [], "errors_truncated": False}
    machine = api.asset(t["viewer"], MACHINE)
    events = api.ok("GET", f"/events?asset_id={machine['id']}&kind=state&from={at(d, 0)}&to={at(d, 24)}", t["viewer"])
    assert [(e["ts"], e["type"]) for e in events] == [(at(d, 6), "running"), (at(d, 10), "idle"),
                                                      (at(d, 14), "running"), (at(d, 22), "planned_stop")]
    energy = next(s for s in api.ok("GET", f"/assets/{machine['id']}/series", t["viewer"])
                  if s["measurement"] == "energy")
    points = api.ok("GET", f"/series/{energy['id']}/history?from={at(d, 0)}&to={at(d, 24)}", t["viewer"])["points"]
    assert [p["value"] for p in points] == [500.0, 580.0, 660.0]

    query = f"/kpis?asset={MACHINE}&from={at(d, 0)}&to={at(d, 24)}&by=shift"
    before = api.ok("GET", query, t["viewer"])
    early, late = before["groups"]
    assert (early["key"], early["from"], early["to"]) == (f"{iso(d)[:10]}/early", at(d, 6), at(d, 14))
    assert early["kpis"]["availability"]["value"] == pytest.approx(0.5)
    assert late["kpis"]["availability"]["value"] == pytest.approx(1.0)
    assert early["kpis"]["quality"]["value"] == early["kpis"]["quality_ratio"]["value"] == pytest.approx(200 / 240)
    assert before["kpis"]["energy_efficiency"]["value"] == pytest.approx(600 / 160)
    assert before["kpis"]["labour_productivity"]["value"] == pytest.approx(600 / 16)
    assert before["cost"]["currency"] == "EUR" and before["currency"] == "EUR"
    # energy 160 kWh * 0.25 + labour 16 h * 40 + material 640 units * 1.5 + overhead 16 h * 50, over 600 good
    assert before["kpis"]["unit_cost"]["value"] == pytest.approx((40 + 640 + 960 + 800) / 600)
    assert before["downtime"] == [{"reason": "idle", "seconds": 4 * 3600.0, "share": 1.0, "cumulative": 1.0}]

    if api.tiles is not None:  # both shifts and the night before were kept (00:00-06:00, 06:00-14:00 and
        # 14:00-22:00 each have the energy reading that ends them; 22:00-24:00 has none yet): read back
        assert api.ok("GET", query, t["viewer"]) == before
        assert api.tiles.last_hits == 3

    # a late message: the machine was running again from 12:00; the closed early shift changes
    late_report = post(api, t["engineer"], [msg("acme", "state", {"ts": at(d, 12), "state": "running"})])
    assert late_report["accepted"] == 1
    after = api.ok("GET", query, t["viewer"])
    assert after["groups"][0]["kpis"]["availability"]["value"] == pytest.approx(0.75)
    assert after["groups"][1] == late
    if api.tiles is not None:  # the late event dropped the tiles it may change: all but 00:00-06:00, which ends before it
        assert api.tiles.last_hits == 1
        assert api.ok("GET", query, t["viewer"]) == after and api.tiles.last_hits == 3


def test_backfill_tenant_rules_and_per_value_validation(api: Api) -> None:
    acme, rival = api.tenant("acme"), api.tenant("rival")
    d = day_start(1)
    old = day_start(40)
    report = post(api, acme["engineer"], [
        msg("rival", "state", {"ts": at(d, 6), "state": "running"}),  # another tenant's machine
        msg("acme", "state", [{"ts": at(d, 6), "state": "running"}, {"ts": at(d, 7), "state": "dancing"}]),
        msg("acme", "state", {"ts": at(old, 6), "state": "running"}),  # older than the raw retention
        {"topic": "spBv1.0/g/NDATA/n", "payload": "x"},
        msg("acme", "telemetry", {"ts": at(d, 6), "values": {"temperature": 21.5}}, machine="berlin/assembly/line-1/nope"),
        msg("acme", "count", "not json"),
    ])
    assert (report["received"], report["accepted"], report["rejected"]) == (6, 0, 6)
    assert report["reasons"] == {"invalid_state": 1, "outside_prefix": 1, "too_old": 1, "undecodable": 1,
                                 "unknown_asset": 1, "unknown_topic": 1}
    assert report["events"] == 1  # the one good state of the second message
    by_index = {e["index"]: e["reason"] for e in report["errors"]}
    assert by_index == {0: "outside_prefix", 1: "invalid_state", 2: "too_old", 3: "unknown_topic", 4: "unknown_asset",
                        5: "undecodable"}
    # the rival's machine got nothing; acme's dead letters are in acme's log
    rival_machine = api.asset(rival["viewer"], MACHINE)
    assert api.ok("GET", f"/events?asset_id={rival_machine['id']}", rival["viewer"]) == []
    reasons = {x["reason"] for x in api.ok("GET", "/dead-letters", acme["viewer"])}
    assert {"invalid_state", "too_old", "unknown_asset", "undecodable"} <= reasons
    assert api.ok("GET", "/dead-letters", rival["viewer"]) == []


@pytest.mark.parametrize(("body", "status"), [
    (b"not json", 422),
    (b'{"topic": "x", "payload": {}}', 422),
    (b'[{"topic": "x"}]', 422),
    (b'[{"topic": 1, "payload": {}}]', 422),
    (b'[{"topic": "x", "payload": 5}]', 422),
    (b'[{"topic": "x", "payload": null}]', 422),
    (b'[{"topic": "x", "payload": {}, "device": "plc"}]', 422),
    (b"[" + b",".join([b'{"topic": "x", "payload": "y"}'] * 10_001) + b"]", 413),
    (b'["' + b"x" * (10 * 1024 * 1024) + b'"]', 413),
    (b'[{"topic": "\\ud800", "payload": "\\ud800"}]', 422),
    (b'[{"topic": "x", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]", 422),
    (b'[{"topic": "shopfloor/v1/acme/berlin/assembly/line-1/cell-1/state", "payload": "\\u0000"}]', 200),
])
def test_hostile_backfill_bodies_are_4xx(api: Api, body: bytes, status: int) -> None:
    t = api.tenant("acme")
    r = api.request("POST", "/messages", t["engineer"], content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    if status != 200:
        assert r.headers["content-type"] == PROBLEM


def test_backfill_needs_an_engineer_of_a_tenant_and_a_configured_ingest(api: Api, tmp_path: Path) -> None:
    t = api.tenant("acme")
    one = [msg("acme", "status", "online")]
    api.problem("POST", "/messages", None, 401, json=one)
    api.problem("POST", "/messages", t["viewer"], 403, json=one)
    api.problem("POST", "/messages", api.root, 403, json=one)  # the platform token has no tenant
    api.problem("POST", "/messages", t["engineer"], 413, json=one, headers={"content-length": str(11 * 1024 * 1024)})
    for bare in _app(tmp_path / "bare", ingest=False, kpis=False):
        tb = bare.tenant("acme")
        assert "not configured" in bare.problem("POST", "/messages", tb["engineer"], 503, json=one)
        assert "not configured" in bare.problem("GET", f"/kpis?asset={MACHINE}&from=0", tb["viewer"], 503)
        assert "not configured" in bare.problem(
            "GET", f"/kpis/compare?asset={MACHINE}&baseline_from=0&baseline_to=1&current_from=1&current_to=2",
            tb["viewer"], 503)


def test_kpi_queries_that_are_refused(api: Api) -> None:
    acme, rival = api.tenant("acme"), api.tenant("rival")
    machine = api.asset(acme["viewer"], MACHINE)
    d = day_start(1)
    window = f"from={at(d, 0)}&to={at(d, 24)}"
    api.problem("GET", f"/kpis?asset={machine['id']}&{window}", None, 401)
    api.problem("GET", f"/kpis?asset={machine['id']}&{window}", rival["viewer"], 404)
    api.problem("GET", f"/kpis?asset={machine['id']}&to={at(d, 24)}", acme["viewer"], 422)
    api.problem("GET", f"/kpis?asset={machine['id']}&{window}&by=week", acme["viewer"], 422)
    api.problem("GET", f"/kpis?asset={machine['id']}&from=yesterday", acme["viewer"], 422)
    api.problem("GET", f"/kpis?asset=berlin&{window}", acme["viewer"], 422)
    api.problem("GET", f"/kpis?asset={machine['id']}&from={at(d, 24)}&to={at(d, 0)}", acme["viewer"], 422)
    api.problem("GET", f"/kpis?asset=99999&{window}", acme["viewer"], 404)
    body = api.ok("GET", f"/kpis?asset={machine['id']}&{window}", acme["viewer"])
    assert body["asset"] == {"id": machine["id"], "name": "cell-1", "path": MACHINE, "level": "machine"}
    assert body["kpis"]["oee"]["value"] is None and body["coverage"] == 0.0  # nothing known yet
    line = api.ok("GET", f"/kpis?asset=berlin/assembly/line-1&{window}&by=day", acme["viewer"])
    assert line["line"]["rule"] == "bottleneck" and [m["machine"] for m in line["machines"]] == ["cell-1", "cell-2"]
    assert [g["key"] for g in line["groups"]] == [iso(d)[:10]]


# -- the lighthouse comparison ---------------------------------------------------------------------------
class LighthouseSource:
    """The stores' answer for the two months of docs/kpis.md, whatever the events: the page's inputs."""

    def __init__(self, baseline: tuple[int, int], current: tuple[int, int], doc: dict[str, Any]) -> None:
        self.by_window = {baseline: msgspec.convert(doc["baseline"], PeriodInputs),
                          current: msgspec.convert(doc["current"], PeriodInputs)}
        self.requests: list[KpiRequest] = []

    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        self.requests.extend(requests)
        return [self.by_window[w] for r in requests for w in r.windows]


def test_the_lighthouse_comparison_through_the_api(tmp_path: Path) -> None:
    doc, expected = lighthouse()
    baseline = (1_767_225_600_000_000, 1_767_225_600_000_000 + 720 * H)  # 2026-01-01, 30 days
    current = (baseline[0] + 365 * DAY, baseline[0] + 365 * DAY + 720 * H)
    source = LighthouseSource(baseline, current, doc)
    for api in _app(tmp_path, source=source):
        t = api.tenant("acme")
        site = api.asset(t["viewer"], "berlin")
        api.ok("PUT", f"/sites/{site['id']}/cost-model", t["engineer"], json=doc["cost_model"])
        machine = api.asset(t["viewer"], MACHINE)
        api.ok("PATCH", f"/assets/{machine['id']}", t["engineer"],
               json={"attributes": {"ideal_cycle_time_s": doc["cycle_times"]["default"]}})
        q = (f"/kpis/compare?asset={machine['id']}&baseline_from={iso(baseline[0])}&baseline_to={iso(baseline[1])}"
             f"&current_from={iso(current[0])}&current_to={iso(current[1])}")
        body = api.ok("GET", q, t["viewer"])
        for key, claimed in doc["claim"].items():
            assert round(body["changes"][key]["change"], 2) == claimed, key
        u = body["unit_cost"]
        assert u == json.loads(json.dumps(msgspec.to_builtins(expected.unit_cost)))
        assert sum(u["effects"].values()) == pytest.approx(u["change"], abs=1e-12)
        assert round(u["relative_effects"]["labour"] * 100, 1) == -12.0
        assert body["oee"]["effects"] == pytest.approx(msgspec.to_builtins(expected.oee)["effects"])
        assert body["currency"] == "EUR"
        assert body["baseline"]["kpis"]["unit_cost"]["value"] == pytest.approx(6.648)
        # the source was asked once per period, with the site's tariff cut into its periods
        assert [tuple(r.windows) for r in source.requests] == [(baseline,), (current,)]
        assert source.requests[0].tariff is not None and {p for _, _, p in source.requests[0].tariff} == {
            "peak", "off_peak"}
        # the same report in the plant file: the cost model is exported as a section
        exported = yaml.safe_load(api.request("GET", "/plant", t["viewer"]).text)
        assert exported["sites"][0]["cost_model"]["labour_rate"] == 38.0
