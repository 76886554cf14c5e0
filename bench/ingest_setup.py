"""What ``bench/ingest.py`` measures on: the plant, the payloads, and a Mosquitto of its own.

The plant: tenant ``bench``, one line of ``MACHINES`` machines of a type with 50 numeric
measurements ``v0`` … ``v49``, a gateway device bound to the line (it may publish for every
machine), and that device bound as a Sparkplug edge node whose devices ``D0`` … are the machines.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.domain.assets import Level, MeasurementDef
from shopfloor.domain.sparkplug import SparkplugSpec
from shopfloor.domain.tenancy import Role
from shopfloor.ports.registry import RegistryRepository
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.sparkplug import SparkplugBindings
from shopfloor.testing.sparkplug_edge import EdgeNodeSim, MetricDef

TENANT = "bench"
LINE = ("s", "a", "l")
MACHINES = 20  # each costs the registry about a second to create
SPB_DEVICES = 10  # Sparkplug devices (machines m0 … m9) behind the one edge node
MEASUREMENTS = tuple(f"v{i}" for i in range(50))
PAYLOADS = ("json1", "json50", "spb50")
POINTS = {"json1": 1, "json50": 50, "spb50": 50}
DATA_SPAN_MS = 20_000  # the messages' timestamps spread over the 20 s before the run


@dataclass(frozen=True)
class Plant:
    device: str  # the gateway's MQTT username
    secret: str
    series: dict[tuple[str, str], int]  # (machine, measurement) -> series id


def machine_topic(i: int, kind: str = "telemetry") -> str:
    return f"shopfloor/v1/{TENANT}/{'/'.join(LINE)}/m{i}/{kind}"


def make_plant(registry: RegistryService, repo: RegistryRepository) -> Plant:
    registry.create_tenant(PLATFORM, TENANT)
    _, token = registry.create_token(PLATFORM, "bench", Role.ADMIN, tenant_slug=TENANT)
    ctx = TokenAuthenticator(repo).context_for(token)
    registry.put_asset_type(ctx, "cell", measurements=[MeasurementDef(m) for m in MEASUREMENTS])
    site = registry.create_asset(ctx, Level.SITE, LINE[0], timezone="UTC")
    area = registry.create_asset(ctx, Level.AREA, LINE[1], parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, LINE[2], parent_id=area.id)
    series: dict[tuple[str, str], int] = {}
    for i in range(MACHINES):
        m = registry.create_asset(ctx, Level.MACHINE, f"m{i}", parent_id=line.id, type_name="cell")
        for s in registry.series_of(ctx, m.id):
            series[(f"m{i}", s.measurement)] = s.id
    gw, secret = registry.create_device(ctx, "gw", [line.id], gateway=True)
    devices = {f"D{i}": "/".join((*LINE, f"m{i}")) for i in range(SPB_DEVICES)}
    SparkplugBindings(registry).put(ctx, gw.id, SparkplugSpec(devices=devices))
    return Plant(gw.username, secret, series)


# -- payloads ---------------------------------------------------------------------------------------

def json_messages(kind: str, count: int, base_ms: int, span_ms: int = DATA_SPAN_MS) -> list[tuple[str, bytes]]:
    """``count`` telemetry messages round robin over the machines, timestamps spread over ``span_ms``."""
    enc = msgspec.json.Encoder()
    out = []
    for i in range(count):
        ts = base_ms + i * span_ms // count
        if kind == "json1":
            body = {"ts": ts, "values": {MEASUREMENTS[i % 50]: float(i % 997)}}
        else:
            body = {"ts": ts, "values": {m: float((i + k) % 997) for k, m in enumerate(MEASUREMENTS)}}
        out.append((machine_topic(i % MACHINES), enc.encode(body)))
    return out


def spb_sim(edge_node: str) -> EdgeNodeSim:
    metrics = {m: MetricDef(k + 1, DataType.DOUBLE) for k, m in enumerate(MEASUREMENTS)}
    return EdgeNodeSim(TENANT, edge_node, devices={f"D{i}": dict(metrics) for i in range(SPB_DEVICES)})


def spb_messages(edge_node: str, count: int, base_ms: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(births, data): NBIRTH and a DBIRTH per device, then ``count`` 50-metric DDATA by alias."""
    sim = spb_sim(edge_node)
    births = [sim.nbirth({}, base_ms - 1)]
    births += [sim.dbirth(d, dict.fromkeys(MEASUREMENTS, 0.0), base_ms - 1) for d in sim.devices]
    data = []
    for i in range(count):
        ts = base_ms + i * DATA_SPAN_MS // count
        data.append(sim.ddata(f"D{i % SPB_DEVICES}", {m: float((i + k) % 997) for k, m in enumerate(MEASUREMENTS)},
                              ts))
    return births, data


# -- a Mosquitto of our own --------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_binary() -> str | None:
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


class Mosquitto:
    """Anonymous, no persistence, unbounded queues; on a free port, stopped by its own pid."""

    def __init__(self, workdir: Path) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise SystemExit("bench/ingest.py needs the mosquitto binary (apt-get install mosquitto)")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        conf = workdir / "mosquitto.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 "max_queued_messages 0", "max_queued_bytes 0", "max_inflight_messages 0", "log_type error"]
        if os.geteuid() == 0:
            lines.insert(0, "user root")
        conf.write_text("\n".join(lines) + "\n")
        self.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mosquitto did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
