"""Ports of the Sparkplug host: who an edge node is (the directory), and how commands go out.

The host (``connectors.sparkplug.host``) asks the ``SparkplugDirectory`` which tenant, device and
machines an edge node's messages belong to; the registry-backed service answers. Services send
NCMD/DCMD writes through ``SparkplugCommands``, which the connector implements (it owns the codec).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from shopfloor.domain.assets import ValueType
from shopfloor.domain.sparkplug import MetricMap


@dataclass(frozen=True, slots=True)
class MetricTarget:
    """Where one metric's values go: a series, its type, and the scale/offset to apply."""

    series_id: int
    value_type: ValueType
    mapping: MetricMap


@dataclass(frozen=True, slots=True)
class MachineTarget:
    """A Sparkplug device (or the edge node itself) as a machine.

    ``metrics`` holds every metric name the machine takes (its type's measurements under their own
    names, and the names the mapping lists); a name mapped to None is left out on purpose; a name
    that is absent is not a measurement of this machine.
    """

    asset_id: int
    path: str
    metrics: Mapping[str, MetricTarget | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NodeBinding:
    """An edge node as the registry knows it."""

    tenant_id: int
    device_id: int
    username: str  # the device's broker username
    group: str
    edge_node: str
    approved: bool  # False: quarantined, its data is not stored
    node_machine: MachineTarget | None = None  # for the node's own metrics (NBIRTH/NDATA)
    machines: Mapping[str, MachineTarget] = field(default_factory=dict)  # Sparkplug device id -> machine
    ignored: frozenset[str] = frozenset()  # metric names the mapping leaves out on purpose


@dataclass(frozen=True, slots=True)
class Resolution:
    """The answer for one (group, edge node id): a binding, or why there is none.

    ``enrolable``: no binding, but a device of the group's tenant may speak as this edge node
    (the edge node id is its name, the group the tenant's own): the host registers it in quarantine.
    """

    binding: NodeBinding | None
    tenant_id: int | None
    username: str  # whom to name in dead letters and counters ("" if nobody)
    enrolable: bool = False
    reason: str = ""


class SparkplugDirectory(Protocol):
    def resolve(self, group: str, edge_node: str, username: str | None = None) -> Resolution:
        """Who publishes as ``group``/``edge_node``. ``username`` is the broker login that sent the
        message when the transport knows it (the embedded broker); a binding of another device is
        then refused. Cached; a registry change is seen within a second."""
        ...

    def groups(self) -> set[str]:
        """Every group id in use or usable: each tenant's own, and every group a binding names."""
        ...

    def enrol(self, group: str, edge_node: str, seen: Mapping[str, Sequence[str]]) -> NodeBinding | None:
        """Register an enrolable edge node in quarantine, or update what a quarantined one declared
        (``seen``: ``""`` for the node's own metrics, else Sparkplug device id -> metric names).
        Returns the binding (None if the node cannot be enrolled)."""
        ...


class Publisher(Protocol):
    """An MQTT publish towards edge nodes (the embedded broker, or an MQTT client of an external one)."""

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class MetricWrite:
    """One metric of an NCMD/DCMD: its name, the value to write, and optionally its Sparkplug data
    type by name (``Int32``, ``Double``, ``Boolean``, ``String``, ...; else guessed from the value)."""

    name: str
    value: bool | int | float | str
    datatype: str | None = None


class SparkplugCommands(Protocol):
    async def send(self, group: str, edge_node: str, device: str | None, writes: Sequence[MetricWrite]) -> str:
        """Publish an NCMD (``device`` None) or a DCMD with ``writes``; return its topic.

        Raises ``InvalidInput`` for a value its data type cannot hold, and a ``ShopfloorError``
        with status 503 when the broker cannot be reached.
        """
        ...
