"""``shopfloor analytics list|configure|train|score`` against the API (through a TestClient as the
ApiClient's transport) over DuckDB."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from shopfloor import cli_analytics
from shopfloor.api.app import create_app
from shopfloor.api.timeparams import iso
from shopfloor.bootstrap import Platform, build_platform
from shopfloor.cli import app
from shopfloor.client import ApiClient
from shopfloor.config import Settings
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.tenancy import Role
from shopfloor.domain.timeutil import parse_ts
from shopfloor.services.registry import PLATFORM

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

MIN = 60_000_000
T0 = parse_ts("2025-03-01T00:00:00Z")
PLANT = {"asset_types": [{"name": "pump", "measurements": [{"name": "flow"}, {"name": "pressure"}]}],
         "sites": [{"name": "works", "areas": [{"name": "a", "lines": [{"name": "l", "machines": [
             {"name": "pump-1", "type": "pump"}]}]}]}]}


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Platform, str]]:
    p = build_platform(Settings(data_dir=tmp_path, raw_retention_days=36_500))
    p.registry.create_tenant(PLATFORM, "acme")
    _, token = p.registry.create_token(PLATFORM, "eng", Role.ENGINEER, tenant_slug="acme")
    p.plant.apply(p.auth.context_for(token), plant_from_obj(PLANT))
    with TestClient(create_app(p.api_services()), raise_server_exceptions=False) as client:
        def api_client(url: str | None, tok: str | None) -> ApiClient:
            c = ApiClient("http://testserver", tok)
            c.http.close()
            c.http = TestClient(client.app, base_url="http://testserver/api/v1",
                                headers={"Authorization": f"Bearer {tok}"}, raise_server_exceptions=False)
            return c

        monkeypatch.setattr(cli_analytics, "api_client", api_client)
        monkeypatch.setattr(cli_analytics, "console", Console(width=250, force_terminal=False, color_system=None))
        # stored history: a normal day, then a pressure drop
        ctx = p.auth.context_for(token)
        machine = p.registry.list_assets(ctx)[-1]
        sid = {s.measurement: s.id for s in p.registry.series_of(ctx, machine.id)}
        rng = np.random.default_rng(5)
        batch = IngestBatch()
        for i in range(400):
            batch.samples.add(sid["flow"], T0 + i * MIN, float(50 + rng.normal()))
            batch.samples.add(sid["pressure"], T0 + i * MIN, float(6 + 0.05 * rng.normal() - (2 if i >= 380 else 0)))
        client.portal.call(p.ingest.submit, batch)  # type: ignore[union-attr]
        yield p, token
    p.close()


def run(token: str, *args: str) -> str:
    r = CliRunner().invoke(app, [*args, "--token", token])
    assert r.exit_code == 0, (r.stdout, r.exception)
    return r.stdout


def test_configure_train_score_list(platform: tuple[Platform, str]) -> None:
    _, token = platform
    out = run(token, "analytics", "configure", "pump-watch", "--asset-type", "pump", "--kind", "pca_t2q",
              "--input", "flow", "--input", "pressure", "--params", '{"variance": 0.5}')
    assert "pump-watch pca_t2q on pump: flow, pressure -> anomaly; not trained" in out
    out = run(token, "analytics", "train", "pump-watch", "--from", iso(T0), "--to", iso(T0 + 300 * MIN))
    assert "trained" in out and "on 300 rows" in out
    body = json.loads(run(token, "analytics", "score", "pump-watch", "--from", iso(T0 + 300 * MIN), "--json"))
    assert body["written"] == 100 and body["assets"][0]["path"] == "works/a/l/pump-1"
    threshold = json.loads(run(token, "analytics", "list", "--json"))[0]["trained"]["summary"]["threshold"]
    assert body["assets"][0]["last_value"] >= threshold  # the pressure drop at the end
    table = run(token, "analytics", "list")
    assert "pump-watch" in table and "pca_t2q" in table
    out = run(token, "analytics", "score", "pump-watch", "--from", iso(T0 + 390 * MIN), "--no-follow")
    assert "works/a/l/pump-1" in out and "10" in out
    r = CliRunner().invoke(app, ["analytics", "configure", "x", "--asset-type", "pump", "--kind", "rul",
                                 "--input", "flow", "--params", "{nope", "--token", token])
    assert r.exit_code != 0 and "--params is not JSON" in (r.stdout + str(r.exception))
