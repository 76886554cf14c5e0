"""Aligning a model's input series into rows, by hand."""

from __future__ import annotations

import math

from shopfloor.services.analytics import align


def test_rows_hold_last_values_and_skip_until_every_input_is_seen() -> None:
    a = [(10, 1.0), (20, 2.0), (40, 4.0)]
    b = [(20, 100.0), (30, 300.0)]
    h = align([a, b])
    assert h.ts_us.tolist() == [20, 30, 40]  # at 10 only `a` has a value: skipped
    assert h.values.tolist() == [[2.0, 100.0], [2.0, 300.0], [4.0, 300.0]]


def test_empty_inputs_give_no_rows() -> None:
    h = align([[], [(5, 1.0)]])
    assert h.ts_us.tolist() == [] and h.values.shape == (0, 2)
    h = align([[]])
    assert len(h.ts_us) == 0 and not any(math.isnan(v) for v in h.values.ravel())
