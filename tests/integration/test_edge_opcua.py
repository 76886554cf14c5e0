"""The edge agent with both field buses from one plant-file device: an OPC UA server (asyncua) and a
Modbus device (pymodbus) feed one machine through Mosquitto and an ingest worker into PostgreSQL;
the platform API's write command (``"writes": [...]``) reaches the OPC UA node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from shopfloor.connectors.edge.config import resolve_edge_config
from shopfloor.connectors.mqtt.worker_main import Supervisor, WorkerSettings
from shopfloor.edgeboot import build_agent
from tests.conftest import free_port
from tests.integration.modbus_server import ModbusTestServer, blocks_of, words
from tests.integration.opcua_server import PlcServer, node_id
from tests.integration.test_edge_modbus_chain import _apply_plant, _command, _stored
from tests.integration.test_ingest_workers import Mosquitto, broker  # noqa: F401  (the fixture)
from tests.integration.worker_entry import WorkerTarget

pytestmark = pytest.mark.integration

MACHINE = "plant/shop/line-1/press-01"


async def test_opcua_and_modbus_sources_of_one_device(broker: Mosquitto, pg_schema: tuple[str, str],  # noqa: F811
                                                      tmp_path: Path) -> None:
    dsn, schema = pg_schema
    plc = await PlcServer(free_port()).start()
    modbus = ModbusTestServer(free_port(), blocks_of([("holding", 0, words("f", 3.5))]))
    await modbus.start()
    plant = {
        "asset_types": [{"name": "press", "measurements": [
            {"name": "temperature"}, {"name": "setpoint"}, {"name": "recipe", "type": "string"},
            {"name": "pressure"}]}],
        "sites": [{"name": "plant", "areas": [{"name": "shop", "lines": [{"name": "line-1", "machines": [
            {"name": "press-01", "type": "press"}]}]}]}],
        "devices": [{"name": "press-01-gw", "assets": [MACHINE],
                     "opcua": {"endpoint": plc.url, "asset": MACHINE, "nodes": {
                         node_id("Temperature"): {"measurement": "temperature"},
                         node_id("Recipe"): {"measurement": "recipe"},
                         node_id("Setpoint"): {"measurement": "setpoint", "writable": True}}},
                     "modbus": {"host": "127.0.0.1", "port": modbus.port, "groups": [
                         {"interval_s": 0.2, "registers": [{"measurement": "pressure", "address": 0,
                                                            "type": "float32"}]}]}}],
    }
    _apply_plant(dsn, schema, plant)
    (tmp_path / "plant.yaml").write_text(yaml.safe_dump(plant))
    edge = resolve_edge_config({"tenant": "acme", "broker": {"port": broker.port}, "plant": "plant.yaml",
                                "device": "press-01-gw"}, tmp_path)
    state = tmp_path / "workers"
    state.mkdir()
    settings = WorkerSettings(port=broker.port, batch_max=200)
    with Supervisor(1, WorkerTarget(settings, dsn, schema, str(state)), restart_delay_s=0.2, stop_timeout_s=15):
        for _ in range(600):
            if (state / "ingest-0").exists():
                break
            await asyncio.sleep(0.05)
        agent = build_agent(edge)
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            want = {"temperature": (20.0, None), "setpoint": (50.0, None), "recipe": (None, "P1"),
                    "pressure": (3.5, None)}
            got: dict[str, tuple[float | None, str | None]] = {}
            for _ in range(300):
                got = await asyncio.to_thread(_stored, dsn, schema)
                if got == want:
                    break
                await asyncio.sleep(0.1)
            assert got == want
            command = {"id": "w-1", "type": "opcua_write", "by": "alice",
                       "writes": [{"measurement": "setpoint", "value": 61.5}]}
            reply = await asyncio.to_thread(_command, broker.port, f"shopfloor/v1/acme/{MACHINE}/command",
                                            json.dumps(command).encode())
            assert reply["status"] == "ok", reply
            assert reply["results"] == [{"measurement": "setpoint", "ok": True}]
            assert await plc.get("Setpoint") == 61.5
            bad = await asyncio.to_thread(_command, broker.port, f"shopfloor/v1/acme/{MACHINE}/command",
                                          b'{"id": "w-2", "writes": [{"measurement": "temperature", "value": 1}]}')
            assert bad["status"] == "error" and "not a writable point" in bad["error"]
        finally:
            stop.set()
            await task
            agent.buffer.close()
            await plc.stop()
            await modbus.stop()
    counters = agent.describe()
    assert set(counters["sources"]) == {"modbus", "opcua"}  # type: ignore[arg-type]
    assert counters["commands"] == {"ok": 1, "error": 1}
