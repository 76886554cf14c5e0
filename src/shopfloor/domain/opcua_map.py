"""The plant file's ``opcua`` section of a device: which OPC UA server to read and how its nodes map.

shopfloor is the OPC UA client. A device's ``opcua`` section names the server's endpoint, the
security (policy ``None`` or ``Basic256Sha256`` with mode ``Sign`` or ``SignAndEncrypt``, the client
certificate and key, the server certificate it trusts), the user (anonymous, or a user name with a
password given inline or, better, by the name of an environment variable), the subscription
settings, and the nodes: node id -> machine path + measurement, with an optional scale and offset
(``value * scale + offset``), a deadband (absolute, or percent of the node's EURange), a sampling
interval and whether the platform may write the node.

The connector (``shopfloor.connectors.opcua``) turns this into subscriptions; this module holds
only the specification and its checks (no OPC UA library here).
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Mapping

import msgspec

from shopfloor.domain.errors import InvalidInput

#: ``ns=2;s=Press.Temperature``, ``ns=3;i=1001``, ``i=2258``, ``nsu=urn:x;s=a``, ``ns=1;g=<guid>``, ``ns=1;b=<base64>``
NODE_ID_RE = re.compile(r"^(?:(?:ns=\d{1,5}|nsu=[^;]+);)?(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f-]{36}|b=[A-Za-z0-9+/=]+)$", re.S)
_ENDPOINT_RE = re.compile(r"^opc\.tcp://[^/\s:]+(?::\d{1,5})?(?:/\S*)?$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_NODES = 200_000


class SecurityPolicy(enum.StrEnum):
    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"


class SecurityMode(enum.StrEnum):
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class DeadbandType(enum.StrEnum):
    ABSOLUTE = "absolute"
    PERCENT = "percent"  # of the node's EURange (servers offer it on AnalogItem nodes)


class OpcUaSecurity(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """Message security. With ``Basic256Sha256`` the client certificate and key are required; the
    server certificate (PEM or DER) is the one trusted: the connection is refused if the server
    presents another. Without it, the server's certificate is taken from its endpoint list."""

    policy: SecurityPolicy = SecurityPolicy.NONE
    mode: SecurityMode = SecurityMode.SIGN_AND_ENCRYPT
    certificate: str | None = None  # client certificate path (PEM or DER)
    private_key: str | None = None  # client private key path (PEM)
    server_certificate: str | None = None  # trusted server certificate path


class Deadband(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    value: float
    type: DeadbandType = DeadbandType.ABSOLUTE


class NodeMap(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """One OPC UA variable as one measurement of one machine."""

    measurement: str
    asset: str | None = None  # machine path; default: the section's ``asset``
    scale: float = 1.0
    offset: float = 0.0
    deadband: Deadband | None = None
    sampling_interval_ms: float | None = None  # default: the section's
    writable: bool = False  # the platform may write it (engineers, audited)


class OpcUaSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    endpoint: str
    nodes: dict[str, NodeMap]
    asset: str | None = None  # machine path of every node that names none
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None  # none: anonymous
    password: str | None = None  # inline (test benches); prefer password_env
    password_env: str | None = None  # the environment variable holding the password
    publishing_interval_ms: float = 500.0
    sampling_interval_ms: float = 250.0
    queue_size: int = 10  # per monitored item, so fast changes between publishes are not lost
    items_per_subscription: int = 1000
    subscriptions_per_connection: int = 4  # more items than this holds go over further connections
    poll_interval_ms: float = 1000.0  # for nodes the server will not monitor
    history_backfill: bool = True  # read the gap after a reconnect where the server historizes

    def node_asset(self, node_id: str) -> str:
        """The machine path of ``node_id`` (its own, else the section's)."""
        asset = self.nodes[node_id].asset or self.asset
        if asset is None:
            raise InvalidInput(f"opcua: node {node_id!r} names no asset and the section has no 'asset'")
        return asset.strip("/")

    def resolve_password(self, env: Mapping[str, str] | None = None) -> str | None:
        """The password: inline, or read from the environment variable ``password_env``."""
        if self.password_env is None:
            return self.password
        value = (os.environ if env is None else env).get(self.password_env)
        if value is None:
            raise InvalidInput(f"opcua: the environment variable {self.password_env!r} (password_env) is not set")
        return value

    def connection_count(self) -> int:
        per_connection = self.items_per_subscription * self.subscriptions_per_connection
        return max(1, -(-len(self.nodes) // per_connection))


def opcua_from_obj(obj: object, where: str = "opcua") -> OpcUaSpec:
    """Read an ``opcua`` section (JSON values) and check it; raises ``InvalidInput`` naming ``where``."""
    try:
        spec = msgspec.convert(obj, OpcUaSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
    check_opcua(spec, where)
    return spec


def check_opcua(spec: OpcUaSpec, where: str = "opcua") -> None:
    """Everything that can be checked without the server and the registry."""
    if not _ENDPOINT_RE.match(spec.endpoint):
        raise InvalidInput(f"{where}: endpoint {spec.endpoint!r} is not an opc.tcp://host[:port][/path] URL")
    sec = spec.security
    if sec.policy is not SecurityPolicy.NONE and (not sec.certificate or not sec.private_key):
        raise InvalidInput(f"{where}: security policy {sec.policy.value} needs 'certificate' and 'private_key'")
    if spec.password is not None and spec.password_env is not None:
        raise InvalidInput(f"{where}: give 'password' or 'password_env', not both")
    if (spec.password is not None or spec.password_env is not None) and not spec.username:
        raise InvalidInput(f"{where}: a password needs a 'username'")
    if spec.password_env is not None and not _ENV_RE.match(spec.password_env):
        raise InvalidInput(f"{where}: password_env {spec.password_env!r} is not an environment variable name")
    for name in ("publishing_interval_ms", "poll_interval_ms"):
        if not getattr(spec, name) > 0:
            raise InvalidInput(f"{where}: {name} must be positive")
    if not spec.sampling_interval_ms >= 0:
        raise InvalidInput(f"{where}: sampling_interval_ms is not negative (0: as fast as the server can)")
    for name in ("items_per_subscription", "subscriptions_per_connection", "queue_size"):
        if getattr(spec, name) < 1:
            raise InvalidInput(f"{where}: {name} must be at least 1")
    if not spec.nodes:
        raise InvalidInput(f"{where}: 'nodes' maps no node")
    if len(spec.nodes) > MAX_NODES:
        raise InvalidInput(f"{where}: more than {MAX_NODES} nodes")
    for node_id, node in spec.nodes.items():
        here = f"{where}: node {node_id!r}"
        if not NODE_ID_RE.match(node_id):
            raise InvalidInput(f"{here}: not an OPC UA node id (like 'ns=2;s=Press.Temperature' or 'ns=3;i=1001')")
        if not node.measurement:
            raise InvalidInput(f"{here}: 'measurement' is empty")
        asset = node.asset or spec.asset
        if not asset or len([p for p in asset.split("/") if p]) != 4:
            raise InvalidInput(f"{here}: needs a machine path 'site/area/line/machine' (its own 'asset' "
                               "or the section's)")
        if node.scale == 0:
            raise InvalidInput(f"{here}: scale 0 would erase every value")
        if node.deadband is not None:
            if node.deadband.value < 0:
                raise InvalidInput(f"{here}: a deadband is not negative")
            if node.deadband.type is DeadbandType.PERCENT and node.deadband.value > 100:
                raise InvalidInput(f"{here}: a percent deadband is at most 100")
        if node.sampling_interval_ms is not None and node.sampling_interval_ms < 0:
            raise InvalidInput(f"{here}: sampling_interval_ms is not negative (0: as fast as the server can)")


def check_opcua_targets(spec: OpcUaSpec, device_assets: list[str],
                        measurements: Mapping[str, frozenset[str] | None], where: str = "opcua") -> None:
    """Each node's machine is one of the device's assets (or under one) and has the measurement.

    ``measurements`` maps known machine paths to their type's measurement names (None: a machine
    without a type, which has no measurements).
    """
    prefixes = [tuple(p for p in a.split("/") if p) for a in device_assets]
    for node_id in spec.nodes:
        asset = spec.node_asset(node_id)
        parts = tuple(p for p in asset.split("/") if p)
        here = f"{where}: node {node_id!r}"
        if asset not in measurements:
            raise InvalidInput(f"{here}: no machine at {asset!r}")
        if not any(parts[: len(p)] == p for p in prefixes):
            raise InvalidInput(f"{here}: machine {asset!r} is not among the device's assets")
        names = measurements[asset]
        measurement = spec.nodes[node_id].measurement
        if names is None or measurement not in names:
            raise InvalidInput(f"{here}: machine {asset!r} has no measurement {measurement!r}")


def spec_to_obj(spec: OpcUaSpec) -> dict[str, object]:
    obj: dict[str, object] = msgspec.to_builtins(spec)
    return obj
