"""connectors/gil.py: the switch interval is short while anyone holds it, and comes back after."""

from __future__ import annotations

import sys

from shopfloor.connectors import gil


def test_short_while_held_and_back_after_the_last_holder() -> None:
    before = sys.getswitchinterval()
    assert before > gil.SWITCH_INTERVAL_S
    gil.acquire()
    assert sys.getswitchinterval() <= gil.SWITCH_INTERVAL_S + 1e-9
    gil.acquire()
    gil.release()
    assert sys.getswitchinterval() <= gil.SWITCH_INTERVAL_S + 1e-9  # the outer holder still holds
    gil.release()
    assert sys.getswitchinterval() == before


def test_a_value_someone_else_set_meanwhile_is_left_alone() -> None:
    before = sys.getswitchinterval()
    try:
        gil.acquire()
        sys.setswitchinterval(0.001)
        gil.release()
        assert abs(sys.getswitchinterval() - 0.001) < 1e-9
    finally:
        sys.setswitchinterval(before)


def test_an_already_shorter_interval_is_kept() -> None:
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.0001)
        gil.acquire()
        assert abs(sys.getswitchinterval() - 0.0001) < 1e-9
        gil.release()
        assert abs(sys.getswitchinterval() - 0.0001) < 1e-9
    finally:
        sys.setswitchinterval(before)
