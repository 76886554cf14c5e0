"""The DuckDB historian's append path (``rollup_append.py``), run by the rollup follower, writes the
rollup rows a recomputation from raw would: streams of in-order batches (with text, bad and
uncertain samples, gaps longer than the staleness, several series, holds that cross minutes and
hours) leave rollup tables equal to those of a full rebuild, whether the follower merges every
commit on its own or many commits at once; late data, retention and redeliveries fall back to the
recomputation."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from shopfloor.domain.records import IngestBatch
from shopfloor.storage.duckdb import rollup_append
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.testing.store_contract import D0, MIN, H, S

COLUMNS = ("series_id, bucket_us, sample_count, value_count, value_sum, value_min, value_max, first_ts, first_value,"
           " last_ts, last_value, twa_weighted_sum, twa_duration_us, twa_carried_in")


def _stream(seed: int, series: int, n: int) -> list[tuple[int, int, float | None, str | None, int]]:
    """(series, ts, value, text, quality) in time order: mostly numeric and good, some of the rest."""
    rng = random.Random(seed)
    t = D0 + 17 * S
    out = []
    for _ in range(n):
        t += rng.choice([rng.randrange(1, 5 * S), rng.randrange(1, 90 * S), rng.randrange(5 * MIN, 2 * H)])
        sid = rng.randrange(1, series + 1)
        kind = rng.random()
        if kind < 0.08:
            out.append((sid, t, None, "text", 0))
        elif kind < 0.15:
            out.append((sid, t, rng.uniform(-5, 5), None, 2))
        else:
            out.append((sid, t, round(rng.uniform(-100, 100), 3), None, 1 if kind < 0.25 else 0))
    return out


def _rows(db: Database, table: str) -> list[tuple[Any, ...]]:
    return db.cursor().execute(f"SELECT {COLUMNS} FROM {table} ORDER BY series_id, bucket_us").fetchall()


def _same(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g[:4] == w[:4] and g[7:11:2] == w[7:11:2] and g[12:] == w[12:], (g, w)
        for a, b in zip(g[4:12], w[4:12], strict=True):
            assert (a is None and b is None) or a == pytest.approx(b, rel=1e-9, abs=1e-6), (g, w)


def _commit(historian: DuckDBHistorian, rows: list[tuple[int, int, float | None, str | None, int]]) -> None:
    batch = IngestBatch()
    for sid, ts, value, text, quality in rows:
        batch.samples.add(sid, ts, value, text, quality)
    historian.commit(batch)


@pytest.mark.parametrize("staleness_us", [5 * MIN, 90 * S])
@pytest.mark.parametrize(("seed", "way"), [(1, "numpy"), (2, "numpy"), (1, "sql")])
@pytest.mark.parametrize("follow", ["every commit", "every few commits"])
@pytest.mark.parametrize("order", ["in order", "shuffled within each commit"])
def test_in_order_batches_equal_a_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, staleness_us: int,
                                          seed: int, follow: str, order: str, way: str) -> None:
    """Shuffled within a commit, each commit is still newer than the last. The deltas are worked
    out in numpy (``rollup_delta.py``), or by the SQL query that takes batches numpy does not order."""
    if way == "sql":
        monkeypatch.setattr(rollup_append, "ordered", lambda new: None)
    db = Database(tmp_path / "h.duckdb")
    historian = DuckDBHistorian(db, rollup_staleness_us=staleness_us,
                                rollup_interval_s=0 if follow == "every commit" else None)
    rows = _stream(seed, 4, 1500)
    rng = random.Random(seed)
    i = 0
    while i < len(rows):
        k = rng.randrange(1, 60)
        part = rows[i:i + k]
        if order != "in order":
            rng.shuffle(part)
        _commit(historian, part)
        i += k
        if follow == "every few commits" and rng.random() < 0.2:
            assert historian.catch_up_rollups() > 0
    historian.catch_up_rollups()
    assert historian._follower._path._newest, "the append path was not taken"
    incremental = (_rows(db, "rollup_1m"), _rows(db, "rollup_1h"))
    historian.rebuild_rollups()
    _same(incremental[0], _rows(db, "rollup_1m"))
    _same(incremental[1], _rows(db, "rollup_1h"))
    db.close()


def test_late_data_retention_and_redelivery_fall_back(tmp_path: Path) -> None:
    db = Database(tmp_path / "h.duckdb")
    historian = DuckDBHistorian(db, rollup_interval_s=0)
    rows = _stream(3, 3, 900)
    _commit(historian, rows[:300])
    _commit(historian, rows[300:600])
    _commit(historian, rows[300:600])  # a redelivery: nothing new, same rollups
    _commit(historian, rows[650:700])
    _commit(historian, rows[600:650])  # late
    historian.delete_before(rows[100][1])
    _commit(historian, rows[700:])
    kept = (_rows(db, "rollup_1m"), _rows(db, "rollup_1h"))
    cut = rows[100][1]
    historian.rebuild_rollups(start_us=cut + 10 * MIN)  # buckets near the raw cutoff keep what they knew
    lo = cut + 10 * MIN - (cut + 10 * MIN) % H + H
    _same([r for r in kept[0] if r[1] >= lo], [r for r in _rows(db, "rollup_1m") if r[1] >= lo])
    _same([r for r in kept[1] if r[1] >= lo], [r for r in _rows(db, "rollup_1h") if r[1] >= lo])
    assert historian.count_samples() == 900 - len([r for r in rows[:900] if r[1] < cut])
    db.close()
