"""The dashboard over HTTP (no browser): login to an HttpOnly cookie, pages, assets shipped in the
package, the plant overview with live states and shift KPIs, and its Server-Sent Events stream."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from shopfloor.bootstrap import Platform, build_platform
from shopfloor.config import Settings
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.tenancy import Role
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.registry import PLATFORM

pytestmark = pytest.mark.integration

WEB = Path(__file__).resolve().parents[2] / "src" / "shopfloor" / "web"
PLANT = {
    "asset_types": [{"name": "press", "attributes": {"ideal_cycle_time_s": 30},
                     "measurements": [{"name": "power", "unit": "kW"}]}],
    "sites": [{"name": "plant", "timezone": "Europe/Berlin", "areas": [{"name": "hall", "lines": [
        {"name": "line-1", "machines": [{"name": "press-01", "type": "press"}, {"name": "press-02", "type": "press"}]}]}]}],
    "devices": [{"name": "gw", "gateway": True, "assets": ["plant/hall/line-1"]}],
}
TOPIC = "shopfloor/v1/acme/plant/hall/line-1/{}/{}"
DOC = (Path(__file__).resolve().parents[2] / "docs" / "dashboard.md").read_text()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[Platform, str]]:
    p = build_platform(Settings(data_dir=tmp_path))
    p.registry.create_tenant(PLATFORM, "acme")
    _, token = p.registry.create_token(PLATFORM, "viewer", Role.VIEWER, tenant_slug="acme")
    _, admin = p.registry.create_token(PLATFORM, "admin", Role.ADMIN, tenant_slug="acme")
    p.plant.apply(p.auth.context_for(admin), plant_from_obj(PLANT))
    try:
        yield p, token
    finally:
        p.close()


async def _publish(p: Platform, machine: str, kind: str, payload: dict[str, object]) -> None:
    now = int(time.time() * 1_000_000)
    await p.ingest.submit_messages([RawMessage("acme.gw", TOPIC.format(machine, kind), json.dumps(payload).encode(), now)])


def test_pages_need_a_session_and_login_sets_an_httponly_cookie(platform: tuple[Platform, str]) -> None:
    p, token = platform
    with TestClient(p.http_app(), follow_redirects=False) as c:
        for path in ("/", "/kpis", "/devices", "/machines/1"):
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/login"
        bad = c.post("/login", data={"token": "sft_nope"})
        assert bad.status_code == 401 and "unknown or revoked API token" in bad.text
        assert c.post("/login", data={"token": "not-a-token"}).status_code == 401
        ok = c.post("/login", data={"token": token})
        assert ok.status_code == 303 and ok.headers["location"] == "/"
        cookie = ok.headers["set-cookie"]
        assert "shopfloor_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        page = c.get("/")
        assert page.status_code == 200 and "Plant overview" in page.text and "acme · viewer" in page.text
        assert c.get("/api/v1/overview").status_code == 200  # the cookie authenticates the API too
        out = c.post("/logout")
        assert out.status_code == 303 and 'shopfloor_session=""' in out.headers["set-cookie"]


def test_assets_ship_in_the_package_and_no_page_loads_anything_from_outside(platform: tuple[Platform, str]) -> None:
    p, _ = platform
    with TestClient(p.http_app()) as c:
        for path, kind in (("/static/app.js", "javascript"), ("/static/app.css", "css"),
                           ("/static/vendor/uPlot.iife.min.js", "javascript"), ("/static/favicon.svg", "svg")):
            r = c.get(path)
            assert r.status_code == 200 and kind in r.headers["content-type"], path
    for template in (WEB / "templates").glob("*.html"):
        assert not re.search(r"(src|href)=\"(https?:)?//", template.read_text()), template.name


async def test_overview_carries_live_states_and_shift_kpis(platform: tuple[Platform, str]) -> None:
    p, token = platform
    now_ms = int(time.time() * 1000)
    await _publish(p, "press-01", "state", {"ts": now_ms - 600_000, "state": "running"})
    await _publish(p, "press-01", "count", {"ts": now_ms - 1000, "good": 9, "reject": 1})
    await _publish(p, "press-02", "state", {"ts": now_ms - 5000, "state": "unplanned_stop", "reason": "jam"})
    await _publish(p, "press-02", "status", {"ts": now_ms - 5000, "status": "offline"})
    with TestClient(p.http_app()) as c:
        first = c.get("/api/v1/overview", headers={"Authorization": f"Bearer {token}"}).json()
        p.overview.wait_for_kpis(p.auth.context_for(token))  # the first answer does not wait for KPIs
        ov = c.get("/api/v1/overview", headers={"Authorization": f"Bearer {token}"}).json()
    assert first["machines"][0]["live"]["state"] is not None
    tiles = {m["name"]: m for m in ov["machines"]}
    assert set(tiles) == {"press-01", "press-02"}
    one, two = tiles["press-01"], tiles["press-02"]
    assert one["live"]["state"] == "running" and one["line"] == "line-1" and one["site"] == "plant"
    assert two["live"] == {"asset_id": two["asset_id"], "state": "unplanned_stop", "reason": "jam",
                           "since_us": (now_ms - 5000) * 1000, "online": False}
    # no calendar: the "shift" is the local day; 10 parts, 9 good, in 600 s of running at 30 s ideal
    k = one["kpis"]
    assert k is not None, one["kpi_error"]
    assert k["good_today"] == 9 and k["good_shift"] == 9
    assert k["quality_ratio"] == pytest.approx(0.9)
    assert k["availability"] == pytest.approx(1.0)
    # the "shift" starts at the site's local midnight: just after it, the 600 s of running are cut there
    local = datetime.fromtimestamp(now_ms / 1000, ZoneInfo("Europe/Berlin"))
    since_midnight = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    if since_midnight > 2:
        assert k["effectiveness"] == pytest.approx(10 * 30 / min(600.0, since_midnight), rel=0.01)
    assert ov["kpis_computed_us"] is not None


async def test_state_stream_sends_a_snapshot_then_changes(platform: tuple[Platform, str]) -> None:
    p, token = platform
    now_ms = int(time.time() * 1000)
    await _publish(p, "press-01", "state", {"ts": now_ms - 1000, "state": "idle"})
    svc = p.overview
    ctx = p.auth.context_for(token)
    first = svc.states(ctx)
    assert {s.state for s in first.values()} == {"idle"}
    await _publish(p, "press-01", "state", {"ts": now_ms, "state": "running"})
    await asyncio.sleep(1.05)  # past the one-second memo
    assert {s.state for s in svc.states(ctx).values()} == {"running"}
    with TestClient(p.http_app()) as c, c.stream("GET", "/api/v1/stream/states",
                                                   headers={"Authorization": f"Bearer {token}"}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        assert next(lines) == "event: states"
        data = json.loads(next(lines).removeprefix("data: "))
        assert [d["state"] for d in data] == ["running"]


def test_overview_and_stream_refuse_without_a_token(platform: tuple[Platform, str]) -> None:
    p, _ = platform
    with TestClient(p.http_app()) as c:
        for path in ("/api/v1/overview", "/api/v1/stream/states"):
            r = c.get(path)
            assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


async def test_the_documented_overview_example_has_the_shape_the_api_returns(platform: tuple[Platform, str]) -> None:
    example = json.loads(re.findall(r"```json\n(.*?)```", DOC, re.S)[0])
    p, token = platform
    now_ms = int(time.time() * 1000)
    await _publish(p, "press-01", "state", {"ts": now_ms - 60_000, "state": "running"})
    await _publish(p, "press-01", "count", {"ts": now_ms - 1000, "good": 2})
    with TestClient(p.http_app()) as c:
        c.get("/api/v1/overview", headers={"Authorization": f"Bearer {token}"})
        p.overview.wait_for_kpis(p.auth.context_for(token))
        real = c.get("/api/v1/overview", headers={"Authorization": f"Bearer {token}"}).json()
    assert set(real) == set(example)
    tile = next(m for m in real["machines"] if m["name"] == "press-01")
    doc_tile = example["machines"][0]
    assert set(tile) == set(doc_tile)
    assert set(tile["live"]) == set(doc_tile["live"]) and set(tile["kpis"]) == set(doc_tile["kpis"])
