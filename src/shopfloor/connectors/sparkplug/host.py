"""The Sparkplug host application: ``spBv1.0`` messages in, committed samples and events out.

``SparkplugHost`` is a ``MessageSink`` for the Sparkplug namespace. For every message it asks the
``SparkplugDirectory`` which tenant, device and machines the edge node is, runs the per-node state
machine (``HostState``: bdSeq, sequence numbers, aliases, births and deaths), and turns its actions
into one ``IngestBatch`` per batch of messages, committed through the ``BatchSink``:

* ``Store``: each metric becomes a sample of the series it maps to (``MachineTarget.metrics``),
  scaled, with the metric's timestamp and Sparkplug quality; a metric mapped to nothing, a value of
  the wrong type or a timestamp out of range is dead-lettered (one dead letter per message and
  reason, naming the metrics).
* ``MarkOnline``/``MarkOffline``: a ``status`` event (online/offline) for each machine concerned;
  ``MarkOffline``/``MarkStale``: a bad-quality empty sample for every series the node or device
  stored since its birth, which ends the hold of its last value.
* ``Rebirth``: an NCMD ``Node Control/Rebirth``, published after the commit; asked again when the
  node keeps talking without an NBIRTH for ``rebirth_retry_s``.

``submit_messages`` returns only after the commit, so the transport acknowledges after it. Messages
that arrive while a commit runs are processed together into the next one, in arrival order. If
the commit fails, the state machine is put back to where it was before the batch, so when the
transport delivers the same messages again they meet the same state.

Edge nodes in quarantine (and unknown ones the directory may enrol) are tracked like the others,
but nothing of theirs is stored: their births are recorded in the registry for the engineer who
approves them. When a node is found approved after having been seen unapproved, a rebirth is
requested, so its current values arrive and are stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from math import isfinite

from shopfloor.connectors.sparkplug.codec import decode_payload
from shopfloor.connectors.sparkplug.errors import SparkplugDecodeError
from shopfloor.connectors.sparkplug.host_fast import DataPlan, Row, make_plan, parse_message, read_floats, read_rows
from shopfloor.connectors.sparkplug.host_messages import (
    Outgoing,
    parse_state_payload,
    rebirth_message,
    state_message,
)
from shopfloor.connectors.sparkplug.host_state import (
    Action,
    BirthScope,
    HostState,
    Ignored,
    MarkOffline,
    MarkOnline,
    MarkStale,
    NodeStatus,
    Rebirth,
    Store,
    is_measurement,
)
from shopfloor.connectors.sparkplug.host_wire import WIRE, WireReader
from shopfloor.connectors.sparkplug.model import Payload
from shopfloor.connectors.sparkplug.topics import (
    NAMESPACE,
    EdgeNode,
    MessageType,
    SparkplugTopic,
    StateTopic,
    parse_topic,
)
from shopfloor.domain.assets import ValueType
from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.payloads import DEAD_PAYLOAD_BYTES, MAX_DETAIL, Limits
from shopfloor.domain.records import DeadLetter, EventRecord, IngestBatch, Quality, Reason
from shopfloor.domain.sparkplug import sample_quality, sample_value
from shopfloor.ports.ingest import BatchSink, MessageSink, RawMessage
from shopfloor.ports.sparkplug import MachineTarget, NodeBinding, Publisher, SparkplugDirectory

_log = logging.getLogger(__name__)

DEFAULT_HOST_ID = "shopfloor"
MAX_PLANS = 100_000
_DATA = (MessageType.NDATA, MessageType.DDATA)
_GOOD = sample_quality(None)
_BAD = int(Quality.BAD)


@dataclass(slots=True)
class HostStats:
    messages: int = 0
    stored: int = 0  # samples
    ignored: int = 0  # messages the state machine dropped (stale node, duplicate death, ...)
    quarantined: int = 0  # messages of edge nodes in quarantine (nothing stored)
    dead: int = 0  # dead letters
    rebirths: int = 0  # rebirth requests published
    commits: int = 0
    failed_commits: int = 0
    ignored_reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(slots=True)
class _Memo:
    """What the host keeps besides the state machine, per edge node."""

    approved: dict[EdgeNode, bool] = field(default_factory=dict)  # as last resolved
    series: dict[tuple[EdgeNode, str | None], set[int]] = field(default_factory=dict)  # stored since birth
    born: dict[EdgeNode, set[str | None]] = field(default_factory=dict)  # online machines' keys (None: node)
    rebirth_at: dict[EdgeNode, float] = field(default_factory=dict)  # monotonic time of the last request

    def copy(self) -> _Memo:
        return _Memo(dict(self.approved), {k: set(v) for k, v in self.series.items()},
                     {k: set(v) for k, v in self.born.items()}, dict(self.rebirth_at))


@dataclass(slots=True)
class _Work:
    """One batch being built: the commit, and what to publish once it is committed."""

    batch: IngestBatch = field(default_factory=IngestBatch)
    outgoing: list[Outgoing] = field(default_factory=list)
    stale: set[tuple[int, int]] = field(default_factory=set)  # (series, ts) marked stale


class SparkplugHost:
    """Implements ``MessageSink`` for ``spBv1.0/#``; see the module docstring."""

    def __init__(self, directory: SparkplugDirectory, sink: BatchSink, publisher: Publisher | None = None, *,
                 host_id: str = DEFAULT_HOST_ID, limits: Limits | None = None,
                 now_us: Callable[[], int] | None = None, rebirth_retry_s: float = 10.0,
                 max_batch: int = 5000, fast_data: bool = True, wire_reader: bool = True) -> None:
        self.directory = directory
        self.host_id = host_id
        self.limits = limits or Limits()
        self.stats = HostStats()
        self.state = HostState()
        self._sink = sink
        self._publisher = publisher
        self._now_us = now_us or (lambda: time.time_ns() // 1000)
        self._rebirth_retry_s = rebirth_retry_s
        self._max_batch = max_batch
        self._memo = _Memo()
        self._fast_data = fast_data  # False: every message by the general path (to compare them)
        self._plans: dict[tuple[EdgeNode, str | None], DataPlan] = {}  # see host_fast
        # the compiled reader of the fast path (host_wire), compiled in the background; off: protobuf objects only
        self._wire: WireReader | None = WIRE if fast_data and wire_reader else None
        if self._wire is not None:
            self._wire.start()
        self._queue: list[tuple[list[RawMessage], asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.birth_timestamp_ms: int | None = None  # of the current STATE birth, once announced

    def set_publisher(self, publisher: Publisher | None) -> None:
        self._publisher = publisher

    # -- STATE ----------------------------------------------------------------------------------
    def state_will(self, timestamp_ms: int) -> Outgoing:
        """The death certificate to register as the MQTT Will of a connection made now."""
        return state_message(self.host_id, False, timestamp_ms)

    async def announce(self, timestamp_ms: int) -> None:
        """Publish the STATE birth (retained), with the timestamp of the connection's Will."""
        self.birth_timestamp_ms = timestamp_ms
        await self._publish(state_message(self.host_id, True, timestamp_ms))

    async def retire(self) -> None:
        """Publish the STATE death (a host without a Will, such as the embedded one, when it stops)."""
        if self.birth_timestamp_ms is not None:
            await self._publish(state_message(self.host_id, False, self.birth_timestamp_ms))
            self.birth_timestamp_ms = None

    # -- the sink ---------------------------------------------------------------------------------
    async def submit_messages(self, messages: list[RawMessage]) -> None:
        if not messages:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((list(messages), done))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        await done

    async def drain(self) -> None:
        while self._runner is not None and not self._runner.done():
            await asyncio.wait({self._runner})

    async def _run(self) -> None:
        while self._queue:
            take: list[tuple[list[RawMessage], asyncio.Future[None]]] = []
            count = 0
            while self._queue and (not take or count + len(self._queue[0][0]) <= self._max_batch):
                item = self._queue.pop(0)
                take.append(item)
                count += len(item[0])
            state, memo = self.state.snapshot(), self._memo.copy()
            work = _Work()
            try:
                for messages, _ in take:
                    for msg in messages:
                        self._process(msg, work)
                self._finish(work)
                if len(work.batch):
                    await self._sink.submit(work.batch)
                    self.stats.commits += 1
            except Exception as exc:
                self.state.restore(state)
                self._memo = memo
                self.stats.failed_commits += 1
                if not isinstance(exc, StoreUnavailable):
                    _log.exception("Sparkplug host failed on %d message(s); state restored", count)
                    exc = StoreUnavailable(f"the Sparkplug host could not commit: {exc}")
                for _, done in take:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.stats.messages += count
            self.stats.stored += len(work.batch.samples)
            self.stats.dead += len(work.batch.dead_letters)
            for outgoing in work.outgoing:
                await self._publish(outgoing)
            for _, done in take:
                if not done.done():
                    done.set_result(None)

    async def _publish(self, out: Outgoing) -> None:
        if self._publisher is None:
            _log.warning("no MQTT publisher: %s not sent", out.topic)
            return
        try:
            await self._publisher.publish(out.topic, out.payload, out.qos, out.retain)
        except Exception as exc:  # the node stays stale; its next message asks again
            _log.warning("could not publish %s: %s", out.topic, exc)

    async def session_lost(self) -> None:
        """This host's broker session is gone (its queued messages with it): every node it follows is
        stale until it is born again; ask each for a rebirth."""
        work = _Work()
        now = self._now_us()
        for action in self.state.connection_lost():
            self._apply(action, None, work, now)
        for node in self.state.nodes():
            if self.state.status(node) is not NodeStatus.OFFLINE:
                for action in self.state.request_rebirth(node, "host reconnected without its session"):
                    self._apply(action, None, work, now)
        self._finish(work)
        if len(work.batch):
            try:
                await self._sink.submit(work.batch)
            except Exception as exc:
                _log.warning("could not record stale values after the session was lost: %s", exc)
        for outgoing in work.outgoing:
            await self._publish(outgoing)

    # -- one message -----------------------------------------------------------------------------
    def _process(self, msg: RawMessage, work: _Work) -> None:
        try:
            topic = parse_topic(msg.topic)  # read once per topic string (see topics.py)
        except SparkplugDecodeError as exc:
            self._dead(work, msg, None, msg.device, Reason.UNKNOWN_TOPIC, exc.message)
            return
        downlink = isinstance(topic, StateTopic) or topic.message_type in (MessageType.NCMD, MessageType.DCMD)
        if downlink and msg.device:  # a device sent it (the embedded broker says who): never its right
            self._dead(work, msg, None, msg.device, Reason.OUTSIDE_PREFIX,
                       "edge nodes publish births, data and deaths, not STATE or commands")
            return
        if isinstance(topic, StateTopic):
            self._state_message(topic, msg, work)
            return
        if topic.message_type in (MessageType.NCMD, MessageType.DCMD):
            return  # commands, ours or another host's: not data
        node = topic.node
        res = self.directory.resolve(node.group, node.edge_node, msg.device or None)
        binding = res.binding
        if binding is None and not res.enrolable:
            reason = Reason.DEVICE_DISABLED if "disabled" in res.reason else Reason.UNKNOWN_DEVICE
            self._dead(work, msg, res.tenant_id, res.username or msg.device, reason, res.reason)
            return
        if (self._fast_data and binding is not None and binding.approved and topic.message_type in _DATA
                and self._memo.approved.get(node) is True and self._fast(topic, msg, binding, work)):
            return
        try:
            payload = decode_payload(msg.payload)
        except SparkplugDecodeError as exc:
            self._dead(work, msg, res.tenant_id, res.username, Reason.UNDECODABLE, exc.message)
            if self.state.status(node) is NodeStatus.ONLINE:
                self._actions(self.state.request_rebirth(node, "undecodable message"), binding, work, msg)
            return
        approved = binding is not None and binding.approved
        before = self._memo.approved.get(node)
        self._memo.approved[node] = approved
        actions = self.state.handle(topic, payload)
        if not approved:
            self.stats.quarantined += 1
            self._enrol(topic, payload, res.enrolable or binding is not None)
            actions = [a for a in actions if isinstance(a, Rebirth | Ignored)]
        elif before is False:  # approved since we last heard it: its births were not stored
            actions = [a for a in actions if not isinstance(a, Store)]
            actions += self.state.request_rebirth(node, "edge node approved")
        self._actions(actions, binding, work, msg, payload)

    def _fast(self, topic: SparkplugTopic, msg: RawMessage, binding: NodeBinding, work: _Work) -> bool:
        """A data message of an approved, online node by the fast path (``host_fast``); False when
        the general path must take it (nothing is changed then)."""
        target = self._target(binding, topic.device)
        if target is None:
            return False
        now = msg.received_us
        latest, earliest = now + self.limits.future_skew_us, now - self.limits.max_age_us
        wire = self._wire
        opened = wire.open(msg.payload) if wire is not None else None  # None: not compiled yet, or not its payload
        if wire is not None and opened is not None:
            seq = opened.seq
            if seq < 0:
                return False  # no seq: the general path says what is wrong
            scope = self.state.data_scope(topic, seq)
            if scope is None:
                return False
            plan = self._plan(topic, scope, target)
            if plan.wire is not None:
                columns = wire.floats(opened, plan.wire, now, latest, earliest)
                if columns is not None:
                    self.state.accept_data(topic, seq)
                    self._store_floats(topic, columns, work)
                    return True
        message = parse_message(msg.payload)
        if message is None or not message.HasField("seq"):
            return False
        scope = self.state.data_scope(topic, message.seq)
        if scope is None:
            return False
        plan = self._plan(topic, scope, target)
        columns = read_floats(message, plan, now, latest, earliest)
        if columns is not None:
            self.state.accept_data(topic, message.seq)
            self._store_floats(topic, columns, work)
            return True
        rows = read_rows(message, plan)
        if rows is None:
            return False
        self.state.accept_data(topic, message.seq)
        if rows:
            errors: dict[Reason, list[str]] = defaultdict(list)
            self._emit(rows, target, topic.node, topic.device, work, msg.received_us, errors)
            for reason, details in errors.items():
                self._dead(work, msg, binding.tenant_id, binding.username, reason, "; ".join(details))
        return True

    def _plan(self, topic: SparkplugTopic, scope: BirthScope, target: MachineTarget) -> DataPlan:
        key = (topic.node, topic.device)
        plan = self._plans.get(key)
        if plan is None or plan.scope is not scope or plan.target is not target:
            if len(self._plans) >= MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = make_plan(scope, target)
        return plan

    def _store_floats(self, topic: SparkplugTopic, columns: tuple[list[int], list[int], list[float]],
                      work: _Work) -> None:
        sids, times, values = columns
        if sids:
            samples, n = work.batch.samples, len(sids)
            samples.series_id.extend(sids)
            samples.ts_us.extend(times)
            samples.value.extend(values)
            samples.text.extend([None] * n)
            samples.quality.extend([_GOOD] * n)
            self._memo.series.setdefault((topic.node, topic.device), set()).update(sids)

    def _enrol(self, topic: SparkplugTopic, payload: Payload, may: bool) -> None:
        if not may or topic.message_type not in (MessageType.NBIRTH, MessageType.DBIRTH):
            return
        names = [m.name for m in payload.metrics if m.name is not None and is_measurement(m.name)]
        key = topic.device if topic.device is not None else ""
        if self.directory.enrol(topic.node.group, topic.node.edge_node, {key: names}) is not None:
            _log.info("Sparkplug edge node %s is in quarantine until an engineer approves it", topic.node)

    def _state_message(self, topic: StateTopic, msg: RawMessage, work: _Work) -> None:
        if topic.host_id != self.host_id or self.birth_timestamp_ms is None:
            return  # another host's, or ours before we announced
        try:
            status = parse_state_payload(msg.payload)
        except SparkplugDecodeError:
            return
        if not status.online:  # our own death (a late Will of an earlier connection): we are alive
            work.outgoing.append(state_message(self.host_id, True, self.birth_timestamp_ms))

    def _actions(self, actions: list[Action], binding: NodeBinding | None, work: _Work, msg: RawMessage,
                 payload: Payload | None = None) -> None:
        ts = payload.timestamp * 1000 if payload is not None and payload.timestamp is not None else msg.received_us
        errors: dict[Reason, list[str]] = defaultdict(list)
        for action in actions:
            self._apply(action, binding, work, ts, msg, errors)
        for reason, details in errors.items():
            tid = binding.tenant_id if binding is not None else None
            who = binding.username if binding is not None else msg.device
            self._dead(work, msg, tid, who, reason, "; ".join(details))

    def _apply(self, action: Action, binding: NodeBinding | None, work: _Work, ts: int,
               msg: RawMessage | None = None, errors: dict[Reason, list[str]] | None = None) -> None:
        if isinstance(action, Store):
            if binding is not None and msg is not None and errors is not None:
                self._store(action, binding, work, msg, errors)
        elif isinstance(action, Rebirth):
            self._memo.rebirth_at[action.node] = time.monotonic()
            self.stats.rebirths += 1
            _log.info("asking Sparkplug edge node %s for a rebirth: %s", action.node, action.reason)
            work.outgoing.append(rebirth_message(action.node, self._now_us() // 1000))
        elif isinstance(action, MarkOnline):
            if action.device is None:  # a new session: its devices must be born again
                self._memo.born[action.node] = {None}
                for key in [k for k in self._memo.series if k[0] == action.node]:
                    del self._memo.series[key]
            else:
                self._memo.born.setdefault(action.node, set()).add(action.device)
            self._status(binding, action.device, "online", ts, work, "birth")
        elif isinstance(action, MarkOffline):
            born = self._memo.born.get(action.node, set())
            gone = sorted(born, key=lambda d: d or "") if action.device is None else [action.device]
            for device in gone:
                self._status(binding, device, "offline", ts, work, action.reason)
                born.discard(device)
            self._stale(action.node, action.device, ts, work)
        elif isinstance(action, MarkStale):
            self._stale(action.node, action.device, ts, work)
        elif isinstance(action, Ignored):
            self.stats.ignored += 1
            kind = action.reason.split(":", 1)[0][:80]  # without the numbers, so the counters stay few
            if kind in self.stats.ignored_reasons or len(self.stats.ignored_reasons) < 100:
                self.stats.ignored_reasons[kind] += 1
            node = action.topic.node
            if self.state.status(node) is NodeStatus.STALE:
                last = self._memo.rebirth_at.get(node)
                if last is None or time.monotonic() - last >= self._rebirth_retry_s:
                    for again in self.state.request_rebirth(node, "still no NBIRTH"):
                        self._apply(again, binding, work, ts)

    def _target(self, binding: NodeBinding | None, device: str | None) -> MachineTarget | None:
        if binding is None:
            return None
        return binding.node_machine if device is None else binding.machines.get(device)

    def _store(self, action: Store, binding: NodeBinding, work: _Work, msg: RawMessage,
               errors: dict[Reason, list[str]]) -> None:
        target = self._target(binding, action.device)
        if target is None:
            names = [m.name for m in action.metrics if m.name not in binding.ignored]
            if names:
                errors[Reason.UNKNOWN_ASSET].append(f"no machine for {_what(action.device)} of {action.node} "
                                                    f"({_names(names)})")
            return
        known = target.metrics
        rows = [(m.name, m.name in known, known.get(m.name), m.value, m.timestamp, m.is_null, m.quality)
                for m in action.metrics]
        self._emit(rows, target, action.node, action.device, work, msg.received_us, errors)

    def _emit(self, rows: Iterable[Row], target: MachineTarget, node: EdgeNode, device: str | None, work: _Work,
              now: int, errors: dict[Reason, list[str]]) -> None:
        """The samples of one message's kept metrics (both paths): mapped, in time, of the right type."""
        samples = work.batch.samples
        series_ids, times, values, texts, qualities = (samples.series_id, samples.ts_us, samples.value,
                                                       samples.text, samples.quality)
        series = self._memo.series.setdefault((node, device), set())
        latest, earliest = now + self.limits.future_skew_us, now - self.limits.max_age_us
        unmapped: list[str] = []
        for name, mapped, t, raw, ts_ms, is_null, sparkplug_quality in rows:
            if not mapped:
                unmapped.append(name)
                continue
            if t is None:
                continue  # left out on purpose
            ts = ts_ms * 1000 if ts_ms is not None else now
            if ts > latest:
                errors[Reason.FUTURE_TIMESTAMP].append(f"{name}: ts is {(ts - now) / 1e6:.0f} s in the future")
                continue
            if ts < earliest:
                errors[Reason.TOO_OLD].append(f"{name}: ts is older than the retention")
                continue
            if is_null or raw is None:
                value, text, quality = None, None, _BAD
            elif (type(raw) is float and t.value_type is ValueType.NUMERIC
                  and isfinite(value := raw * t.mapping.scale + t.mapping.offset)):
                text = None  # what sample_value gives a finite float, without the call
                quality = _GOOD if sparkplug_quality is None else sample_quality(sparkplug_quality)
            else:
                converted = sample_value(t.value_type, raw, t.mapping)
                if isinstance(converted, str):
                    errors[Reason.WRONG_TYPE].append(f"{name}: {converted}")
                    continue
                value, text = converted
                quality = _GOOD if sparkplug_quality is None else sample_quality(sparkplug_quality)
            series_ids.append(t.series_id)
            times.append(ts)
            values.append(value)
            texts.append(text)
            qualities.append(quality)
            series.add(t.series_id)
        if unmapped:
            errors[Reason.UNKNOWN_MEASUREMENT].append(
                f"not measurements of {target.path} ({_what(device)}): {_names(unmapped)}")

    def _status(self, binding: NodeBinding | None, device: str | None, status: str, ts: int, work: _Work,
                reason: str) -> None:
        target = self._target(binding, device)
        if binding is None or target is None:
            return
        data = {"status": status, "source": "sparkplug", "edge_node": f"{binding.group}/{binding.edge_node}",
                "reason": reason}
        if device is not None:
            data["device"] = device
        work.batch.events.append(EventRecord(binding.tenant_id, target.asset_id, ts, "status", status, data))

    def _stale(self, node: EdgeNode, device: str | None, ts: int, work: _Work) -> None:
        keys = [k for k in self._memo.series if k[0] == node and (device is None or k[1] == device)]
        for key in keys:
            work.stale.update((series_id, ts) for series_id in self._memo.series.pop(key))

    def _finish(self, work: _Work) -> None:
        """Stale marks go in last, and never over a value the same batch gives that series and time."""
        if not work.stale:
            return
        samples = work.batch.samples
        valued = set(zip(samples.series_id, samples.ts_us, strict=True))  # all from _emit so far
        for series_id, ts in sorted(work.stale):
            if (series_id, ts) not in valued:
                samples.add(series_id, ts, None, None, Quality.BAD)
        work.stale.clear()

    def _dead(self, work: _Work, msg: RawMessage, tenant_id: int | None, device: str, reason: Reason,
              detail: str) -> None:
        text = detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "…"
        work.batch.dead_letters.append(DeadLetter(tenant_id, device, msg.topic[:512], reason, text,
                                                  msg.payload[:DEAD_PAYLOAD_BYTES], msg.received_us))


def _what(device: str | None) -> str:
    return f"Sparkplug device {device!r}" if device is not None else "the edge node's own metrics"


def _names(names: list[str], most: int = 10) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return shown + (f" (+{len(names) - most} more)" if len(names) > most else "")


class SparkplugRouter:
    """A ``MessageSink`` that hands ``spBv1.0/...`` messages to the host and the rest to ingest,
    each in arrival order, and returns when both have committed (the embedded broker's sink)."""

    def __init__(self, ingest: MessageSink, host: MessageSink) -> None:
        self._ingest = ingest
        self._host = host

    async def submit_messages(self, messages: list[RawMessage]) -> None:
        prefix = NAMESPACE + "/"
        sparkplug = [m for m in messages if m.topic.startswith(prefix)]
        rest = [m for m in messages if not m.topic.startswith(prefix)] if sparkplug else messages
        if not sparkplug:
            await self._ingest.submit_messages(rest)
        elif not rest:
            await self._host.submit_messages(sparkplug)
        else:
            await asyncio.gather(self._ingest.submit_messages(rest), self._host.submit_messages(sparkplug))

