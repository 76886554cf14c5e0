"""Composition of the edge agent: edge.yaml's sources built as connectors and wired into the agent.

This is the only place that sees both the agent (connectors/edge) and the field-bus connectors
(connectors/modbus, and connectors/opcua once it is there).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from shopfloor.connectors.edge.agent import EdgeAgent, EdgeSource
from shopfloor.connectors.edge.buffer import DiskBuffer
from shopfloor.connectors.edge.config import ResolvedEdge, load_edge_config
from shopfloor.connectors.edge.link import LinkSettings
from shopfloor.connectors.modbus.source import ModbusSource, TransportFactory, pymodbus_transport
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.modbus_map import registers_of

_log = logging.getLogger(__name__)


def check_sources(edge: ResolvedEdge) -> int:
    """Refuse sources this build cannot run; returns how many points the sources feed."""
    if edge.opcua:
        raise InvalidInput("OPC UA sources need the OPC UA connector, which this build does not have yet")
    return sum(len(registers_of(spec)) for spec, _ in edge.modbus)


def build_sources(edge: ResolvedEdge, modbus_transport: TransportFactory = pymodbus_transport) -> list[EdgeSource]:
    """The connectors of edge.yaml's sources (call inside the event loop that will run them)."""
    check_sources(edge)
    sources: list[EdgeSource] = []
    if edge.modbus:
        sources.append(ModbusSource(edge.modbus, modbus_transport))
    return sources


def build_agent(edge: ResolvedEdge, sources: list[EdgeSource] | None = None) -> EdgeAgent:
    c = edge.config
    link = LinkSettings(c.broker.host, c.broker.port, c.broker.client_id or f"edge-{edge.username or c.tenant}",
                        edge.username, edge.password, c.broker.tls, c.broker.ca_file, c.broker.keepalive_s,
                        c.window)
    buffer = DiskBuffer(edge.buffer_path, c.buffer.max_bytes, durable=c.buffer.durable)
    return EdgeAgent(c.tenant, build_sources(edge) if sources is None else sources, buffer, link,
                     max_records=c.max_records)


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
