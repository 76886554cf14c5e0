"""``OpcUaSource``: one device's ``opcua`` section read into a ``ReadingSink``, and its writes.

The nodes are spread over ``connection_count()`` links (client connections), each holding up to
``subscriptions_per_connection`` subscriptions of ``items_per_subscription`` monitored items: one
client process tops out at some thousands of notifications per second (docs/PERFORMANCE.md), so
large tag counts go over several connections.

Usage (the edge agent)::

    source = OpcUaSource(spec, sink)
    task = asyncio.create_task(source.run())   # runs until cancelled
    await source.write("ns=2;s=Press.Setpoint", 42.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shopfloor.connectors.opcua.delivery import Delivery, Stats
from shopfloor.connectors.opcua.errors import OpcUaWriteError
from shopfloor.connectors.opcua.link import Link
from shopfloor.connectors.opcua.mapping import BoundNode, bind
from shopfloor.domain.fieldbus import ReadingSink
from shopfloor.domain.opcua_map import OpcUaSpec, check_opcua

log = logging.getLogger(__name__)


class OpcUaSource:
    def __init__(self, spec: OpcUaSpec, sink: ReadingSink, *, name: str = "opcua", min_backoff_s: float = 0.5,
                 max_backoff_s: float = 30.0, watchdog_s: float = 1.0, timeout_s: float = 4.0) -> None:
        check_opcua(spec, name)
        self.spec = spec
        self.name = name
        self.delivery = Delivery(sink)
        nodes = bind(spec)
        per_link = spec.items_per_subscription * spec.subscriptions_per_connection
        self.links = [Link(spec, nodes[i:i + per_link], self.delivery, name=f"{name}[{n}]",
                           min_backoff_s=min_backoff_s, max_backoff_s=max_backoff_s, watchdog_s=watchdog_s,
                           timeout_s=timeout_s)
                      for n, i in enumerate(range(0, len(nodes), per_link))]
        self._where: dict[str, tuple[Link, BoundNode]] = {b.node_id: (link, b) for link in self.links
                                                           for b in link.nodes}
        self._by_measurement: dict[tuple[str, str], str] = {(b.asset, b.measurement): b.node_id
                                                            for _, b in self._where.values()}

    @property
    def stats(self) -> Stats:
        return self.delivery.stats

    async def run(self) -> None:
        """Read until cancelled. Raises at once if the server refuses the user or the certificate on
        the first connection (``OpcUaAuthError``, ``OpcUaSecurityError``)."""
        tasks = [asyncio.create_task(link.run(), name=link.name) for link in self.links]
        tasks.append(asyncio.create_task(self.delivery.run(), name=f"{self.name} delivery"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def connected(self, timeout_s: float = 10.0) -> None:
        """Wait until every link has its subscriptions (and back-fill) in place."""
        await asyncio.wait_for(asyncio.gather(*(link.connected.wait() for link in self.links)), timeout_s)

    async def drained(self) -> None:
        """Wait until every reading received so far is in the sink."""
        await self.delivery.drained()

    def node_for(self, asset: str, measurement: str) -> str:
        """The node id mapped to a machine's measurement (``OpcUaWriteError`` if none)."""
        node_id = self._by_measurement.get((asset.strip("/"), measurement))
        if node_id is None:
            raise OpcUaWriteError(f"{self.name}: no node is mapped to {asset}: {measurement}")
        return node_id

    async def write(self, node_id: str, value: float | bool | str) -> None:
        """Write a value (in the measurement's units: scale and offset are undone) to a node the
        mapping marks ``writable``; raises ``OpcUaWriteError`` (or ``OpcUaUnreachable``)."""
        found = self._where.get(node_id)
        if found is None:
            raise OpcUaWriteError(f"{self.name}: node {node_id!r} is not in the mapping")
        link, bound = found
        if not bound.writable:
            raise OpcUaWriteError(f"{self.name}: node {node_id!r} is not writable (set 'writable: true')")
        await link.write(bound, value)
        log.info("%s: wrote %r to %s", self.name, value, node_id)
