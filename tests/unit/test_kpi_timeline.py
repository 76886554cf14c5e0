"""State and order events → spans clipped to a window → buckets (the reference for the SQL)."""

from __future__ import annotations

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.calendar import scheduled
from shopfloor.domain.kpi.models import Break, Category, Shift, ShiftCalendar
from shopfloor.domain.kpi.timeline import (
    OrderEvent,
    ProductAt,
    StateEvent,
    StateSpan,
    breakdown,
    failures,
    order_spans,
    state_spans,
)

H = 3_600_000_000
MIN = 60_000_000
RUN, STOP, UNKNOWN = Category.RUN, Category.UNPLANNED_STOP, Category.UNKNOWN


def test_a_window_cuts_the_states_at_both_ends() -> None:
    events = [StateEvent(7 * H, "running"), StateEvent(9 * H + 30 * MIN, "unplanned_stop", "jam"),
              StateEvent(10 * H, "running"), StateEvent(11 * H, "idle")]
    spans = state_spans(events, 8 * H, 10 * H + 30 * MIN)
    assert spans == [StateSpan(8 * H, 9 * H + 30 * MIN, RUN), StateSpan(9 * H + 30 * MIN, 10 * H, STOP, "jam"),
                     StateSpan(10 * H, 10 * H + 30 * MIN, RUN)]
    assert failures(events, 8 * H, 10 * H + 30 * MIN) == 1
    # the same stop, already running when the window opens, is not a new failure
    assert failures(events, 9 * H + 45 * MIN, 11 * H) == 0


def test_before_the_first_event_and_after_offline_the_state_is_unknown() -> None:
    events = [StateEvent(2 * H, "running"), StateEvent(3 * H, None), StateEvent(4 * H, "running")]
    assert [(s.category, (s.end - s.start) / H) for s in state_spans(events, H, 5 * H)] == [
        (UNKNOWN, 1), (RUN, 1), (UNKNOWN, 1), (RUN, 1)]
    assert state_spans([StateEvent(0, "unknown")], 0, H) == [StateSpan(0, H, UNKNOWN)]


def test_at_equal_timestamps_the_later_event_wins_and_repeats_merge() -> None:
    events = [StateEvent(0, "running"), StateEvent(H, "unplanned_stop"), StateEvent(H, "running"),
              StateEvent(2 * H, "running")]
    assert state_spans(events, 0, 3 * H) == [StateSpan(0, 3 * H, RUN)]
    assert failures(events, 0, 3 * H) == 0


def test_a_new_reason_while_stopped_is_the_same_failure_but_its_own_pareto_entry() -> None:
    events = [StateEvent(0, "running"), StateEvent(H, "unplanned_stop", "jam"),
              StateEvent(H + 10 * MIN, "unplanned_stop", "tool"), StateEvent(H + 30 * MIN, "running")]
    assert failures(events, 0, 2 * H) == 1
    assert failures([*events, StateEvent(H + 5 * MIN, None), StateEvent(H + 6 * MIN, "unplanned_stop")], 0, 2 * H) == 1
    parts = breakdown(state_spans(events, 0, 2 * H), [(0, 2 * H)], None, 0, 2 * H)
    assert parts.downtime_by_reason() == {"unplanned_stop/jam": 600.0, "unplanned_stop/tool": 1200.0}


def test_unknown_state_is_refused() -> None:
    with pytest.raises(InvalidInput, match="not a machine state"):
        state_spans([StateEvent(0, "dancing")], 0, H)
    with pytest.raises(InvalidInput):
        state_spans([], H, H)


def test_orders_start_end_switch_and_unmatched_ends() -> None:
    events = [OrderEvent(H, "start", "A", "p1"), OrderEvent(2 * H, "end", "B"),  # B is not open: ignored
              OrderEvent(3 * H, "start", "C", "p2"),  # switches: A ends here
              OrderEvent(4 * H, "end", "C"), OrderEvent(5 * H, "start", "D")]
    spans = order_spans(events, 0, 6 * H)
    assert [(o.start // H, o.end // H, o.order_id, o.product) for o in spans] == [
        (1, 3, "A", "p1"), (3, 4, "C", "p2"), (5, 6, "D", "")]
    at = ProductAt.of(spans)
    assert (at(0), at(H), at(3 * H - 1), at(3 * H), at(4 * H), at(5 * H)) == ("", "p1", "p1", "p2", "", "")
    with pytest.raises(InvalidInput):
        order_spans([OrderEvent(0, "pause", "A")], 0, H)


def test_runs_in_a_break_are_run_and_planned_a_planned_stop_state_is_not() -> None:
    cal = ShiftCalendar("UTC", [Shift("early", "06:00", "14:00", breaks=[Break("10:00", "10:30")])])
    start, end = 6 * H, 14 * H
    events = [StateEvent(6 * H, "running"), StateEvent(12 * H, "planned_stop"), StateEvent(13 * H, "running")]
    parts = breakdown(state_spans(events, start, end), scheduled(cal, start, end), None, start, end)
    assert parts.buckets == {
        (RUN, True, True): int(6.5 * H),  # 06-10, 10:30-12, 13-14
        (RUN, False, True): 30 * MIN,  # the break, running through
        (Category.PLANNED_STOP, True, True): H,
    }
    assert sum(parts.buckets.values()) == end - start


def test_time_without_orders_is_its_own_bucket() -> None:
    events = [StateEvent(0, "idle")]
    orders = [(H, 3 * H)]
    parts = breakdown(state_spans(events, 0, 4 * H), [(0, 4 * H)], orders, 0, 4 * H)
    assert parts.buckets == {(Category.IDLE, True, False): 2 * H, (Category.IDLE, True, True): 2 * H}
    assert parts.downtime_by_reason() == {"idle": 7200.0}  # only losses inside planned time
    assert [b.seconds for b in parts.time_buckets()] == [7200.0, 7200.0]
