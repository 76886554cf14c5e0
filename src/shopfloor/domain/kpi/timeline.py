"""State and work-order events → intervals clipped to a window → time buckets (the reference
implementation of what the SQL layer sums).

Conventions:
- Events are given with the last one *before* the window start (it sets the state in force at the
  start); events after the window end are ignored. Order in the input does not matter; at equal
  timestamps the later one in the input wins.
- A state holds from its event until the next state event. Before the first one, and from an
  ``offline`` marker (state ``None`` or ``"unknown"``) until the next state event, the state is
  ``unknown``: that time is left out of every KPI and lowers its coverage.
- A work order is open from ``work_order_start`` until ``work_order_end`` of the same order id. A
  start while another order is open switches to the new one (the old one ends there); an end of an
  order that is not open is ignored. Before any order event no order is open.
- ``failures`` counts unplanned-stop *episodes* that begin inside the window: a change into
  ``unplanned_stop`` from any other category (a new reason while already stopped is the same
  episode, and so is a stop interrupted only by unknown time). An episode already running at the
  window start is not counted again.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.calendar import Span
from shopfloor.domain.kpi.models import NO_PRODUCT, Category, TimeBucket, category_of

US = 1_000_000

LOSS_CATEGORIES = (Category.SETUP, Category.STARVED, Category.BLOCKED, Category.IDLE, Category.UNPLANNED_STOP)


class StateEvent(msgspec.Struct, frozen=True):
    """A state change: a machine state (``running`` …), a category name, or None for unknown."""

    ts: int
    state: str | None
    reason: str | None = None


class OrderEvent(msgspec.Struct, frozen=True):
    """``start`` or ``end`` of a work order; ``product`` is what the order makes (start events)."""

    ts: int
    kind: str
    order_id: str
    product: str | None = None


@dataclass(frozen=True, slots=True)
class StateSpan:
    start: int
    end: int
    category: Category
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class OrderSpan:
    start: int
    end: int
    order_id: str
    product: str


def _check_window(start: int, end: int) -> None:
    if end <= start:
        raise InvalidInput("a KPI window must end after it starts")


def _last_per_instant(events: Sequence[StateEvent], end: int) -> list[tuple[int, Category, str | None]]:
    """(ts, category, reason) before ``end``, one per timestamp (the later event of an instant wins)."""
    last_at: dict[int, tuple[Category, str | None]] = {}
    for ev in sorted(events, key=lambda e: e.ts):  # stable: input order within an instant
        if ev.ts < end:
            last_at[ev.ts] = (category_of(ev.state), ev.reason or None)
    return [(ts, c, r) for ts, (c, r) in last_at.items()]


def state_spans(events: Sequence[StateEvent], start: int, end: int) -> list[StateSpan]:
    """The window [start, end) covered by state spans, gap-free, in time order."""
    _check_window(start, end)
    cur_cat, cur_reason, cur_start = Category.UNKNOWN, None, start
    out: list[StateSpan] = []
    for ts, cat, reason in _last_per_instant(events, end):
        if ts <= start:
            cur_cat, cur_reason = cat, reason
        elif (cat, reason) != (cur_cat, cur_reason):
            out.append(StateSpan(cur_start, ts, cur_cat, cur_reason))
            cur_cat, cur_reason, cur_start = cat, reason, ts
    out.append(StateSpan(cur_start, end, cur_cat, cur_reason))
    return out


def failures(events: Sequence[StateEvent], start: int, end: int) -> int:
    """Unplanned-stop episodes that begin in [start, end)."""
    prev = Category.UNKNOWN
    count = 0
    for ts, cat, _ in _last_per_instant(events, end):
        if cat is Category.UNPLANNED_STOP and prev is not Category.UNPLANNED_STOP and ts >= start:
            count += 1
        if cat is not Category.UNKNOWN:  # a stop, an outage, the same stop again: one episode
            prev = cat
    return count


def order_spans(events: Sequence[OrderEvent], start: int, end: int) -> list[OrderSpan]:
    """The open work orders inside [start, end), in time order (gaps: no order open)."""
    _check_window(start, end)
    ordered = sorted(enumerate(events), key=lambda p: (p[1].ts, p[0]))
    out: list[OrderSpan] = []
    open_: tuple[int, str, str] | None = None  # since, order id, product
    for _, ev in ordered:
        if ev.ts >= end:
            break
        if ev.kind not in ("start", "end"):
            raise InvalidInput(f"work order event kind {ev.kind!r} is not start or end")
        if ev.kind == "end" and (open_ is None or open_[1] != ev.order_id):
            continue
        if open_ is not None:
            out.append(OrderSpan(max(open_[0], start), max(ev.ts, start), open_[1], open_[2]))
            open_ = None
        if ev.kind == "start":
            open_ = (ev.ts, ev.order_id, ev.product or NO_PRODUCT)
    if open_ is not None:
        out.append(OrderSpan(max(open_[0], start), end, open_[1], open_[2]))
    return [o for o in out if o.end > o.start]


@dataclass(frozen=True, slots=True)
class ProductAt:
    """Which product a count at a given instant belongs to (the open order's), by bisection."""

    starts: tuple[int, ...]
    spans: tuple[OrderSpan, ...]

    @classmethod
    def of(cls, spans: Sequence[OrderSpan]) -> ProductAt:
        return cls(tuple(s.start for s in spans), tuple(spans))

    def __call__(self, ts: int) -> str:
        i = bisect.bisect_right(self.starts, ts) - 1
        if i >= 0 and self.spans[i].start <= ts < self.spans[i].end:
            return self.spans[i].product
        return NO_PRODUCT


@dataclass(slots=True)
class Breakdown:
    """Durations in µs by (category, scheduled, with order), which partition the window, plus the
    downtime of availability losses inside planned time by reason."""

    window_us: int
    buckets: dict[tuple[Category, bool, bool], int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def time_buckets(self) -> list[TimeBucket]:
        return [TimeBucket(c, us / US, s, o) for (c, s, o), us in sorted(self.buckets.items()) if us]

    def downtime_by_reason(self) -> dict[str, float]:
        return {r: us / US for r, us in sorted(self.reasons.items())}


def reason_key(category: Category, reason: str | None) -> str:
    """How a loss is named in the Pareto: ``category/reason``, or the category alone."""
    return f"{category.value}/{reason}" if reason else category.value


def _member(spans: Sequence[Span], starts: Sequence[int], t: int) -> bool:
    i = bisect.bisect_right(starts, t) - 1
    return i >= 0 and spans[i][0] <= t < spans[i][1]


def breakdown(states: Sequence[StateSpan], scheduled: Sequence[Span], orders: Sequence[Span] | None,
              start: int, end: int) -> Breakdown:
    """Sweep the window once, cutting at every state, schedule and order boundary.

    ``scheduled`` are the calendar's working spans (merged); ``orders`` the spans with an open work
    order, or None when the machine does not report orders (then all time has an order).
    """
    _check_window(start, end)
    cuts = {start, end}
    for s in states:
        cuts.update((s.start, s.end))
    for a, b in scheduled:
        cuts.update((a, b))
    for a, b in orders or ():
        cuts.update((a, b))
    points = sorted(c for c in cuts if start <= c <= end)
    sched = list(scheduled)
    sched_starts = [a for a, _ in sched]
    ords = list(orders or ())
    ord_starts = [a for a, _ in ords]
    state_starts = [s.start for s in states]
    out = Breakdown(end - start)
    for a, b in itertools.pairwise(points):
        i = bisect.bisect_right(state_starts, a) - 1
        st = states[i] if i >= 0 and states[i].start <= a < states[i].end else None
        cat = st.category if st else Category.UNKNOWN
        in_sched = _member(sched, sched_starts, a)
        with_order = True if orders is None else _member(ords, ord_starts, a)
        key = (cat, in_sched, with_order)
        out.buckets[key] = out.buckets.get(key, 0) + (b - a)
        if cat in LOSS_CATEGORIES and in_sched and with_order:
            rk = reason_key(cat, st.reason if st else None)
            out.reasons[rk] = out.reasons.get(rk, 0) + (b - a)
    return out
