"""The historian in DuckDB: samples, events and dead letters, in the shared database file.

Decisions, in one place:

* Timestamps are BIGINT epoch microseconds (UTC), as the port speaks them.
* Samples have no primary key. Idempotence on (series_id, ts) comes from an anti-join insert
  bounded by the batch's ts range (zone maps prune old row groups), done under ``write_lock``; DuckDB
  allows one read-write process, so that lock is the only writer. Measured on 50k-row batches
  over a 10M-row table, this was ~3x faster than PRIMARY KEY + ``INSERT OR IGNORE`` and the file
  was ~7x smaller (the ART index dominated it). Within one batch the first occurrence wins.
* Events are idempotent the same way on (tenant, asset, ts, kind, type, data); ``data`` is stored
  as canonical JSON (sorted keys, compact), so equal dicts compare equal.
* Every non-empty commit gets the next ingest sequence number, also when everything in it was a
  duplicate. The last one is kept in ``historian_seq`` inside the same transaction, so a number is
  never handed out twice, even after a reopen. An empty batch writes nothing and returns
  ``last_seq()`` unchanged.
* Aggregates use good and uncertain samples only; bad-quality samples are excluded everywhere
  (for ``twa`` a bad sample ends the previous hold). ``AggRow.count`` is the number of samples
  the value was computed from: numeric samples for avg/min/max/sum, numeric and text samples for
  count/first/last, and for twa the samples whose hold overlaps the bucket (including one carried
  in from before it). Empty buckets have value None and count 0, also for ``count``.
* Rollups (1 minute, 1 hour) are not written by ``commit``: the rollup follower
  (``rollup_follower.py``) merges the committed samples into them behind the commits, within about
  ``rollup_interval_s`` (2 s), and keeps the seq up to which they are complete. ``aggregate``
  answers from the coarsest level that tiles the requested buckets (see ``rollups.py``), except
  buckets that samples not yet merged can change (every bucket ending after the oldest such
  sample of the series, past the retention guards): those come from raw, in the same snapshot, so
  answers are exact whatever the lag. Migration 2 adds the rollups and flags a rebuild from raw,
  which the constructor runs (also when ``rollup_staleness_us`` differs from the one the rollups
  were built with); migration 3 adds the follower's mark.
* ``close()`` stops the follower and catches the rollups up; the ``Database`` stays open (whoever
  created it owns it; closing it first closes this historian). Later calls raise ``StoreUnavailable``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.query import Agg, AggRow, SampleChanges, StoredDeadLetter, StoredEvent
from shopfloor.domain.records import DeadLetter, EventRecord, IngestBatch, Quality, Sample, SampleBatch
from shopfloor.storage.duckdb import changes
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.forward import ForwardCheck, Newest
from shopfloor.storage.duckdb.rollup_follower import DEFAULT_BATCH_ROWS, DEFAULT_INTERVAL_S, RollupFollower
from shopfloor.storage.duckdb.rollup_follower import MIGRATION as FOLLOW_MIGRATION
from shopfloor.storage.duckdb.rollups import MIGRATION as ROLLUPS_MIGRATION
from shopfloor.storage.duckdb.rollups import Marks, Rollups, check_level, register

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_ROLLUP_STALENESS_US = 300_000_000

MIGRATIONS: list[str] = [
    """
    CREATE TABLE samples (
        series_id INTEGER NOT NULL,
        ts BIGINT NOT NULL,
        value DOUBLE,
        text VARCHAR,
        quality SMALLINT NOT NULL,
        seq BIGINT NOT NULL
    );
    CREATE TABLE events (
        seq BIGINT NOT NULL,
        tenant_id INTEGER NOT NULL,
        asset_id INTEGER NOT NULL,
        ts BIGINT NOT NULL,
        kind VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        data JSON NOT NULL
    );
    CREATE TABLE dead_letters (
        id BIGINT NOT NULL PRIMARY KEY,
        tenant_id INTEGER,
        device VARCHAR NOT NULL,
        topic VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        detail VARCHAR NOT NULL,
        payload BLOB NOT NULL,
        received_at BIGINT NOT NULL,
        seq BIGINT NOT NULL
    );
    CREATE TABLE historian_seq (last_seq BIGINT NOT NULL);
    INSERT INTO historian_seq VALUES (0);
    """,
    ROLLUPS_MIGRATION,
    FOLLOW_MIGRATION,
]

BAD = int(Quality.BAD)
_MAX_STALENESS_US = 2**60  # ~36,000 years: keeps ts + staleness inside BIGINT

_NUMERIC_EXPR = {
    Agg.AVG: "avg(s.value)",
    Agg.MIN: "min(s.value)",
    Agg.MAX: "max(s.value)",
    Agg.SUM: "sum(s.value)",
    Agg.COUNT: "count(s.ts)",
    Agg.FIRST: "first(s.value ORDER BY s.ts)",
    Agg.LAST: "last(s.value ORDER BY s.ts)",
}

_TWA_SQL = f"""
WITH pts AS (
    SELECT ts, value, quality FROM samples WHERE series_id = $sid AND ts >= $lo AND ts < $hi
    UNION ALL
    SELECT * FROM (
        SELECT ts, value, quality FROM samples
        WHERE series_id = $sid AND ts >= $since AND ts < $lo ORDER BY ts DESC LIMIT 1
    )
), holds AS (
    SELECT ts AS h0, least(coalesce(lead(ts) OVER (ORDER BY ts), ts + $st), ts + $st) AS h1,
           value, quality
    FROM pts
), good AS (
    SELECT h0, h1, value FROM holds
    WHERE quality < {BAD} AND value IS NOT NULL AND h1 > h0 AND h1 > $lo
), spans AS (
    SELECT b.i, g.value, least(g.h1, b.b1) - greatest(g.h0, b.b0) AS dt
    FROM _sf_buckets b JOIN good g ON g.h0 < b.b1 AND g.h1 > b.b0
)
SELECT b.i, sum(o.value * o.dt) AS num, sum(o.dt) AS den, count(o.dt) AS n
FROM _sf_buckets b LEFT JOIN spans o ON o.i = b.i
GROUP BY b.i ORDER BY b.i
"""


class DuckDBHistorian:
    """``shopfloor.ports.store.Historian`` on a shared :class:`Database` (component "historian")."""

    def __init__(self, db: Database, rollup_staleness_us: int = DEFAULT_ROLLUP_STALENESS_US,
                 rollup_interval_s: float | None = DEFAULT_INTERVAL_S,
                 rollup_batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        """``rollup_interval_s``: how often the rollup follower catches up (0: after every commit;
        None: only when asked, see ``catch_up_rollups``); ``rollup_batch_rows``: pending rows that
        wake it early."""
        self._db = db
        self._closed = False
        self._rollups = Rollups(rollup_staleness_us)
        self._forward = ForwardCheck()  # each series' newest stored ts
        self._follower = RollupFollower(db, self._rollups, rollup_interval_s, rollup_batch_rows)
        db.migrate("historian", MIGRATIONS)
        with self._read() as cur:
            rows = cur.execute(
                "SELECT greatest((SELECT max(last_seq) FROM historian_seq),"
                " (SELECT max(seq) FROM samples), (SELECT max(seq) FROM events),"
                " (SELECT max(seq) FROM dead_letters), 0),"
                " (SELECT coalesce(max(id), 0) FROM dead_letters)"
            ).fetchall()
        if not rows:
            raise StoreUnavailable("could not read the historian's last sequence number")
        self._seq = int(rows[0][0])
        self._dead_letter_id = int(rows[0][1])
        self._open_rollups()
        self._follower.start()
        db.on_close(self.close)

    def _open_rollups(self) -> None:
        """Load the retention marks; rebuild the rollups if migration 2 asked for it or the
        staleness they were built with has changed."""
        with self._read() as cur:
            self._rollups.marks = Marks.load(cur)
            pending, built_with = cur.execute("SELECT rebuild_pending, staleness_us FROM rollup_state").fetchall()[0]
        if pending or built_with != self._rollups.staleness_us:
            log.info("rebuilding the historian's rollups from raw samples (staleness %d µs)",
                     self._rollups.staleness_us)
            self.rebuild_rollups()

    # ---- writing ---------------------------------------------------------------------------

    def commit(self, batch: IngestBatch) -> int:
        """Store ``batch`` in one transaction and return its sequence number (see module docs).

        Raises ``InvalidInput`` for malformed columns (a bug in the caller; retrying will not
        help) and ``StoreUnavailable`` when DuckDB fails; in both cases nothing is committed.
        """
        if len(batch) == 0:
            return self.last_seq()
        self._check_open()
        samples = _samples_table(batch.samples) if len(batch.samples) else None
        events = _events_table(batch.events) if batch.events else None
        with self._db.write_lock:
            seq = self._seq + 1
            dead = (_dead_letters_table(batch.dead_letters, self._dead_letter_id)
                    if batch.dead_letters else None)
            forward: Newest | None = None
            try:
                with self._db.transaction() as cur:
                    if samples is not None:
                        forward = self._write_samples(cur, samples, seq)
                        # what the follower will merge: all of them on the append path
                        self._follower.expect(seq, samples if forward is not None else None)
                    if events is not None:
                        _insert_events(cur, events, seq)
                    if dead is not None:
                        _insert_dead_letters(cur, dead, seq)
                    cur.execute("UPDATE historian_seq SET last_seq = ?", [seq])
            except BaseException as exc:
                self._follower.withdraw(seq)
                if isinstance(exc, duckdb.Error):
                    raise StoreUnavailable(f"could not commit ingest batch {seq}: {exc}") from exc
                raise
            self._seq = seq
            self._dead_letter_id += len(batch.dead_letters)
            if forward is not None:
                self._forward.committed(forward)
            elif samples is not None:
                self._forward.after_insert(samples)
        self._follower.committed(len(batch.samples))
        return seq

    def _write_samples(self, cur: duckdb.DuckDBPyConnection, samples: pa.Table, seq: int) -> Newest | None:
        """Insert the batch's samples (the rollups follow later): a plain append when every series
        only moves forward (``forward.py``; returns what it found), else the anti-join insert."""
        forward = self._forward.check(cur, samples)
        if forward is None:
            _insert_samples(cur, samples, seq)
            return None
        register(cur, "_sf_new", samples)
        try:
            cur.execute("INSERT INTO samples (series_id, ts, value, text, quality, seq)"
                        " SELECT series_id, ts, value, text, quality, ? FROM _sf_new", [seq])
        finally:
            cur.unregister("_sf_new")
        return forward

    def last_seq(self) -> int:
        return self._seq

    def samples_since(self, seq: int, limit: int, upto: int | None = None) -> SampleChanges:
        with self._read() as cur:
            return changes.samples_since(cur, seq, limit, upto)

    def events_since(self, seq: int, limit: int, upto: int | None = None) -> list[StoredEvent]:
        with self._read() as cur:
            return changes.events_since(cur, seq, limit, upto)

    def delete_before(self, cutoff_us: int, series_ids: Sequence[int] | None = None) -> int:
        """Drop raw samples older than ``cutoff_us`` and remember the cutoff: rollups of buckets
        whose raw data may be gone are no longer recomputed (they keep what they know)."""
        sql = "DELETE FROM samples WHERE ts < ?"
        params: list[Any] = [cutoff_us]
        if series_ids is not None:
            if not series_ids:
                return 0
            sql += " AND series_id IN (SELECT unnest(?::INTEGER[]))"
            params.append(list(series_ids))

        def work(cur: duckdb.DuckDBPyConnection) -> int:
            return int(cur.execute(sql, params).fetchall()[0][0])

        return self._retain("raw", cutoff_us, series_ids, work)

    def delete_rollups_before(self, level: str, cutoff_us: int, series_ids: Sequence[int] | None = None) -> int:
        """Drop rollup rows of ``level`` ("1m" or "1h") whose bucket starts before ``cutoff_us``;
        from then on that level answers only windows starting at or after the cutoff."""
        check_level(level)
        if series_ids is not None and not series_ids:
            return 0
        return self._retain(level, cutoff_us, series_ids,
                            lambda cur: self._rollups.delete_before(cur, level, cutoff_us, series_ids))

    def rebuild_rollups(self, series_ids: Sequence[int] | None = None, start_us: int | None = None,
                        end_us: int | None = None) -> None:
        """Recompute from raw the rollup rows of every bucket overlapping [start, end) (default: all
        time) of ``series_ids`` (default: every series). Buckets whose raw data retention may have
        removed are kept as they are. To repair a change of raw data in [a, b), pass end = b +
        ``rollup_staleness_us``, since a sample's hold reaches that far."""
        if series_ids is not None and not series_ids:
            return

        everything = series_ids is None and start_us is None and end_us is None

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            self._follower.forget()
            self._rollups.rebuild(cur, series_ids, start_us, end_us)
            if everything:  # under the write lock: raw holds exactly the commits up to self._seq
                cur.execute("UPDATE rollup_state SET rebuild_pending = false, staleness_us = ?",
                            [self._rollups.staleness_us])
                self._follower.set_mark(cur, self._seq)

        with self._db.write_lock, self._follower.lock:
            if not everything:  # else rows merged later would count twice in the rebuilt range
                self._follower.catch_up()
            self._write("rollup rebuild", work)

    def catch_up_rollups(self) -> int:
        """Merge every committed sample not yet in the rollups now; return how many there were.
        (The follower does this by itself; tests, benches and shutdown call it.)"""
        self._check_open()
        return self._follower.catch_up()

    def rollups_pending(self) -> int:
        """Samples committed since the follower's last catch-up began (an upper bound)."""
        return self._follower.pending()

    def delete_events_before(self, cutoff_us: int) -> int:
        return self._delete("DELETE FROM events WHERE ts < ?", [cutoff_us])

    def close(self) -> None:
        """Stop the rollup follower, catch the rollups up and mark the historian closed; the
        ``Database`` stays open (its creator closes it)."""
        if self._closed:
            return
        self._follower.stop()
        try:
            self._follower.catch_up()
        except StoreUnavailable as exc:  # the mark is stored: the next open catches up
            log.warning("closing the historian: %s", exc)
        self._closed = True

    # ---- time series -----------------------------------------------------------------------

    def raw(self, series_id: int, start_us: int, end_us: int, limit: int = 10_000) -> list[Sample]:
        _check_limit(limit)
        with self._read() as cur:
            rows = cur.execute(
                "SELECT series_id, ts, value, text, quality FROM samples"
                " WHERE series_id = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                [series_id, start_us, end_us, limit],
            ).fetchall()
        return [Sample(int(r[0]), int(r[1]), r[2], r[3], int(r[4])) for r in rows]

    def latest(self, series_ids: Sequence[int]) -> dict[int, Sample]:
        if not series_ids:
            return {}
        with self._read() as cur:
            # max(ts) per series, joined back: about twice as fast as a window over all rows
            rows = cur.execute(
                "WITH newest AS (SELECT series_id, max(ts) AS ts FROM samples"
                "   WHERE series_id IN (SELECT unnest(?::INTEGER[])) GROUP BY series_id)"
                " SELECT s.series_id, s.ts, s.value, s.text, s.quality"
                " FROM samples s JOIN newest USING (series_id, ts)",
                [list(series_ids)],
            ).fetchall()
        return {int(r[0]): Sample(int(r[0]), int(r[1]), r[2], r[3], int(r[4])) for r in rows}

    def count_samples(self, series_ids: Sequence[int] | None = None) -> int:
        sql = "SELECT count(*) FROM samples"
        params: list[Any] = []
        if series_ids is not None:
            if not series_ids:
                return 0
            sql += " WHERE series_id IN (SELECT unnest(?::INTEGER[]))"
            params.append(list(series_ids))
        with self._read() as cur:
            rows = cur.execute(sql, params).fetchall()
        return int(rows[0][0])

    def aggregate(self, series_id: int, buckets: Sequence[tuple[int, int]], agg: Agg,
                  staleness_us: int) -> list[AggRow]:
        """One row per bucket, in the given order. Each bucket is answered by the coarsest rollup
        level that tiles it and still holds it, else from raw; one SQL statement per source."""
        agg = Agg(agg)
        if not buckets:
            return []
        if agg is Agg.TWA and staleness_us <= 0:
            raise InvalidInput("staleness must be a positive number of microseconds for a "
                               "time-weighted average")
        found: dict[int, tuple[float | None, int]] = {}
        with self._read() as cur:
            cur.begin()  # one snapshot: the follower's mark, the rollups and raw agree
            try:
                by_source: dict[str | None, list[int]] = {}
                pending_from = _pending_from(cur, series_id)
                for i, source in enumerate(self._rollups.sources(series_id, buckets, agg, staleness_us,
                                                                 pending_from)):
                    by_source.setdefault(source, []).append(i)
                for source, idx in by_source.items():
                    found.update(zip(idx, self._aggregate_part(cur, source, series_id,
                                                                [buckets[i] for i in idx], agg, staleness_us),
                                     strict=True))
            finally:
                cur.rollback()
        return [AggRow(b0, b1, *found[i]) for i, (b0, b1) in enumerate(buckets)]

    def _aggregate_part(self, cur: duckdb.DuckDBPyConnection, source: str | None, series_id: int,
                        buckets: list[tuple[int, int]], agg: Agg,
                        staleness_us: int) -> list[tuple[float | None, int]]:
        """(value, count) per bucket from one source: a rollup level, or raw (None)."""
        lo = min(b[0] for b in buckets)
        hi = max(b[1] for b in buckets)
        register(cur, "_sf_buckets", pa.table({
            "i": pa.array(range(len(buckets)), pa.int32()),
            "b0": pa.array([b[0] for b in buckets], pa.int64()),
            "b1": pa.array([b[1] for b in buckets], pa.int64()),
        }))
        try:
            if source is not None:
                return self._rollups.rows(cur, source, series_id, lo, hi, agg)
            if agg is Agg.TWA:
                return self._twa_rows(cur, series_id, lo, hi, staleness_us)
            return _numeric_rows(cur, series_id, lo, hi, agg)
        finally:
            cur.unregister("_sf_buckets")

    def _twa_rows(self, cur: duckdb.DuckDBPyConnection, series_id: int, lo: int, hi: int,
                  staleness_us: int) -> list[tuple[float | None, int]]:
        st = min(staleness_us, _MAX_STALENESS_US)
        params = {"sid": series_id, "lo": lo, "hi": hi, "st": st, "since": lo - st}
        out: list[tuple[float | None, int]] = []
        for _, num, den, n in cur.execute(_TWA_SQL, params).fetchall():
            out.append((float(num) / float(den) if den else None, int(n)))
        return out

    # ---- events ----------------------------------------------------------------------------

    def events(self, tenant_id: int, *, asset_ids: Sequence[int] | None = None,
               kinds: Sequence[str] | None = None, start_us: int | None = None,
               end_us: int | None = None, limit: int = 1000) -> list[StoredEvent]:
        """The newest ``limit`` events of the tenant matching the filters, returned oldest first."""
        _check_limit(limit)
        where = ["tenant_id = ?"]
        params: list[Any] = [tenant_id]
        if asset_ids is not None:
            if not asset_ids:
                return []
            where.append("asset_id IN (SELECT unnest(?::INTEGER[]))")
            params.append(list(asset_ids))
        if kinds is not None:
            if not kinds:
                return []
            where.append("kind IN (SELECT unnest(?::VARCHAR[]))")
            params.append(list(kinds))
        if start_us is not None:
            where.append("ts >= ?")
            params.append(start_us)
        if end_us is not None:
            where.append("ts < ?")
            params.append(end_us)
        sql = (
            "SELECT * FROM (SELECT seq, tenant_id, asset_id, ts, kind, type, data::VARCHAR AS data"
            f" FROM events WHERE {' AND '.join(where)}"
            " ORDER BY ts DESC, seq DESC, asset_id DESC, kind DESC, type DESC, data DESC LIMIT ?)"
            " ORDER BY ts, seq, asset_id, kind, type, data"
        )
        with self._read() as cur:
            rows = cur.execute(sql, [*params, limit]).fetchall()
        return [_stored_event(r) for r in rows]

    def latest_events(self, tenant_id: int, kind: str,
                      asset_ids: Sequence[int] | None = None) -> dict[int, StoredEvent]:
        sql = ("SELECT seq, tenant_id, asset_id, ts, kind, type, data::VARCHAR FROM events"
               " WHERE tenant_id = ? AND kind = ?")
        params: list[Any] = [tenant_id, kind]
        if asset_ids is not None:
            if not asset_ids:
                return {}
            sql += " AND asset_id IN (SELECT unnest(?::INTEGER[]))"
            params.append(list(asset_ids))
        sql += (" QUALIFY row_number() OVER (PARTITION BY asset_id"
                " ORDER BY ts DESC, seq DESC, type DESC, data DESC) = 1")
        with self._read() as cur:
            rows = cur.execute(sql, params).fetchall()
        return {int(r[2]): _stored_event(r) for r in rows}

    # ---- dead letters ----------------------------------------------------------------------

    def dead_letters(self, tenant_id: int | None, *, reason: str | None = None, device: str | None = None,
                     limit: int = 100) -> list[StoredDeadLetter]:
        _check_limit(limit)
        sql = ("SELECT id, tenant_id, device, topic, reason, detail, payload, received_at FROM dead_letters"
               " WHERE tenant_id IS NOT DISTINCT FROM ?")
        params: list[Any] = [tenant_id]
        if reason is not None:
            sql += " AND reason = ?"
            params.append(str(reason))
        if device is not None:
            sql += " AND device = ?"
            params.append(device)
        sql += " ORDER BY received_at DESC, id DESC LIMIT ?"
        with self._read() as cur:
            rows = cur.execute(sql, [*params, limit]).fetchall()
        return [
            StoredDeadLetter(int(r[0]), None if r[1] is None else int(r[1]), r[2], r[3], r[4], r[5],
                             bytes(r[6]), int(r[7]))
            for r in rows
        ]

    def dead_letter_counts(self, tenant_id: int | None) -> list[tuple[str, str, int]]:
        """(device, reason, count) ordered by device, then reason."""
        with self._read() as cur:
            rows = cur.execute(
                "SELECT device, reason, count(*) FROM dead_letters WHERE tenant_id IS NOT DISTINCT FROM ?"
                " GROUP BY device, reason ORDER BY device, reason",
                [tenant_id],
            ).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    # ---- plumbing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the historian is closed")

    @contextmanager
    def _read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self._check_open()
        try:
            yield self._db.cursor()
        except duckdb.Error as exc:
            raise StoreUnavailable(f"historian query failed: {exc}") from exc

    def _delete(self, sql: str, params: list[Any]) -> int:
        return self._write("retention delete", lambda cur: int(cur.execute(sql, params).fetchall()[0][0]))

    def _write(self, what: str, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``work`` in one transaction under the write lock."""
        self._check_open()
        with self._db.write_lock:
            try:
                with self._db.transaction() as cur:
                    return work(cur)
            except duckdb.Error as exc:
                raise StoreUnavailable(f"{what} failed: {exc}") from exc

    def _retain(self, kind: str, cutoff_us: int, series_ids: Sequence[int] | None,
                delete: Callable[[duckdb.DuckDBPyConnection], int]) -> int:
        """``delete`` and record the retention mark in one transaction; the cached marks follow
        only once it has committed."""
        marks = self._rollups.marks.raised(kind, cutoff_us, series_ids)

        def work(cur: duckdb.DuckDBPyConnection) -> int:
            self._forward.forget()
            self._follower.forget()
            dropped = delete(cur)
            marks.write(cur)
            return dropped

        with self._db.write_lock, self._follower.lock:
            self._follower.catch_up()  # pending rows go into the rollups before raw may go
            dropped = self._write("retention delete", work)
            self._rollups.marks = marks
        return dropped


# ---- commit helpers (module level: pure functions of a cursor and a table) -----------------

def _samples_table(s: SampleBatch) -> pa.Table:
    try:
        return pa.table({
            "series_id": pa.array(s.series_id, pa.int32()),
            "ts": pa.array(s.ts_us, pa.int64()),
            "value": pa.array(s.value, pa.float64()),
            "text": _column(s.text, pa.string()),
            "quality": _column(s.quality, pa.int16()),
        })
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"malformed sample batch (columns must be parallel and typed): {exc}") from exc


def _column(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """``values`` as an array of ``type_``; one value repeated (no texts, all good) without
    converting each: the batch's columns are built holding the GIL, which the broker's loop wants."""
    n = len(values)
    first = values[0] if n else None
    if n and (first is None or type(first) is int) and values.count(first) == n:
        return pa.nulls(n, type_) if first is None else pa.repeat(pa.scalar(first, type_), n)
    return pa.array(values, type_)


def _insert_samples(cur: duckdb.DuckDBPyConnection, table: pa.Table, seq: int) -> None:
    """Insert the samples not stored yet (the first of each (series, ts) within the batch)."""
    lo, hi = _ts_range(table)
    register(cur, "_sf_samples", table.append_column("i", pa.array(range(table.num_rows), pa.int64())))
    try:
        cur.execute(
            "INSERT INTO samples (series_id, ts, value, text, quality, seq)"
            " SELECT b.series_id, b.ts, b.value, b.text, b.quality, ? FROM _sf_samples b"
            " WHERE NOT EXISTS (SELECT 1 FROM samples s WHERE s.series_id = b.series_id AND s.ts = b.ts"
            "                   AND s.ts BETWEEN ? AND ?)"
            " QUALIFY row_number() OVER (PARTITION BY b.series_id, b.ts ORDER BY b.i) = 1",
            [seq, lo, hi],
        )
    finally:
        cur.unregister("_sf_samples")


def _pending_from(cur: duckdb.DuckDBPyConnection, series_id: int) -> int | None:
    """The oldest ts among the series' samples that the rollups do not hold yet (None: none)."""
    mark = cur.execute("SELECT max(seq) FROM rollup_follow").fetchall()[0][0]
    rows = cur.execute("SELECT min(ts) FROM samples WHERE seq > ? AND series_id = ?",
                       [int(mark), series_id]).fetchall()
    return None if rows[0][0] is None else int(rows[0][0])


def _canonical_json(data: dict[str, Any]) -> str:
    try:
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"event data is not JSON: {exc}") from exc


def _events_table(events: list[EventRecord]) -> pa.Table:
    try:
        return pa.table({
            "tenant_id": pa.array([e.tenant_id for e in events], pa.int32()),
            "asset_id": pa.array([e.asset_id for e in events], pa.int32()),
            "ts": pa.array([e.ts_us for e in events], pa.int64()),
            "kind": pa.array([e.kind for e in events], pa.string()),
            "type": pa.array([e.type for e in events], pa.string()),
            "data": pa.array([_canonical_json(e.data) for e in events], pa.string()),
        })
    except (pa.ArrowException, TypeError, OverflowError) as exc:
        raise InvalidInput(f"malformed event: {exc}") from exc


def _insert_events(cur: duckdb.DuckDBPyConnection, table: pa.Table, seq: int) -> None:
    lo, hi = _ts_range(table)
    register(cur, "_sf_events", table)
    try:
        cur.execute(
            "INSERT INTO events (seq, tenant_id, asset_id, ts, kind, type, data)"
            " SELECT DISTINCT ?, b.tenant_id, b.asset_id, b.ts, b.kind, b.type, b.data::JSON"
            " FROM _sf_events b WHERE NOT EXISTS ("
            "   SELECT 1 FROM events e WHERE e.tenant_id = b.tenant_id AND e.asset_id = b.asset_id"
            "   AND e.ts = b.ts AND e.kind = b.kind AND e.type = b.type AND e.data::VARCHAR = b.data"
            "   AND e.ts BETWEEN ? AND ?)",
            [seq, lo, hi],
        )
    finally:
        cur.unregister("_sf_events")


def _dead_letters_table(rows: list[DeadLetter], last_id: int) -> pa.Table:
    try:
        return pa.table({
            "id": pa.array(range(last_id + 1, last_id + 1 + len(rows)), pa.int64()),
            "tenant_id": pa.array([d.tenant_id for d in rows], pa.int32()),
            "device": pa.array([d.device for d in rows], pa.string()),
            "topic": pa.array([d.topic for d in rows], pa.string()),
            "reason": pa.array([str(d.reason) for d in rows], pa.string()),
            "detail": pa.array([d.detail for d in rows], pa.string()),
            "payload": pa.array([bytes(d.payload) for d in rows], pa.binary()),
            "received_at": pa.array([d.received_us for d in rows], pa.int64()),
        })
    except (pa.ArrowException, TypeError, OverflowError) as exc:
        raise InvalidInput(f"malformed dead letter: {exc}") from exc


def _insert_dead_letters(cur: duckdb.DuckDBPyConnection, table: pa.Table, seq: int) -> None:
    register(cur, "_sf_dead_letters", table)
    try:
        cur.execute(
            "INSERT INTO dead_letters"
            " (id, tenant_id, device, topic, reason, detail, payload, received_at, seq)"
            " SELECT id, tenant_id, device, topic, reason, detail, payload, received_at, ?"
            " FROM _sf_dead_letters",
            [seq],
        )
    finally:
        cur.unregister("_sf_dead_letters")


def _numeric_rows(cur: duckdb.DuckDBPyConnection, series_id: int, lo: int, hi: int,
                  agg: Agg) -> list[tuple[float | None, int]]:
    numeric_only = agg in (Agg.AVG, Agg.MIN, Agg.MAX, Agg.SUM)
    sql = (
        f"SELECT b.i, {_NUMERIC_EXPR[agg]} AS v, count(s.ts) AS n FROM _sf_buckets b LEFT JOIN ("
        f"  SELECT ts, value FROM samples WHERE series_id = ? AND ts >= ? AND ts < ? AND quality < {BAD}"
        f"  {'AND value IS NOT NULL' if numeric_only else ''}"
        f") s ON s.ts >= b.b0 AND s.ts < b.b1 GROUP BY b.i ORDER BY b.i"
    )
    out: list[tuple[float | None, int]] = []
    for _, v, n in cur.execute(sql, [series_id, lo, hi]).fetchall():
        n = int(n)
        out.append((None if n == 0 or v is None else float(v), n))
    return out


def _ts_range(table: pa.Table) -> tuple[int, int]:
    bounds = pc.min_max(table.column("ts"))
    return int(bounds["min"].as_py()), int(bounds["max"].as_py())


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidInput("limit must not be negative")


def _stored_event(r: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(int(r[0]), int(r[1]), int(r[2]), int(r[3]), str(r[4]), str(r[5]), json.loads(r[6]))
