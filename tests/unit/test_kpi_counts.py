"""Count messages → good/reject/rework units: deltas, totals, counter resets, products."""

from __future__ import annotations

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.counts import CountMessage, count_units, credit
from shopfloor.domain.kpi.models import NO_PRODUCT, Counts
from shopfloor.domain.kpi.timeline import OrderEvent, ProductAt, order_spans

H = 3_600_000_000


def test_deltas_add_up_inside_the_window_only() -> None:
    msgs = [CountMessage(-1, good=5), CountMessage(0, good=3, reject=1), CountMessage(H - 1, good=2, rework=1),
            CountMessage(H, good=100)]
    assert count_units(msgs, 0, H) == {NO_PRODUCT: Counts(good=5, reject=1, rework=1)}


def test_totals_credit_differences_from_the_baseline_before_the_window() -> None:
    msgs = [CountMessage(-10, "total", good=100), CountMessage(10, "total", good=130),
            CountMessage(20, "total", good=160)]
    assert count_units(msgs, 0, H) == {NO_PRODUCT: Counts(good=60)}
    # without the baseline the first total in the window only sets it
    assert count_units(msgs[1:], 0, H) == {NO_PRODUCT: Counts(good=30)}


def test_a_counter_reset_restarts_from_zero() -> None:
    msgs = [CountMessage(0, "total", good=100), CountMessage(10, "total", good=150),
            CountMessage(20, "total", good=20),  # reset: 20 made since, the rest before it is lost
            CountMessage(30, "total", good=50)]
    assert count_units(msgs, 0, H) == {NO_PRODUCT: Counts(good=50 + 20 + 30)}
    assert credit(None, 7) == 0 and credit(5, 7) == 2 and credit(7, 7) == 0 and credit(65535, 3) == 3


def test_each_field_is_its_own_counter() -> None:
    msgs = [CountMessage(0, "total", good=10, reject=5), CountMessage(10, "total", good=12),
            CountMessage(20, "total", reject=2, rework=4), CountMessage(30, "total", good=15, reject=3, rework=9)]
    # good: 10→12→15 = 5; reject: 5→2 (reset: 2)→3 = 3; rework: first seen at 20, then 9: 5
    assert count_units(msgs, 0, H) == {NO_PRODUCT: Counts(good=5, reject=3, rework=5)}


def test_a_total_between_two_windows_credits_the_one_it_falls_in() -> None:
    msgs = [CountMessage(0, "total", good=0), CountMessage(H + 1, "total", good=100)]
    assert count_units(msgs, 1, H) == {}
    assert count_units(msgs, H, 2 * H) == {NO_PRODUCT: Counts(good=100)}


def test_units_belong_to_the_product_of_the_open_order() -> None:
    orders = order_spans([OrderEvent(0, "start", "o1", "small"), OrderEvent(H, "start", "o2", "large")], 0, 2 * H)
    msgs = [CountMessage(H // 2, good=10, reject=1), CountMessage(H, good=4), CountMessage(H + 5, rework=2)]
    assert count_units(msgs, 0, 2 * H, ProductAt.of(orders)) == {
        "large": Counts(good=4, rework=2), "small": Counts(good=10, reject=1)}


def test_bad_counts_are_refused() -> None:
    with pytest.raises(InvalidInput, match="mode"):
        count_units([CountMessage(0, "sometimes", good=1)], 0, H)
    with pytest.raises(InvalidInput, match="negative"):
        count_units([CountMessage(0, good=-1)], 0, H)
    with pytest.raises(InvalidInput):
        count_units([], H, 0)
