"""The evaluation state of one rule on one asset, and how each kind of rule moves it.

``Instance`` is a msgspec struct: the engine's whole state is a list of them (plus a little), so
the service can persist it with the last ingest sequence it processed and carry on after a
restart. ``Watch`` is the runtime half (the rule, limits in the units the hot path wants); it is
rebuilt from the rules, never stored.

Time: every input carries a time, and an instance only moves forward: its ``clock`` is the newest
time it has evaluated at. A sample older than the newest sample it has seen is dropped (counted as
late); an input older than the clock (a tick got there first) is evaluated at the clock.
Delays and no-data limits end at exact times (``deadline``), so an alarm is dated the same
whether the deadline was noticed by a clock tick or by the next sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import msgspec

from shopfloor.domain.alarms.expression import Expression
from shopfloor.domain.alarms.model import Alarm
from shopfloor.domain.alarms.rules import (
    ExpressionRule,
    Learned,
    NoData,
    RateOfChange,
    Rule,
    StateDuration,
    Threshold,
    compiled,
)
from shopfloor.domain.alarms.templates import AssetRef

S = 1_000_000

# kinds, as small ints for the hot path
LIMITS, RATE, NO_DATA, STATE, EXPR = range(5)


class Instance(msgspec.Struct, kw_only=True):
    rule_id: int
    asset_id: int
    alarm: Alarm
    cond: bool = False  # the debounced condition the alarm follows
    pending_since: int | None = None  # the raw condition has differed from `cond` since then
    clock: int | None = None  # newest time evaluated at
    last_sample: int | None = None  # newest sample time seen
    last_value: float | None = None  # value (threshold, learned), rate (rate) behind the raw condition
    values: dict[str, float] = {}  # expression: the latest value of each measurement it reads
    window: list[tuple[int, float]] = []  # rate: the points of the last window_s seconds
    born: int | None = None  # no_data: when the instance first saw the clock (silence counts from here)
    entered: int | None = None  # state_duration: when the machine entered the state; None: not in it
    spec: str = ""  # the rule as evaluated (JSON): a changed rule starts its evaluation afresh


def spec_of(rule: Rule) -> str:
    return msgspec.json.encode(rule).decode()


@dataclass(slots=True, eq=False)
class Watch:
    """A rule bound to an asset, with what evaluation needs at hand."""

    inst: Instance
    rule: Rule
    asset: AssetRef
    kind: int
    hi: float = math.inf  # raw condition: value > hi or value < lo
    lo: float = -math.inf
    hi_clear: float = math.inf  # while active: stays active while value > hi_clear or value < lo_clear
    lo_clear: float = -math.inf
    on_us: int = 0
    off_us: int = 0
    window_us: int = 0
    span_us: int = 0  # no_data: silent_s; state_duration: longer_than_s
    expr: Expression | None = None
    queued: int | None = None  # the deadline this watch is queued at in the engine's heap
    sid_names: dict[int, str] = field(default_factory=dict)  # expression: series id -> measurement name

    @staticmethod
    def of(inst: Instance, rule: Rule, asset: AssetRef) -> Watch:
        w = Watch(inst, rule, asset, LIMITS)
        if isinstance(rule, Threshold | Learned):
            hi, lo = (rule.high, rule.low) if isinstance(rule, Threshold) else (rule.above, rule.below)
            if hi is not None:
                w.hi, w.hi_clear = hi, hi - rule.deadband
            if lo is not None:
                w.lo, w.lo_clear = lo, lo + rule.deadband
        elif isinstance(rule, RateOfChange):
            w.kind = RATE
            w.window_us = round(rule.window_s * S)
            if rule.max_rise_per_s is not None:
                w.hi = w.hi_clear = rule.max_rise_per_s
            if rule.max_fall_per_s is not None:
                w.lo = w.lo_clear = -rule.max_fall_per_s
        elif isinstance(rule, NoData):
            w.kind = NO_DATA
            w.span_us = round(rule.silent_s * S)
        elif isinstance(rule, StateDuration):
            w.kind = STATE
            w.span_us = round(rule.longer_than_s * S)
        elif isinstance(rule, ExpressionRule):
            w.kind = EXPR
            w.expr = compiled(rule)
        if isinstance(rule, Threshold | Learned | RateOfChange | ExpressionRule):
            w.on_us = round(rule.on_delay_s * S)
            w.off_us = round(rule.off_delay_s * S)
        return w

    def deadline(self) -> int | None:
        """When the condition will change by itself if nothing else arrives (None: it will not)."""
        inst = self.inst
        kind = self.kind
        if kind == NO_DATA:
            if inst.cond:
                return None
            base = inst.last_sample if inst.last_sample is not None else inst.born
            return None if base is None else base + self.span_us
        if kind == STATE:
            return None if inst.cond or inst.entered is None else inst.entered + self.span_us
        if inst.pending_since is None:
            return None
        return inst.pending_since + (self.off_us if inst.cond else self.on_us)

    def raw_limits(self, v: float) -> bool:
        if self.inst.cond:
            return v > self.hi_clear or v < self.lo_clear
        return v > self.hi or v < self.lo

    def limit_crossed(self, v: float | None) -> float | None:
        if v is None:
            return None
        if v > self.hi_clear:
            return self.hi if self.hi != math.inf else None
        if v < self.lo_clear:
            return self.lo if self.lo != -math.inf else None
        return None

    def rate(self, t: int, v: float) -> float | None:
        """Add a point to the window and return the rate over it (per second), if there is one."""
        win = self.inst.window
        win.append((t, v))
        start = t - self.window_us
        drop = 0
        while drop < len(win) - 1 and win[drop][0] < start:
            drop += 1
        if drop:
            del win[:drop]
        t0, v0 = win[0]
        if t == t0:
            return None
        return (v - v0) * S / (t - t0)
