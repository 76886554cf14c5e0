"""Whether a batch only moves forward: the DuckDB historian's cheap idempotence check.

Samples are idempotent on (series, ts) (see ``historian.py``). A live plant sends each series'
samples in time order, so nearly every batch holds, per series, only samples newer than the newest
one stored, and no (series, ts) twice: such a batch needs no anti-join against the table and is
appended as it is. This keeps each series' newest stored ts in memory (DuckDB has one writer, and
commits hold the database's write lock), filled from the table for series it has not seen,
advanced after each commit that succeeded and dropped by retention. Everything is Arrow compute
on the batch's columns (numpy) plus one dict look-up per series of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import numpy as np
import pyarrow as pa

_SEED_SQL = """
SELECT series_id, max(ts) FROM samples WHERE series_id IN (SELECT unnest($ids::INTEGER[])) GROUP BY series_id
"""

_NONE = -(2**63)  # the newest ts of a series with no samples stored
Newest = tuple[list[int], list[int]]  # series ids, and the newest ts of each


class ForwardCheck:
    def __init__(self) -> None:
        self._newest: dict[int, int] = {}

    def forget(self) -> None:
        self._newest.clear()

    def check(self, cur: duckdb.DuckDBPyConnection, samples: pa.Table) -> Newest | None:
        """For a batch (columns series_id, ts, ...): each series' newest ts in it, when every series
        only moves forward and no (series, ts) repeats; else None. (numpy: a sort of the two
        columns is several times faster than a hash group-by here.)"""
        sid = samples.column("series_id").to_numpy()
        ts = samples.column("ts").to_numpy()
        order = np.lexsort((ts, sid))
        sid, ts = sid[order], ts[order]
        same = sid[1:] == sid[:-1]
        if bool(np.any(same & (ts[1:] == ts[:-1]))):
            return None  # a (series, ts) twice in the batch
        starts = np.flatnonzero(np.concatenate(([True], ~same)))
        ends = np.concatenate((starts[1:] - 1, [len(sid) - 1]))
        sids: list[int] = sid[starts].tolist()
        unknown = [s for s in sids if s not in self._newest]
        if unknown:
            self._seed(cur, unknown)
        known = np.fromiter((self._newest[s] for s in sids), np.int64, len(sids))
        if not bool(np.all(ts[starts] > known)):
            return None
        return sids, ts[ends].tolist()

    def _seed(self, cur: duckdb.DuckDBPyConnection, series_ids: Sequence[int]) -> None:
        found = {int(r[0]): int(r[1]) for r in cur.execute(_SEED_SQL, {"ids": list(series_ids)}).fetchall()}
        for sid in series_ids:
            self._newest[sid] = found.get(sid, _NONE)

    def committed(self, newest: Newest) -> None:
        """The batch ``check`` accepted has committed."""
        self._newest.update(zip(*newest, strict=True))

    def after_insert(self, samples: pa.Table) -> None:
        """A batch that went through the anti-join has committed: a series whose batch reached its
        known newest ts (or beyond) may have a newer one now; forget those, keep the rest."""
        per = samples.group_by("series_id").aggregate([("ts", "max")])
        for sid, hi in zip(per["series_id"].to_pylist(), per["ts_max"].to_pylist(), strict=True):
            known = self._newest.get(sid)
            if known is None or hi >= known:
                self._newest.pop(sid, None)
