"""The historian in PostgreSQL: samples, events and dead letters in the installation's schema.

The same port and contract as the DuckDB historian (whose docstring lists the shared semantics:
sequence numbers, idempotence, which samples aggregates use, ``AggRow.count``, twa). What differs:

* Timestamps are ``timestamptz`` columns (the port's epoch microseconds, exactly), so Grafana and
  psql read them as times. ``samples`` is range-partitioned by ``ts`` (see ``partitions.py``: one
  day per partition by default, created ahead and on demand, never a default partition) with
  PRIMARY KEY (series_id, ts).
* Partition width: one day. Retention policies are whole days (30 by default), so a retention run
  whose cutoff falls on a UTC midnight drops whole partitions and deletes nothing row by row (any
  other cutoff DELETEs the rows of one partition up to it; a call for some series only drops a
  partition once every series in it has been cut past its end). A day's primary-key index stays
  small enough to stay cached while it is written, and a month is ~35 partitions, far below where
  planning over partitions gets slow. With raw retention of a year or more, choose
  ``partition_interval="1 week"``.
* Writes: binary COPY straight into ``samples`` (unique on (series_id, ts)); on a unique violation
  the COPY is rolled back to a savepoint and the batch goes through a staging table with
  ``ON CONFLICT DO NOTHING`` (see ``pg_copy.py``). Events the same way, unique on
  (tenant, asset, ts, kind, type, md5 of the jsonb text) - jsonb's text form is canonical, so
  equal dicts are equal events. Dead letters record deliveries and are only COPYed.
* Ingest sequence: the first statement of every commit is ``UPDATE historian_seq SET last_seq =
  last_seq + 1``, whose row lock is held until the commit ends. Several processes committing at once
  therefore get distinct numbers that are gapless and **in commit order**: when a reader sees seq N,
  every commit numbered below N is visible too, so a consumer that replays "seq > last processed"
  from the store never skips one (a PostgreSQL SEQUENCE would hand out numbers in start order and
  leave that hole open). The price is that commits serialise on that row, for the COPY and one
  small row of bookkeeping: batches should be large (thousands of samples) - see
  docs/postgres-schema.md for what that costs. A failed commit rolls its number back with
  everything else.
* Rollups (1 minute, 1 hour; ``pg_rollups.py``) have the same rows and rules as DuckDB's, and are
  not written by ``commit``: the rollup follower (``pg_follower.py``; one at a time per
  installation, whichever process gets its lock) merges the committed samples into them behind the
  commits, within about ``rollup_interval_s`` (5 s), recomputing from raw the minutes they
  touch. ``aggregate`` answers each bucket from the coarsest rollup that tiles it and still holds
  it, else from raw samples - and from raw every bucket that samples not merged yet can change,
  read in the same snapshot, so answers are exact whatever the lag: one SQL statement per source.
  Buckets go in as two ``timestamptz[]`` arrays (``unnest .. WITH ORDINALITY``) and each reads its
  own index range (LATERAL), so they may come in any order, with gaps, or overlapping.
* Errors: connection and server failures raise ``StoreUnavailable``; values PostgreSQL would refuse
  or truncate (integers too wide for their column, timestamps outside the years 1 to 9999, event
  data that is not JSON) raise ``InvalidInput``; either way nothing of the commit is stored. Text
  PostgreSQL cannot hold (NUL, unpaired surrogates) is stored with U+FFFD instead (``pg_rows.py``).
* ``close()`` stops the follower and catches the rollups up; it leaves the ``PgDatabase`` open (its
  creator owns it; closing it first closes this historian).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.query import Agg, AggRow, SampleChanges, StoredDeadLetter, StoredEvent
from shopfloor.domain.records import IngestBatch, Quality, Sample
from shopfloor.domain.timeutil import MAX_US, MIN_US, now_us, to_us
from shopfloor.ports.clock import Clock
from shopfloor.storage.postgres import changes, pg_copy, pg_follower, pg_rollups, pg_rows
from shopfloor.storage.postgres.database import PgDatabase
from shopfloor.storage.postgres.historian_schema import MIGRATIONS
from shopfloor.storage.postgres.partitions import SamplePartitions, parse_partition_interval, to_datetime
from shopfloor.storage.postgres.pg_follower import DEFAULT_BATCH_ROWS, DEFAULT_INTERVAL_S, PgRollupFollower

log = logging.getLogger(__name__)
BAD = int(Quality.BAD)
_AHEAD_CHECK_US = 3_600_000_000  # look at partitions ahead once an hour
_MAX_STALENESS_US = MAX_US - MIN_US  # a longer hold reaches past every timestamp kept
_SAMPLE_KEY = "series_id, ts"
_EVENT_KEY = "tenant_id, asset_id, ts, kind, type, md5(data::text)"

_BUCKETS = "unnest(%(b0)s::timestamptz[], %(b1)s::timestamptz[]) WITH ORDINALITY AS b(b0, b1, i)"
_IN_BUCKET = "series_id = %(sid)s AND ts >= b.b0 AND ts < b.b1"
_NUMERIC_SQL = {
    agg: f"SELECT b.i, a.v, a.n FROM {_BUCKETS} CROSS JOIN LATERAL ("
         f" SELECT {expr} AS v, count(*) AS n FROM samples"
         f" WHERE {_IN_BUCKET} AND quality < {BAD} AND value IS NOT NULL) a ORDER BY b.i"
    for agg, expr in {Agg.AVG: "avg(value)", Agg.MIN: "min(value)", Agg.MAX: "max(value)",
                      Agg.SUM: "sum(value)"}.items()
}
_NUMERIC_SQL[Agg.COUNT] = (
    f"SELECT b.i, a.n::float8, a.n FROM {_BUCKETS} CROSS JOIN LATERAL ("
    f" SELECT count(*) AS n FROM samples WHERE {_IN_BUCKET} AND quality < {BAD}) a ORDER BY b.i")
for _agg, _order in ((Agg.FIRST, "ASC"), (Agg.LAST, "DESC")):
    _NUMERIC_SQL[_agg] = (
        f"SELECT b.i, (SELECT value FROM samples WHERE {_IN_BUCKET} AND quality < {BAD}"
        f"             ORDER BY ts {_order} LIMIT 1),"
        f" (SELECT count(*) FROM samples WHERE {_IN_BUCKET} AND quality < {BAD})"
        f" FROM {_BUCKETS} ORDER BY b.i")

# Per bucket: the sample in force at its start (the newest before it, if still fresh) and the
# samples inside it; each holds until the next one, its staleness, or the bucket's end.
_STALENESS = "(%(st_s)s::int8 * interval '1 second' + %(st_us)s::int8 * interval '1 microsecond')"
_TWA_SQL = f"""
SELECT b.i, t.num, t.den, t.n FROM {_BUCKETS} CROSS JOIN LATERAL (
    SELECT sum(h.value * h.dt) AS num, sum(h.dt) AS den, count(*) AS n FROM (
        SELECT p.value, p.quality,
               extract(epoch FROM least(lead(p.ts) OVER (ORDER BY p.ts), p.ts + {_STALENESS}, b.b1)
                                  - greatest(p.ts, b.b0))::float8 AS dt
        FROM (
            SELECT * FROM (
                SELECT ts, value, quality FROM samples
                WHERE series_id = %(sid)s AND ts < b.b0 AND ts >= %(since)s ORDER BY ts DESC LIMIT 1
            ) c WHERE c.ts + {_STALENESS} > b.b0
            UNION ALL
            SELECT ts, value, quality FROM samples WHERE {_IN_BUCKET}
        ) p
    ) h WHERE h.quality < {BAD} AND h.value IS NOT NULL AND h.dt > 0
) t ORDER BY b.i
"""


class PostgresHistorian:
    """``shopfloor.ports.store.Historian`` on a shared :class:`PgDatabase` (component "historian")."""

    def __init__(self, db: PgDatabase, *, partition_interval: str = "1 day", partitions_ahead: int = 3,
                 rollup_staleness_us: int = 300_000_000, clock: Clock | None = None,
                 rollup_interval_s: float | None = DEFAULT_INTERVAL_S,
                 rollup_batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        """``rollup_interval_s``: how often the rollup follower catches up (0: after every commit;
        None: only when asked, see ``catch_up_rollups``); ``rollup_batch_rows``: rows committed by
        this process that wake it early."""
        self._db = db
        self._closed = False
        self._now: Callable[[], int] = clock.now_us if clock is not None else now_us
        self.rollup_staleness_us = pg_rollups.check_staleness(rollup_staleness_us)
        self.partitions = SamplePartitions(db, parse_partition_interval(partition_interval), partitions_ahead)
        try:
            db.migrate("historian", MIGRATIONS)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"could not migrate the historian's tables: {exc}") from exc
        self._ahead_lock = threading.Lock()
        self._next_ahead_us = 0
        self._keep_ahead()
        self._follower = PgRollupFollower(db, self.rollup_staleness_us, rollup_interval_s, rollup_batch_rows)
        self._open_rollups()
        try:
            self._follower.start()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"could not start the rollup follower: {exc}") from exc
        db.on_close(self.close)

    def _open_rollups(self) -> None:
        """Rebuild the rollups if migration 2 asked for it (an upgrade) or they were built with
        another staleness than this historian's."""
        with self._conn() as conn:
            state = pg_rollups.lock_and_read(conn, [], lock=False)
        if state.rebuild_pending or state.staleness_us != self.rollup_staleness_us:
            log.info("rebuilding the historian's rollups from raw samples (staleness %d µs)",
                     self.rollup_staleness_us)
            self.rebuild_rollups()

    # ---- writing ---------------------------------------------------------------------------

    def commit(self, batch: IngestBatch) -> int:
        """Store ``batch`` in one transaction and return its sequence number (see module docs).

        Raises ``InvalidInput`` for malformed columns or values PostgreSQL refuses, and
        ``StoreUnavailable`` when PostgreSQL fails; in both cases nothing is committed.
        """
        if len(batch) == 0:
            return self.last_seq()
        self._check_open()
        samples = pg_rows.sample_columns(batch.samples) if len(batch.samples) else None
        events = pg_rows.event_columns(batch.events) if batch.events else None
        dead = pg_rows.dead_letter_columns(batch.dead_letters) if batch.dead_letters else None
        self._keep_ahead()
        pending: tuple[list[int], list[int], list[int]] = ([], [], [])
        if samples is not None:
            self.partitions.ensure_timestamps(batch.samples.ts_us)
            try:
                pending = pg_follower.pending_row(batch.samples.series_id, batch.samples.ts_us)
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidInput(f"malformed ingest batch: {exc}") from exc
        stored_rows = 0
        for attempt in (1, 2):
            try:
                with self._db.connection() as conn:
                    row = conn.execute("UPDATE historian_seq SET last_seq = last_seq + 1"
                                       f" RETURNING last_seq, {pg_rollups.SESSION_SETTINGS}").fetchone()
                    if row is None:
                        raise StoreUnavailable("the historian's sequence row is missing")
                    seq = int(row[0])
                    if samples is not None:
                        stored = pg_copy.write_idempotent(
                            conn, "samples", pg_copy.SAMPLE_COLUMNS, pg_copy.SAMPLE_TYPES, samples, seq,
                            _SAMPLE_KEY, returning="series_id, (extract(epoch FROM ts) * 1000000)::int8")
                        # what the follower has to merge: the batch, or what the staging path stored
                        stored_rows = len(batch.samples) if stored is None else len(stored)
                        if stored_rows:
                            pg_follower.record_pending(conn, seq, stored_rows, pending if stored is None else
                                                       pg_follower.pending_row([int(r[0]) for r in stored],
                                                                               [int(r[1]) for r in stored]))
                    if events is not None:
                        pg_copy.write_idempotent(conn, "events", pg_copy.EVENT_COLUMNS, pg_copy.EVENT_TYPES,
                                                 events, seq, _EVENT_KEY)
                    if dead is not None:
                        pg_copy.write_all(conn, "dead_letters", pg_copy.DEAD_LETTER_COLUMNS,
                                          pg_copy.DEAD_LETTER_TYPES, dead, seq)
                break
            except psycopg.errors.CheckViolation as exc:
                # "no partition for row": retention dropped a partition this process still knew
                if attempt == 2 or samples is None:
                    raise StoreUnavailable(f"could not commit ingest batch: {exc}") from exc
                self.partitions.forget()
                self.partitions.ensure_timestamps(batch.samples.ts_us)
            except psycopg.DataError as exc:
                raise InvalidInput(f"PostgreSQL refused a value of the batch: {exc}") from exc
            except (TypeError, ValueError, OverflowError) as exc:
                raise InvalidInput(f"malformed ingest batch: {exc}") from exc
            except psycopg.Error as exc:
                raise StoreUnavailable(f"could not commit ingest batch: {exc}") from exc
        if stored_rows:
            self._follower.committed(seq, stored_rows)
        return seq

    def last_seq(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT last_seq FROM historian_seq").fetchone()
        if row is None:
            raise StoreUnavailable("the historian's sequence row is missing")
        return int(row[0])

    def samples_since(self, seq: int, limit: int, upto: int | None = None) -> SampleChanges:
        with self._conn() as conn:
            return changes.samples_since(conn, seq, limit, upto)

    def events_since(self, seq: int, limit: int, upto: int | None = None) -> list[StoredEvent]:
        with self._conn() as conn:
            return changes.events_since(conn, seq, limit, upto)

    def delete_before(self, cutoff_us: int, series_ids: Sequence[int] | None = None) -> int:
        """Drop raw samples older than ``cutoff_us``: whole partitions where possible, a DELETE for
        the rest.

        The cutoff is recorded first, in its own transaction, after the rollup follower has merged
        every commit so far (under its lock and the seq row lock): from then on the follower
        recomputes no rollup bucket whose raw data may be going, so rollups keep what they know
        about the deleted samples. Those marks also say when a partition may go although the
        call names only some series: when every series with rows in it has been cut at or after
        its end (a retention run over several tenants or policies drops it with the last group).
        """
        self._check_open()
        if series_ids is not None and not series_ids:
            return 0
        self._settled("raw", cutoff_us, series_ids)
        dropped = self.partitions.drop_before(cutoff_us, self._all_series_cut)
        if series_ids is not None:
            return dropped + self._delete("DELETE FROM samples WHERE ts < %s AND series_id = ANY(%s::int8[])",
                                          [to_datetime(cutoff_us), list(series_ids)])
        return dropped + self._delete("DELETE FROM samples WHERE ts < %s", [to_datetime(cutoff_us)])

    def drop_partitions_before(self, cutoff_us: int) -> int:
        """Drop the partitions that end at or before ``cutoff_us``, whatever series they hold;
        return how many rows they held. The cutoff of each is recorded for all series first."""
        self._check_open()

        def mark_all(conn: psycopg.Connection, _name: str, end_us: int) -> bool:
            with conn.transaction():
                self._follower.settle(conn)
                pg_rollups.raise_mark(conn, "raw", end_us, None)
            return True

        self._catch_up_before_retention()
        return self.partitions.drop_before(cutoff_us, mark_all)

    def _all_series_cut(self, conn: psycopg.Connection, name: str, end_us: int) -> bool:
        """Whether every series with rows in partition ``name`` has a raw cutoff at or after its end."""
        marks = pg_rollups.lock_and_read(conn, None, lock=False).marks
        every = marks.every.get("raw")
        if every is not None and every >= end_us:
            return True
        return all((marks.horizon("raw", sid) or MIN_US) >= end_us
                   for sid in self.partitions.series_in(conn, name))

    def delete_rollups_before(self, level: str, cutoff_us: int, series_ids: Sequence[int] | None = None) -> int:
        """Drop rollup rows of ``level`` ("1m" or "1h") whose bucket starts before ``cutoff_us``;
        from then on that level answers only windows starting at or after the cutoff."""
        pg_rollups.check_level(level)
        if series_ids is not None and not series_ids:
            return 0
        self._catch_up_before_retention()
        with self._conn() as conn:
            self._follower.settle(conn)
            pg_rollups.raise_mark(conn, level, cutoff_us, series_ids)
            return pg_rollups.delete_before(conn, level, cutoff_us, series_ids)

    def _catch_up_before_retention(self) -> None:
        """Merge what is pending without holding commits up, so that the merge under the seq row
        lock that follows (``settle``) has little left to do."""
        self._check_open()
        self._follower.catch_up()

    def _settled(self, kind: str, cutoff_us: int, series_ids: Sequence[int] | None) -> None:
        """Record a retention cutoff once every commit so far is in the rollups (one transaction,
        holding the follower's lock and the seq row lock)."""
        self._catch_up_before_retention()
        with self._conn() as conn:
            self._follower.settle(conn)
            pg_rollups.raise_mark(conn, kind, cutoff_us, series_ids)

    def rebuild_rollups(self, series_ids: Sequence[int] | None = None, start_us: int | None = None,
                        end_us: int | None = None) -> None:
        """Recompute from raw the rollup rows of every bucket overlapping [start, end) (default: all
        time) of ``series_ids`` (default: every series). Buckets whose raw data retention may have
        removed keep what they hold. To repair a change of raw data in [a, b), pass end = b +
        rollup staleness, since a sample's hold reaches that far.

        Runs in chunks (a day of up to 500 series per transaction), each under the rollup
        follower's lock (ingest goes on; what it commits meanwhile the follower merges as ever); a
        full rebuild flags the rollups pending meanwhile, and queries answer from raw until it has
        finished.
        """
        if series_ids is not None and not series_ids:
            return
        full = series_ids is None and start_us is None and end_us is None
        with self._conn() as conn:
            pg_follower.lock_mark(conn, wait=True)
            state = pg_rollups.lock_and_read(conn, [], lock=False)
            if full:
                conn.execute("UPDATE rollup_state SET rebuild_pending = true, staleness_us = %s",
                             [self.rollup_staleness_us])
            st = self.rollup_staleness_us if full else (state.staleness_us or self.rollup_staleness_us)
            ranges = pg_rollups.all_ranges(conn, series_ids, start_us, end_us, st)
        for chunk in pg_rollups.rebuild_chunks(ranges):
            with self._conn() as conn:
                conn.execute(f"SELECT {pg_rollups.SESSION_SETTINGS}")
                pg_follower.lock_mark(conn, wait=True)
                state = pg_rollups.lock_and_read(conn, sorted({r[0] for r in chunk}), lock=False)
                st = state.staleness_us or self.rollup_staleness_us
                pg_rollups.refresh(conn, chunk, state, st)
        if full:
            with self._conn() as conn:
                pg_follower.lock_mark(conn, wait=True)
                conn.execute("UPDATE rollup_state SET rebuild_pending = false WHERE staleness_us = %s",
                             [self.rollup_staleness_us])

    def delete_events_before(self, cutoff_us: int) -> int:
        return self._delete("DELETE FROM events WHERE ts < %s", [to_datetime(cutoff_us)])

    def catch_up_rollups(self) -> int:
        """Merge every committed sample not yet in the rollups now (waiting for a catch-up another
        process runs); return how many samples the merged commits stored. (The follower does this
        by itself; tests, benches and shutdown call it.)"""
        self._check_open()
        return self._follower.catch_up()

    def rollups_pending(self) -> int:
        """Samples this process committed since the follower's last catch-up began (an upper bound)."""
        return self._follower.pending()

    def close(self) -> None:
        """Stop the rollup follower, catch the rollups up and mark the historian closed; the
        ``PgDatabase`` stays open (its creator closes it)."""
        if self._closed:
            return
        self._follower.stop()
        if not self._db.pool.closed:
            try:
                self._follower.catch_up()
            except StoreUnavailable as exc:  # the mark is stored: the next catch-up takes the rest
                log.warning("closing the historian: %s", exc)
        self._closed = True

    # ---- time series -----------------------------------------------------------------------

    def raw(self, series_id: int, start_us: int, end_us: int, limit: int = 10_000) -> list[Sample]:
        _check_limit(limit)
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT series_id, ts, value, text, quality FROM samples"
                " WHERE series_id = %s::int8 AND ts >= %s AND ts < %s ORDER BY ts LIMIT %s",
                [series_id, to_datetime(start_us), to_datetime(end_us), limit]).fetchall()
        return [_sample(r) for r in rows]

    def latest(self, series_ids: Sequence[int]) -> dict[int, Sample]:
        if not series_ids:
            return {}
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT s.series_id, s.ts, s.value, s.text, s.quality"
                " FROM (SELECT DISTINCT unnest(%s::int8[]) AS id) k CROSS JOIN LATERAL ("
                "   SELECT * FROM samples WHERE series_id = k.id ORDER BY ts DESC LIMIT 1) s",
                [list(series_ids)]).fetchall()
        return {int(r[0]): _sample(r) for r in rows}

    def count_samples(self, series_ids: Sequence[int] | None = None) -> int:
        sql = "SELECT count(*) FROM samples"
        params: list[Any] = []
        if series_ids is not None:
            if not series_ids:
                return 0
            sql += " WHERE series_id = ANY(%s::int8[])"
            params.append(list(series_ids))
        with self._conn() as conn:
            row = conn.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    def aggregate(self, series_id: int, buckets: Sequence[tuple[int, int]], agg: Agg,
                  staleness_us: int) -> list[AggRow]:
        """One row per bucket, in the given order. Each bucket is answered by the coarsest rollup
        that tiles it, still holds it and that no sample not merged yet can change, else from raw
        samples: one SQL statement per source, all in one snapshot.

        A bucket that unmerged samples can change but that starts before the series' raw
        retention cutoff (raw cannot answer all of it) waits for the follower: the rollups are
        caught up and the query runs again."""
        agg = Agg(agg)
        if not buckets:
            return []
        if agg is Agg.TWA and staleness_us <= 0:
            raise InvalidInput("staleness must be a positive number of microseconds for a time-weighted average")
        for attempt in (1, 2):
            rows = self._aggregate_once(series_id, buckets, agg, staleness_us, may_wait=attempt == 1)
            if rows is not None:
                return rows
            self._follower.catch_up()
        raise AssertionError("unreachable")  # pragma: no cover

    def _aggregate_once(self, series_id: int, buckets: Sequence[tuple[int, int]], agg: Agg, staleness_us: int,
                        *, may_wait: bool) -> list[AggRow] | None:
        """The rows, or None (``may_wait`` only) when the follower should catch up first."""
        out: list[tuple[float | None, int]] = [(None, 0)] * len(buckets)
        with self._conn() as conn:
            sources: list[str | None] = [None] * len(buckets)
            if pg_rollups.tiles_any(buckets):
                # the follower's mark, the pending commits, the rollups and raw: one snapshot
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                state = pg_rollups.lock_and_read(conn, [series_id], lock=False)
                pending_from = pg_follower.pending_from(conn, series_id)
                sources = pg_rollups.sources(buckets, agg, staleness_us, state, series_id, pending_from)
                raw_from = state.marks.horizon("raw", series_id)
                if may_wait and pending_from is not None and raw_from is not None and any(
                        src is None and clean is not None and b[0] < raw_from
                        for b, src, clean in zip(buckets, sources, pg_rollups.sources(
                            buckets, agg, staleness_us, state, series_id), strict=True)):
                    return None
            conn.execute(f"SELECT {pg_rollups.SESSION_SETTINGS}")
            for source in sorted(set(sources), key=str):
                picked = [i for i, src in enumerate(sources) if src == source]
                part = [buckets[i] for i in picked]
                rows = (_raw_rows(conn, series_id, part, agg, staleness_us) if source is None
                        else pg_rollups.query(conn, source, series_id, [to_datetime(b[0]) for b in part],
                                              [to_datetime(b[1]) for b in part], agg))
                for i, row in zip(picked, rows, strict=True):
                    out[i] = row
        return [AggRow(b[0], b[1], value, count) for b, (value, count) in zip(buckets, out, strict=True)]

    # ---- events ----------------------------------------------------------------------------

    def events(self, tenant_id: int, *, asset_ids: Sequence[int] | None = None,
               kinds: Sequence[str] | None = None, start_us: int | None = None,
               end_us: int | None = None, limit: int = 1000) -> list[StoredEvent]:
        """The newest ``limit`` events of the tenant matching the filters, returned oldest first."""
        _check_limit(limit)
        where = ["tenant_id = %s::int8"]
        params: list[Any] = [tenant_id]
        if asset_ids is not None:
            if not asset_ids:
                return []
            where.append("asset_id = ANY(%s::int8[])")
            params.append(list(asset_ids))
        if kinds is not None:
            if not kinds:
                return []
            where.append("kind = ANY(%s::text[])")
            params.append(list(kinds))
        if start_us is not None:
            where.append("ts >= %s")
            params.append(to_datetime(start_us))
        if end_us is not None:
            where.append("ts < %s")
            params.append(to_datetime(end_us))
        sql = (
            "SELECT * FROM (SELECT seq, tenant_id, asset_id, ts, kind, type, data::text AS data"
            f" FROM events WHERE {' AND '.join(where)}"
            " ORDER BY ts DESC, seq DESC, asset_id DESC, kind DESC, type DESC, data::text DESC LIMIT %s) e"
            " ORDER BY ts, seq, asset_id, kind, type, data"
        )
        with self._conn() as conn:
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [_stored_event(r) for r in rows]

    def latest_events(self, tenant_id: int, kind: str,
                      asset_ids: Sequence[int] | None = None) -> dict[int, StoredEvent]:
        sql = ("SELECT DISTINCT ON (asset_id) seq, tenant_id, asset_id, ts, kind, type, data::text FROM events"
               " WHERE tenant_id = %s::int8 AND kind = %s")
        params: list[Any] = [tenant_id, kind]
        if asset_ids is not None:
            if not asset_ids:
                return {}
            sql += " AND asset_id = ANY(%s::int8[])"
            params.append(list(asset_ids))
        sql += " ORDER BY asset_id, ts DESC, seq DESC, type DESC, data::text DESC"
        with self._conn() as conn:
            rows = conn.execute(sql, params).fetchall()
        return {int(r[2]): _stored_event(r) for r in rows}

    # ---- dead letters ----------------------------------------------------------------------

    def dead_letters(self, tenant_id: int | None, *, reason: str | None = None, device: str | None = None,
                     limit: int = 100) -> list[StoredDeadLetter]:
        _check_limit(limit)
        sql = ("SELECT id, tenant_id, device, topic, reason, detail, payload, received_at FROM dead_letters"
               " WHERE tenant_id IS NOT DISTINCT FROM %s::int8")
        params: list[Any] = [tenant_id]
        if reason is not None:
            sql += " AND reason = %s"
            params.append(str(reason))
        if device is not None:
            sql += " AND device = %s"
            params.append(device)
        sql += " ORDER BY received_at DESC, id DESC LIMIT %s"
        with self._conn() as conn:
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [
            StoredDeadLetter(int(r[0]), None if r[1] is None else int(r[1]), r[2], r[3], r[4], r[5],
                             bytes(r[6]), to_us(r[7]))
            for r in rows
        ]

    def dead_letter_counts(self, tenant_id: int | None) -> list[tuple[str, str, int]]:
        """(device, reason, count) ordered by device, then reason."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT device, reason, count(*) FROM dead_letters WHERE tenant_id IS NOT DISTINCT FROM %s::int8"
                " GROUP BY device, reason ORDER BY device COLLATE \"C\", reason COLLATE \"C\"",
                [tenant_id]).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    # ---- plumbing --------------------------------------------------------------------------

    def _keep_ahead(self) -> None:
        """Create the partitions ahead of now, at most once an hour per process."""
        now = self._now()
        if now < self._next_ahead_us:
            return
        with self._ahead_lock:
            if now < self._next_ahead_us:
                return
            self.partitions.ensure_ahead(now)
            self._next_ahead_us = now + _AHEAD_CHECK_US

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("the historian is closed")

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        """A pooled connection for one transaction, with psycopg's errors translated."""
        self._check_open()
        try:
            with self._db.connection() as conn:
                yield conn
        except psycopg.DataError as exc:
            raise InvalidInput(f"PostgreSQL refused a value: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreUnavailable(f"historian query failed: {exc}") from exc

    def _delete(self, sql: str, params: list[Any]) -> int:
        with self._conn() as conn:
            cur = conn.execute(sql, params)
            return max(cur.rowcount, 0)


def _raw_rows(conn: psycopg.Connection, series_id: int, buckets: Sequence[tuple[int, int]], agg: Agg,
              staleness_us: int) -> list[tuple[float | None, int]]:
    """(value, count) per bucket computed from raw samples (see the SQL at the top)."""
    params: dict[str, Any] = {"sid": series_id, "b0": [to_datetime(b[0]) for b in buckets],
                              "b1": [to_datetime(b[1]) for b in buckets]}
    if agg is Agg.TWA:
        st = min(staleness_us, _MAX_STALENESS_US)
        params.update(st_s=st // 1_000_000, st_us=st % 1_000_000,
                      since=to_datetime(min(b[0] for b in buckets) - st))
        rows = conn.execute(_TWA_SQL, params).fetchall()
        return [(float(num) / float(den) if den else None, int(n)) for _, num, den, n in rows]
    rows = conn.execute(_NUMERIC_SQL[agg], params).fetchall()
    return [(None if not n or v is None else float(v), int(n)) for _, v, n in rows]


# ---- row conversion ------------------------------------------------------------------------

def _sample(r: tuple[Any, ...]) -> Sample:
    return Sample(int(r[0]), to_us(r[1]), r[2], r[3], int(r[4]))


def _stored_event(r: tuple[Any, ...]) -> StoredEvent:
    return StoredEvent(int(r[0]), int(r[1]), int(r[2]), to_us(r[3]), str(r[4]), str(r[5]), json.loads(r[6]))


def _check_limit(limit: int) -> None:
    if limit < 0:
        raise InvalidInput("limit must not be negative")

