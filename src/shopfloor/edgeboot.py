"""Composition of the edge agent: edge.yaml's sources built as connectors and wired into the agent.

This is the only place that sees both the agent (connectors/edge) and the field-bus connectors
(connectors/modbus, connectors/opcua).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from shopfloor.connectors.edge.agent import EdgeAgent, EdgeSource
from shopfloor.connectors.edge.buffer import DiskBuffer
from shopfloor.connectors.edge.config import ResolvedEdge, load_edge_config
from shopfloor.connectors.edge.link import LinkSettings
from shopfloor.connectors.edge.sparkplug_out import SparkplugOut
from shopfloor.connectors.modbus.source import ModbusSource, TransportFactory, pymodbus_transport
from shopfloor.connectors.opcua.source import OpcUaSource
from shopfloor.connectors.sparkplug.edge_node import SparkplugEdgeNode
from shopfloor.connectors.sparkplug.model import DataType
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.fieldbus import Reading, ReadingSink
from shopfloor.domain.modbus_map import BIT_TABLES, asset_of, registers_of
from shopfloor.domain.opcua_map import OpcUaSpec

_log = logging.getLogger(__name__)


class OpcUaEdgeSource:
    """The OPC UA connector's sources (one per server) as one ``EdgeSource`` of the agent."""

    name = "opcua"

    def __init__(self, specs: list[tuple[OpcUaSpec, str]]) -> None:
        self._sink: ReadingSink | None = None
        self.sources = [OpcUaSource(spec, self._forward, name=name) for spec, name in specs]
        self._nodes = {(b.asset, b.measurement): (source, b) for source in self.sources
                       for link in source.links for b in link.nodes}

    async def _forward(self, readings: Sequence[Reading]) -> None:
        if self._sink is not None:
            await self._sink(readings)

    def points(self) -> list[tuple[str, str]]:
        return list(self._nodes)

    def writable(self, asset: str, measurement: str) -> bool:
        found = self._nodes.get((asset, measurement))
        return found is not None and found[1].writable

    async def run(self, sink: ReadingSink) -> None:
        self._sink = sink
        async with asyncio.TaskGroup() as tg:
            for source in self.sources:
                tg.create_task(source.run(), name=f"opcua {source.name}")

    async def write(self, asset: str, measurement: str, value: float | bool | str) -> None:
        found = self._nodes.get((asset, measurement))
        if found is None:
            raise InvalidInput(f"no OPC UA node feeds {asset} {measurement}")
        source, bound = found
        await source.write(bound.node_id, value)

    def counters(self) -> dict[str, dict[str, object]]:
        return {s.name: dataclasses.asdict(s.stats) for s in self.sources}


def check_sources(edge: ResolvedEdge) -> int:
    """How many points (registers, nodes) the sources feed."""
    return (sum(len(registers_of(spec)) for spec, _ in edge.modbus)
            + sum(len(spec.nodes) for spec, _ in edge.opcua))


def build_sources(edge: ResolvedEdge, modbus_transport: TransportFactory = pymodbus_transport) -> list[EdgeSource]:
    """The connectors of edge.yaml's sources (call inside the event loop that will run them)."""
    sources: list[EdgeSource] = []
    if edge.modbus:
        sources.append(ModbusSource(edge.modbus, modbus_transport))
    if edge.opcua:
        sources.append(OpcUaEdgeSource(edge.opcua))
    return sources


def sparkplug_node(edge: ResolvedEdge, sources: list[EdgeSource]) -> SparkplugEdgeNode:
    """The edge node of ``protocol: sparkplug``: every point of the sources a metric of the binding's
    device for its machine (or of the node, for the binding's ``node`` machine)."""
    spec = edge.sparkplug
    if spec is None or spec.group is None or spec.edge_node is None:
        raise InvalidInput("edge.yaml: protocol sparkplug without a binding")
    kinds: dict[tuple[str, str], DataType] = {}
    for mb, default in edge.modbus:
        for reg in registers_of(mb):
            kind = (DataType.BOOLEAN if reg.table in BIT_TABLES or reg.type == "bool"
                    else DataType.STRING if reg.type == "string" else DataType.DOUBLE)
            kinds[(asset_of(reg, mb) or default, reg.measurement)] = kind
    points = {p: kinds.get(p, DataType.DOUBLE) for s in sources for p in s.points()}
    devices: dict[str, str | None] = {path.strip("/"): device for device, path in spec.devices.items()}
    if spec.node is not None:
        devices[spec.node.strip("/")] = None
    names = {}
    for metric, target in spec.metrics.items():  # a plain renaming is sent under the binding's name
        m = spec.metric_map(metric)
        if m is not None and (m.scale, m.offset) == (1.0, 0.0) and target is not None:
            for point in points:
                if point[1] == m.measurement and point[1] != metric:
                    names[point] = metric
    try:
        return SparkplugEdgeNode(spec.group, spec.edge_node, points, devices, names)
    except ValueError as exc:
        raise InvalidInput(f"edge.yaml: sparkplug binding {spec.group}/{spec.edge_node}: {exc}; map them under "
                           "'devices' (Sparkplug device id: machine path) or as its 'node'") from None


def build_agent(edge: ResolvedEdge, sources: list[EdgeSource] | None = None) -> EdgeAgent:
    c = edge.config
    link = LinkSettings(c.broker.host, c.broker.port, c.broker.client_id or f"edge-{edge.username or c.tenant}",
                        edge.username, edge.password, c.broker.tls, c.broker.ca_file, c.broker.keepalive_s,
                        c.window)
    sources = build_sources(edge) if sources is None else sources
    sparkplug = SparkplugOut(sparkplug_node(edge, sources), c.tenant) if c.protocol == "sparkplug" else None
    buffer = DiskBuffer(edge.buffer_path, c.buffer.max_bytes, durable=c.buffer.durable)
    return EdgeAgent(c.tenant, sources, buffer, link, max_records=c.max_records, sparkplug=sparkplug)


async def run_edge(config_path: str | Path, stop: asyncio.Event, stats_every_s: float = 60.0) -> EdgeAgent:
    """Run the agent of ``config_path`` until ``stop`` is set; logs its counters every ``stats_every_s``."""
    agent = build_agent(load_edge_config(config_path))

    async def report() -> None:
        while True:
            await asyncio.sleep(stats_every_s)
            _log.info("edge: %s", agent.describe())

    reporter = asyncio.create_task(report())
    try:
        await agent.run(stop)
    finally:
        reporter.cancel()
        agent.buffer.close()
    return agent
