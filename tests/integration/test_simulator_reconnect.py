"""The simulator survives a broker restart: its devices reconnect and publish again."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from shopfloor.domain.plant import machine_paths
from shopfloor.sim import default_plant
from shopfloor.sim.publisher import Simulator
from tests.conftest import free_port, need
from tests.integration.test_simulator_publish import TENANT, Recorder, _mosquitto

pytestmark = pytest.mark.integration


def _start(binary: str, conf: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            assert time.monotonic() < deadline, "mosquitto did not listen"
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_devices_reconnect_after_the_broker_restarts(tmp_path: Path) -> None:
    binary = _mosquitto()
    need(binary is not None, "the mosquitto binary")
    assert binary is not None
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    log = tmp_path / "mosquitto.log"
    plant = default_plant()
    machines = [m.name for _, m in machine_paths(plant)]
    proc = _start(binary, conf, port, log)
    sim = Simulator(plant, TENANT, {d.name: "x" for d in plant.devices}, "127.0.0.1", port, tick_s=0.5, seed=2)
    sim.start()
    try:
        assert sim.wait_connected(10), sim.connection_errors()
        _stop(proc)
        time.sleep(1.5)  # devices notice the broker is gone and start reconnecting
        proc = _start(binary, conf, port, log)
        rec = Recorder(port)
        try:
            def every_machine_again(ms: list[tuple[str, bytes, bool]]) -> bool:
                return all(any(t.endswith(f"/{m}/telemetry") for t, _, _ in ms) for m in machines)

            assert rec.wait_for(every_machine_again, 20), "not every machine published after the restart"
        finally:
            rec.close()
    finally:
        sim.stop()
        _stop(proc)
