"""Shared pieces of the alarm integration tests: a platform with a plant, messages, a webhook
receiver that fails the first N deliveries, and waiting for a condition."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shopfloor.bootstrap import Platform, build_platform
from shopfloor.config import Settings
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.ingest import RawMessage
from shopfloor.services.registry import PLATFORM

PLANT = {
    "asset_types": [{"name": "press", "measurements": [{"name": "temperature", "unit": "degC"}]}],
    "sites": [{"name": "plant", "timezone": "Europe/Berlin", "areas": [{"name": "hall", "lines": [
        {"name": "line-1", "machines": [{"name": "press-01", "type": "press"}, {"name": "press-02", "type": "press"}]}]}]}],
    "devices": [{"name": "plc-1", "gateway": True,
                 "assets": ["plant/hall/line-1/press-01", "plant/hall/line-1/press-02"]}],
}
TOPIC = "shopfloor/v1/acme/plant/hall/line-1/{machine}/telemetry"
HOT_RULE = {"name": "press too hot", "kind": "threshold", "asset_type": "press", "measurement": "temperature",
            "high": 80.0, "deadband": 2.0, "priority": "high"}


def settings_for(store: str, tmp_path: Path, pg: tuple[str, str] | None, **kw: Any) -> Settings:
    if store == "postgres":
        assert pg is not None
        return Settings(data_dir=tmp_path, store="postgres", database_url=pg[0], database_schema=pg[1], **kw)
    return Settings(data_dir=tmp_path, **kw)


@dataclass
class Plant:
    platform: Platform
    admin: str  # token secrets
    operator: str
    ctx: TenantContext


def make_plant(settings: Settings) -> Plant:
    """A platform with tenant acme, two presses, an admin and an operator token."""
    p = build_platform(settings)
    if p.repo.find_tenant("acme") is None:
        p.registry.create_tenant(PLATFORM, "acme")
    _, admin = p.registry.create_token(PLATFORM, "alice", Role.ADMIN, tenant_slug="acme")
    _, operator = p.registry.create_token(PLATFORM, "oscar", Role.OPERATOR, tenant_slug="acme")
    ctx = p.auth.context_for(admin)
    p.plant.apply(ctx, plant_from_obj(PLANT))
    return Plant(p, admin, operator, ctx)


def telemetry(machine: str, values: list[float], start_ms: int | None = None, step_ms: int = 1000,
              live: bool = True) -> list[RawMessage]:
    t0 = start_ms if start_ms is not None else int(time.time() * 1000) - step_ms * len(values)
    topic = TOPIC.format(machine=machine)
    return [RawMessage("acme.plc-1", topic, json.dumps({"ts": t0 + i * step_ms, "values": {"temperature": v}}).encode(),
                       int(time.time() * 1_000_000), live=live) for i, v in enumerate(values)]


async def wait_for(check: Callable[[], Any], within_s: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + within_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Receiver:
    """A real HTTP server that answers 500 to the first ``fail_first`` deliveries, 200 after."""

    fail_first: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    attempts: int = 0
    url: str = ""


@contextmanager
def webhook_receiver(fail_first: int = 0) -> Iterator[Receiver]:
    rec = Receiver(fail_first)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                rec.attempts += 1
                fail = rec.attempts <= rec.fail_first
                if not fail:
                    rec.received.append(({k: v for k, v in self.headers.items()}, body))
            self.send_response(500 if fail else 200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no" if fail else b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
