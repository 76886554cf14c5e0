"""Rules and alarms on the ingest stream: the one place that runs the rule engines.

The service follows the historian in ingest-sequence order (``samples_since``/``events_since``).
Ingest tells it after each commit (``notify(seq, live)``) so it wakes at once; in server mode it
also polls, since other processes commit too. For each stretch of commits it runs every tenant's
``RuleEngine`` and then stores, in ONE transaction, the alarms and journal entries that came out,
the webhook deliveries they cause, and the engines' state with the last sequence processed. After a
crash or restart it resumes from that checkpoint and replays what it had not finished: no alarm
missed (the data is in the store), none raised twice (the work that was lost was never stored).

What is live: commits made after this process started that ingest did not mark as back-filled.
Replay after a restart and back-filled history are evaluated and journalled with ``live=False`` and
notify nobody; the engine also treats transitions dated well before its clock as history. In
embedded mode the service reads only commits ingest has reported, so it always knows which were
back-filled; in server mode (``follow_store``) commits of other processes count as live, and the
engine's clock guard keeps old data from notifying.

All engine work and every store write runs on one worker thread, in order; operator actions
(acknowledge, shelve, ...) go through the engine on that thread too.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, TypeVar

import msgspec

from shopfloor.domain.alarms.engine import EngineState, Output, RuleEngine
from shopfloor.domain.alarms.model import Alarm, JournalEntry
from shopfloor.domain.errors import NotFound
from shopfloor.domain.query import SampleChanges, StoredEvent
from shopfloor.domain.records import EventRecord, IngestBatch, SampleBatch
from shopfloor.ports.alarms import AlarmStore, Checkpoint, Subscription
from shopfloor.ports.clock import Clock
from shopfloor.ports.registry import RegistryRepository
from shopfloor.services.alarm_catalog import Catalog
from shopfloor.services.alarm_monitor import SystemMonitor
from shopfloor.services.alarm_notify import AlarmHub, Notice, deliveries_for, notifies

log = logging.getLogger(__name__)
T = TypeVar("T")
_states = msgspec.msgpack.Decoder(dict[int, EngineState])
_ONE_COMMIT_MAX = 50_000_000


class ChangeSource(Protocol):
    """The historian reads the service needs."""

    def last_seq(self) -> int: ...
    def samples_since(self, seq: int, limit: int, upto: int | None = None) -> SampleChanges: ...
    def events_since(self, seq: int, limit: int, upto: int | None = None) -> list[StoredEvent]: ...


def _split(samples: SampleChanges, tenant_of: dict[int, int]) -> Iterator[tuple[int, int, SampleBatch]]:
    """(seq, tenant, samples) per commit and tenant, as column slices (one tenant: no copying by row)."""
    cols = samples
    n, i = len(cols), 0
    while i < n:
        seq = cols.seq[i]
        j = bisect.bisect_right(cols.seq, seq, i)
        tids = list(map(tenant_of.get, cols.series_id[i:j]))
        kinds = set(tids)
        if len(kinds) == 1:
            tid = tids[0]
            if tid is not None:
                yield seq, tid, SampleBatch(cols.series_id[i:j], cols.ts_us[i:j], cols.value[i:j], cols.text[i:j],
                                            cols.quality[i:j])
        else:
            for tid in kinds:
                if tid is None:
                    continue
                b = SampleBatch()
                for k, t in enumerate(tids, start=i):
                    if t == tid:
                        b.add(cols.series_id[k], cols.ts_us[k], cols.value[k], cols.text[k], cols.quality[k])
                yield seq, tid, b
        i = j


class AlarmService:
    def __init__(self, store: AlarmStore, changes: ChangeSource, registry: RegistryRepository, clock: Clock,
                 hub: AlarmHub | None = None, *, follow_store: bool = False, tick_s: float = 1.0,
                 read_rows: int = 100_000, link_down: Callable[[], bool] | None = None,
                 monitor: SystemMonitor | None = None, on_deliveries: Callable[[], None] | None = None) -> None:
        self.store = store
        self._changes = changes
        self._clock = clock
        self.hub = hub or AlarmHub()
        self.follow_store = follow_store
        self.tick_s = tick_s
        self.read_rows = read_rows
        self._link_down = link_down
        self.monitor = monitor
        self.on_deliveries = on_deliveries
        self.catalog = Catalog(registry, store)
        self.engines: dict[int, RuleEngine] = {}
        self.seq = 0  # the last ingest sequence processed (and checkpointed)
        self.start_seq = 0  # commits up to here were made before this process started: replay
        self._reported = 0  # the last sequence ingest has reported (embedded mode reads up to here)
        self._historic: set[int] = set()  # reported back-filled commits not yet processed
        self._subs: dict[int, list[Subscription]] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopfloor-rules")
        self._strangers: set[int] = set()  # series ids the registry does not know
        self._strangers_t: set[int] = set()  # tenant ids likewise
        self.checkpoint_every_s = 2.0
        self._saved_at = 0.0
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.opened = False

    # -- start, follow, stop --------------------------------------------------------------------
    def open(self) -> None:
        """Load rules, assets and the checkpoint; build the engines (call before ingest commits)."""
        self.start_seq = self._reported = self._changes.last_seq()
        cp = self.store.checkpoint()
        states = _states.decode(cp.state) if cp is not None and cp.state else {}
        if cp is None:  # the first start: history before it is not re-evaluated
            self.seq = self.start_seq
        else:
            self.seq = cp.seq
        self.catalog.load()
        self._build(states)
        self._load_subscriptions()
        if self.monitor is not None:
            self.monitor.load(self.store)
        if cp is None:
            self.store.save([], [], checkpoint=self._checkpoint())
        self.opened = True
        log.info("rules: %d tenant engine(s), %d instance(s); resuming after ingest sequence %d (last %d)",
                 len(self.engines), sum(len(e) for e in self.engines.values()), self.seq, self.start_seq)

    def _build(self, states: dict[int, EngineState]) -> None:
        engines: dict[int, RuleEngine] = {}
        for tid, cat in self.catalog.tenants.items():
            eng = self.engines.get(tid)
            if eng is not None:
                eng.configure(cat.rules, cat.assets, cat.series)
            else:
                eng = RuleEngine(tid, cat.rules, cat.assets, cat.series, state=states.get(tid))
            engines[tid] = eng
        self.engines = engines

    def _load_subscriptions(self) -> None:
        subs: dict[int, list[Subscription]] = defaultdict(list)
        for s in self.store.subscriptions():
            subs[s.tenant_id].append(s)
        self._subs = dict(subs)

    def notify(self, seq: int, live: bool) -> None:
        """Ingest committed ``seq`` (call on the event loop)."""
        if not live:
            self._historic.add(seq)
        self._reported = max(self._reported, seq)
        if self._wake is not None:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Follow ingest and the clock until ``stop``; catch up on what was committed first."""
        self._loop = asyncio.get_running_loop()
        self.hub.bind(self._loop)
        self._wake = asyncio.Event()
        self._wake.set()
        next_tick = 0.0
        while not stop.is_set():
            self._wake.clear()
            try:
                while await self.call(self.catch_up) > 0:
                    pass
                if self._loop.time() >= next_tick:
                    next_tick = self._loop.time() + self.tick_s
                    await self.call(self.tick)
            except Exception:
                log.exception("rule evaluation failed; retrying")
                await asyncio.sleep(min(self.tick_s, 1.0))
            wait = max(0.0, next_tick - self._loop.time())
            if self.follow_store:
                wait = min(wait, 0.2)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
        with contextlib.suppress(Exception):
            await self.call(self.catch_up)
            await self.call(self.save_checkpoint)

    def save_checkpoint(self) -> None:
        """Store the engines' state at the last sequence evaluated (a clean stop)."""
        self.store.save([], [], checkpoint=self._checkpoint())
        self._saved_at = time.monotonic()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` on the rules thread (after everything queued before it)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, lambda: fn(*args))

    def close(self) -> None:
        self.hub.close()
        self._worker.shutdown(wait=True)

    # -- evaluation (rules thread) ----------------------------------------------------------------
    def catch_up(self) -> int:
        """Evaluate one stretch of commits after ``seq``; return how many rows it read (0: none)."""
        upto = self._changes.last_seq() if self.follow_store else self._reported
        if upto <= self.seq:
            return 0
        samples, events, bound = self._read(self.seq, upto)
        if bound <= self.seq:
            return 0
        series_tenant = self.catalog.series_tenant
        new_series = set(samples.series_id).difference(series_tenant, self._strangers)
        new_tenants = {e.tenant_id for e in events if e.tenant_id not in self.engines} - self._strangers_t
        if new_series or new_tenants:
            self.catalog.load()  # a new machine, measurement or tenant
            self._build({})
            series_tenant = self.catalog.series_tenant
            # still unknown (deleted meanwhile): do not read the registry again for them
            self._strangers |= new_series.difference(series_tenant)
            self._strangers_t |= {t for t in new_tenants if t not in self.engines}
        by_seq: dict[int, dict[int, IngestBatch]] = defaultdict(dict)
        for e in events:
            by_seq[e.seq].setdefault(e.tenant_id, IngestBatch()).events.append(
                EventRecord(e.tenant_id, e.asset_id, e.ts_us, e.kind, e.type, e.data))
        for seq, tid, part in _split(samples, series_tenant):
            by_seq[seq].setdefault(tid, IngestBatch()).samples = part
        outs: list[Output] = []
        for seq in sorted(by_seq):
            live = seq > self.start_seq and seq not in self._historic
            for tid, batch in by_seq[seq].items():
                eng = self.engines.get(tid)
                if eng is not None:
                    outs.append(eng.on_ingest(batch, live=live))
        self.persist(outs, seq=bound)
        self._historic = {s for s in self._historic if s > bound}
        return len(samples) + len(events)

    def _read(self, after: int, upto: int) -> tuple[SampleChanges, list[StoredEvent], int]:
        """Whole commits after ``after`` (up to ``upto``), about ``read_rows`` rows at most."""
        n = self.read_rows
        samples = self._changes.samples_since(after, n, upto)
        events = self._changes.events_since(after, n, upto)
        bound = upto
        if len(samples) == n:
            bound = min(bound, samples.seq[-1] - 1)
        if len(events) == n:
            bound = min(bound, events[-1].seq - 1)
        if bound <= after:  # one commit larger than the page: read it whole
            bound = min([*samples.seq[:1], *(e.seq for e in events[:1])])
            samples = self._changes.samples_since(after, _ONE_COMMIT_MAX, bound)
            events = self._changes.events_since(after, _ONE_COMMIT_MAX, bound)
        return samples.cut(bound), [e for e in events if e.seq <= bound], bound

    def tick(self) -> None:
        """The clock: delays, silences, durations, shelf ends; the platform's own health."""
        now = self._clock.now_us()
        down = self._link_down() if self._link_down is not None else None
        outs = [eng.on_tick(now, link_down=down) for eng in self.engines.values()]
        if self.monitor is not None:
            extra = self.monitor.check(now)
            if extra.entries:
                outs.append(extra)
        if any(o.entries for o in outs):
            self.persist(outs)

    def persist(self, outs: list[Output], seq: int | None = None) -> None:
        """Store what ``outs`` changed with the checkpoint (at ``seq`` when given: the commits
        evaluated), then announce it. Commits that changed nothing are checkpointed at most every
        ``checkpoint_every_s``: after a crash they are evaluated again, to the same nothing."""
        alarms: dict[tuple[int, int, int], Alarm] = {}
        entries: list[JournalEntry] = []
        for o in outs:
            entries.extend(o.entries)
            for a in o.alarms.values():
                alarms[(a.tenant_id, a.rule_id, a.asset_id)] = a
        notices = [Notice(event=e.action.value, entry=e, alarm=alarms[(e.tenant_id, e.rule_id, e.asset_id)])
                   for e in entries if notifies(e) and (e.tenant_id, e.rule_id, e.asset_id) in alarms]
        subs = [s for tid in {n.alarm.tenant_id for n in notices} for s in self._subs.get(tid, [])]
        deliveries = deliveries_for(notices, subs, self._clock.now_us())
        now = time.monotonic()
        if not alarms and not entries and seq is not None and now - self._saved_at < self.checkpoint_every_s:
            # nothing came out: the checkpoint may lag (replaying those commits gives nothing either)
            self.seq = seq
            return
        self.store.save(list(alarms.values()), entries, deliveries, self._checkpoint(seq))
        self._saved_at = now
        if seq is not None:
            self.seq = seq
        self.hub.publish(notices)
        if deliveries and self.on_deliveries is not None:
            self.on_deliveries()

    def _checkpoint(self, seq: int | None = None) -> Checkpoint:
        states = {tid: eng.snapshot() for tid, eng in self.engines.items()}
        return Checkpoint(seq=self.seq if seq is None else seq, state=msgspec.msgpack.encode(states), clock_us=self._clock.now_us())

    # -- configuration changes and operator actions (rules thread) -----------------------------------
    def reload(self) -> None:
        """Rules, assets or webhooks changed: rebind the engines (they keep the state they can)."""
        self.catalog.load()
        self._build({})
        self._load_subscriptions()
        self._strangers.clear()
        self._strangers_t.clear()
        self.persist([])

    def apply(self, tenant_id: int, action: Callable[[RuleEngine], Output]) -> None:
        """Run an operator action on a tenant's engine and store what it did."""
        eng = self.engines.get(tenant_id)
        if eng is None:
            raise NotFound("this tenant has no rules")
        self.persist([action(eng)])
