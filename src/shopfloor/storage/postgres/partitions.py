"""Time partitions of the ``samples`` table: created ahead and on demand, dropped by retention.

Partitions are plain range partitions on ``ts``, whole days wide (one day by default), aligned to
UTC midnight and, for multiples of seven days, to Monday. Their names carry their bounds, as
``samples_YYYYMMDD_YYYYMMDD`` (from inclusive, to exclusive, UTC dates), so the catalogue alone
tells which ranges exist; when the configured width changes, only the gaps between existing
partitions are filled, so ranges never overlap.

There is deliberately **no default partition**. A row whose day has no partition would land in it,
and afterwards that day's partition could not be created without first moving those rows out of the
default (PostgreSQL refuses to attach a range the default still holds rows of, and scans and locks
the default for every attach). During such a move the (series, ts) key lives in two places, so the
primary key - unique per partition, and therefore globally only because a timestamp decides its
partition - no longer guards it: a redelivered sample could be stored twice. Instead every batch
makes sure its days have partitions before its COPY (back-filled data included), and anything
outside the kept range 0001-01-02 .. 9999-12-30 is refused as invalid input.

Locks: partitions are created as free-standing tables and then ``ATTACH``ed, which takes only a
SHARE UPDATE EXCLUSIVE lock on ``samples`` (``CREATE TABLE .. PARTITION OF`` would take ACCESS
EXCLUSIVE and stall every reader and writer). Retention detaches with ``DETACH PARTITION ..
CONCURRENTLY`` (the same weak lock), counts the rows of the detached table and drops it. Creation
and retention of one installation serialise on an advisory lock keyed by the schema.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg import sql

from shopfloor.domain.errors import InvalidInput, StoreUnavailable
from shopfloor.domain.timeutil import MAX_US, MIN_US
from shopfloor.storage.postgres.database import PgDatabase

DAY_US = 86_400_000_000
_EPOCH_DATE = date(1970, 1, 1)
_ORIGIN_DAY = 4  # 1970-01-05, a Monday: weekly partitions start on Mondays
_FIRST_DAY = (date(1, 1, 1) - _EPOCH_DATE).days
_LAST_DAY = (date(9999, 12, 31) - _EPOCH_DATE).days  # exclusive end of the last partition
_NAME_RE = re.compile(r"^samples_(\d{8})_(\d{8})$")
_LOCK_CLASS = 7_301_173  # advisory lock (class, hashtext(schema)) for partition DDL
_INTERVAL_RE = re.compile(r"^\s*(\d+)\s*(day|days|d|week|weeks|w)\s*$")


def parse_partition_interval(text: str) -> int:
    """Whole days from "1 day", "3 days", "1 week", "2 weeks" (or "7d", "1w")."""
    m = _INTERVAL_RE.match(text.lower())
    days = int(m.group(1)) * (7 if m.group(2).startswith("w") else 1) if m else 0
    if not 1 <= days <= 366:
        raise InvalidInput(f"partition interval {text!r} must be between 1 day and 366 days, "
                           "for example '1 day' or '1 week'")
    return days


def day_of(ts_us: int) -> int:
    """Days since 1970-01-01 (UTC) of an epoch-microsecond timestamp."""
    return ts_us // DAY_US


def _date(day: int) -> date:
    return _EPOCH_DATE + timedelta(days=day)


def _name(lo: int, hi: int) -> str:
    a, b = _date(lo), _date(hi)
    return f"samples_{a.year:04d}{a.month:02d}{a.day:02d}_{b.year:04d}{b.month:02d}{b.day:02d}"


def _parse_name(name: str) -> tuple[int, int] | None:
    m = _NAME_RE.match(name)
    if not m:
        return None
    try:
        bounds = [datetime.strptime(g, "%Y%m%d").date() for g in m.groups()]
    except ValueError:
        return None
    return (bounds[0] - _EPOCH_DATE).days, (bounds[1] - _EPOCH_DATE).days


def _literal(day: int) -> str:
    d = _date(day)
    return f"{d.year:04d}-{d.month:02d}-{d.day:02d} 00:00:00+00"


def _subtract(lo: int, hi: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [lo, hi) that no range in ``taken`` (sorted) covers."""
    out: list[tuple[int, int]] = []
    cur = lo
    for a, b in taken:
        if b <= cur or a >= hi:
            continue
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
        if cur >= hi:
            break
    if cur < hi:
        out.append((cur, hi))
    return out


class SamplePartitions:
    """Knows which day ranges of ``samples`` have partitions; creates and drops them."""

    def __init__(self, db: PgDatabase, interval_days: int, ahead: int) -> None:
        if ahead < 0:
            raise InvalidInput("partitions_ahead must not be negative")
        self._db = db
        self.interval_days = interval_days
        self.ahead = ahead
        self._lock = threading.Lock()
        self._ranges: list[tuple[int, int]] | None = None  # sorted (lo_day, hi_day), a cache

    # ---- reading the catalogue ------------------------------------------------------------

    def ranges(self) -> list[tuple[int, int]]:
        """(from_day, to_day) of every attached partition, oldest first (fresh from the catalogue)."""
        with self._db.connection() as conn:
            found = self._read(conn)
        with self._lock:
            self._ranges = found
        return list(found)

    def forget(self) -> None:
        """Drop the cache (another process may have created or dropped partitions)."""
        with self._lock:
            self._ranges = None

    @staticmethod
    def _read(conn: psycopg.Connection) -> list[tuple[int, int]]:
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'samples'::regclass AND NOT i.inhdetachpending").fetchall()
        found = [r for r in (_parse_name(str(row[0])) for row in rows) if r is not None]
        return sorted(found)

    # ---- creating -------------------------------------------------------------------------

    def span(self, day: int) -> tuple[int, int]:
        """The aligned partition range that holds ``day`` (clamped to the years 1..9999)."""
        w = self.interval_days
        lo = (day - _ORIGIN_DAY) // w * w + _ORIGIN_DAY
        return max(lo, _FIRST_DAY), min(lo + w, _LAST_DAY)

    def ensure_days(self, days: Iterable[int]) -> int:
        """Make sure every day in ``days`` has a partition; return how many partitions were created."""
        wanted = sorted(set(days))
        if not wanted:
            return 0
        with self._lock:
            known = self._ranges
        if known is not None and all(_covered(d, known) for d in wanted):
            return 0
        return self._create({self.span(d) for d in wanted})

    def ensure_timestamps(self, ts_us: list[int]) -> int:
        """Partitions for every timestamp of a batch (validated to lie in the kept range)."""
        if not ts_us:
            return 0
        lo, hi = min(ts_us), max(ts_us)
        if lo < MIN_US or hi > MAX_US:
            raise InvalidInput("sample timestamps must lie between 0001-01-02 and 9999-12-30")
        first, last = day_of(lo), day_of(hi)
        if last - first <= 3 * self.interval_days:
            return self.ensure_days(range(first, last + 1))  # the usual case: a few days at most
        return self.ensure_days({t // DAY_US for t in ts_us})  # back-fill across a long span

    def ensure_ahead(self, now_us: int) -> int:
        """Partitions from the one holding ``now_us`` to ``ahead`` partitions after it."""
        day = day_of(min(max(now_us, MIN_US), MAX_US))
        lo, hi = self.span(day)
        days = [lo]
        for _ in range(self.ahead):
            if hi >= _LAST_DAY:
                break
            days.append(hi)
            lo, hi = self.span(hi)
        return self.ensure_days(days)

    def _create(self, spans: set[tuple[int, int]]) -> int:
        created = 0
        try:
            with self._db.connection() as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(current_schema()))", [_LOCK_CLASS])
                existing = self._read(conn)
                for lo, hi in sorted(spans):
                    for a, b in _subtract(lo, hi, existing):
                        name = sql.Identifier(_name(a, b))
                        # a table of that name not attached is a leftover of an interrupted retention run
                        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
                        conn.execute(sql.SQL(
                            "CREATE TABLE {} (LIKE samples INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
                            " INCLUDING STORAGE INCLUDING COMPRESSION)").format(name))
                        conn.execute(sql.SQL("ALTER TABLE samples ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})")
                                     .format(name, sql.Literal(_literal(a)), sql.Literal(_literal(b))))
                        created += 1
                found = self._read(conn)
        except psycopg.Error as exc:
            self.forget()
            raise StoreUnavailable(f"could not create sample partitions: {exc}") from exc
        with self._lock:
            self._ranges = found
        return created

    # ---- retention ------------------------------------------------------------------------

    def drop_before(self, cutoff_us: int, may_drop: Callable[[psycopg.Connection, str, int], bool]) -> int:
        """Detach and drop the partitions that end at or before ``cutoff_us`` and that
        ``may_drop(conn, name, end_us)`` allows; return how many rows they held.

        Runs on its own autocommit connection, since ``DETACH .. CONCURRENTLY`` cannot run in a
        transaction block; holds the partition advisory lock for the whole run.
        """
        dropped = 0
        try:
            with psycopg.connect(self._db.dsn, autocommit=True, connect_timeout=10,
                                 options=f"-c search_path={self._db.schema}") as conn:
                conn.execute("SELECT pg_advisory_lock(%s, hashtext(current_schema()))", [_LOCK_CLASS])
                try:
                    self._finalize_pending(conn)
                    dropped += self._drop_leftovers(conn)
                    for lo, hi in self._read(conn):
                        if hi * DAY_US <= cutoff_us and may_drop(conn, _name(lo, hi), hi * DAY_US):
                            name = sql.Identifier(_name(lo, hi))
                            conn.execute(sql.SQL("ALTER TABLE samples DETACH PARTITION {} CONCURRENTLY").format(name))
                            dropped += self._count_and_drop(conn, name)
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(current_schema()))", [_LOCK_CLASS])
        except psycopg.Error as exc:
            raise StoreUnavailable(f"could not drop old sample partitions: {exc}") from exc
        finally:
            self.forget()
        return dropped

    @staticmethod
    def series_in(conn: psycopg.Connection, name: str) -> list[int]:
        """The series with rows in partition ``name``: one primary-key probe per series (a skip scan)."""
        ident = sql.Identifier(name)
        rows = conn.execute(sql.SQL(
            "WITH RECURSIVE s AS ((SELECT series_id FROM {0} ORDER BY series_id LIMIT 1) UNION ALL"
            " SELECT (SELECT p.series_id FROM {0} p WHERE p.series_id > s.series_id ORDER BY p.series_id LIMIT 1)"
            " FROM s WHERE s.series_id IS NOT NULL) SELECT series_id FROM s WHERE series_id IS NOT NULL"
        ).format(ident)).fetchall()
        return [int(r[0]) for r in rows]

    @staticmethod
    def _count_and_drop(conn: psycopg.Connection, name: sql.Identifier) -> int:
        with conn.transaction():
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()
            conn.execute(sql.SQL("DROP TABLE {}").format(name))
        return int(row[0]) if row else 0

    def _finalize_pending(self, conn: psycopg.Connection) -> None:
        """Finish a ``DETACH .. CONCURRENTLY`` that an earlier, interrupted run left pending."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'samples'::regclass AND i.inhdetachpending").fetchall()
        for (relname,) in rows:
            conn.execute(sql.SQL("ALTER TABLE samples DETACH PARTITION {} FINALIZE")
                         .format(sql.Identifier(str(relname))))

    def _drop_leftovers(self, conn: psycopg.Connection) -> int:
        """Drop tables named like partitions that are not attached (an interrupted run detached them)."""
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace"
            " AND c.relkind = 'r' AND c.relname LIKE 'samples\\_%%' AND NOT c.relispartition").fetchall()
        n = 0
        for (relname,) in rows:
            if _parse_name(str(relname)) is not None:
                n += self._count_and_drop(conn, sql.Identifier(str(relname)))
        return n


def _covered(day: int, ranges: list[tuple[int, int]]) -> bool:
    return any(lo <= day < hi for lo, hi in ranges)


def clamp_us(us: int) -> int:
    """A query bound moved into the range PostgreSQL and Python datetimes share (data lies inside)."""
    return min(max(us, MIN_US - DAY_US), MAX_US + DAY_US)


def to_datetime(us: int) -> datetime:
    """Epoch microseconds as an aware UTC datetime (for parameters); clamps to the kept range."""
    us = clamp_us(us)
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
