"""The append path's deltas worked out in numpy (``rollup_delta.py``) equal the SQL delta query's
rows, column for column (sums up to rounding), on generated batches: several series, text, bad and
uncertain samples, holds across minutes and hours, previous newest samples of every kind, rows in
time order and shuffled."""

from __future__ import annotations

import random
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from shopfloor.storage.duckdb.rollup_append import _DELTA_SQL, _PREV_SCHEMA
from shopfloor.storage.duckdb.rollup_delta import DELTA_SCHEMA, delta, ordered
from shopfloor.testing.store_contract import D0, MIN, H, S

Row = tuple[int, int, float | None, str | None, int]


def _batch(rng: random.Random, series: int, n: int) -> tuple[list[Row], list[tuple[Any, ...]]]:
    """(new rows in time order, prev rows): each series' previous newest sample lies before its new ones."""
    t = D0 + rng.randrange(0, H)
    prev: list[tuple[Any, ...]] = []
    for sid in range(1, series + 1):
        if rng.random() < 0.7:
            value = None if rng.random() < 0.1 else rng.uniform(-50, 50)
            prev.append((sid, t - rng.randrange(1, 20 * MIN), value, rng.choice([0, 0, 1, 2]), 0))
    rows: list[Row] = []
    for _ in range(n):
        t += rng.choice([rng.randrange(1, 3 * S), rng.randrange(1, 90 * S), rng.randrange(4 * MIN, 2 * H)])
        sid = rng.randrange(1, series + 1)
        kind = rng.random()
        if kind < 0.08:
            rows.append((sid, t, None, "text", rng.choice([0, 2])))
        elif kind < 0.15:
            rows.append((sid, t, rng.uniform(-5, 5), None, 2))
        else:
            rows.append((sid, t, round(rng.uniform(-100, 100), 3), None, 1 if kind < 0.25 else 0))
    firsts: dict[int, int] = {}
    for sid, ts, *_ in rows:
        firsts.setdefault(sid, ts)
    prev = [(sid, ts, value, q, firsts[sid]) for sid, ts, value, q, _ in prev if sid in firsts]
    return rows, prev


def _tables(rows: list[Row], prev: list[tuple[Any, ...]]) -> tuple[pa.Table, pa.Table]:
    new = pa.table({"series_id": pa.array([r[0] for r in rows], pa.int32()), "ts": pa.array([r[1] for r in rows]),
                    "value": pa.array([r[2] for r in rows], pa.float64()), "text": pa.array([r[3] for r in rows]),
                    "quality": pa.array([r[4] for r in rows], pa.int16())})
    cols = [[r[k] for r in prev] for k in range(5)]
    return new, pa.table([pa.array(c, f.type) for c, f in zip(cols, _PREV_SCHEMA, strict=True)], schema=_PREV_SCHEMA)


def _sql_delta(new: pa.Table, prev: pa.Table, staleness_us: int) -> list[tuple[Any, ...]]:
    cur = duckdb.connect()
    cur.register("_sf_new", new)
    cur.register("_sf_prev", prev)
    got = cur.sql(_DELTA_SQL, params={"st": staleness_us}).to_arrow_table()
    return sorted(got.select(DELTA_SCHEMA.names).to_pylist(), key=lambda r: (r["series_id"], r["bucket_us"]))


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        for name in DELTA_SCHEMA.names:
            a, b = g[name], w[name]
            if name in ("vsum", "w"):
                assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-6, nan_ok=True), (name, g, w)
            else:
                assert a == b, (name, g, w)


@pytest.mark.parametrize("seed", range(40))
def test_numpy_delta_equals_the_sql_delta(seed: int) -> None:
    rng = random.Random(seed)
    rows, prev = _batch(rng, rng.choice([1, 3, 8]), rng.choice([1, 5, 60, 400]))
    if seed % 2:
        rng.shuffle(rows)  # each commit's rows may come in any order: sorted by ts per series then
    new, prev_table = _tables(rows, prev)
    staleness_us = rng.choice([90 * S, 5 * MIN, 2 * H])
    got = ordered(new)
    assert got is not None
    out = delta(got, prev_table, staleness_us)
    assert out.schema == DELTA_SCHEMA
    _same(sorted(out.to_pylist(), key=lambda r: (r["series_id"], r["bucket_us"])),
          _sql_delta(new, prev_table, staleness_us))


def test_sums_beyond_a_double_become_infinite_as_in_duckdb() -> None:
    rows: list[Row] = [(1, D0 + k * S, v, None, 0) for k, v in enumerate([1.7e308, 1.7e308, 2.0])]
    new, prev = _tables(rows, [(1, D0 - S, 1.7e308, 0, D0)])
    got = ordered(new)
    assert got is not None
    out = delta(got, prev, 5 * MIN)
    _same(sorted(out.to_pylist(), key=lambda r: (r["series_id"], r["bucket_us"])), _sql_delta(new, prev, 5 * MIN))


def test_more_pieces_than_allowed_go_the_sql_way() -> None:
    """A sparse sample holds for the staleness: with two hours, each makes about 121 minute pieces."""
    rows: list[Row] = [(sid, D0 + sid * S, 1.0, None, 0) for sid in range(1, 11)]
    new, prev = _tables(rows, [])
    got = ordered(new)
    assert got is not None
    assert delta(got, prev, 2 * H, max_pieces=1_000) is None
    assert delta(got, prev, 2 * H, max_pieces=1_300) is not None


def test_summary_per_series() -> None:
    rows: list[Row] = [(2, D0 + 5, 1.0, None, 0), (1, D0 + 3, None, "x", 0), (2, D0 + 1, 4.0, None, 1),
                       (1, D0 + 9, 7.5, None, 2)]
    got = ordered(_tables(rows, [])[0])
    assert got is not None
    assert got.summary() == [(1, D0 + 3, D0 + 9, 7.5, 2), (2, D0 + 1, D0 + 5, 1.0, 0)]


def test_repeats_and_nan_go_the_sql_way() -> None:
    twice: list[Row] = [(1, D0, 1.0, None, 0), (2, D0, 1.0, None, 0), (1, D0, 2.0, None, 0)]
    assert ordered(_tables(twice, [])[0]) is None
    nan: list[Row] = [(1, D0, float("nan"), None, 0)]
    assert ordered(_tables(nan, [])[0]) is None
    assert ordered(_tables([], [])[0]) is None
