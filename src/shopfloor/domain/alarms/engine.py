"""The incremental rule engine of one tenant: samples, state events and clock ticks in; alarm
transitions and journal entries out.

Inputs are taken strictly in the order given (``on_samples``, ``on_events``, ``on_tick``,
``on_ingest`` = events then samples of one ingest batch), point by point, and the engine has no
other input (no wall clock, no randomness): the same stream gives the same alarms and journal however
it is cut into batches. That is what makes replay after a restart exact: persist ``snapshot()``
with the last ingest sequence, and after a crash ``restore`` it and feed the batches after that
sequence with ``live=False`` up to where the notifications stopped.

Ticks (``on_tick(now_us)``) end on/off delays, no-data silences, state durations and timed shelves.
Process deadlines fire only once ``now_us - lateness_us`` has passed them, so data that is a little
late (transport, device clocks) still counts. A transition dated more than ``backfill_us`` before
the newest tick is journalled ``live=False``: back-filled history never notifies anyone as live.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import msgspec

from shopfloor.domain.alarms import lifecycle as lc
from shopfloor.domain.alarms.instance import EXPR, LIMITS, NO_DATA, RATE, STATE, Instance, Watch, spec_of
from shopfloor.domain.alarms.model import Alarm, AlarmState, JournalEntry
from shopfloor.domain.alarms.rules import Rule, StateDuration, measurements, message_template, render_message
from shopfloor.domain.alarms.templates import AssetRef, Expansion, expand
from shopfloor.domain.errors import NotFound
from shopfloor.domain.records import EventRecord, IngestBatch, Quality, SampleBatch

S = 1_000_000
Key = tuple[int, int]  # (rule id, asset id)


class AssetState(msgspec.Struct, array_like=True):
    asset_id: int
    state: str
    since_us: int


class EngineState(msgspec.Struct, kw_only=True):
    """Everything the engine knows, to persist beside the last ingest sequence it processed."""

    tenant_id: int
    instances: list[Instance] = []
    machine_states: list[AssetState] = []
    link_down: bool = False
    now_us: int | None = None
    late_samples: int = 0


@dataclass(slots=True)
class Output:
    """What one call changed: journal entries in order, and the latest version of each changed alarm."""

    entries: list[JournalEntry] = field(default_factory=list)
    alarms: dict[Key, Alarm] = field(default_factory=dict)


class RuleEngine:
    def __init__(self, tenant_id: int, rules: Sequence[Rule], assets: Sequence[AssetRef],
                 series: Mapping[int, tuple[int, str]], *, lateness_us: int = 2 * S,
                 backfill_us: int = 300 * S, state: EngineState | None = None) -> None:
        self.tenant_id = tenant_id
        self.lateness_us = lateness_us
        self.backfill_us = backfill_us
        self.link_down = False
        self.now_us: int | None = None
        self.late_samples = 0
        self._watches: dict[Key, Watch] = {}
        self._by_asset: dict[int, list[Watch]] = {}
        self._route: dict[int, list[Watch]] = {}
        self._heap: list[tuple[int, int, int]] = []
        self._unborn: list[Watch] = []
        self._machine: dict[int, tuple[str, int]] = {}
        self._out = Output()
        self._live = True
        self.expansion = Expansion()
        old: dict[Key, Instance] = {}
        if state is not None:
            if state.tenant_id != tenant_id:
                raise ValueError(f"engine state of tenant {state.tenant_id} given to tenant {tenant_id}")
            old = {(i.rule_id, i.asset_id): i for i in state.instances}
            self._machine = {m.asset_id: (m.state, m.since_us) for m in state.machine_states}
            self.link_down, self.now_us, self.late_samples = state.link_down, state.now_us, state.late_samples
        self._configure(rules, assets, series, old)

    # ---- configuration and persistence -------------------------------------------------------------

    def configure(self, rules: Sequence[Rule], assets: Sequence[AssetRef],
                  series: Mapping[int, tuple[int, str]]) -> None:
        """Rules, assets or series changed (a machine added, a rule edited): rebind, keeping the state of
        every instance whose rule is unchanged (an edited rule keeps its alarm, but evaluates afresh)."""
        self._configure(rules, assets, series, {k: w.inst for k, w in self._watches.items()})

    def _configure(self, rules: Sequence[Rule], assets: Sequence[AssetRef], series: Mapping[int, tuple[int, str]],
                   old: dict[Key, Instance]) -> None:
        self.expansion = expand(rules, assets)
        self._watches, self._by_asset, self._route, self._heap, self._unborn = {}, {}, {}, [], []
        reads: dict[tuple[int, str], list[Watch]] = {}
        any_series: dict[int, list[Watch]] = {}
        for rule, asset in self.expansion.bound:
            key = (rule.id, asset.id)
            spec = spec_of(rule)
            inst = old.get(key)
            fresh = inst is None or inst.spec != spec
            if inst is None:
                alarm = lc.new_alarm(self.tenant_id, rule.id, asset.id, priority=rule.priority)
                inst = Instance(rule_id=rule.id, asset_id=asset.id, alarm=alarm, spec=spec)
            elif fresh:  # an edited rule: the alarm stays as it is, evaluation starts again from it
                active = inst.alarm.state in (AlarmState.ACTIVE_UNACK, AlarmState.ACTIVE_ACK)
                inst = Instance(rule_id=rule.id, asset_id=asset.id, alarm=inst.alarm, spec=spec, clock=inst.clock,
                                born=inst.clock, cond=active)
            w = Watch.of(inst, rule, asset)
            self._watches[key] = w
            if fresh:
                self._start(w)
            if w.kind == NO_DATA and inst.born is None:
                self._unborn.append(w)
            self._by_asset.setdefault(asset.id, []).append(w)
            names = measurements(rule)
            if w.kind == NO_DATA and not names:
                any_series.setdefault(asset.id, []).append(w)
            for m in names:
                reads.setdefault((asset.id, m), []).append(w)
            self._queue(w)
        for sid, (asset_id, m) in series.items():
            ws = reads.get((asset_id, m), []) + any_series.get(asset_id, [])
            if ws:
                self._route[sid] = ws
            for w in ws:
                if w.kind == EXPR:
                    w.sid_names[sid] = m

    def _start(self, w: Watch) -> None:
        """A new (or edited) instance: the machine may already be in a state that suppresses it or that
        it times."""
        held = self._machine.get(w.asset.id)
        if held is not None:
            state, since = held
            if state in w.rule.suppress_when:
                self._step(w, lc.suppress(w.inst.alarm, since, comment=f"machine in {state}",
                                          live=self._live_at(since)))
            if isinstance(w.rule, StateDuration) and state == w.rule.state:
                w.inst.entered = since
                w.inst.born = since

    def snapshot(self) -> EngineState:
        """The state to persist (a copy: later evaluation does not change it)."""
        state = EngineState(
            tenant_id=self.tenant_id, instances=[w.inst for w in self._watches.values()],
            machine_states=[AssetState(a, s, t) for a, (s, t) in sorted(self._machine.items())],
            link_down=self.link_down, now_us=self.now_us, late_samples=self.late_samples)
        return msgspec.json.decode(msgspec.json.encode(state), type=EngineState)

    # ---- reading -----------------------------------------------------------------------------------

    def alarm(self, rule_id: int, asset_id: int) -> Alarm:
        w = self._watches.get((rule_id, asset_id))
        if w is None:
            raise NotFound(f"no rule {rule_id} runs on asset {asset_id}")
        return w.inst.alarm

    def alarms(self) -> list[Alarm]:
        return [w.inst.alarm for w in self._watches.values()]

    def __len__(self) -> int:
        return len(self._watches)

    # ---- inputs ------------------------------------------------------------------------------------

    def on_ingest(self, batch: IngestBatch, *, live: bool = True) -> Output:
        """One committed ingest batch: its events first, then its samples."""
        self._live = live
        self._events(batch.events)
        self._samples(batch.samples)
        return self._flush()

    def on_samples(self, batch: SampleBatch, *, live: bool = True) -> Output:
        self._live = live
        self._samples(batch)
        return self._flush()

    def on_events(self, events: Iterable[EventRecord], *, live: bool = True) -> Output:
        self._live = live
        self._events(events)
        return self._flush()

    def on_tick(self, now_us: int, *, link_down: bool | None = None, live: bool = True) -> Output:
        """The clock: end delays, silences, state durations and shelves that are due.

        ``link_down`` reports the broker or link state: while it is down, silences are raised as
        communications faults, not process alarms.
        """
        self._live = live
        if link_down is not None:
            self.link_down = link_down
        if self.now_us is None or now_us > self.now_us:
            self.now_us = now_us
        due = now_us - self.lateness_us
        for u in self._unborn:  # silence counts from the first tick an instance sees
            if u.inst.born is None:
                u.inst.born = now_us
                self._queue(u)
        self._unborn = []
        heap = self._heap
        popped: list[Watch] = []
        while heap and heap[0][0] <= now_us:
            at, rule_id, asset_id = heapq.heappop(heap)
            found = self._watches.get((rule_id, asset_id))
            if found is None or found.queued != at:
                continue  # stale: the watch has moved on and is queued elsewhere, or is gone
            w = found
            true_at = self._due_at(w)
            if true_at is not None and true_at > at:  # queued early (lazily) and moved on since: wait in line
                w.queued = true_at
                heapq.heappush(heap, (true_at, rule_id, asset_id))
                continue
            w.queued = None
            popped.append(w)
            shelf = w.inst.alarm.shelved_until_us
            if shelf is not None and shelf <= now_us:
                self._step(w, lc.expire_shelf(w.inst.alarm, now_us, live=self._live_at(shelf)))
            self._advance(w, due)
        for w in popped:  # deadlines inside the lateness allowance wait for a later tick
            self._queue(w)
        return self._flush()

    # ---- operator actions (the service journals them with the ingest-driven ones) ----------------------

    def acknowledge(self, rule_id: int, asset_id: int, user: str, ts_us: int, comment: str = "") -> Output:
        w = self._watch(rule_id, asset_id)
        self._step(w, lc.acknowledge(w.inst.alarm, user, ts_us, comment=comment))
        return self._flush()

    def shelve(self, rule_id: int, asset_id: int, until_us: int, user: str, ts_us: int, comment: str = "") -> Output:
        w = self._watch(rule_id, asset_id)
        self._step(w, lc.shelve(w.inst.alarm, until_us, user, ts_us, comment=comment))
        self._queue(w)
        return self._flush()

    def unshelve(self, rule_id: int, asset_id: int, user: str, ts_us: int, comment: str = "") -> Output:
        w = self._watch(rule_id, asset_id)
        self._step(w, lc.unshelve(w.inst.alarm, user, ts_us, comment=comment))
        return self._flush()

    def remove_from_service(self, rule_id: int, asset_id: int, user: str, ts_us: int, comment: str = "") -> Output:
        w = self._watch(rule_id, asset_id)
        self._step(w, lc.remove_from_service(w.inst.alarm, user, ts_us, comment=comment))
        return self._flush()

    def return_to_service(self, rule_id: int, asset_id: int, user: str, ts_us: int, comment: str = "") -> Output:
        w = self._watch(rule_id, asset_id)
        self._step(w, lc.return_to_service(w.inst.alarm, user, ts_us, comment=comment))
        return self._flush()

    def _watch(self, rule_id: int, asset_id: int) -> Watch:
        w = self._watches.get((rule_id, asset_id))
        if w is None:
            raise NotFound(f"no rule {rule_id} runs on asset {asset_id}")
        return w

    # ---- evaluation --------------------------------------------------------------------------------

    def _samples(self, batch: SampleBatch) -> None:
        route = self._route
        bad = int(Quality.BAD)
        for sid, ts, v, q in zip(batch.series_id, batch.ts_us, batch.value, batch.quality, strict=True):
            ws = route.get(sid)
            if ws is None or v is None or q == bad or v != v:
                continue
            for w in ws:
                inst = w.inst
                last = inst.last_sample
                if w.kind == NO_DATA and not self._live and self.now_us is not None and ts < self.now_us:
                    # history (back-fill, an import) arriving now: the device is talking, so its
                    # silence restarts at the engine's clock, not at the old sample's time
                    self._sample(w, max(self.now_us, last or self.now_us), v, sid)
                    continue
                if last is not None and ts < last:
                    self.late_samples += 1
                    continue
                if (w.kind == LIMITS and not inst.cond and inst.pending_since is None
                        and w.lo <= v <= w.hi and w.queued is None):  # the quiet path: in limits, nothing pending
                    inst.last_sample = ts
                    if inst.clock is None or ts > inst.clock:
                        inst.clock = ts
                    inst.last_value = v
                    continue
                self._sample(w, ts, v, sid)

    def _sample(self, w: Watch, ts: int, v: float, sid: int) -> None:
        inst = w.inst
        t = ts if inst.clock is None or ts > inst.clock else inst.clock
        if inst.born is None:
            inst.born = t
        self._advance(w, t)
        kind = w.kind
        if kind == LIMITS:
            inst.last_value = v
            self._drive(w, w.raw_limits(v), t)
        elif kind == RATE:
            r = w.rate(t, v)
            if r is not None:
                inst.last_value = r
                self._drive(w, w.raw_limits(r), t)
        elif kind == EXPR:
            name = w.sid_names.get(sid)
            if name is not None:
                inst.values[name] = v
            assert w.expr is not None
            raw = w.expr.evaluate(inst.values)
            if raw is not None:
                self._drive(w, raw, t)
        elif kind == NO_DATA and inst.cond:
            self._flip(w, False, t, None)
        inst.last_sample = ts
        inst.clock = t
        self._queue(w)

    def _events(self, events: Iterable[EventRecord]) -> None:
        for ev in events:
            if ev.tenant_id != self.tenant_id or ev.kind != "state":
                continue
            prev = self._machine.get(ev.asset_id)
            if prev is not None and ev.ts_us < prev[1]:
                continue  # older than the state we hold: history, not news
            state = ev.type
            self._machine[ev.asset_id] = (state, ev.ts_us)
            for w in self._by_asset.get(ev.asset_id, ()):
                self._machine_state(w, state, ev.ts_us)

    def _machine_state(self, w: Watch, state: str, ts: int) -> None:
        inst = w.inst
        t = ts if inst.clock is None or ts > inst.clock else inst.clock
        if inst.born is None:
            inst.born = t
        self._advance(w, t)
        live = self._live_at(t)
        if w.rule.suppress_when:
            if state in w.rule.suppress_when:
                self._step(w, lc.suppress(inst.alarm, t, comment=f"machine in {state}", live=live))
            else:
                self._step(w, lc.unsuppress(inst.alarm, t, comment=f"machine in {state}", live=live))
        if isinstance(w.rule, StateDuration):
            if state == w.rule.state:
                if inst.entered is None:
                    inst.entered = t
                    if w.span_us == 0:
                        self._flip(w, True, t, 0.0)
            else:
                inst.entered = None
                if inst.cond:
                    self._flip(w, False, t, None)
        inst.clock = t
        self._queue(w)

    def _advance(self, w: Watch, t: int) -> None:
        """Let the condition change by itself up to time ``t`` (an ended delay, silence or duration)."""
        inst = w.inst
        if inst.born is None:
            inst.born = t
        at = w.deadline()
        if at is None or at > t:
            return
        if w.kind == NO_DATA:
            self._flip(w, True, at, None)
        elif w.kind == STATE:
            self._flip(w, True, at, (at - (inst.entered or at)) / S)
        else:
            self._flip(w, not inst.cond, at, inst.last_value)
        if inst.clock is None or at > inst.clock:
            inst.clock = at

    def _drive(self, w: Watch, raw: bool, t: int) -> None:
        inst = w.inst
        if raw == inst.cond:
            inst.pending_since = None
            return
        if inst.pending_since is None:
            inst.pending_since = t
        if (w.on_us if raw else w.off_us) == 0:
            self._flip(w, raw, t, inst.last_value)

    def _flip(self, w: Watch, active: bool, t: int, value: float | None) -> None:
        inst = w.inst
        if t < inst.alarm.updated_us:
            t = inst.alarm.updated_us  # the journal of an alarm never runs backwards
        inst.cond = active
        inst.pending_since = None
        live = self._live_at(t)
        if not active:
            self._step(w, lc.condition(inst.alarm, False, t, value=value, live=live))
            return
        rule = w.rule
        fault = w.kind == NO_DATA and self.link_down
        fields: dict[str, object] = {"rule": rule.name, "asset": w.asset.path, "value": value}
        names = measurements(rule)
        fields["measurement"] = ", ".join(names) if names else "any measurement"
        if w.kind in (LIMITS, RATE):
            fields["limit"] = w.limit_crossed(value)
        elif w.kind == NO_DATA:
            fields["duration_s"] = w.span_us / S
        elif w.kind == STATE:
            fields["state"] = rule.state if isinstance(rule, StateDuration) else None
            fields["duration_s"] = w.span_us / S
        message = render_message(message_template(rule), fields)
        if fault:
            message = "communications fault (broker or link down): " + message
        step = lc.condition(inst.alarm, True, t, value=value, message=message, priority=rule.priority, live=live)
        if step.entries and step.alarm.comms_fault != fault:
            step = lc.Step(msgspec.structs.replace(step.alarm, comms_fault=fault), step.entries)
        self._step(w, step)

    def _step(self, w: Watch, step: lc.Step) -> None:
        if not step.entries:
            return
        w.inst.alarm = step.alarm
        self._out.entries.extend(step.entries)
        self._out.alarms[(w.inst.rule_id, w.inst.asset_id)] = step.alarm

    def _live_at(self, t: int) -> bool:
        return self._live and (self.now_us is None or t >= self.now_us - self.backfill_us)

    @staticmethod
    def _due_at(w: Watch) -> int | None:
        """When the watch next needs the clock: its deadline or its shelf's end, whichever is first."""
        at = w.deadline()
        shelf = w.inst.alarm.shelved_until_us
        if shelf is not None and (at is None or shelf < at):
            at = shelf
        return at

    def _queue(self, w: Watch) -> None:
        """Keep the watch in the heap at its earliest deadline (lazily: an entry that has become early is
        moved back when it comes up, a stale one is skipped), so ticks handle watches in deadline order
        whatever the batches were."""
        at = self._due_at(w)
        if at is None or (w.queued is not None and w.queued <= at):
            return
        w.queued = at
        heapq.heappush(self._heap, (at, w.inst.rule_id, w.inst.asset_id))

    def _flush(self) -> Output:
        out, self._out = self._out, Output()
        return out

