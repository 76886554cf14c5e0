"""One client connection with its share of the nodes: subscriptions, polling, reconnect, back-fill.

A ``Link`` connects, creates its subscriptions (``items_per_subscription`` monitored items each,
with the node's sampling interval and deadband), polls the nodes the server will not monitor, and
watches the connection. When it is lost, the link reconnects with exponential back-off and creates
everything again. After a reconnect, the live notifications are held back while the gap is read by
HistoryRead (from each node's newest source timestamp until now); a node whose history cannot be
read gets one bad-quality reading at the moment the link was lost. De-duplication by (node, source
timestamp) drops what arrives twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from asyncua import Client, Node, ua

from shopfloor.connectors.opcua.delivery import Delivery
from shopfloor.connectors.opcua.errors import OpcUaAuthError, OpcUaError, OpcUaSecurityError, OpcUaWriteError
from shopfloor.connectors.opcua.mapping import BoundNode, datetime_us, us_datetime
from shopfloor.connectors.opcua.session import close, connect, guarded
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.opcua_map import DeadbandType, OpcUaSpec
from shopfloor.domain.records import Quality

log = logging.getLogger(__name__)

#: What a server answers when it will not monitor an item or a subscription: poll those instead.
_NOT_MONITORED = {ua.StatusCodes.BadMonitoredItemFilterUnsupported, ua.StatusCodes.BadFilterNotAllowed,
                  ua.StatusCodes.BadDeadbandFilterInvalid, ua.StatusCodes.BadTooManyMonitoredItems,
                  ua.StatusCodes.BadServiceUnsupported, ua.StatusCodes.BadTooManySubscriptions}
_DEADBAND = {DeadbandType.ABSOLUTE: ua.DeadbandType.Absolute, DeadbandType.PERCENT: ua.DeadbandType.Percent}


class _Handler:
    """asyncua's subscription callback: convert, hold back during a back-fill, offer to delivery."""

    def __init__(self, delivery: Delivery, by_handle: dict[int, BoundNode]) -> None:
        self._delivery = delivery
        self._by_handle = by_handle
        self.held: list[tuple[str, Reading]] | None = None

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        item = data.monitored_item
        bound = self._by_handle.get(item.ClientHandle)
        if bound is None:
            return
        reading = bound.reading(item.Value)
        if self.held is not None:
            self.held.append((bound.node_id, reading))
        else:
            self._delivery.offer(bound.node_id, reading)

    def status_change_notification(self, status: Any) -> None:
        log.info("OPC UA subscription status change: %s", status)


class Link:
    def __init__(self, spec: OpcUaSpec, nodes: Sequence[BoundNode], delivery: Delivery, *, name: str = "opcua",
                 min_backoff_s: float = 0.5, max_backoff_s: float = 30.0, watchdog_s: float = 1.0,
                 timeout_s: float = 4.0) -> None:
        self.spec = spec
        self.nodes = list(nodes)
        self.name = name
        self._delivery = delivery
        self._min_backoff = min_backoff_s
        self._max_backoff = max_backoff_s
        self._watchdog_s = watchdog_s
        self._timeout_s = timeout_s
        self.client: Client | None = None
        self.connected = asyncio.Event()
        self.subscriptions = 0
        self.monitored = 0
        self.polled: list[BoundNode] = []
        self._lost_at_us: int | None = None
        self._alive_us: int | None = None
        self._last_polled: dict[str, float | bool | str | None] = {}

    async def run(self) -> None:
        """Connect and keep connected until cancelled. A refused user or certificate on the first
        attempt is raised (a configuration error); later, every failure is retried."""
        attempt = 0
        ever_connected = False
        while True:
            try:
                self.client = await connect(self.spec, timeout_s=self._timeout_s, watchdog_s=self._watchdog_s)
            except (OpcUaAuthError, OpcUaSecurityError):
                if not ever_connected:
                    raise
                log.warning("%s: %s refused the client; retrying", self.name, self.spec.endpoint, exc_info=True)
            except OpcUaError as exc:
                log.warning("%s: cannot connect to %s: %s", self.name, self.spec.endpoint, exc.message)
            else:
                ever_connected = True
                attempt = 0
                try:
                    await self._session(self.client)
                except asyncio.CancelledError:
                    await close(self.client)
                    raise
                except Exception as exc:
                    log.warning("%s: connection to %s lost: %s", self.name, self.spec.endpoint, exc)
                if self._lost_at_us is None:  # the last moment the link was known to be up
                    self._lost_at_us = self._alive_us or time.time_ns() // 1000
                self.connected.clear()
                await close(self.client)
                self.client = None
                self._delivery.stats.reconnects += 1
            delay = min(self._max_backoff, self._min_backoff * 2 ** attempt) * (0.8 + 0.4 * random.random())
            attempt = min(attempt + 1, 20)
            await asyncio.sleep(delay)

    async def _session(self, client: Client) -> None:
        by_handle: dict[int, BoundNode] = {}
        handler = _Handler(self._delivery, by_handle)
        reconnected = self._lost_at_us is not None
        if reconnected:
            handler.held = []
        self.polled = []
        self.subscriptions = self.monitored = 0
        size = self.spec.items_per_subscription
        handle = 0
        for start in range(0, len(self.nodes), size):
            chunk = self.nodes[start:start + size]
            try:
                sub = await client.create_subscription(self._params(), handler)
            except ua.UaStatusCodeError as exc:
                if exc.code not in _NOT_MONITORED:
                    raise
                log.info("%s: no subscription (%s); polling %d nodes", self.name, type(exc).__name__, len(chunk))
                self.polled.extend(chunk)
                continue
            self.subscriptions += 1
            requests = []
            for bound in chunk:
                handle += 1
                by_handle[handle] = bound
                requests.append(_request(bound, handle, self.spec.queue_size))
            results = await sub.create_monitored_items(requests)
            for bound, result in zip(chunk, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    self.monitored += 1
                elif result.value in _NOT_MONITORED:
                    self.polled.append(bound)
                else:  # a node that does not exist, or may not be read: say so in the data
                    log.warning("%s: node %s not monitored: %s", self.name, bound.node_id, result.name)
                    self._delivery.offer(bound.node_id, Reading(bound.asset, bound.measurement,
                                                                time.time_ns() // 1000, None, Quality.BAD))
        self._delivery.stats.polled_nodes = len(self.polled)
        if reconnected:
            await self._backfill(client)
            held, handler.held = handler.held or [], None
            self._delivery.offer_many(held)
            self._lost_at_us = None
        self._alive_us = time.time_ns() // 1000
        self.connected.set()
        log.info("%s: %s: %d monitored items in %d subscriptions, %d polled", self.name, self.spec.endpoint,
                 self.monitored, self.subscriptions, len(self.polled))
        poller = asyncio.create_task(self._poll(client)) if self.polled else None
        try:
            while True:
                await asyncio.sleep(self._watchdog_s)
                sent = time.time_ns() // 1000
                await client.check_connection()
                await asyncio.wait_for(client.nodes.server_state.read_value(), self._timeout_s)
                self._alive_us = sent  # the link was up at least until then
                if poller is not None and poller.done():
                    poller.result()
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await poller

    def _params(self) -> ua.CreateSubscriptionParameters:
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = self.spec.publishing_interval_ms
        params.RequestedLifetimeCount = 10000
        params.RequestedMaxKeepAliveCount = max(1, int(10_000 / self.spec.publishing_interval_ms))
        params.MaxNotificationsPerPublish = 0  # no limit
        params.PublishingEnabled = True
        params.Priority = 0
        return params

    async def _backfill(self, client: Client) -> None:
        """Read each node's gap from the server's history, or mark it with a bad-quality reading.

        Only nodes whose access level grants HistoryRead are read (servers answer others with an
        error, or with nothing, which would pass for "no changes")."""
        lost_at = self._lost_at_us or time.time_ns() // 1000
        end = us_datetime(time.time_ns() // 1000)
        historized: list[bool] = [False] * len(self.nodes)
        if self.spec.history_backfill:
            ids = [client.get_node(b.node_id).nodeid for b in self.nodes]
            levels = await client.uaclient.read_attributes(ids, ua.AttributeIds.AccessLevel)
            historized = [dv.StatusCode is not None and dv.StatusCode.is_good() and dv.Value is not None
                          and isinstance(dv.Value.Value, int) and bool(dv.Value.Value & ua.AccessLevel.HistoryRead.mask)
                          for dv in levels]
        gate = asyncio.Semaphore(16)

        async def one(bound: BoundNode, has_history: bool) -> None:
            since = self._delivery.dedup.latest(bound.node_id) or lost_at
            history: list[ua.DataValue] | None = None
            if has_history:
                async with gate:
                    try:
                        history = await client.get_node(bound.node_id).read_raw_history(
                            us_datetime(since), end, return_bounds=False)
                    except (ua.UaStatusCodeError, ua.UaError, ValueError) as exc:
                        log.info("%s: no history of %s (%s)", self.name, bound.node_id, type(exc).__name__)
            if history is None:  # bad from the loss (or its newest value, if later) to the next value
                self._delivery.stats.gaps_marked += 1
                at = max(lost_at, (self._delivery.dedup.latest(bound.node_id) or 0) + 1)
                self._delivery.offer(bound.node_id, Reading(bound.asset, bound.measurement, at, None, Quality.BAD))
                return
            for dv in history:
                if dv.SourceTimestamp is not None and datetime_us(dv.SourceTimestamp) < since:
                    continue
                before = self._delivery.stats.duplicates
                self._delivery.offer(bound.node_id, bound.reading(dv), remember=True)
                if self._delivery.stats.duplicates == before:
                    self._delivery.stats.backfilled += 1

        await asyncio.gather(*(one(b, h) for b, h in zip(self.nodes, historized, strict=True)))

    async def _poll(self, client: Client) -> None:
        """Read the nodes the server would not monitor, every ``poll_interval_ms``."""
        ids = [client.get_node(b.node_id).nodeid for b in self.polled]
        while True:
            values = await client.uaclient.read_attributes(ids, ua.AttributeIds.Value)
            for bound, dv in zip(self.polled, values, strict=True):
                reading = bound.reading(dv)
                if _within_deadband(bound, self._last_polled.get(bound.node_id), reading.value):
                    continue
                self._last_polled[bound.node_id] = reading.value
                self._delivery.offer(bound.node_id, reading)
            await asyncio.sleep(self.spec.poll_interval_ms / 1000)

    async def write(self, bound: BoundNode, value: float | bool | str) -> None:
        """Write ``value`` (in the measurement's units) to the node, in the node's own data type."""
        client = self.client
        if client is None or not self.connected.is_set():
            await asyncio.wait_for(self.connected.wait(), self._timeout_s)
            client = self.client
        assert client is not None
        node = client.get_node(bound.node_id)
        vtype = await guarded(self.spec.endpoint, node.read_data_type_as_variant_type())
        raw = _unscaled(bound, value, vtype)
        await guarded(self.spec.endpoint, node.write_value(ua.DataValue(ua.Variant(raw, vtype))))


def _request(bound: BoundNode, handle: int, queue_size: int) -> ua.MonitoredItemCreateRequest:
    params = ua.MonitoringParameters()
    params.ClientHandle = handle
    params.SamplingInterval = bound.sampling_interval_ms
    params.QueueSize = queue_size
    params.DiscardOldest = True
    if bound.deadband is not None and bound.deadband.value > 0:
        flt = ua.DataChangeFilter()
        flt.Trigger = ua.DataChangeTrigger.StatusValue
        flt.DeadbandType = _DEADBAND[bound.deadband.type]
        flt.DeadbandValue = bound.deadband.value
        params.Filter = flt
    item = ua.ReadValueId()
    item.NodeId = ua.NodeId.from_string(bound.node_id)
    item.AttributeId = ua.AttributeIds.Value
    request = ua.MonitoredItemCreateRequest()
    request.ItemToMonitor = item
    request.MonitoringMode = ua.MonitoringMode.Reporting
    request.RequestedParameters = params
    return request


def _within_deadband(bound: BoundNode, last: Any, value: Any) -> bool:
    """A polled value that moved no more than its absolute deadband (given in the node's raw units;
    a percent deadband needs the EURange, which only servers apply)."""
    if bound.deadband is None or bound.deadband.type is not DeadbandType.ABSOLUTE:
        return False
    if not isinstance(value, float) or not isinstance(last, float):
        return False
    return abs(value - last) <= bound.deadband.value * abs(bound.scale)


_INTEGERS = {ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
             ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64}


def _unscaled(bound: BoundNode, value: float | bool | str, vtype: ua.VariantType) -> Any:
    """The raw value to write: ``(value - offset) / scale`` in the node's type."""
    if vtype is ua.VariantType.Boolean:
        if not isinstance(value, bool):
            raise OpcUaWriteError(f"node {bound.node_id} is Boolean; {value!r} is not")
        return value
    if vtype in (ua.VariantType.String, ua.VariantType.LocalizedText):
        if not isinstance(value, str):
            raise OpcUaWriteError(f"node {bound.node_id} is a string; {value!r} is not")
        return value if vtype is ua.VariantType.String else ua.LocalizedText(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OpcUaWriteError(f"node {bound.node_id} is {vtype.name}; {value!r} is not a number")
    raw = (float(value) - bound.offset) / bound.scale
    if vtype in _INTEGERS:
        if raw != round(raw):
            raise OpcUaWriteError(f"node {bound.node_id} is {vtype.name}; {value!r} gives {raw}, not a whole number")
        return round(raw)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return raw
    raise OpcUaWriteError(f"node {bound.node_id} has data type {vtype.name}, which shopfloor does not write")
