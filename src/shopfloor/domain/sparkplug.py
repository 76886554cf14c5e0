"""Sparkplug B as the registry sees it: group ids, edge-node bindings and their mapping, broker rights.

Sparkplug topics (``spBv1.0/{group}/{type}/{edge node}[/{device}]``) carry no tenant. shopfloor
fixes the tenant through the edge node's credentials and allocates group ids from tenant slugs:

* The **group id** of an edge node is its tenant's slug (``acme``), or the slug, a dot and a suffix
  (``acme.north``) for a tenant that wants several groups (for instance to spread its edge nodes
  over several ingest workers). Slugs contain no dot and are unique, so a group id names exactly
  one tenant and no two tenants can ever share a group on the broker.
* An **edge node** is a registry device. Its binding (``SparkplugNode``) says which group and edge
  node id it publishes as, whether an engineer approved it, and how its Sparkplug devices map to
  machines and its metrics to measurements (``SparkplugSpec``, the plant file's ``sparkplug``
  section). (group, edge node id) is unique on the broker, and a device has at most one binding.
* A device **without** a binding may still speak Sparkplug as the edge node named like itself in
  its tenant's own group (``spBv1.0/acme/NBIRTH/press-gw``): the host then registers it in
  quarantine, with what its births declared, and stores nothing until an engineer approves it.

Broker rights of an edge node (group ``g``, edge node id ``e``): publish
``spBv1.0/g/{NBIRTH,NDATA,NDEATH}/e`` and ``spBv1.0/g/{DBIRTH,DDATA,DDEATH}/e/{device}``; receive
``spBv1.0/g/NCMD/e``, ``spBv1.0/g/DCMD/e/{device}`` and every host's ``spBv1.0/STATE/{host}``. In a
device's list of topic prefixes such a right is written ``spBv1.0/g/+/e`` (``node_grant``); the
functions ``publish_allowed``, ``receive_allowed`` and ``subscribe_allowed`` apply both kinds of
entry, JSON asset prefixes and Sparkplug grants.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from shopfloor.domain.assets import ValueType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.records import Quality
from shopfloor.domain.topics import filter_within, topic_within

NAMESPACE = "spBv1.0"
STATE = "STATE"
NODE_UPLINK = frozenset({"NBIRTH", "NDATA", "NDEATH"})
DEVICE_UPLINK = frozenset({"DBIRTH", "DDATA", "DDEATH"})

#: Edge node ids and group suffixes shopfloor accepts: they end up in Mosquitto's ACL file, which
#: must never see a space, a wildcard or a line break.
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SUFFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_RESERVED = frozenset("+/#")

#: Sparkplug's Quality property values (0 bad, 192 good, 500 stale) as sample qualities.
SPARKPLUG_QUALITY = {0: Quality.BAD, 192: Quality.GOOD, 500: Quality.UNCERTAIN}


class Approval(enum.StrEnum):
    APPROVED = "approved"  # its data is stored
    QUARANTINED = "quarantined"  # registered by the host on its first birth; waits for an engineer


# -- the plant file's ``sparkplug`` section -------------------------------------------------------------

class MetricMap(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """A metric stored as ``measurement``, as ``value * scale + offset`` (numeric measurements)."""

    measurement: str
    scale: float = 1.0
    offset: float = 0.0


class SparkplugSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, frozen=True):
    """How an edge node's Sparkplug devices and metrics become machines and measurements.

    ``devices`` maps Sparkplug device ids to machine paths (``site/area/line/machine``); ``node``
    is the machine of the edge node's own metrics (NBIRTH/NDATA), if any. A metric named like a
    measurement of the machine's type is stored as that measurement; ``metrics`` maps other names
    (``"Press/Force": force``, or ``{measurement: temperature, scale: 0.1}``), and ``null``
    leaves a metric out on purpose. Anything else is dead-lettered as an unknown measurement.
    """

    edge_node: str | None = None  # default: the device's name
    group: str | None = None  # default: the tenant's group (its slug)
    node: str | None = None
    devices: dict[str, str] = {}
    metrics: dict[str, str | MetricMap | None] = {}

    def with_ids(self, group: str, edge_node: str) -> SparkplugSpec:
        """This mapping with its group and edge node id written out."""
        return msgspec.structs.replace(self, group=group, edge_node=edge_node)

    def metric_map(self, name: str) -> MetricMap | None:
        """The mapping of metric ``name`` (identity when not listed); None when it is left out."""
        if name not in self.metrics:
            return MetricMap(name)
        target = self.metrics[name]
        if target is None or isinstance(target, MetricMap):
            return target
        return MetricMap(target)


def spec_to_obj(spec: SparkplugSpec) -> dict[str, Any]:
    obj: dict[str, Any] = msgspec.to_builtins(spec)
    return obj


def spec_from_obj(obj: Any, where: str = "sparkplug") -> SparkplugSpec:
    """Read a ``sparkplug`` section (JSON values); raises ``InvalidInput`` naming ``where``."""
    try:
        return msgspec.convert(obj if obj is not None else {}, SparkplugSpec)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"{where}: {exc}") from None


def check_spec(spec: SparkplugSpec, where: str) -> None:
    """Ids, paths and scales that can be stored and enforced (the tenant's rules are the service's)."""
    if spec.edge_node is not None:
        check_edge_node_id(spec.edge_node, where)
    for device, path in spec.devices.items():
        if not device or _RESERVED.intersection(device):
            raise InvalidInput(f"{where}: Sparkplug device id {device!r} must be non-empty, without + / #")
        _check_path(path, f"{where}: device {device!r}")
    if spec.node is not None:
        _check_path(spec.node, f"{where}: node")
    for name, target in spec.metrics.items():
        if not name:
            raise InvalidInput(f"{where}: a metric name is empty")
        if isinstance(target, MetricMap) and not (math.isfinite(target.scale) and math.isfinite(target.offset)):
            raise InvalidInput(f"{where}: metric {name!r}: scale and offset must be finite numbers")


def _check_path(path: str, where: str) -> None:
    if len([p for p in path.split("/") if p]) != 4:
        raise InvalidInput(f"{where}: {path!r} is not a machine path site/area/line/machine")


def machine_path(path: str) -> tuple[str, ...]:
    return tuple(p for p in path.split("/") if p)


# -- group and edge node ids --------------------------------------------------------------------------

def check_edge_node_id(edge_node: str, where: str = "sparkplug") -> str:
    if not isinstance(edge_node, str) or not ID_RE.match(edge_node):
        raise InvalidInput(f"{where}: edge node id {edge_node!r} must be 1-128 letters, digits, '.', '-' or '_', "
                           "starting with a letter or digit")
    return edge_node


def tenant_group(tenant_slug: str) -> str:
    """The group id the registry allocates to a tenant: its slug."""
    return tenant_slug


def group_tenant(group: str) -> str:
    """The slug of the tenant that owns ``group`` (whether or not such a tenant exists)."""
    return group.split(".", 1)[0]


def check_group(group: str, tenant_slug: str, where: str = "sparkplug") -> str:
    """``group`` must be the tenant's group or ``{slug}.{suffix}``."""
    if group == tenant_group(tenant_slug):
        return group
    slug, _, suffix = group.partition(".")
    if slug != tenant_slug or not _SUFFIX_RE.match(suffix):
        raise InvalidInput(f"{where}: group id {group!r} is not one of tenant {tenant_slug!r}: use {tenant_slug!r} "
                           f"or {tenant_slug + '.<suffix>'!r} (letters, digits, '-', '_')")
    return group


# -- the binding ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SparkplugNode:
    """A registry device acting as a Sparkplug edge node."""

    tenant_id: int
    device_id: int
    group: str
    edge_node: str
    status: Approval = Approval.APPROVED
    mapping: SparkplugSpec = field(default_factory=SparkplugSpec)
    seen: dict[str, list[str]] = field(default_factory=dict)  # what its births declared: "" (node) or device -> metric names

    @property
    def approved(self) -> bool:
        return self.status is Approval.APPROVED


def seen_to_obj(seen: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    return {str(k): [str(n) for n in v] for k, v in seen.items()}


# -- broker rights ----------------------------------------------------------------------------------------

def node_grant(group: str, edge_node: str) -> str:
    """How a device's list of topic prefixes says "may act as this edge node"."""
    return f"{NAMESPACE}/{group}/+/{edge_node}"


def device_grants(tenant_slug: str, device_name: str, node: SparkplugNode | None) -> tuple[tuple[str, str], ...]:
    """The (group, edge node id) a device may publish as: its binding's, else its enrolment name."""
    if node is not None:
        return ((node.group, node.edge_node),)
    if ID_RE.match(device_name):
        return ((tenant_group(tenant_slug), device_name),)
    return ()


def granted_nodes(prefixes: Iterable[str]) -> frozenset[tuple[str, str]]:
    out = set()
    for p in prefixes:
        parts = p.split("/")
        if len(parts) == 4 and parts[0] == NAMESPACE and parts[2] == "+":
            out.add((parts[1], parts[3]))
    return frozenset(out)


def _plain(level: str) -> bool:
    return bool(level) and not _RESERVED.intersection(level)


def publish_allowed(topic: str, prefixes: tuple[str, ...]) -> bool:
    """May a device with these prefixes publish ``topic`` (or have it as its Will)?"""
    if not topic.startswith(NAMESPACE + "/"):
        return topic_within(topic, prefixes)
    parts = topic.split("/")
    node_message = len(parts) == 4 and parts[2] in NODE_UPLINK
    device_message = len(parts) == 5 and parts[2] in DEVICE_UPLINK and _plain(parts[4])
    return (node_message or device_message) and (parts[1], parts[3]) in granted_nodes(prefixes)


def receive_allowed(topic: str, prefixes: tuple[str, ...]) -> bool:
    """May a device with these prefixes be sent ``topic``?"""
    if not topic.startswith(NAMESPACE + "/"):
        return topic_within(topic, prefixes)
    parts = topic.split("/")
    grants = granted_nodes(prefixes)
    if len(parts) == 3 and parts[1] == STATE:
        return bool(grants)
    if (len(parts) == 4 and parts[2] == "NCMD") or (len(parts) == 5 and parts[2] == "DCMD"):
        return (parts[1], parts[3]) in grants
    return False


def subscribe_allowed(topic_filter: str, prefixes: tuple[str, ...]) -> bool:
    """May a device with these prefixes subscribe to ``topic_filter``?

    Sparkplug: its own NCMD and DCMD topics (any filter below ``spBv1.0/g/NCMD/e`` or
    ``spBv1.0/g/DCMD/e``) and the hosts' STATE topics. The broker still checks every delivery.
    """
    if not topic_filter.startswith(NAMESPACE + "/"):
        return filter_within(topic_filter, prefixes)
    parts = topic_filter.split("/")
    grants = granted_nodes(prefixes)
    if len(parts) == 3 and parts[1] == STATE:
        return bool(grants) and (parts[2] in ("+", "#") or _plain(parts[2]))
    if len(parts) >= 4 and parts[2] in ("NCMD", "DCMD") and _plain(parts[1]) and _plain(parts[3]):
        return (parts[1], parts[3]) in grants
    return False


# -- ingest workers ---------------------------------------------------------------------------------------

def worker_for_group(group: str, workers: int) -> int:
    """Which of ``workers`` ingest workers owns ``group``: the first 8 bytes of the SHA-256 of its UTF-8
    bytes, as a big-endian number, modulo the count.

    Stable across processes, machines and Python versions (unlike ``hash()``), and spread evenly
    (unlike a CRC, whose low bits follow the input's bits linearly).
    """
    if workers < 1:
        raise ValueError(f"need at least one worker, not {workers}")
    return int.from_bytes(hashlib.sha256(group.encode("utf-8")).digest()[:8], "big") % workers


def groups_of_worker(groups: Iterable[str], index: int, workers: int) -> list[str]:
    return sorted(g for g in set(groups) if worker_for_group(g, workers) == index)


# -- values -------------------------------------------------------------------------------------------------

def sample_value(value_type: ValueType, raw: object, mapping: MetricMap) -> tuple[float | None, str | None] | str:
    """A metric's value as a sample's (value, text), or why it cannot be one.

    Numbers (integers, floats; not booleans) go to numeric measurements, scaled; booleans to
    boolean ones (1.0/0.0), also from the integers 0 and 1; strings to string ones (at most 1024
    characters).
    """
    if value_type is ValueType.NUMERIC:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            return f"expected a number, got {type(raw).__name__}"
        try:
            value = float(raw) * mapping.scale + mapping.offset
        except OverflowError:
            return "number out of range"
        if not math.isfinite(value):
            return "not a finite number"
        return value, None
    if value_type is ValueType.BOOLEAN:
        if isinstance(raw, bool):
            return (1.0 if raw else 0.0), None
        if isinstance(raw, int) and raw in (0, 1):
            return float(raw), None
        return f"expected a boolean, got {type(raw).__name__}"
    if isinstance(raw, str):
        return None, raw[:1024]
    return f"expected a string, got {type(raw).__name__}"


def sample_quality(sparkplug_quality: int | None) -> int:
    """A Sparkplug ``Quality`` property value (absent: good) as a sample quality."""
    if sparkplug_quality is None:
        return int(Quality.GOOD)
    return int(SPARKPLUG_QUALITY.get(sparkplug_quality, Quality.UNCERTAIN))
