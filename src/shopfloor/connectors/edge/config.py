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
# or from the platform's registry (what `plant apply` stored for the device):
platform_api: {url: https://shopfloor.example.com, token_env: SHOPFLOOR_TOKEN}
device: press-gw
```
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from shopfloor.connectors.edge.platform_sources import PlatformApi, sections_with_cache
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.modbus_map import ModbusSpec, check_modbus
from shopfloor.domain.opcua_map import OpcUaSpec, check_opcua
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.sparkplug import SparkplugSpec, spec_from_obj


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
    platform_api: PlatformApi | None = None  # or the platform: take the sources of ``device`` from its registry
    device: str | None = None
    protocol: Literal["json", "sparkplug"] = "json"  # sparkplug: publish as a Sparkplug B edge node
    sparkplug: SparkplugSpec | None = None  # its binding; default: the device's (plant file or platform)
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
    sparkplug: SparkplugSpec | None = None  # with protocol sparkplug: the binding, group and edge node id set


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
    if config.plant is not None and config.platform_api is not None:
        raise InvalidInput(f"{where}: take the device's sources from 'plant' or from 'platform_api', not both")
    if (config.plant is None and config.platform_api is None) != (config.device is None):
        raise InvalidInput(f"{where}: 'device' and 'plant' (or 'platform_api') go together")
    binding = config.sparkplug
    if config.device is not None and (config.plant is not None or config.platform_api is not None):
        found = (_from_plant(base / config.plant, config.device) if config.plant is not None
                 else _from_platform(config, base, config.device))
        modbus += found[0]
        opcua += found[1]
        binding = binding or found[2]
    sparkplug = None
    if config.protocol == "sparkplug":
        if binding is None:
            raise InvalidInput(f"{where}: protocol sparkplug needs the device's sparkplug binding (in the plant "
                               "file or on the platform), or a 'sparkplug' section here")
        edge_node = binding.edge_node or config.device
        if not edge_node:
            raise InvalidInput(f"{where}: sparkplug: no edge_node (and no device to take it from)")
        sparkplug = binding.with_ids(binding.group or config.tenant, edge_node)
    for i, (spec, default) in enumerate(modbus):
        check_modbus(spec, f"{where}: modbus source {spec.name or i}", default)
    for ua_spec, name in opcua:
        check_opcua(ua_spec, f"{where}: opcua source {name}")
    if not modbus and not opcua:
        raise InvalidInput(f"{where}: no sources (sources.modbus, sources.opcua, plant + device, "
                           "or platform_api + device)")
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
    return ResolvedEdge(config, username, password, modbus, opcua, base / config.buffer.path, sparkplug)


def _from_plant(path: Path, device: str) -> Found:
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
    return (*_device_sources(d.name, d.assets, d.modbus, d.opcua), d.sparkplug)


Found = tuple[list[tuple[ModbusSpec, str]], list[tuple[OpcUaSpec, str]], SparkplugSpec | None]


def _from_platform(config: EdgeConfig, base: Path, device: str) -> Found:
    if config.platform_api is None:
        raise InvalidInput("edge.yaml: no platform_api")
    cache = (base / config.buffer.path).with_suffix(".sources.json")
    got = sections_with_cache(config.platform_api, device, cache, base)
    where = f"platform {config.platform_api.url}: device {device!r}"
    assets = got.get("assets")
    if not isinstance(assets, list) or not all(isinstance(a, str) for a in assets):
        raise InvalidInput(f"{where}: the answer has no list of asset paths")
    try:  # checked with the sources' defaults by the caller
        modbus = None if got.get("modbus") is None else msgspec.convert(got["modbus"], ModbusSpec)
        opcua = None if got.get("opcua") is None else msgspec.convert(got["opcua"], OpcUaSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    binding = None if got.get("sparkplug") is None else spec_from_obj(got["sparkplug"], f"{where}: sparkplug")
    return (*_device_sources(device, assets, modbus, opcua), binding)


def _device_sources(name: str, assets: list[str], modbus_spec: ModbusSpec | None, opcua_spec: OpcUaSpec | None,
                    ) -> tuple[list[tuple[ModbusSpec, str]], list[tuple[OpcUaSpec, str]]]:
    """A device's sections as sources: its only machine stands in for a section's missing asset."""
    modbus = [] if modbus_spec is None else [(msgspec.structs.replace(modbus_spec, name=modbus_spec.name or name),
                                              assets[0] if len(assets) == 1 else "")]
    opcua = []
    if opcua_spec is not None:
        default = assets[0] if len(assets) == 1 and opcua_spec.asset is None else opcua_spec.asset
        opcua.append((msgspec.structs.replace(opcua_spec, asset=default), name))
    return modbus, opcua
