"""Embedded ingest, end to end: a paho publisher → embedded broker → ingest → DuckDB commit.

Run with the project's interpreter: ``.venv/bin/python bench/ingest_embedded.py [--messages N]``.
Measures QoS 1 JSON messages (1 point and 50 points each) and, in the same run, the bare DuckDB
commit of the same rows, and writes the figures to docs/PERFORMANCE.md (machine and date on top).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt

from perfdoc import write_section
from shopfloor.bootstrap import build_platform
from shopfloor.config import Settings
from shopfloor.connectors.mqtt.embedded_broker import EmbeddedBroker
from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.tenancy import Role
from shopfloor.services.devices import DeviceAccessService
from shopfloor.services.registry import PLATFORM

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _publish(port: int, user: str, secret: str, topic: str, payloads: list[str]) -> float:
    n, acked, done, up = len(payloads), 0, threading.Event(), threading.Event()

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        if acked == n:
            done.set()

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-{time.time_ns()}", protocol=mqtt.MQTTv311)
    c.username_pw_set(user, secret)
    c.max_inflight_messages_set(200)
    c.on_connect = lambda *a: up.set()
    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    up.wait(10)
    t0 = time.perf_counter()
    for p in payloads:
        c.publish(topic, p, qos=1)
    done.wait(600)
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return elapsed


async def run(messages: int) -> list[tuple[str, float, str]]:
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        p = build_platform(Settings(data_dir=Path(tmp), mqtt_port=_free_port()))
        reg = p.registry
        reg.create_tenant(PLATFORM, "bench")
        _, token = reg.create_token(PLATFORM, "b", Role.ADMIN, tenant_slug="bench")
        ctx = p.auth.context_for(token)
        reg.put_asset_type(ctx, "m", measurements=[MeasurementDef(f"v{i}") for i in range(50)])
        site = reg.create_asset(ctx, Level.SITE, "s")
        area = reg.create_asset(ctx, Level.AREA, "a", parent_id=site.id)
        line = reg.create_asset(ctx, Level.LINE, "l", parent_id=area.id)
        m = reg.create_asset(ctx, Level.MACHINE, "m1", parent_id=line.id, type_name="m")
        dev, secret = reg.create_device(ctx, "d", [m.id])
        broker = EmbeddedBroker("127.0.0.1", p.settings.mqtt_port, p.ingest, DeviceAccessService(p.cache, p.stats))
        await broker.start()
        topic = "shopfloor/v1/bench/s/a/l/m1/telemetry"
        base = int(time.time() * 1000) - 2 * messages - 1000
        try:
            one = [json.dumps({"ts": base + i, "values": {"v0": float(i)}}) for i in range(messages)]
            secs = await asyncio.to_thread(_publish, broker.bound_port, dev.username, secret, topic, one)
            rows.append(("embedded broker + DuckDB, 1-point JSON, QoS 1", messages / secs, "points/s (= msg/s)"))
            batches = max(messages // 10, 1)
            fifty = [json.dumps({"ts": base + messages + i, "values": {f"v{k}": float(k) for k in range(50)}})
                     for i in range(batches)]
            secs = await asyncio.to_thread(_publish, broker.bound_port, dev.username, secret, topic, fifty)
            rows.append(("embedded broker + DuckDB, 50-point JSON, QoS 1", 50 * batches / secs,
                         f"points/s ({batches / secs:,.0f} msg/s)"))
        finally:
            await broker.stop()
            await p.ingest.drain()
        series = [s.id for s in reg.series_of(ctx, m.id)]
        bare = IngestBatch()
        t_base = base * 1000 - 10**12
        for i in range(50_000):
            bare.samples.add(series[i % 50], t_base + i, float(i))
        t0 = time.perf_counter()
        p.historian.commit(bare)
        rows.append(("DuckDB commit alone, 50,000-sample batch", 50_000 / (time.perf_counter() - t0), "points/s"))
        p.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=10_000, help="1-point messages to publish")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/PERFORMANCE.md")
    args = ap.parse_args()
    rows = asyncio.run(run(args.messages))
    machine = f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"
    lines = ["## Ingest, embedded mode", "", f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}.",
             "Run: `.venv/bin/python bench/ingest_embedded.py`. Shared, noisy machines: compare figures "
             "of one run with each other, not across runs.", "", "| what | rate | unit |", "|---|---:|---|"]
    lines += [f"| {what} | {rate:,.0f} | {unit} |" for what, rate, unit in rows]
    section = "\n".join(lines) + "\n"
    print(section)
    if not args.no_write:
        write_section(ROOT / "docs" / "PERFORMANCE.md", "Ingest, embedded mode", section)


if __name__ == "__main__":
    main()
