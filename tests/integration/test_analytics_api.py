"""Analytics through the API on DuckDB and PostgreSQL: the worked example of
docs/analytics-platform.md on NASA C-MAPSS engines stored through back-fill — configure a RUL model,
train it from stored history, score engines in service, see the scores stored as a series (raw and
rolled up), follow new cycles; refusals as problem+json."""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from httpx import Response
from starlette.exceptions import StarletteDeprecationWarning

from shopfloor.api.app import create_app
from shopfloor.api.timeparams import iso
from shopfloor.bootstrap import Platform, build_platform
from shopfloor.config import Settings
from shopfloor.domain.alarms.engine import RuleEngine
from shopfloor.domain.alarms.rules import rules_from_obj
from shopfloor.domain.alarms.templates import AssetRef
from shopfloor.domain.records import SampleBatch
from shopfloor.domain.timeutil import parse_ts
from shopfloor.services.registry import PLATFORM

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "analytics-platform.md"
TRAIN = ROOT.parent / "shared" / "data" / "cmapss" / "train_FD001.txt"
V1 = "/api/v1"
MIN = 60_000_000
SENSORS = {"s2": 6, "s3": 7, "s4": 8, "s7": 11, "s11": 15, "s12": 16, "s15": 19, "s20": 25, "s21": 26}  # column
FLEET = range(1, 21)  # ran to failure in January
IN_SERVICE = 21  # truncated: its true RUL after the stored cycles is TRUE_RUL
TRUE_RUL = 40


def doc_json() -> list[dict[str, Any]]:
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)```", DOC.read_text(), re.S)]


class Api:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client, self.token = client, token

    def request(self, method: str, path: str, **kw: Any) -> Response:
        headers = {**kw.pop("headers", {}), "Authorization": f"Bearer {self.token}"}
        return self.client.request(method, V1 + path, headers=headers, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.request(method, path, **kw)
        assert r.status_code < 300, r.text
        return r.json() if r.content else None

    def problem(self, method: str, path: str, status: int, **kw: Any) -> str:
        r = self.request(method, path, **kw)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        detail: str = r.json()["detail"]
        return detail


def plant_yaml() -> str:
    measurements = ", ".join(f"{{name: {s}}}" for s in SENSORS)
    machines = "\n".join(f"              - {{name: engine-{u}, type: engine}}" for u in [*FLEET, IN_SERVICE])
    return f"""
asset_types:
  - name: engine
    measurements: [{measurements}, {{name: note, type: string}}]
sites:
  - name: hangar
    areas:
      - name: bay
        lines:
          - name: line-1
            machines:
{machines}
"""


def messages(unit: int, rows: np.ndarray, start_us: int) -> list[dict[str, Any]]:
    payload = [{"ts": iso(start_us + i * MIN), "values": {s: float(r[c - 1]) for s, c in SENSORS.items()}}
               for i, r in enumerate(rows)]
    return [{"topic": f"shopfloor/v1/acme/hangar/bay/line-1/engine-{unit}/telemetry", "payload": payload}]


@pytest.fixture(params=["duckdb", "postgres"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Platform]:
    if not TRAIN.exists():
        pytest.skip(f"{TRAIN} is not here (see ../shared/data/README.md)")
    kw: dict[str, Any] = {"data_dir": tmp_path, "raw_retention_days": 36_500}
    if request.param == "postgres":
        dsn, schema = request.getfixturevalue("pg_schema")
        kw.update(store="postgres", database_url=dsn, database_schema=schema)
    p = build_platform(Settings(**kw))
    yield p
    p.close()


def test_rul_worked_example(platform: Platform) -> None:
    model_body, train_body, score_body = doc_json()
    rows = np.loadtxt(TRAIN)
    life = {u: rows[rows[:, 0] == u] for u in [*FLEET, IN_SERVICE]}
    platform.registry.create_tenant(PLATFORM, "acme")
    _, token = platform.registry.create_token(PLATFORM, "eng", _role("engineer"), tenant_slug="acme")
    _, viewer = platform.registry.create_token(PLATFORM, "view", _role("viewer"), tenant_slug="acme")
    with TestClient(create_app(platform.api_services()), raise_server_exceptions=False) as client:
        api = Api(client, token)
        api.ok("PUT", "/plant", content=plant_yaml().encode(), headers={"content-type": "application/yaml"})
        january = parse_ts(train_body["from"])
        for u in FLEET:  # each engine's life starts on its own day in January
            report = api.ok("POST", "/messages", json=messages(u, life[u], january + (u % 3) * 86_400_000_000))
            assert report["accepted"] == 1, report
        in_service = life[IN_SERVICE][: len(life[IN_SERVICE]) - TRUE_RUL - 5]
        feb = parse_ts(score_body["from"])
        api.ok("POST", "/messages", json=messages(IN_SERVICE, in_service, feb))

        # configure: the output measurement joins the type
        model = api.ok("PUT", "/analytics/models/engine-rul", json=model_body)
        assert model["output"] == "rul" and model["trained"] is None
        assert any(m["name"] == "rul" and m["unit"] == "cycles" for m in api.ok("GET", "/asset-types/engine")["measurements"])
        assert "not trained" in api.problem("POST", "/analytics/models/engine-rul/score", 422, json=score_body)

        trained = api.ok("POST", "/analytics/models/engine-rul/train", json=train_body)["trained"]
        assert trained["rows"] == sum(len(life[u]) for u in FLEET)
        assert len(trained["assets"]) == len(FLEET)  # the engine in service has no January history
        assert trained["summary"]["config"]["rounds"] == 300
        assert [m["name"] for m in api.ok("GET", "/analytics/models")] == ["engine-rul"]

        report = api.ok("POST", "/analytics/models/engine-rul/score", json=score_body)
        engine = next(a for a in report["assets"] if a["path"].endswith(f"engine-{IN_SERVICE}"))
        assert engine["rows"] == engine["written"] == len(in_service)
        assert report["written"] == len(in_service)  # the fleet has no February data
        # the model is still a good judge 45 cycles before the end
        assert abs(engine["last_value"] - (TRUE_RUL + 5)) < 30

        # the scores are a series like any other: raw, and rolled up per hour
        series = {s["measurement"]: s["id"] for s in api.ok("GET", f"/assets/{engine['asset_id']}/series")}
        start, end = iso(feb), iso(feb + len(in_service) * MIN + MIN)
        raw = api.ok("GET", f"/series/{series['rul']}/history", params={"from": start, "to": end, "limit": 100_000})
        values = [p["value"] for p in raw["points"]]
        assert len(values) == len(in_service)
        assert values[-1] == pytest.approx(engine["last_value"], abs=1e-3)
        assert np.mean(values[:20]) > np.mean(values[-20:]) + 30  # it wears out
        hourly = api.ok("GET", f"/series/{series['rul']}/history",
                        params={"from": start, "to": end, "interval": "1h", "agg": "avg"})["buckets"]
        assert sum(b["count"] for b in hourly) == len(values)

        # five more cycles arrive; the followed engine is scored by the periodic job
        more = life[IN_SERVICE][len(in_service): len(in_service) + 5]
        api.ok("POST", "/messages", json=messages(IN_SERVICE, more, feb + len(in_service) * MIN))
        assert client.portal is not None
        assert platform.analytics is not None
        written = client.portal.call(platform.analytics.score_incoming)
        assert written == 5
        raw = api.ok("GET", f"/series/{series['rul']}/history",
                     params={"from": start, "to": iso(feb + 10_000 * MIN), "limit": 100_000})
        assert len(raw["points"]) == len(in_service) + 5
        assert client.portal.call(platform.analytics.score_incoming) == 0  # nothing new
        followed = api.ok("GET", "/analytics/models/engine-rul")
        assert len(followed["following"]) == len(FLEET) + 1  # every engine of the type, from February on
        assert followed["following"][str(engine["asset_id"])] == score_body["from"]
        assert followed["scored_to"] == {str(engine["asset_id"]): iso(feb + (len(in_service) + 4) * MIN)}

        # the engine runs on to its failure; the rule of the docs warns before it fails
        done = len(in_service) + 5
        rest = life[IN_SERVICE][done:]
        api.ok("POST", "/messages", json=messages(IN_SERVICE, rest, feb + done * MIN))
        assert client.portal.call(platform.analytics.score_incoming) == len(rest)
        failure_us = feb + (len(life[IN_SERVICE]) - 1) * MIN
        points = api.ok("GET", f"/series/{series['rul']}/history",
                        params={"from": start, "to": iso(failure_us + MIN), "limit": 100_000})["points"]
        assert len(points) == len(life[IN_SERVICE])
        rule = yaml.safe_load(re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)[0])
        path = next(a["path"] for a in api.ok("GET", "/assets") if a["id"] == engine["asset_id"])
        rules_engine = RuleEngine(platform.registry.tenant(PLATFORM, "acme").id, rules_from_obj([{"id": 1, **rule}]),
                                  [AssetRef.of_path(engine["asset_id"], path, "engine")],
                                  {series["rul"]: (engine["asset_id"], "rul")})
        batch = SampleBatch()
        for pt in points:
            batch.add(series["rul"], parse_ts(pt["ts"]), pt["value"])
        fired = [x for x in rules_engine.on_samples(batch, live=False).entries if x.action.value == "activate"]
        assert len(fired) == 1 and fired[0].value is not None and fired[0].value < rule["below"]
        warning_cycles = (failure_us - fired[0].ts_us) // MIN
        assert 5 <= warning_cycles <= 60, warning_cycles  # warned ahead of the failure, not at the start

        # refusals
        viewer_api = Api(client, viewer)
        viewer_api.problem("POST", "/analytics/models/engine-rul/train", 403, json=train_body)
        assert api.ok("GET", "/analytics/models/engine-rul")["trained"] is not None  # viewers may read
        assert "no measurement 'nope'" in api.problem("PUT", "/analytics/models/x", 422,
                                                      json={**model_body, "inputs": ["nope"]})
        assert "numeric" in api.problem("PUT", "/analytics/models/x", 422, json={**model_body, "inputs": ["note"]})
        assert "unknown RUL setting" in api.problem("PUT", "/analytics/models/x", 422,
                                                    json={**model_body, "params": {"windw": 3}})
        assert "unknown model kind" in api.problem("PUT", "/analytics/models/x", 422,
                                                   json={**model_body, "kind": "magic"})
        assert "already writes 'rul'" in api.problem("PUT", "/analytics/models/x", 422, json=model_body)
        assert "no stored history" in api.problem("POST", "/analytics/models/engine-rul/train", 422,
                                                  json={"from": "2024-01-01T00:00:00Z", "to": "2024-01-02T00:00:00Z"})
        api.problem("POST", "/analytics/models/missing/train", 404, json=train_body)
        api.problem("POST", "/analytics/models/engine-rul/train", 422, json={"from": "yesterday", "to": "now"})


@pytest.mark.parametrize(("kind", "inputs"), [("zscore", ["s4"]), ("windowed_gaussian", ["s4"]),
                                             ("pca_t2q", ["s2", "s3", "s4"])])
def test_anomaly_detector_scores_into_an_anomaly_series(platform: Platform, kind: str, inputs: list[str]) -> None:
    platform.registry.create_tenant(PLATFORM, "acme")
    _, token = platform.registry.create_token(PLATFORM, "eng", _role("engineer"), tenant_slug="acme")
    rng = np.random.default_rng(3)
    normal = rng.normal(0, 1, (450, 26)) + 100  # C-MAPSS layout: s4 is column 8
    odd = normal[:50].copy()
    odd[25:, SENSORS["s4"] - 1] += 12  # s4 jumps
    with TestClient(create_app(platform.api_services()), raise_server_exceptions=False) as client:
        api = Api(client, token)
        api.ok("PUT", "/plant", content=plant_yaml().encode(), headers={"content-type": "application/yaml"})
        t0 = parse_ts("2025-03-01T00:00:00Z")
        api.ok("POST", "/messages", json=messages(1, normal, t0))
        api.ok("POST", "/messages", json=messages(1, odd, t0 + 500 * MIN))
        engine_id = _engine_id(api, 1)
        m = api.ok("PUT", "/analytics/models/s4-watch", json={"asset_type": "engine", "inputs": inputs, "kind": kind})
        assert m["output"] == ("s4_anomaly" if len(inputs) == 1 else "anomaly")
        t = api.ok("POST", "/analytics/models/s4-watch/train",
                   json={"from": iso(t0), "to": iso(t0 + 450 * MIN), "assets": [engine_id]})["trained"]
        threshold = t["summary"]["threshold"]
        assert threshold > 0
        report = api.ok("POST", "/analytics/models/s4-watch/score",
                        json={"from": iso(t0 + 500 * MIN), "assets": [engine_id], "follow": False})
        assert report["written"] == 50
        sid = {s["measurement"]: s["id"] for s in api.ok("GET", f"/assets/{engine_id}/series")}[m["output"]]
        points = api.ok("GET", f"/series/{sid}/history",
                        params={"from": iso(t0 + 500 * MIN), "to": iso(t0 + 600 * MIN)})["points"]
        above = [i for i, p in enumerate(points) if p["value"] >= threshold]
        assert above and min(above) >= 25  # the jump crosses the learned threshold; nothing before it does
        assert api.ok("GET", "/analytics/models/s4-watch")["following"] == {}
        api.ok("DELETE", "/analytics/models/s4-watch")
        api.problem("GET", "/analytics/models/s4-watch", 404)


def test_detector_settings_are_checked_when_configured(platform: Platform) -> None:
    platform.registry.create_tenant(PLATFORM, "acme")
    _, token = platform.registry.create_token(PLATFORM, "eng", _role("engineer"), tenant_slug="acme")
    with TestClient(create_app(platform.api_services()), raise_server_exceptions=False) as client:
        api = Api(client, token)
        api.ok("PUT", "/plant", content=plant_yaml().encode(), headers={"content-type": "application/yaml"})
        body = {"asset_type": "engine", "inputs": ["s4"], "kind": "pca_t2q"}
        assert "two or more inputs" in api.problem("PUT", "/analytics/models/m", 422, json=body)
        assert "exactly one input" in api.problem("PUT", "/analytics/models/m", 422,
                                                  json={**body, "kind": "seasonal_median", "inputs": ["s2", "s3"]})
        assert "bad half_space_trees parameters" in api.problem(
            "PUT", "/analytics/models/m", 422, json={**body, "kind": "half_space_trees", "params": {"trees": 3}})
        assert "unknown zscore parameter" in api.problem("PUT", "/analytics/models/m", 422,
                                                         json={**body, "kind": "zscore", "params": {"q": 1}})


def _engine_id(api: Api, unit: int) -> int:
    return int(next(a["id"] for a in api.ok("GET", "/assets") if a["path"].endswith(f"engine-{unit}")))


def _role(name: str) -> Any:
    from shopfloor.domain.tenancy import Role

    return Role(name)
