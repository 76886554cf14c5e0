"""Operations endpoints over DuckDB: history export (CSV, Parquet, tenancy, errors) and health details."""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from starlette.exceptions import StarletteDeprecationWarning

from shopfloor.api.app import create_app
from shopfloor.api.deps import ApiServices
from shopfloor.domain.assets import Level, MeasurementDef, ValueType
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.tenancy import Role
from shopfloor.domain.timeutil import parse_ts
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.clock import SystemClock
from shopfloor.services.export import COLUMNS, ExportService
from shopfloor.services.health import HealthService
from shopfloor.services.history import HistoryService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.registry import DuckDBRegistry

with warnings.catch_warnings():  # starlette 1.x would rather have httpx2; httpx is what we ship
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

V1 = "/api/v1"
T0 = parse_ts("2026-11-23T08:00:00Z")
S = 1_000_000
PROBLEM = "application/problem+json"


@dataclass
class Site:
    token: str
    line_id: int
    machine_ids: list[int]
    series: dict[tuple[str, str], int]


@dataclass
class Ops:
    client: TestClient
    registry: RegistryService
    historian: DuckDBHistorian
    root: str
    broker_up: list[bool]

    def site(self, slug: str, role: Role = Role.VIEWER) -> Site:
        self.registry.create_tenant(PLATFORM, slug)
        _, eng = self.registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug=slug)
        _, token = self.registry.create_token(PLATFORM, "reader", role, tenant_slug=slug)
        ctx = TokenAuthenticator(self.registry.repo).context_for(eng)
        self.registry.put_asset_type(ctx, "press", measurements=[
            MeasurementDef("temperature", "degC"), MeasurementDef("recipe", "", ValueType.STRING)])
        site = self.registry.create_asset(ctx, Level.SITE, "berlin", timezone="Europe/Berlin")
        area = self.registry.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
        line = self.registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
        ids, series = [], {}
        for name in ("press-01", "press-02"):
            m = self.registry.create_asset(ctx, Level.MACHINE, name, parent_id=line.id, type_name="press")
            ids.append(m.id)
            series.update({(name, s.measurement): s.id for s in self.registry.series_of(ctx, m.id)})
        return Site(token, line.id, ids, series)


@pytest.fixture
def ops(tmp_path: Path) -> Iterator[Ops]:
    db = Database(tmp_path / "shopfloor.duckdb")
    repo = DuckDBRegistry(db)
    historian = DuckDBHistorian(db)
    registry = RegistryService(repo)
    clock = SystemClock()
    broker_up = [True]
    health = HealthService(clock, ping_database=lambda: db.cursor().execute("SELECT 1").fetchall(),
                           broker_connected=lambda: broker_up[0], last_commit_us=lambda: None, pending=lambda: 0)
    services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                           TokenAuthenticator(repo), IngestStats(clock),
                           export=ExportService(registry, historian, chunk_rows=1_000), health=health)
    client = TestClient(create_app(services), raise_server_exceptions=False)
    yield Ops(client, registry, historian, registry.issue_platform_token("root").secret, broker_up)
    client.close()
    health.close()
    historian.close()
    db.close()


def _store(ops: Ops, rows: list[tuple[int, int, float | None, str | None]]) -> None:
    b = IngestBatch()
    for sid, ts, value, text in rows:
        b.samples.add(sid, ts, value, text)
    ops.historian.commit(b)


def test_export_csv_streams_the_window(ops: Ops) -> None:
    site = ops.site("acme")
    temp, recipe = site.series[("press-01", "temperature")], site.series[("press-01", "recipe")]
    _store(ops, [(temp, T0 + i * S, i / 2, None) for i in range(2_500)] + [(recipe, T0 + 5, None, "A,1")])
    r = ops.client.get(f"{V1}/export", headers={"Authorization": f"Bearer {site.token}"},
                       params={"series_id": [temp, recipe], "from": "2026-11-23T08:00:00Z",
                               "to": "2026-11-23T08:30:00Z"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == \
        'attachment; filename="history-20261123T080000Z-20261123T083000Z.csv"'
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == list(COLUMNS) and len(rows) == 1 + 1_800 + 1
    assert rows[1] == ["2026-11-23T08:00:00.000000Z", "berlin/press-shop/line-1/press-01", "temperature", "degC",
                       "0.0", "", "0"]
    assert rows[2] == ["2026-11-23T08:00:00.000005Z", "berlin/press-shop/line-1/press-01", "recipe", "", "",
                       "A,1", "0"]
    assert rows[-1][0] == "2026-11-23T08:29:59.000000Z"


def test_export_parquet_of_a_whole_line(ops: Ops) -> None:
    site = ops.site("acme")
    _store(ops, [(sid, T0 + i * S, float(i), None) for sid in site.series.values() for i in range(10)])
    r = ops.client.get(f"{V1}/export", headers={"Authorization": f"Bearer {site.token}"},
                       params={"asset_id": site.line_id, "from": T0 // 1000, "to": (T0 + 60 * S) // 1000,
                               "format": "parquet"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert r.headers["content-disposition"].endswith('.parquet"')
    table = pq.read_table(io.BytesIO(r.content))
    assert table.num_rows == 40 and table.column_names == list(COLUMNS)
    assert sorted(set(table.column("asset_path").to_pylist())) == [
        "berlin/press-shop/line-1/press-01", "berlin/press-shop/line-1/press-02"]


def test_export_is_tenant_scoped(ops: Ops) -> None:
    acme, globex = ops.site("acme"), ops.site("globex")
    theirs = globex.series[("press-01", "temperature")]
    _store(ops, [(theirs, T0, 1.0, None)])
    for params in ({"series_id": theirs}, {"asset_id": globex.line_id},
                   {"series_id": [acme.series[("press-01", "temperature")], theirs]}):
        r = ops.client.get(f"{V1}/export", headers={"Authorization": f"Bearer {acme.token}"}, params=params)
        assert r.status_code == 404, r.text
        assert r.headers["content-type"] == PROBLEM
    r = ops.client.get(f"{V1}/export", headers={"Authorization": f"Bearer {ops.root}"}, params={"series_id": theirs})
    assert r.status_code == 403
    assert ops.client.get(f"{V1}/export", params={"series_id": theirs}).status_code == 401


@pytest.mark.parametrize(("params", "status", "detail"), [
    ({}, 422, "name what to export"),
    ({"series_id": "x"}, 422, "series_id"),
    ({"format": "xlsx", "series_id": 1}, 422, "format"),
    ({"series_id": 1, "from": "2026-11-23T09:00:00Z", "to": "2026-11-23T08:00:00Z"}, 422, "'to' must be after"),
    ({"series_id": 1, "from": "yesterday"}, 422, "'from'"),
    ({"series_id": 999}, 404, "no series 999"),
])
def test_export_bad_requests_are_problems(ops: Ops, params: dict[str, object], status: int, detail: str) -> None:
    site = ops.site("acme")
    if params.get("series_id") == 1:
        params["series_id"] = site.series[("press-01", "temperature")]
    r = ops.client.get(f"{V1}/export", headers={"Authorization": f"Bearer {site.token}"}, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM and detail in r.json()["detail"]


def test_export_not_configured_is_503(tmp_path: Path) -> None:
    db = Database(tmp_path / "shopfloor.duckdb")
    try:
        repo = DuckDBRegistry(db)
        registry = RegistryService(repo)
        historian = DuckDBHistorian(db)
        services = ApiServices(registry, PlantService(registry), HistoryService(registry, historian),
                               TokenAuthenticator(repo), IngestStats(SystemClock()))
        registry.create_tenant(PLATFORM, "acme")
        _, token = registry.create_token(PLATFORM, "v", Role.VIEWER, tenant_slug="acme")
        with TestClient(create_app(services), raise_server_exceptions=False) as client:
            r = client.get(f"{V1}/export", headers={"Authorization": f"Bearer {token}"}, params={"series_id": 1})
            assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
            # without a HealthService, readiness stays what it was
            assert client.get("/readyz").json() == {"status": "ready", "checks": {"store": True}}
            assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        db.close()


def test_readiness_reports_database_broker_and_ingest(ops: Ops) -> None:
    r = ops.client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"store": True, "ingest": True, "broker": True}
    assert body["database"]["ok"] is True and body["database"]["latency_ms"] >= 0
    assert body["ingest"] == {"last_commit": None, "lag_s": None, "pending": 0, "stuck": False}
    ops.broker_up[0] = False
    r = ops.client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["broker"] is False
    alive = ops.client.get("/healthz")  # liveness stays 200, with the same details
    assert alive.status_code == 200
    assert alive.json()["status"] == "ok" and alive.json()["ready"] is False
    assert alive.json()["broker"] == {"connected": False}
