"""Property tests of the KPI maths: partitions, bounds, the OEE identity, exact decompositions."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from shopfloor.domain.kpi.calendar import scheduled
from shopfloor.domain.kpi.compare import decompose_product, decompose_unit_cost
from shopfloor.domain.kpi.counts import CountMessage, count_units
from shopfloor.domain.kpi.energy import kwh_from_counter
from shopfloor.domain.kpi.formulas import CostBreakdown, compute, time_account
from shopfloor.domain.kpi.labour import ClockEvent
from shopfloor.domain.kpi.models import (
    Break,
    Category,
    Counts,
    CycleTimes,
    PeriodInputs,
    Shift,
    ShiftCalendar,
    Tariff,
    TariffPeriod,
    TimeBucket,
    combine,
)
from shopfloor.domain.kpi.reference import RawEvents, period_inputs
from shopfloor.domain.kpi.timeline import OrderEvent, StateEvent, breakdown, order_spans, state_spans

PROPS = settings(max_examples=150, deadline=None)
H = 3_600_000_000
DAY = 24 * H
T0 = 1_711_843_200_000_000  # 2024-03-31T00:00Z, the spring change in Europe/Berlin

STATES = ["running", "idle", "setup", "starved", "blocked", "planned_stop", "unplanned_stop", None]
BOUNDED = ["availability", "quality_ratio", "allocation_efficiency", "utilisation_efficiency",
           "technical_efficiency", "setup_ratio", "scrap_ratio", "rework_ratio", "oee", "teep"]

wall = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45])).map(lambda t: f"{t[0]:02d}:{t[1]:02d}")
shifts = st.builds(lambda n, s, e, br, days: Shift(n, s, e, weekdays=days, breaks=br),
                   st.sampled_from(["a", "b", "c"]), wall, wall,
                   st.lists(st.builds(Break, wall, wall), max_size=2),
                   st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True))
calendars = st.one_of(st.none(), st.builds(lambda z, s: ShiftCalendar(z, s),
                                           st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
                                           st.lists(shifts, max_size=3)))
offsets = st.integers(-6 * H, 3 * DAY)
state_events = st.lists(st.builds(lambda ts, s, r: StateEvent(T0 + ts, s, r), offsets, st.sampled_from(STATES),
                                  st.sampled_from([None, "jam", "tool"])), max_size=30)
order_events = st.one_of(st.none(), st.lists(
    st.builds(lambda ts, k, o, p: OrderEvent(T0 + ts, k, o, p), offsets, st.sampled_from(["start", "end"]),
              st.sampled_from(["o1", "o2"]), st.sampled_from(["p", "q"])), max_size=10))
windows = st.tuples(st.integers(0, 2 * DAY), st.integers(1, DAY)).map(lambda w: (T0 + w[0], T0 + w[0] + w[1]))


@PROPS
@given(state_events, order_events, calendars, windows)
def test_reference_durations_partition_the_window(events: list[StateEvent], orders: list[OrderEvent] | None,
                                                  cal: ShiftCalendar | None, window: tuple[int, int]) -> None:
    start, end = window
    spans = state_spans(events, start, end)
    assert spans[0].start == start and spans[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(spans))
    o = None if orders is None else [(s.start, s.end) for s in order_spans(orders, start, end)]
    parts = breakdown(spans, scheduled(cal, start, end), o, start, end)
    assert sum(parts.buckets.values()) == end - start  # exact, in microseconds
    assert sum(parts.reasons.values()) <= end - start
    t = time_account(parts.time_buckets())
    assert t.calendar == pytest.approx((end - start) / 1e6)
    assert t.planned + t.planned_stop + t.unknown == pytest.approx(t.calendar)
    assert t.planned == pytest.approx(t.run + t.setup + t.delay + t.starved + t.blocked + t.idle)


seconds = st.one_of(st.just(0.0), st.floats(1e-3, 1e6))  # a millisecond to 11 days
buckets = st.lists(st.builds(TimeBucket, st.sampled_from(list(Category)), seconds, st.booleans(),
                             st.booleans()), max_size=12)
counts = st.builds(Counts, st.integers(0, 10**6), st.integers(0, 10**5), st.integers(0, 10**5))


@PROPS
@given(buckets, counts, st.floats(0.01, 1e3), st.integers(0, 50), st.floats(0, 1e5), st.floats(0, 1e4))
def test_factors_are_bounded_and_oee_is_good_times_cycle_time_over_planned_time(
        time: list[TimeBucket], n: Counts, ict: float, fe: int, kwh: float, labour: float) -> None:
    inputs = PeriodInputs(time=time, counts={"p": n}, failures=fe, energy_kwh={"standard": kwh}, labour_hours=labour)
    k = compute(inputs, CycleTimes(default=ict))
    for key in k:
        value = k.value(key)
        assert value is None or math.isfinite(value), key
        cov = k[key].coverage
        assert cov is None or 0.0 <= cov <= 1.0
    for key in BOUNDED:
        value = k.value(key)
        if key in ("oee", "teep"):
            continue
        assert value is None or -1e-12 <= value <= 1 + 1e-12, key
    t = time_account(time)
    oee = k.value("oee")
    if t.run > 0 and t.planned > 0 and n.produced > 0:
        assert oee == pytest.approx(n.good * ict / t.planned, rel=1e-9)
        effectiveness = k.value("effectiveness")
        assert effectiveness is not None
        if n.produced * ict <= t.run:  # never faster than ideal: every factor, and OEE, within [0, 1]
            assert effectiveness <= 1 + 1e-12 and oee is not None and oee <= 1 + 1e-12
            teep = k.value("teep")
            assert teep is not None and teep <= oee + 1e-12
    else:
        assert oee is None


@PROPS
@given(st.lists(st.builds(lambda ts, s: StateEvent(T0 + ts, s), st.integers(-H, 8 * H),
                          st.sampled_from(STATES)), max_size=20),
       st.lists(st.tuples(st.integers(-H, 8 * H), st.integers(0, 50), st.integers(0, 5)), max_size=20),
       st.floats(1.0, 120.0))
def test_the_oee_identity_holds_end_to_end_from_raw_events(events: list[StateEvent],
                                                            deltas: list[tuple[int, int, int]], ict: float) -> None:
    msgs = [CountMessage(T0 + ts, good=g, reject=r) for ts, g, r in deltas]
    start, end = T0, T0 + 8 * H
    inputs = period_inputs(RawEvents(states=events, counts=msgs), start, end)
    t = time_account(inputs.time)
    n = inputs.total_counts
    oee = compute(inputs, CycleTimes(default=ict)).value("oee")
    if t.run > 0 and n.produced > 0:
        assert oee == pytest.approx(n.good * ict / t.planned, rel=1e-9)


def _in_order_sum(time: list[TimeBucket], counts: Callable[[TimeBucket], bool]) -> float:
    out = 0.0
    for b in time:
        if counts(b):
            out += b.seconds
    return out


LOSS_ELEMENTS = {Category.SETUP: "setup", Category.UNPLANNED_STOP: "delay", Category.STARVED: "starved",
                 Category.BLOCKED: "blocked", Category.IDLE: "idle"}


@PROPS
@given(st.lists(st.builds(TimeBucket, st.sampled_from(list(Category)), st.one_of(seconds, st.integers(0, 10**6)),
                          st.booleans(), st.booleans()), max_size=16))
def test_every_time_element_is_the_in_order_sum_of_the_buckets_it_is_defined_by(time: list[TimeBucket]) -> None:
    """Exactly (==, not approx): each element adds its buckets' seconds in bucket order, so its
    floats do not depend on how ``time_account`` is written."""
    def known(b: TimeBucket) -> bool:
        return b.category is not Category.UNKNOWN

    def loss(b: TimeBucket) -> bool:  # inside PBT and not running
        return b.category in LOSS_ELEMENTS and b.scheduled and b.with_order

    t = time_account(time)
    expected = {
        "calendar": _in_order_sum(time, lambda b: True),
        "unknown": _in_order_sum(time, lambda b: not known(b)),
        "unknown_planned": _in_order_sum(time, lambda b: not known(b) and b.scheduled and b.with_order),
        "planned": _in_order_sum(time, lambda b: b.category is Category.RUN or loss(b)),
        "run": _in_order_sum(time, lambda b: b.category is Category.RUN),
        "planned_stop": _in_order_sum(time, lambda b: known(b) and b.category is not Category.RUN and not loss(b)),
        "no_order": _in_order_sum(time, lambda b: known(b) and b.category is not Category.RUN and b.scheduled
                                  and not b.with_order),
        "scheduled": _in_order_sum(time, lambda b: b.scheduled),
        "with_order": _in_order_sum(time, lambda b: b.with_order),
        "repair": _in_order_sum(time, lambda b: b.category is Category.UNPLANNED_STOP),
    }
    for category, element in LOSS_ELEMENTS.items():
        expected[element] = _in_order_sum([b for b in time if b.category is category], loss)
    assert {name: getattr(t, name) for name in expected} == expected
    assert sorted(expected) == sorted(t.__struct_fields__)


money = st.one_of(st.just(0.0), st.floats(1e-3, 1e6))


@st.composite
def cost_breakdowns(draw: st.DrawFn) -> CostBreakdown:
    good = draw(st.integers(1, 10**6))
    produced = good + draw(st.integers(0, 10**5))
    return CostBreakdown(draw(money), draw(money), draw(money), draw(money), draw(money), draw(money),
                         draw(money), good, produced)


@PROPS
@given(cost_breakdowns(), cost_breakdowns())
def test_lmdi_parts_sum_to_the_unit_cost_change(base: CostBreakdown, cur: CostBreakdown) -> None:
    d = decompose_unit_cost(base, cur)
    assert d is not None
    scale = max(abs(d.baseline), abs(d.current), 1e-300)
    assert abs(sum(d.effects.values()) - d.change) <= 1e-9 * scale
    assert abs(sum(d.detail.values()) + d.effects["scrap"] - d.change) <= 1e-9 * scale
    if d.baseline > 0:
        assert d.relative is not None
        assert sum(d.relative_effects.values()) == pytest.approx(d.relative, rel=1e-9, abs=1e-9 * scale / d.baseline)
    if base.good * cur.produced == cur.good * base.produced:
        assert abs(d.effects["scrap"]) <= 1e-9 * scale  # same yield: no scrap effect


@PROPS
@given(st.dictionaries(st.sampled_from("aeqxyz"), st.floats(1e-6, 1e3), min_size=1),
       st.lists(st.floats(1e-6, 1e3), min_size=6, max_size=6))
def test_lmdi_parts_sum_to_the_product_change(base: dict[str, float], values: list[float]) -> None:
    cur = {k: values[i] for i, k in enumerate(base)}
    d = decompose_product(base, cur)
    assert d is not None
    assert sum(d.effects.values()) == pytest.approx(d.change, rel=1e-9, abs=1e-9 * max(d.baseline, d.current))


@PROPS
@given(st.lists(st.tuples(st.integers(-H, 3 * H), st.integers(0, 10**6)), max_size=20),
       st.integers(0, 3 * H))
def test_counter_energy_adds_up_across_adjacent_windows(readings: list[tuple[int, int]], cut: int) -> None:
    start, end = 0, 3 * H
    assume(0 < cut < end)
    points = [(ts, float(v)) for ts, v in readings]
    whole = kwh_from_counter(points, start, end).kwh
    parts = kwh_from_counter(points, start, cut).kwh + kwh_from_counter(points, cut, end).kwh
    assert parts == pytest.approx(whole, rel=1e-9, abs=1e-6)
    assert whole >= 0


@PROPS
@given(st.lists(st.integers(0, 1000), min_size=1, max_size=30), st.integers(0, 29))
def test_monotone_totals_credit_last_minus_first_and_windows_add_up(steps: list[int], cut: int) -> None:
    totals, value = [], 0
    for s in steps:
        value += s
        totals.append(value)
    msgs = [CountMessage(i * 10, "total", good=v) for i, v in enumerate(totals)]
    end = len(msgs) * 10
    assert count_units(msgs, 0, end).get("", Counts()).good == totals[-1] - totals[0]
    c = min(cut, len(msgs) - 1) * 10
    if c > 0:
        left = count_units(msgs, 0, c).get("", Counts()).good
        right = count_units(msgs, c, end).get("", Counts()).good
        assert left + right == totals[-1] - totals[0]


TARIFF = Tariff("Europe/Berlin", 0.1, "night", [TariffPeriod("day", 0.3, "06:00", "22:00")])
count_msgs = st.lists(st.builds(lambda ts, m, g, r: CountMessage(T0 + ts, m, good=g, reject=r),
                                st.integers(-H, DAY), st.sampled_from(["delta", "total"]),
                                st.integers(0, 500), st.none() | st.integers(0, 50)), max_size=20)
clock = st.lists(st.builds(lambda ts, op, k: ClockEvent(T0 + ts, op, k), st.integers(-H, DAY),
                           st.sampled_from(["ann", "bob"]), st.sampled_from(["in", "out"])), max_size=10)
meter = st.lists(st.tuples(st.integers(-H, DAY + H).map(lambda x: T0 + x), st.floats(0, 1e5)), max_size=12)


@PROPS
@given(state_events, order_events, count_msgs, clock, meter, calendars, st.integers(1, DAY - 1))
def test_summing_two_adjacent_windows_equals_summing_their_union(
        events: list[StateEvent], orders: list[OrderEvent] | None, msgs: list[CountMessage],
        clock_events: list[ClockEvent], readings: list[tuple[int, float]], cal: ShiftCalendar | None,
        cut: int) -> None:
    raw = RawEvents(states=events, orders=orders, counts=msgs, clock=clock_events, energy_counter=readings)
    start, mid, end = T0, T0 + cut, T0 + DAY
    whole = period_inputs(raw, start, end, cal, TARIFF)
    parts = combine([period_inputs(raw, start, mid, cal, TARIFF), period_inputs(raw, mid, end, cal, TARIFF)])
    as_map = lambda p: {(b.category, b.scheduled, b.with_order): b.seconds for b in p.time}  # noqa: E731
    assert as_map(parts) == pytest.approx(as_map(whole))
    assert parts.counts == whole.counts
    assert parts.failures == whole.failures
    assert parts.downtime_by_reason == pytest.approx(whole.downtime_by_reason)
    assert parts.energy_kwh == pytest.approx(whole.energy_kwh, rel=1e-9, abs=1e-6)
    assert parts.energy_coverage == pytest.approx(whole.energy_coverage)
    assert parts.labour_hours == pytest.approx(whole.labour_hours)
