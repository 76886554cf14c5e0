"""Cost of the DuckDB historian's commit and of its rollup follower, per 50,000-sample batch.

Run with the project's interpreter: ``.venv/bin/python bench/historian_rollups.py [--batches N]
[--every K]``. A commit appends raw rows only; the rollup follower merges them into the rollups
behind the commits (``storage/duckdb/rollup_follower.py``). For three shapes of batch, each into a
fresh file database with the follower switched to "only when asked": in order (200 series, 250 s of
1 Hz each), late (the same, but for a stretch one hour back, between samples already stored) and
sparse (50,000 series, one sample each). Prints the median commit time, and the follower's time per
batch when it catches up after every batch and after every ``K`` batches (K x 50,000 rows at once,
what the thread does under load). Then times ``rebuild_rollups()`` and an hourly and a minute twa over
a day of one series: from rollups, from raw, and with the follower lagging (one batch pending).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from shopfloor.domain.query import Agg, Interval, buckets
from shopfloor.domain.records import IngestBatch
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.historian import DuckDBHistorian

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


SHAPES: dict[str, Callable[[int], IngestBatch]] = {
    "in order": lambda i: _dense(T0 + i * 250 * S),
    # every other batch one hour back, between the samples of an in-order one
    "late": lambda i: _dense(T0 + (i // 2) * 250 * S - (0 if i % 2 == 0 else 3600 * S),
                             offset_us=0 if i % 2 == 0 else S // 2),
    "sparse": lambda i: _sparse(T0 + i * 250 * S + 7),
}


def _run(path: Path, shape: str, batches: int, every: int) -> tuple[list[float], float, DuckDBHistorian, Database]:
    """(commit seconds per batch, follower seconds in all) for one shape."""
    db = Database(path)
    store = DuckDBHistorian(db, rollup_interval_s=None)
    work = [SHAPES[shape](i) for i in range(batches)]
    commits: list[float] = []
    follow = 0.0
    for i, batch in enumerate(work, 1):
        t0 = time.perf_counter()
        store.commit(batch)
        commits.append(time.perf_counter() - t0)
        if i % every == 0 or i == len(work):
            t0 = time.perf_counter()
            store.catch_up_rollups()
            follow += time.perf_counter() - t0
    return commits, follow, store, db


def _queries(store: DuckDBHistorian) -> dict[str, float]:
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    store.rebuild_rollups()
    out["rebuild all"] = (time.perf_counter() - t0) * 1000
    day = buckets(T0 - 3600 * S, T0 + 23 * 3600 * S, Interval(1, "h"))
    minutes = buckets(T0 - 3600 * S, T0 + 23 * 3600 * S, Interval(1, "m"))

    def timed(what: str, grid: list[tuple[int, int]]) -> None:
        t0 = time.perf_counter()
        for _ in range(10):
            store.aggregate(7, grid, Agg.TWA, store._rollups.staleness_us)
        out[what] = (time.perf_counter() - t0) * 100

    for name, grid in (("query 24 x 1h twa", day), ("query 1440 x 1m twa", minutes)):
        timed(f"{name} from rollups", grid)
        store._rollups.sources = lambda s, b, *a: [None] * len(b)  # type: ignore[method-assign]
        timed(f"{name} from raw", grid)
        del store._rollups.sources
    last = max(r.ts_us for r in store.raw(7, T0, T0 + 10**6 * S, limit=10**6))
    store.commit(_dense(last + S))  # the follower lags by one batch: the newest buckets come from raw
    for name, grid in (("query 24 x 1h twa", day), ("query 1440 x 1m twa", minutes)):
        timed(f"{name}, follower one batch behind", grid)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--batches", type=int, default=8, help="50,000-sample batches per shape")
    parser.add_argument("--every", type=int, default=4, help="the batched follower catches up after this many")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; median ms per 50,000-sample commit, follower ms per batch")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            commits, each, store, db = _run(Path(tmp) / f"{shape}-1.duckdb", shape, args.batches, 1)
            store.close()
            db.close()
            _, batched, store, db = _run(Path(tmp) / f"{shape}-k.duckdb", shape, args.batches, args.every)
            if shape == "in order":
                rest = _queries(store)
            store.close()
            db.close()
            print(f"  {shape:9s} commit {statistics.median(commits) * 1000:7.1f}   follower after every batch "
                  f"{each / args.batches * 1000:7.1f}   after every {args.every} {batched / args.batches * 1000:7.1f}")
    for k, v in rest.items():
        print(f"  {k}: {v:.1f} ms")


if __name__ == "__main__":
    main()
