"""The rollup follower of the DuckDB historian: brings the rollups up to date behind the commits.

A commit only appends raw rows, each with its ingest ``seq``. The follower keeps a mark (table
``rollup_follow``): every sample with a higher seq is not yet in the rollups. A catch-up reads the
samples with seq in (mark, last committed seq] (the zone maps on ``seq`` skip the older row groups),
merges them into ``rollup_1m`` and ``rollup_1h`` and moves the mark, in one transaction: after a
crash the next catch-up starts from the stored mark, and a reader's snapshot always sees rollups
and a mark that agree (``DuckDBHistorian.aggregate`` answers the buckets the pending rows can
change from raw).

How the rows are merged: when every series among them only moves forward past its newest sample
already in the rollups (a live plant, nearly always), by the append path's deltas
(``rollup_append.py``); otherwise (late data, a retention guard in the way) by recomputing the
minutes they touch from raw (``Rollups.refresh``). Either way the rows equal a rebuild from raw.
The transaction's snapshot holds exactly the commits up to the seq it reads, so the raw rows a
recomputation reads are the ones the mark then covers.

When it runs (``interval_s``):

* ``> 0`` (the default, 2 s): a daemon thread catches up every ``interval_s`` seconds while rows
  are pending, and at once when ``batch_rows`` are pending. A commit that finds four times
  ``batch_rows`` pending catches up itself before it returns, so the lag stays bounded when the
  thread falls behind. The rollups lag the raw data by about ``interval_s`` plus one catch-up.
* ``0``: after every commit, in the committing thread (rollups current when ``commit`` returns).
* ``None``: only when asked (``catch_up``), plus the backpressure above, and before retention,
  rebuilds and ``close`` (tests and benches use it).

What it reads: the commits hand their appended rows over (``expect``, inside their transaction,
so a seq the follower can see has always been handed over); when every commit in (mark, upto] is
known that way since the follower last forgot, it merges those tables and reads nothing back.
Otherwise (after a restart, a retention pass or a failed catch-up, or a commit that took the
anti-join path, whose stored rows are not known without reading) it reads the rows by seq.

The follower has its own lock, not the database's write lock: its transaction writes only the
rollup tables and the mark, which commits never touch, so commits carry on while it runs (DuckDB
runs both; MVCC keeps the follower's view at the seq it read). Retention and rebuilds hold both.
"""

from __future__ import annotations

import logging
import threading

import duckdb
import pyarrow as pa

from shopfloor.domain.errors import StoreUnavailable
from shopfloor.storage.duckdb.database import Database
from shopfloor.storage.duckdb.rollup_append import AppendPath, Plan
from shopfloor.storage.duckdb.rollups import Rollups, register

log = logging.getLogger(__name__)

# A catch-up costs ~100 ms of CPU however few rows it merges (a dozen DuckDB statements, each with
# a fixed cost of one to twenty ms); every 0.5 s that was a fifth of a core at a trickle. Queries
# stay exact meanwhile (unmerged buckets come from raw), so the lag only costs them a little speed.
DEFAULT_INTERVAL_S = 2.0
# Merging a million rows costs less than half as much CPU per row as merging 200,000 (the fixed
# cost above); the rows handed over meanwhile take ~22 bytes each in memory.
DEFAULT_BATCH_ROWS = 1_000_000
_BACKPRESSURE = 4  # x batch_rows pending: the committing thread catches up itself

MIGRATION = """
CREATE TABLE rollup_follow (seq BIGINT NOT NULL);
INSERT INTO rollup_follow SELECT max(last_seq) FROM historian_seq;
"""

_PENDING_SQL = "SELECT series_id, ts, value, text, quality FROM samples WHERE seq > $mark AND seq <= $upto"


class RollupFollower:
    """Catches the rollups of one historian up with its commits (see the module docs)."""

    def __init__(self, db: Database, rollups: Rollups, interval_s: float | None = DEFAULT_INTERVAL_S,
                 batch_rows: int = DEFAULT_BATCH_ROWS) -> None:
        if interval_s is not None and interval_s < 0:
            raise ValueError("the rollup interval must not be negative")
        if batch_rows <= 0:
            raise ValueError("rollup batch rows must be positive")
        self.lock = threading.RLock()  # held by a catch-up; retention and rebuilds take it too
        self._db = db
        self._rollups = rollups
        self._interval_s = interval_s
        self._batch_rows = batch_rows
        self._path = AppendPath()  # each series' newest sample that the rollups hold
        self._path_mark: int | None = None  # the mark that cache belongs to
        self._pending = 0  # sample rows committed since the last catch-up began (an upper bound)
        self._handed: dict[int, pa.Table | None] = {}  # seq -> the rows its commit appended (None: unknown)
        self._handed_from: int | None = None  # every commit from this seq on is in _handed (if it stored samples)
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- scheduling ------------------------------------------------------------------------

    def start(self) -> None:
        """Count what is pending (after a restart) and start the thread, if ``interval_s > 0``."""
        cur = self._db.cursor()
        rows = cur.execute("SELECT count(*) FROM samples WHERE seq > (SELECT max(seq) FROM rollup_follow)").fetchall()
        with self._count_lock:
            self._pending = int(rows[0][0])
        if self._interval_s:
            self._thread = threading.Thread(target=self._run, name="rollup-follower", daemon=True)
            self._thread.start()

    def committed(self, rows: int) -> None:
        """A commit of ``rows`` samples has returned (called outside the write lock)."""
        with self._count_lock:
            self._pending += rows
            pending = self._pending
        if self._interval_s == 0 or pending >= _BACKPRESSURE * self._batch_rows:
            self._catch_up_logged()
        elif pending >= self._batch_rows:
            self._wake.set()

    def expect(self, seq: int, appended: pa.Table | None) -> None:
        """Commit ``seq``, in its transaction, appends exactly ``appended`` (None: rows not known).
        Call before the transaction commits; ``withdraw`` if it does not."""
        with self._count_lock:
            if self._handed_from is None:
                self._handed_from = seq
            self._handed[seq] = appended

    def withdraw(self, seq: int) -> None:
        """The transaction of ``seq`` failed: nothing of it was stored."""
        with self._count_lock:
            self._handed.pop(seq, None)

    def _handed_rows(self, mark: int, upto: int) -> pa.Table | None:
        """The rows of the commits in (mark, upto], if every one of them was handed over."""
        with self._count_lock:
            if self._handed_from is None or self._handed_from > mark + 1:
                return None
            tables = [t for s, t in self._handed.items() if mark < s <= upto]
        if any(t is None for t in tables):
            return None
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0] if tables else None

    def _merged_upto(self, upto: int) -> None:
        with self._count_lock:
            for seq in [s for s in self._handed if s <= upto]:
                del self._handed[seq]

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

    def _run(self) -> None:
        interval = self._interval_s or DEFAULT_INTERVAL_S
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self.pending() > 0:
                try:
                    self._catch_up_logged()
                except Exception:  # a bug: say so, and keep the thread (the rows stay pending)
                    log.exception("rollup catch-up failed")

    def _catch_up_logged(self) -> None:
        try:
            self.catch_up()
        except StoreUnavailable as exc:  # the rows stay pending; the next catch-up takes them
            log.warning("rollup catch-up failed, retried later: %s", exc)

    # ---- catching up -----------------------------------------------------------------------

    def forget(self) -> None:
        """Drop the cached newest samples and handed-over rows (after retention or a rebuild); hold ``lock``."""
        self._path.forget()
        self._path_mark = None
        with self._count_lock:
            self._handed.clear()
            self._handed_from = None

    def catch_up(self) -> int:
        """Merge every committed sample not yet in the rollups; return how many."""
        with self.lock:
            with self._count_lock:
                counted = self._pending
            plan: Plan | None = None
            rows: pa.Table | None = None
            try:
                with self._db.transaction() as cur:
                    upto, plan, rows = self._merge(cur)
            except duckdb.Error as exc:
                self.forget()
                raise StoreUnavailable(f"rollup catch-up failed: {exc}") from exc
            except BaseException:
                self.forget()
                raise
            if plan is not None:
                self._path.committed(plan)
            elif rows is not None:
                self._path.after_recompute(rows)
            self._path_mark = upto
            self._merged_upto(upto)
            with self._count_lock:
                self._pending = max(0, self._pending - counted)
            return 0 if rows is None else rows.num_rows

    def _merge(self, cur: duckdb.DuckDBPyConnection) -> tuple[int, Plan | None, pa.Table | None]:
        mark = int(cur.execute("SELECT max(seq) FROM rollup_follow").fetchall()[0][0])
        upto = int(cur.execute("SELECT max(last_seq) FROM historian_seq").fetchall()[0][0])
        if upto <= mark:
            return mark, None, None
        if self._path_mark != mark:  # the cache of newest samples belongs to another mark
            self._path.forget()
            self._path_mark = None
        rows = self._handed_rows(mark, upto)
        if rows is None:
            rows = cur.sql(_PENDING_SQL, params={"mark": mark, "upto": upto}).to_arrow_table()
        plan: Plan | None = None
        if rows.num_rows:
            st = self._rollups.staleness_us
            register(cur, "_sf_samples", rows)
            try:
                plan = self._path.plan(cur, self._rollups.marks, st, upto_seq=mark, rows=rows)
                ranges = None if plan is not None else self._rollups.batch_ranges(cur)
            finally:
                cur.unregister("_sf_samples")
            if plan is not None:
                AppendPath.apply(cur, plan, st)
            elif ranges is not None:
                self._rollups.refresh(cur, ranges)
        cur.execute("UPDATE rollup_follow SET seq = ?", [upto])
        return upto, plan, rows

    def set_mark(self, cur: duckdb.DuckDBPyConnection, seq: int) -> None:
        """Record inside the caller's transaction that the rollups hold everything up to ``seq``
        (a full rebuild under the write lock); hold ``lock``."""
        cur.execute("UPDATE rollup_follow SET seq = ?", [seq])
        self.forget()
        with self._count_lock:
            self._pending = 0
