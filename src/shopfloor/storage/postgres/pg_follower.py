"""The rollup follower of the PostgreSQL historian: keeps the rollups up to date behind the commits.

A commit appends raw rows and one row of ``rollup_pending`` (migration 4): its seq, how many
samples it stored, and per series the oldest and newest timestamp of them (``int8[]`` of epoch
µs, the series ids sorted). It no longer touches the rollups, so it holds the ``historian_seq``
row lock only for the COPY. ``rollup_follow`` holds the mark: every commit with a higher seq is
not yet in the rollups.

A catch-up, in one transaction:

1. locks the mark row (``SELECT .. FOR UPDATE``; the thread's periodic run with ``SKIP LOCKED``,
   so a process whose neighbour is catching up skips its turn). That row lock is the one follower
   per installation across processes: it lives in the schema, as the rollups do, and ends with the
   transaction, crash included;
2. reads the last committed seq ``upto``; commits become visible in seq order, so every commit up
   to it is visible, and their pending rows with it;
3. recomputes from raw (``pg_rollups.refresh``) the minutes the pending commits can change, per
   series from its oldest sample's minute to the end of its newest sample's hold (the ranges of
   all pending commits merged, so a minute that several commits touched is computed once), then
   the hours around them; the retention guards clip them as before;
4. sets the mark to ``upto`` and deletes the pending rows up to it.

Rows committed after step 2 that the recomputation happens to read stay pending and are read again
next time: recomputing is idempotent. A crash anywhere loses nothing: the mark and the rollups
commit together, and the next catch-up starts from the stored mark.

``PostgresHistorian.aggregate`` reads the mark, the pending rows, the rollups and raw in one
REPEATABLE READ snapshot and answers from raw every bucket that a pending sample of the series can
change (``pending_from``), so answers are exact whatever the lag.

Everything else that writes the rollups takes the mark row lock first: retention (which also
merges whatever is pending, under the seq row lock, before it records its cutoff, so no sample
committed before a cutoff misses the rollups) and rebuilds. Lock order: mark row, then seq row;
commits take only the seq row, the follower only the mark row.

When it runs (``interval_s``), as in DuckDB (``storage/duckdb/rollup_follower.py``):

* ``> 0`` (default 5 s, see ``DEFAULT_INTERVAL_S``): a daemon thread catches up every
  ``interval_s`` while this process has committed rows not merged yet, and at once when
  ``batch_rows`` (default 1,000,000) wait. A commit that finds four times ``batch_rows`` waiting
  catches up itself (waiting for a neighbour's catch-up if one runs). With several processes
  committing (server mode's workers), each thread first reads the mark: its own commits up to it
  are merged, whoever merged them, and when another process moved the mark since this thread
  last looked, that one is keeping up and this turn is skipped (unless this process's unmerged
  commits reach ``batch_rows``). So one follower runs every ``interval_s``, not one per process:
  each catch-up recomputes the current minute of every live series it touches, and with two
  workers each doing so every 5 s PostgreSQL spent about three times the CPU per 1-point message
  that it spent with one (``bench/ingest.py``: 15 against 5 µs; with two workers 6-9 µs since).
* ``0``: after every commit, in the committing thread.
* ``None``: only when asked (``catch_up``), plus the backpressure above, before retention and
  rebuilds, and on ``close``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence

import numpy as np
import psycopg

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.domain.timeutil import MAX_US
from shopfloor.storage.postgres import pg_rollups
from shopfloor.storage.postgres.database import PgDatabase

log = logging.getLogger(__name__)

# Longer than DuckDB's 2 s: a catch-up recomputes whole minutes from raw, so one that runs every
# 0.5 s reads each series' current minute again and again (with samples every second, about 60
# times what it merges); every 5 s that is about 6 times. Queries are exact whatever the lag.
DEFAULT_INTERVAL_S = 5.0
DEFAULT_BATCH_ROWS = 1_000_000
_BACKPRESSURE = 4  # x batch_rows pending: the committing thread catches up itself
_MINUTE = pg_rollups.MINUTE_US
_LAST_HI = MAX_US - MAX_US % _MINUTE + 2 * _MINUTE  # as pg_rollups.batch_ranges caps a range

MIGRATION = """
CREATE TABLE rollup_follow (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint NOT NULL
);
INSERT INTO rollup_follow (seq) SELECT last_seq FROM historian_seq;
COMMENT ON TABLE rollup_follow IS 'The rollups hold every commit up to this ingest sequence number';
CREATE TABLE rollup_pending (
    seq bigint PRIMARY KEY,
    samples integer NOT NULL,
    series_ids integer[] NOT NULL,
    min_ts bigint[] NOT NULL,
    max_ts bigint[] NOT NULL
);
COMMENT ON TABLE rollup_pending IS 'Commits not yet in the rollups: per series the oldest and newest sample (epoch µs)';
"""

# Per pending commit and series, the minute range it can change: [minute of the oldest sample,
# end of the newest one's hold), as pg_rollups.batch_ranges; then, per series, overlapping and
# touching ranges merged (a new island starts where a range begins after all earlier ones end).
_RANGES_SQL = """
WITH r AS (
    SELECT u.s, u.lo - ((u.lo %% 60000000) + 60000000) %% 60000000 AS lo,
           u.hi - ((u.hi %% 60000000) + 60000000) %% 60000000 + 60000000 - 1 + %(st)s AS hi_raw
    FROM rollup_pending p CROSS JOIN LATERAL unnest(p.series_ids, p.min_ts, p.max_ts) AS u(s, lo, hi)
    WHERE p.seq > %(mark)s AND p.seq <= %(upto)s
), c AS (
    SELECT s, lo, hi_raw + ((60000000 - hi_raw %% 60000000) %% 60000000) AS hi FROM r
), g AS (
    SELECT s, lo, hi, CASE WHEN lo <= max(hi) OVER (PARTITION BY s ORDER BY lo, hi
                                                     ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                           THEN 0 ELSE 1 END AS starts
    FROM c
), i AS (
    SELECT s, lo, hi, sum(starts) OVER (PARTITION BY s ORDER BY lo, hi) AS island FROM g
)
SELECT s, min(lo), max(hi) FROM i GROUP BY s, island ORDER BY 1, 2
"""

PENDING_FROM_SQL = """
SELECT min(p.min_ts[p.i]) FROM (
    SELECT min_ts, array_position(series_ids, %s::int4) AS i FROM rollup_pending
    WHERE seq > (SELECT seq FROM rollup_follow)
) p WHERE p.i IS NOT NULL
"""


def pending_row(series_ids: Sequence[int], ts_us: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    """(series ids sorted, the oldest ts of each, the newest ts of each) of a commit's samples."""
    s = np.asarray(series_ids, dtype=np.int64)
    t = np.asarray(ts_us, dtype=np.int64)
    order = np.argsort(s, kind="stable")
    s, t = s[order], t[order]
    starts = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1])))
    return (s[starts].tolist(), np.minimum.reduceat(t, starts).tolist(),
            np.maximum.reduceat(t, starts).tolist())


def record_pending(conn: psycopg.Connection, seq: int, rows: int,
                   pending: tuple[list[int], list[int], list[int]]) -> None:
    """Record inside the commit's transaction what the follower has to merge (see module docs)."""
    conn.execute("INSERT INTO rollup_pending (seq, samples, series_ids, min_ts, max_ts)"
                 " VALUES (%s, %s, %s::int4[], %s::int8[], %s::int8[])", [seq, rows, *pending])


def pending_from(conn: psycopg.Connection, series_id: int) -> int | None:
    """The oldest ts of the series' samples that the rollups do not hold yet (None: none)."""
    if not -(2**31) <= series_id < 2**31:  # no such series can be stored
        return None
    row = conn.execute(PENDING_FROM_SQL, [series_id]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


class PgRollupFollower:
    """Catches the rollups of one installation up with its commits (see the module docs)."""

    def __init__(self, db: PgDatabase, staleness_us: int, interval_s: float | None = DEFAULT_INTERVAL_S,
                 batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        if interval_s is not None and interval_s < 0:
            raise ValueError("the rollup interval must not be negative")
        if batch_rows <= 0:
            raise ValueError("rollup batch rows must be positive")
        self._db = db
        self._staleness_us = staleness_us  # used only until a rebuild has stored one
        self._interval_s = interval_s
        self._batch_rows = batch_rows
        # this process's commits (seq, samples) not known to be merged yet, and their samples in all
        # (after a restart: one entry for everything pending then); whoever merged them
        self._own: deque[tuple[int, int]] = deque()
        self._pending = 0
        self._seen_mark: int | None = None  # the mark as this process's thread last saw it
        self.catch_ups = 0  # catch-ups this follower ran that merged something
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- scheduling ------------------------------------------------------------------------

    def start(self) -> None:
        """Count what is pending (after a restart) and start the thread, if ``interval_s > 0``."""
        with self._db.connection() as conn:
            row = conn.execute("SELECT coalesce(sum(samples), 0), max(seq) FROM rollup_pending"
                               " WHERE seq > (SELECT seq FROM rollup_follow)").fetchone()
        with self._count_lock:
            self._own.clear()
            self._pending = 0
            if row is not None and row[1] is not None and int(row[0]) > 0:
                self._own.append((int(row[1]), int(row[0])))
                self._pending = int(row[0])
        if self._interval_s:
            self._thread = threading.Thread(target=self._run, name="pg-rollup-follower", daemon=True)
            self._thread.start()

    def committed(self, seq: int, rows: int) -> None:
        """This process's commit ``seq`` of ``rows`` samples has returned."""
        with self._count_lock:
            self._own.append((seq, rows))
            self._pending += rows
            pending = self._pending
        if self._interval_s == 0 or pending >= _BACKPRESSURE * self._batch_rows:
            self._catch_up_logged(wait=True)
        elif pending >= self._batch_rows:
            self._wake.set()

    def stop(self) -> None:
        """Stop the thread (a catch-up under way finishes first)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def pending(self) -> int:
        with self._count_lock:
            return self._pending

    def _merged(self, mark: int) -> int:
        """Forget this process's commits up to ``mark`` (merged, by whichever process); return the
        samples of those left."""
        with self._count_lock:
            while self._own and self._own[0][0] <= mark:
                self._pending -= self._own.popleft()[1]
            return self._pending

    def _run(self) -> None:
        interval = self._interval_s or DEFAULT_INTERVAL_S
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set() or self._db.pool.closed:  # whoever owns the database closed it
                return
            if self.pending() > 0:
                try:
                    if self._my_turn():
                        self._catch_up_logged(wait=False)
                except Exception:  # a bug: say so, and keep the thread (the rows stay pending)
                    log.exception("rollup catch-up failed")

    def _my_turn(self) -> bool:
        """Whether this thread should catch up now. Several processes commit into one installation,
        and each has a follower thread: when another moved the mark since this one last looked, it
        is keeping the rollups up to date, so this turn is skipped (each catch-up recomputes the
        minutes the pending commits touch, the current minute of every live series among them:
        one follower every ``interval_s`` reads that minute half as often as two). Not skipped when
        this process's own commits left unmerged reach ``batch_rows`` (the other is not keeping up)."""
        try:
            with self._db.connection() as conn:
                row = conn.execute("SELECT seq FROM rollup_follow").fetchone()
        except psycopg.Error as exc:
            raise StoreUnavailable(f"could not read the rollup mark: {exc}") from exc
        if row is None:
            return True
        mark = int(row[0])
        left = self._merged(mark)
        moved = self._seen_mark is not None and mark != self._seen_mark
        self._seen_mark = mark
        return left > 0 and (not moved or left >= self._batch_rows)

    def _catch_up_logged(self, *, wait: bool) -> None:
        try:
            self.catch_up(wait=wait)
        except StoreUnavailable as exc:  # the rows stay pending; the next catch-up takes them
            log.warning("rollup catch-up failed, retried later: %s", exc)

    # ---- catching up -----------------------------------------------------------------------

    def catch_up(self, *, wait: bool = True) -> int:
        """Merge every committed sample not yet in the rollups; return how many samples the
        merged commits stored. ``wait=False``: skip (return 0) while another catch-up runs."""
        try:
            with self._db.connection() as conn:
                conn.execute(f"SELECT {pg_rollups.FOLLOWER_SETTINGS}")
                mark = lock_mark(conn, wait=wait)
                if mark is None:
                    return 0
                upto = _last_seq(conn)
                merged = self.merge(conn, mark, upto)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"rollup catch-up failed: {exc}") from exc
        self._merged(max(mark, upto))
        self._seen_mark = max(mark, upto)
        if merged:
            self.catch_ups += 1
        return merged

    def settle(self, conn: psycopg.Connection) -> None:
        """Inside the caller's transaction: lock the mark row, then the seq row (no commit runs
        until the transaction ends), and merge what is still pending. Retention calls it before it
        records a cutoff."""
        mark = lock_mark(conn, wait=True)
        row = conn.execute(f"SELECT last_seq, {pg_rollups.SESSION_SETTINGS} FROM historian_seq FOR UPDATE").fetchone()
        if mark is None or row is None:
            raise StoreUnavailable("the historian's sequence or rollup mark row is missing")
        self.merge(conn, mark, int(row[0]))

    def merge(self, conn: psycopg.Connection, mark: int, upto: int | None = None) -> int:
        """With the mark row locked: merge the commits in (mark, upto] (default: up to the last
        committed one) and move the mark; return how many samples they stored."""
        if upto is None:
            upto = _last_seq(conn)
        if upto <= mark:
            return 0
        row = conn.execute("SELECT coalesce(sum(samples), 0) FROM rollup_pending WHERE seq > %s AND seq <= %s",
                           [mark, upto]).fetchone()
        rows = int(row[0]) if row else 0
        if rows:
            state_row = conn.execute("SELECT staleness_us FROM rollup_state").fetchone()
            st = int(state_row[0]) if state_row and state_row[0] is not None else self._staleness_us
            ranges = [(int(s), int(lo), min(int(hi), _LAST_HI)) for s, lo, hi in conn.execute(
                _RANGES_SQL, {"mark": mark, "upto": upto, "st": st}).fetchall()]
            state = pg_rollups.lock_and_read(conn, sorted({r[0] for r in ranges}), lock=False)
            pg_rollups.refresh(conn, ranges, state, st)
        conn.execute("UPDATE rollup_follow SET seq = %s", [upto])
        conn.execute("DELETE FROM rollup_pending WHERE seq <= %s", [upto])
        return rows


def _last_seq(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT last_seq FROM historian_seq").fetchone()
    if row is None:
        raise StoreUnavailable("the historian's sequence row is missing")
    return int(row[0])


def lock_mark(conn: psycopg.Connection, *, wait: bool) -> int | None:
    """Lock the mark row and return the mark; None when ``wait`` is false and it is locked."""
    row = conn.execute("SELECT seq FROM rollup_follow FOR UPDATE" + ("" if wait else " SKIP LOCKED")).fetchone()
    return None if row is None else int(row[0])

