"""The platform built on PostgreSQL (server mode stores): registry, ingest, history, readiness."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from shopfloor.api.app import create_app
from shopfloor.bootstrap import build_platform
from shopfloor.config import Settings
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.tenancy import Role
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.registry import PLATFORM

pytestmark = pytest.mark.integration

PLANT = {
    "asset_types": [{"name": "press", "measurements": [{"name": "power", "unit": "kW"}]}],
    "sites": [{"name": "plant", "timezone": "Europe/Berlin", "areas": [{"name": "hall", "lines": [
        {"name": "line-1", "machines": [{"name": "press-01", "type": "press"}]}]}]}],
    "devices": [{"name": "plc-1", "assets": ["plant/hall/line-1/press-01"]}],
}


async def test_postgres_platform_end_to_end(pg_schema: tuple[str, str], tmp_path: Path) -> None:
    dsn, schema = pg_schema
    p = build_platform(Settings(data_dir=tmp_path, store="postgres", database_url=dsn, database_schema=schema))
    try:
        p.registry.create_tenant(PLATFORM, "acme")
        _, token = p.registry.create_token(PLATFORM, "t", Role.ADMIN, tenant_slug="acme")
        ctx = p.auth.context_for(token)
        p.plant.apply(ctx, plant_from_obj(PLANT))
        now_ms = int(time.time() * 1000)
        topic = "shopfloor/v1/acme/plant/hall/line-1/press-01/telemetry"
        msgs = [RawMessage("acme.plc-1", topic, json.dumps({"ts": now_ms - 1000 * (10 - i),
                                                            "values": {"power": float(i)}}).encode(),
                           now_ms * 1000) for i in range(10)]
        await p.ingest.submit_messages(msgs)
        await p.ingest.submit_messages(msgs)  # redelivered: stored once
        with TestClient(create_app(p.api_services())) as client:
            h = {"Authorization": f"Bearer {token}"}
            machine = client.get("/api/v1/assets", params={"level": "machine"}, headers=h).json()[0]
            latest = client.get(f"/api/v1/assets/{machine['id']}/latest", headers=h).json()
            assert latest["values"][0]["value"] == 9.0
            sid = latest["values"][0]["series_id"]
            raw = client.get(f"/api/v1/series/{sid}/history", headers=h).json()["points"]
            assert [pt["value"] for pt in raw] == [float(i) for i in range(10)]
            ready = client.get("/readyz").json()  # no broker in this test: not ready, but the store is
            assert ready["database"]["ok"] is True and ready["checks"]["store"] is True
            assert ready["broker"]["connected"] is False
            assert ready["ingest"]["pending"] == 0 and ready["ingest"]["stuck"] is False
    finally:
        p.close()
