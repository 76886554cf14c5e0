"""docs/modbus.md and docs/edge.md end to end: a pymodbus server laid out like the example's PLC, the
plant file applied to a PostgreSQL registry, the edge agent from edge.yaml, Mosquitto and an ingest
worker; then the command of docs/edge.md writes the setpoint register and is answered."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.connectors.edge.config import resolve_edge_config
from shopfloor.connectors.modbus.adapter import PymodbusTransport
from shopfloor.connectors.mqtt.worker_main import Supervisor, WorkerSettings
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.tenancy import Role
from shopfloor.edgeboot import build_agent
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian import PostgresHistorian
from shopfloor.storage.postgres.registry import PostgresRegistry
from tests.conftest import free_port
from tests.integration.modbus_server import ModbusTestServer, blocks_of, words
from tests.integration.test_ingest_workers import Mosquitto, broker  # noqa: F401  (the fixture)
from tests.integration.worker_entry import WorkerTarget

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _block(page: str, lang: str) -> str:
    return re.findall(rf"```{lang}\n(.*?)```", (DOCS / page).read_text(), re.S)[0]


def _apply_plant(dsn: str, schema: str, plant: Any) -> None:
    db = PgDatabase(dsn, schema)
    try:
        repo = PostgresRegistry(db)
        PostgresHistorian(db).close()
        reg = RegistryService(repo)
        reg.create_tenant(PLATFORM, "acme")
        _, token = reg.create_token(PLATFORM, "t", Role.ENGINEER, tenant_slug="acme")
        PlantService(reg).apply(TokenAuthenticator(repo).context_for(token), plant_from_obj(plant))
    finally:
        db.close()


def _stored(dsn: str, schema: str) -> dict[str, tuple[float | None, str | None]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f'SELECT DISTINCT ON (s.series_id) m.measurement, s.value, s.text FROM "{schema}".samples s '
            f'JOIN "{schema}".series m ON m.id = s.series_id ORDER BY s.series_id, s.ts DESC').fetchall()
    return {str(name): (value, text) for name, value, text in rows}


async def test_the_documented_plc_reaches_the_platform_and_takes_a_command(
        broker: Mosquitto, pg_schema: tuple[str, str], tmp_path: Path) -> None:  # noqa: F811
    dsn, schema = pg_schema
    plc = ModbusTestServer(free_port(), blocks_of([
        ("holding", 0, words("h", 215) + words("f", 2.5)[::-1] + words("I", 123456)),
        ("holding", 10, words("8s", b"P12-A")), ("holding", 20, [0]), ("coil", 0, [1])]))
    await plc.start()
    plant = yaml.safe_load(_block("modbus.md", "yaml"))
    plant["devices"][0]["modbus"]["port"] = plc.port
    _apply_plant(dsn, schema, plant)
    (tmp_path / "plant.yaml").write_text(yaml.safe_dump(plant))
    edge_obj = yaml.safe_load(_block("edge.md", "yaml"))
    edge_obj["broker"]["port"] = broker.port
    del edge_obj["password_file"]  # the test's Mosquitto lets anyone in

    state = tmp_path / "workers"
    state.mkdir()
    settings = WorkerSettings(port=broker.port, batch_max=200)
    with Supervisor(1, WorkerTarget(settings, dsn, schema, str(state)), restart_delay_s=0.2, stop_timeout_s=15):
        for _ in range(600):
            if (state / "ingest-0").exists():
                break
            await asyncio.sleep(0.05)
        agent = build_agent(resolve_edge_config(edge_obj, tmp_path))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            want = {"temperature": (21.5, None), "pressure": (2.5, None), "strokes": (123456.0, None),
                    "program": (None, "P12-A"), "door_open": (1.0, None), "setpoint": (0.0, None)}
            got: dict[str, tuple[float | None, str | None]] = {}
            for _ in range(300):
                got = await asyncio.to_thread(_stored, dsn, schema)
                if got == want:
                    break
                await asyncio.sleep(0.1)
            assert got == want

            # the command of docs/edge.md, sent as the platform would, answered on .../command/reply
            cmd = re.findall(r"-t (\S+) \\\n\s+-m '(.*)'", (DOCS / "edge.md").read_text())[0]
            assert cmd[0].endswith("/press-01/command")
            reply = await asyncio.to_thread(_command, broker.port, cmd[0], cmd[1].encode())
            assert reply["id"] == "c-17" and reply["status"] == "ok"
            probe = PymodbusTransport("127.0.0.1", plc.port, 1, 1.0, 0)
            await probe.connect()
            assert await probe.read("holding", 20, 1) == [725]
            await probe.close()
            assert agent.stats.commands == {"ok": 1}
        finally:
            stop.set()
            await task
            agent.buffer.close()
            await plc.stop()
    counters = agent.describe()
    assert counters["dropped"] == 0 and counters["unreadable"] == 0
    device = counters["sources"]["modbus"]["press-01-plc"]  # type: ignore[index]
    assert device["writes"] == 1 and device["failures"] == {}


def _command(port: int, topic: str, payload: bytes) -> dict[str, Any]:
    got: list[dict[str, Any]] = []
    done = threading.Event()
    subscribed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="platform-test")
    c.on_subscribe = lambda *_: subscribed.set()

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(json.loads(msg.payload))
        done.set()

    c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe(topic + "/reply", qos=1)
        assert subscribed.wait(10)
        time.sleep(0.2)
        c.publish(topic, payload, qos=1).wait_for_publish(10)
        assert done.wait(15), "no reply"
        return got[0]
    finally:
        c.disconnect()
        c.loop_stop()


async def test_the_edge_command_runs_until_sigterm(broker: Mosquitto, tmp_path: Path) -> None:  # noqa: F811
    """`shopfloor edge --config edge.yaml` as a process: publishes, stops on SIGTERM, prints its counters."""
    plc = ModbusTestServer(free_port(), blocks_of([("holding", 0, words("h", 215))]))
    await plc.start()
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump({
        "tenant": "acme", "broker": {"port": broker.port}, "buffer": {"path": "buf.sqlite"},
        "sources": {"modbus": [{"host": "127.0.0.1", "port": plc.port, "asset": "s/a/l/m1", "groups": [
            {"interval_s": 0.2, "registers": [{"measurement": "temperature", "address": 0, "type": "int16",
                                               "scale": 0.1}]}]}]}}))
    got = threading.Event()
    seen: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="watcher")

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        seen.append(bytes(msg.payload))
        got.set()

    c.on_message = on_message
    c.connect("127.0.0.1", broker.port)
    c.subscribe("shopfloor/v1/acme/s/a/l/m1/telemetry", qos=1)
    c.loop_start()
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("shopfloor")), "edge", "--config", str(tmp_path / "edge.yaml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert await asyncio.to_thread(got.wait, 30), "nothing published"
        assert json.loads(seen[0])[0]["values"] == {"temperature": 21.5}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        c.disconnect()
        c.loop_stop()
        await plc.stop()
    assert proc.returncode == 0, err.decode()[-2000:]
    counters = json.loads(out.decode().strip().splitlines()[-1])
    assert counters["acked"] >= 1 and counters["dropped"] == 0
