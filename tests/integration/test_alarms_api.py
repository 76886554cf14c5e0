"""The alarm API of a running server (``serve``: uvicorn, the embedded broker, rules): roles, rules
CRUD with problem+json for bad input, the live stream (server-sent events) receiving a new alarm,
back-fill through POST /messages that is journalled but never streamed, acknowledgement, journal,
flood statistics, webhooks."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from shopfloor.bootstrap import Platform, serve
from shopfloor.cli import app
from shopfloor.domain.tenancy import Role
from shopfloor.services.registry import PLATFORM
from tests.conftest import free_port
from tests.integration.alarm_helpers import HOT_RULE, TOPIC, make_plant, settings_for, telemetry, wait_for

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


async def _events(resp: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    event = ""
    async for line in resp.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


async def test_alarm_api_stream_backfill_and_roles(tmp_path: Path) -> None:
    settings = settings_for("duckdb", tmp_path, None, http_port=free_port(), mqtt_port=free_port(), alarm_tick_s=0.2)
    plant = make_plant(settings)
    p = plant.platform
    _, viewer = p.registry.create_token(PLATFORM, "vera", Role.VIEWER, tenant_slug="acme")
    stop = asyncio.Event()
    started = asyncio.Event()

    def on_start(_: Platform) -> None:
        started.set()

    server = asyncio.create_task(serve(p, stop, started=on_start))
    try:
        await asyncio.wait_for(started.wait(), 30)
        base = f"http://127.0.0.1:{settings.http_port}/api/v1"
        admin = {"Authorization": f"Bearer {plant.admin}"}
        operator = {"Authorization": f"Bearer {plant.operator}"}
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            r = await http.post("/rules", json=HOT_RULE, headers={"Authorization": f"Bearer {viewer}"})
            assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
            r = await http.post("/rules", json={**HOT_RULE, "high": "very"}, headers=admin)
            assert r.status_code == 422 and r.headers["content-type"] == PROBLEM and "high" in r.json()["detail"]
            r = await http.post("/rules", json={**HOT_RULE, "kind": "telepathy"}, headers=admin)
            assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
            rule = (await http.post("/rules", json=HOT_RULE, headers=admin)).json()
            assert rule["id"] > 0 and rule["high"] == 80.0 and rule["source"] == "api"
            assert (await http.post("/rules", json=HOT_RULE, headers=admin)).status_code == 409
            assert (await http.get(f"/rules/{rule['name']}", headers=admin)).json()["id"] == rule["id"]

            async with http.stream("GET", "/alarms/stream", headers=admin) as resp:
                assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
                events = _events(resp)
                await p.ingest.submit_messages(telemetry("press-01", [95.0]))  # live
                event, data = await asyncio.wait_for(anext(events), 10)
                assert event == "activate" and data["alarm"]["value"] == 95.0 and data["entry"]["live"] is True
                asset_id = data["alarm"]["asset_id"]

                now_ms = int(time.time() * 1000)
                back = [{"topic": TOPIC.format(machine="press-02"),
                         "payload": {"ts": now_ms - 5000, "values": {"temperature": 99.0}}}]
                report = (await http.post("/messages", json=back, headers=admin)).json()
                assert report["accepted"] == 1
                await wait_for(lambda: len(p.stores.alarms.journal(1)) == 2, what="the back-filled alarm")

                r = await http.post(f"/alarms/{rule['id']}/{asset_id}/acknowledge", json={"comment": "seen"},
                                    headers={"Authorization": f"Bearer {viewer}"})
                assert r.status_code == 403
                r = await http.post(f"/alarms/{rule['id']}/{asset_id}/acknowledge", json={"comment": "seen"},
                                    headers=operator)
                assert r.status_code == 200 and r.json()["state"] == "active_acknowledged"
                event, data = await asyncio.wait_for(anext(events), 10)  # not the back-filled activation
                assert event == "acknowledge" and data["entry"]["user"] == "oscar"

            alarms = (await http.get("/alarms", params={"state": "active_unacknowledged"}, headers=admin)).json()
            assert len(alarms) == 1 and alarms[0]["value"] == 99.0 and alarms[0]["asset_id"] != asset_id
            journal = (await http.get("/alarms/journal", params={"action": "activate"}, headers=admin)).json()
            assert sorted(e["live"] for e in journal) == [False, True]
            r = await http.post(f"/alarms/{rule['id']}/{asset_id}/shelve", json={"minutes": 0}, headers=operator)
            assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
            r = await http.post(f"/alarms/{rule['id']}/{asset_id}/shelve", json={"minutes": 30}, headers=operator)
            assert r.status_code == 200 and r.json()["shelved_by"] == "oscar"
            assert (await http.get("/alarms", params={"annunciated": "true"}, headers=admin)).json()[0]["asset_id"] \
                != asset_id
            flood = (await http.get("/alarms/flood", params={"from": str(int(time.time() * 1000) - 3_600_000)},
                                    headers=admin)).json()
            assert [(f["area"], f["alarms"]) for f in flood] == [("plant/hall", 2)]
            assert isinstance((await http.get("/alarms/system", headers=admin)).json(), list)

            # backtest from the CLI (it talks to this server): both hot readings, nothing stored
            journal_before = len(p.stores.alarms.journal(1))
            args = ["rules", "backtest", rule["name"], "--from", str(int(time.time() * 1000) - 3_600_000),
                    "--json", "--url", f"http://127.0.0.1:{settings.http_port}", "--token", plant.admin]
            result = await asyncio.to_thread(CliRunner().invoke, app, args)
            assert result.exit_code == 0, result.output
            report = json.loads(result.output)
            assert sorted(a["value"] for a in report["alarms"]) == [95.0, 99.0] and report["assets"] == 2
            assert len(p.stores.alarms.journal(1)) == journal_before
            result = await asyncio.to_thread(CliRunner().invoke, app, [
                "alarms", "list", "--json", "--url", f"http://127.0.0.1:{settings.http_port}", "--token", plant.admin])
            assert result.exit_code == 0 and [a["value"] for a in json.loads(result.output)] == [99.0]

            # rules in the plant file, matched by name; a bad one refuses the whole file
            yaml_rules = "rules:\n  - {name: press silent, kind: no_data, asset_type: press, silent_s: 600}\n"
            put = await http.put("/plant", content=yaml_rules, headers={**admin, "Content-Type": "application/yaml"})
            assert put.status_code == 200 and put.json()["created"] == {"rules": 1}, put.text
            put = await http.put("/plant", content=yaml_rules, headers={**admin, "Content-Type": "application/yaml"})
            assert put.json()["unchanged"] == {"rules": 1}
            bad = "rules:\n  - {name: broken, kind: threshold, asset_type: press}\n"
            put = await http.put("/plant", content=bad, headers={**admin, "Content-Type": "application/yaml"})
            assert put.status_code == 422 and put.headers["content-type"] == PROBLEM
            names = {r["name"]: r["source"] for r in (await http.get("/rules", headers=admin)).json()}
            assert names == {"press too hot": "api", "press silent": "plant"}

            hook = (await http.post("/alarms/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=admin)).json()
            assert len(hook["secret"]) >= 16
            assert "secret" not in (await http.get("/alarms/webhooks", headers=admin)).json()[0]
            r = await http.post("/alarms/webhooks", json={"url": "ftp://x"}, headers=admin)
            assert r.status_code == 422
            assert (await http.delete(f"/alarms/webhooks/{hook['id']}", headers=admin)).status_code == 204
            assert (await http.delete(f"/rules/{rule['id']}", headers=admin)).status_code == 204
            assert (await http.get("/alarms", headers=admin)).json() == []

        # a stream still open when the server stops ends, and does not hold the shutdown
        listener = httpx.AsyncClient(base_url=base, timeout=60)
        opened = asyncio.Event()

        async def listen() -> None:
            async with listener.stream("GET", "/alarms/stream", headers=admin) as resp:
                async for _ in resp.aiter_lines():
                    opened.set()
        reader = asyncio.create_task(listen())
        await asyncio.wait_for(opened.wait(), 10)
        stop.set()
        await asyncio.wait_for(server, 30)
        await asyncio.wait_for(reader, 10)
        await listener.aclose()
    finally:
        stop.set()
        await asyncio.wait_for(server, 30)
        p.close()
