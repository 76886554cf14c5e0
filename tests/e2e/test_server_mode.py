"""Server mode end to end: `shopfloor serve` (PostgreSQL + managed Mosquitto), `shopfloor ingest --workers 2`
and `shopfloor simulate`, as separate processes, read back through the API."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, need

pytestmark = pytest.mark.e2e
SHOPFLOOR = str(Path(sys.executable).with_name("shopfloor"))


def _run(args: list[str], env: dict[str, str]) -> str:
    r = subprocess.run([SHOPFLOOR, *args], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _token(text: str) -> str:
    m = re.search(r"(sft_[A-Za-z0-9_-]+)", text)
    assert m, text
    return m.group(1)


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([SHOPFLOOR, *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return -9


def test_serve_workers_and_simulator_against_postgres_and_mosquitto(pg_schema: tuple[str, str],
                                                                    tmp_path: Path) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    need(Path(mosquitto).exists(), "the mosquitto binary")
    dsn, schema = pg_schema
    http, mqtt = free_port(), free_port()
    env = dict(os.environ, SHOPFLOOR_DATA_DIR=str(tmp_path / "data"), SHOPFLOOR_STORE="postgres",
               SHOPFLOOR_DATABASE_URL=dsn, SHOPFLOOR_DATABASE_SCHEMA=schema, SHOPFLOOR_BROKER="mosquitto",
               SHOPFLOOR_MOSQUITTO_BINARY=mosquitto, SHOPFLOOR_MQTT_PORT=str(mqtt), SHOPFLOOR_HTTP_PORT=str(http),
               SHOPFLOOR_URL=f"http://127.0.0.1:{http}", COLUMNS="200")
    platform_token = _token(_run(["admin", "init"], env))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        server = _spawn(["serve"], env, tmp_path / "serve.log")
        procs.append(server)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.3)
        tenant_token = _token(_run(["tenants", "create", "acme", "--token", platform_token], env))
        procs.append(_spawn(["ingest", "--workers", "2"], env, tmp_path / "ingest.log"))
        procs.append(_spawn(["simulate", "--token", tenant_token, "--mqtt-port", str(mqtt)], env,
                            tmp_path / "sim.log"))
        h = {"Authorization": f"Bearer {tenant_token}"}
        api = f"http://127.0.0.1:{http}/api/v1"
        live: set[int] = set()
        machines: list[dict] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            machines = httpx.get(f"{api}/assets", params={"level": "machine"}, headers=h).json()
            live = {m["id"] for m in machines
                    if any(v["value"] is not None
                           for v in httpx.get(f"{api}/assets/{m['id']}/latest", headers=h).json()["values"])}
            if machines and live == {m["id"] for m in machines}:
                break
            time.sleep(1)
        logs = "".join(p.read_text(errors="replace")[-2000:] for p in tmp_path.glob("*.log"))
        assert len(machines) >= 10 and live == {m["id"] for m in machines}, logs
        ready = httpx.get(f"http://127.0.0.1:{http}/readyz").json()
        assert ready["broker"]["connected"] is True and ready["database"]["ok"] is True, ready
        # a wrong login is refused by Mosquitto and counted from its log
        import paho.mqtt.client as mqtt_client

        bad = mqtt_client.Client(mqtt_client.CallbackAPIVersion.VERSION2, client_id="intruder")
        bad.username_pw_set("acme.plc-press-1", "wrong")
        bad.connect("127.0.0.1", mqtt)
        bad.loop_start()
        time.sleep(1)
        bad.loop_stop()
        deadline = time.monotonic() + 10
        while True:
            metrics = httpx.get(f"http://127.0.0.1:{http}/metrics").text
            if re.search(r'shopfloor_broker_rejects_total\{kind="login_refused"\} [1-9]', metrics):
                break
            assert time.monotonic() < deadline, metrics
            time.sleep(0.5)
    finally:
        codes = [_stop(p) for p in reversed(procs)]
    assert codes[-1] == 0, (tmp_path / "serve.log").read_text()[-3000:]
