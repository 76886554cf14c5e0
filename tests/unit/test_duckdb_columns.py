"""The DuckDB historian builds a batch's Arrow columns; a repeated value is not converted one by one."""

from __future__ import annotations

import pyarrow as pa
import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.records import SampleBatch
from shopfloor.storage.duckdb.historian import _column, _samples_table


def test_repeated_and_mixed_columns_hold_the_same_values() -> None:
    assert _column([None] * 4, pa.string()).to_pylist() == [None] * 4
    assert _column([0] * 3, pa.int16()).to_pylist() == [0, 0, 0]
    assert _column([0, 2, 0], pa.int16()).to_pylist() == [0, 2, 0]
    assert _column([None, "a"], pa.string()).to_pylist() == [None, "a"]
    assert _column([], pa.int16()).to_pylist() == []
    assert _column([1] * 2, pa.int16()).type == pa.int16()


def test_a_batch_of_floats_and_texts_round_trips() -> None:
    s = SampleBatch()
    s.add(1, 10, 1.5)
    s.add(2, 11, None, "run", 2)
    table = _samples_table(s)
    assert table.column("text").to_pylist() == [None, "run"]
    assert table.column("quality").to_pylist() == [0, 2]


def test_a_repeated_value_out_of_range_is_still_refused() -> None:
    s = SampleBatch()
    for i in range(3):
        s.add(i, 10, 1.0, None, 70_000)
    with pytest.raises(InvalidInput, match="malformed sample batch"):
        _samples_table(s)
