"""Cost of rollup maintenance in the DuckDB historian's commit, per 50,000-sample batch.

Run with the project's interpreter: ``.venv/bin/python bench/historian_rollups.py [--batches N]``.
Commits the same stream into two fresh file databases, one with rollup maintenance and one with it
switched off (``Rollups.refresh`` replaced by a no-op), batch by batch in turn so that a busy
machine slows both alike, and prints the median commit time
for three shapes of batch: in order (200 series, 250 s of 1 Hz each), late (the same, but
for a stretch one hour back, between samples already stored), and sparse (50,000 series, one
sample each). Also times ``rebuild_rollups()`` over everything written and an hourly and a
minute twa over a day of one series, from rollups and from raw.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from shopfloor.domain.query import Agg, Interval, buckets
from shopfloor.domain.records import IngestBatch
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian
from shopfloor.storage.duckdb.rollups import Rollups

S = 1_000_000
T0 = 1_700_000_000 * S - (1_700_000_000 * S) % (3600 * S)


def _dense(start_us: int, series: int = 200, seconds: int = 250, offset_us: int = 0) -> IngestBatch:
    batch = IngestBatch()
    for t in range(seconds):
        for s in range(1, series + 1):
            batch.samples.add(s, start_us + t * S + offset_us, float((s * 7 + t) % 113))
    return batch


def _sparse(start_us: int) -> IngestBatch:
    batch = IngestBatch()
    for s in range(1, 50_001):
        batch.samples.add(100_000 + s, start_us + (s % 250) * S, float(s % 97))
    return batch


def _open(path: Path, rollups: bool) -> tuple[Database, DuckDBHistorian]:
    db = Database(path)
    store = DuckDBHistorian(db)
    if not rollups:
        store._rollups.refresh = lambda cur, ranges: None  # type: ignore[method-assign]
    return db, store


def _commits(tmp: Path, batches: int) -> tuple[dict[str, dict[str, float]], DuckDBHistorian, Database]:
    """Both stores get the same batches, alternately (so that a busy machine slows both alike)."""
    stores = {"without": _open(tmp / "plain.duckdb", False), "with": _open(tmp / "rollups.duckdb", True)}
    timings: dict[str, dict[str, list[float]]] = {k: {"in order": [], "late": [], "sparse": []} for k in stores}
    for i in range(batches):
        start = T0 + i * 250 * S
        for shape, batch in (("in order", _dense(start)),
                             ("late", _dense(start - 3600 * S, offset_us=S // 2)),
                             ("sparse", _sparse(start + 7))):
            for name in (["with", "without"] if i % 2 else ["without", "with"]):
                t0 = time.perf_counter()
                stores[name][1].commit(batch)
                timings[name][shape].append(time.perf_counter() - t0)
    db, store = stores["without"]
    store.close()
    db.close()
    medians = {k: {shape: statistics.median(v) * 1000 for shape, v in t.items()} for k, t in timings.items()}
    db, store = stores["with"]
    return medians, store, db


def _queries(store: DuckDBHistorian) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    store.rebuild_rollups()
    out["rebuild all"] = (time.perf_counter() - t0) * 1000
    day = buckets(T0 - 3600 * S, T0 + 23 * 3600 * S, Interval(1, "h"))
    minutes = buckets(T0 - 3600 * S, T0 + 23 * 3600 * S, Interval(1, "m"))
    for name, grid in (("query 24 x 1h twa", day), ("query 1440 x 1m twa", minutes)):
        for source in ("rollups", "raw"):
            if source == "raw":
                store._rollups.sources = lambda s, b, *a: [None] * len(b)  # type: ignore[method-assign]
            t0 = time.perf_counter()
            for _ in range(10):
                store.aggregate(7, grid, Agg.TWA, store._rollups.staleness_us)
            out[f"{name} from {source}"] = (time.perf_counter() - t0) * 100
            if source == "raw":
                del store._rollups.sources
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    assert Rollups  # the class whose refresh is switched off
    with tempfile.TemporaryDirectory() as tmp:
        medians, store, db = _commits(Path(tmp), args.batches)
        try:
            samples = store.count_samples()
            rest = _queries(store)
        finally:
            store.close()
            db.close()
    print(f"{samples:,} samples written per run; median ms per 50,000-sample commit")
    for shape in ("in order", "late", "sparse"):
        a, b = medians["without"][shape], medians["with"][shape]
        print(f"  {shape:9s} without rollups {a:7.1f}   with rollups {b:7.1f}   (+{b - a:.1f})")
    for k, v in rest.items():
        print(f"  {k}: {v:.1f} ms")


if __name__ == "__main__":
    main()
