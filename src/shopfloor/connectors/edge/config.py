"""edge.yaml: where the platform's broker is, who the agent is, its buffer, and its sources.

```yaml
tenant: acme
broker: {host: mqtt.example.com, port: 8883, tls: true}
username: acme.press-gw          # the device's platform credentials
password_file: /etc/shopfloor/press-gw.secret
buffer: {path: /var/lib/shopfloor/edge.sqlite, max_bytes: 200000000}
sources:
  modbus:
    - {host: 10.0.0.21, asset: qingdao/stamping/line-1/press-01, groups: [...]}
# or take the sources from the plant file's device:
plant: plant.yaml
device: press-gw
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import yaml

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.modbus_map import ModbusSpec, check_modbus
from shopfloor.domain.opcua_map import OpcUaSpec, check_opcua
from shopfloor.domain.plant import plant_from_obj


class BrokerConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None  # with tls: the CA that signed the broker's certificate (default: the system's)
    client_id: str = ""  # default: edge-{username}
    keepalive_s: int = 30


class BufferConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    path: str = "edge-buffer.sqlite"
    max_bytes: int = 100_000_000
    durable: bool = False  # sync every append to disk (survives a power cut, slower)


class SourcesConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    modbus: list[ModbusSpec] = []
    opcua: list[OpcUaSpec] = []  # the plant file's OPC UA sections (docs/opcua.md), each with an ``asset``


class EdgeConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    tenant: str
    broker: BrokerConfig = BrokerConfig()
    username: str | None = None  # default: {tenant}.{device} when ``device`` is given
    password: str | None = None
    password_file: str | None = None
    buffer: BufferConfig = BufferConfig()
    sources: SourcesConfig = SourcesConfig()
    plant: str | None = None  # a plant file: take the sources of ``device`` from it
    device: str | None = None
    window: int = 100  # messages in flight (unacknowledged) at most
    max_records: int = 200  # telemetry records per message

    def __repr__(self) -> str:  # never print the password
        return f"EdgeConfig(tenant={self.tenant!r}, broker={self.broker!r}, username={self.username!r})"


class ResolvedEdge(msgspec.Struct, frozen=True):
    """The configuration with its sources gathered (each Modbus spec with its default asset)."""

    config: EdgeConfig
    username: str | None
    password: str | None
    modbus: list[tuple[ModbusSpec, str]]
    opcua: list[tuple[OpcUaSpec, str]]  # with a name for counters and logs
    buffer_path: Path


def load_edge_config(path: str | Path) -> ResolvedEdge:
    """Read and check edge.yaml; relative paths in it are relative to its folder."""
    path = Path(path)
    try:
        obj = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not YAML: {exc}") from None
    return resolve_edge_config(obj, path.parent, str(path))


def resolve_edge_config(obj: Any, base: Path, where: str = "edge.yaml") -> ResolvedEdge:
    try:
        config = msgspec.convert(obj, EdgeConfig)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    if not 1 <= config.broker.port <= 65535:
        raise InvalidInput(f"{where}: broker.port {config.broker.port} is not 1..65535")
    if config.buffer.max_bytes < 64 * 1024:
        raise InvalidInput(f"{where}: buffer.max_bytes must be at least 65536")
    if not 1 <= config.window <= 10_000 or not 1 <= config.max_records <= 10_000:
        raise InvalidInput(f"{where}: window and max_records must be 1..10000")
    modbus = [(spec, "") for spec in config.sources.modbus]
    opcua = [(spec, f"opcua-{i}") for i, spec in enumerate(config.sources.opcua)]
    if (config.plant is None) != (config.device is None):
        raise InvalidInput(f"{where}: 'plant' and 'device' go together")
    if config.plant is not None and config.device is not None:
        modbus_from_plant, opcua_from_plant = _from_plant(base / config.plant, config.device)
        modbus += modbus_from_plant
        opcua += opcua_from_plant
    for i, (spec, default) in enumerate(modbus):
        check_modbus(spec, f"{where}: modbus source {spec.name or i}", default)
    for ua_spec, name in opcua:
        check_opcua(ua_spec, f"{where}: opcua source {name}")
    if not modbus and not opcua:
        raise InvalidInput(f"{where}: no sources (sources.modbus, sources.opcua, or plant + device)")
    username = config.username
    if username is None and config.device is not None:
        username = f"{config.tenant}.{config.device}"
    password = config.password
    if config.password_file is not None:
        try:
            password = (base / config.password_file).read_text().strip()
        except OSError as exc:
            raise InvalidInput(f"{where}: password_file: {exc.strerror or exc}") from None
    password = password if password is not None else os.environ.get("SHOPFLOOR_EDGE_PASSWORD")
    return ResolvedEdge(config, username, password, modbus, opcua, base / config.buffer.path)


def _from_plant(path: Path, device: str) -> tuple[list[tuple[ModbusSpec, str]], list[tuple[OpcUaSpec, str]]]:
    try:
        spec = plant_from_obj(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise InvalidInput(f"plant file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(f"plant file {path}: not YAML: {exc}") from None
    found = [d for d in spec.devices if d.name == device]
    if not found:
        raise InvalidInput(f"plant file {path}: no device {device!r}")
    d = found[0]
    modbus = [] if d.modbus is None else [(msgspec.structs.replace(d.modbus, name=d.modbus.name or d.name),
                                           d.assets[0] if len(d.assets) == 1 else "")]
    opcua = []
    if d.opcua is not None:  # the device's only machine stands in for a missing section asset
        default = d.assets[0] if len(d.assets) == 1 and d.opcua.asset is None else d.opcua.asset
        opcua.append((msgspec.structs.replace(d.opcua, asset=default), d.name))
    return modbus, opcua
