"""The historian ports: time series, events, dead letters. Implemented by DuckDB and PostgreSQL.

All calls are synchronous and thread-safe; services run them off the event loop. Timestamps are
integer epoch microseconds (UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from shopfloor.domain.query import Agg, AggRow, SampleChanges, StoredDeadLetter, StoredEvent
from shopfloor.domain.records import IngestBatch, Sample


class TimeSeriesStore(Protocol):
    def commit(self, batch: IngestBatch) -> int:
        """Write samples, events and dead letters in one transaction; return its ingest sequence.

        Idempotent: a sample whose (series, ts) is already stored, or an identical event, is
        skipped, so a redelivered message is stored once. Raises ``StoreUnavailable`` when nothing
        was committed.
        """
        ...

    def last_seq(self) -> int: ...

    def samples_since(self, seq: int, limit: int, upto: int | None = None) -> SampleChanges:
        """Committed samples with ``seq < sample.seq`` (``<= upto`` if given), ordered by (seq,
        series, ts), at most ``limit``: what a consumer that processed up to ``seq`` has not seen.

        Seen in sequence order, nothing is skipped: a commit is visible only after every commit
        numbered below it (see the historians' notes on the ingest sequence).
        """
        ...

    def raw(self, series_id: int, start_us: int, end_us: int, limit: int = 10_000) -> list[Sample]:
        """Samples with start <= ts < end, oldest first."""
        ...

    def aggregate(self, series_id: int, buckets: Sequence[tuple[int, int]], agg: Agg,
                  staleness_us: int) -> list[AggRow]:
        """One row per bucket (empty buckets included, value None, count 0).

        For ``Agg.TWA`` each good sample holds its value until the next sample or for at most
        ``staleness_us``; a bad-quality sample ends the hold and contributes nothing. The sample
        in force at a bucket's start (even from before it) counts for the overlap.
        """
        ...

    def latest(self, series_ids: Sequence[int]) -> dict[int, Sample]: ...

    def count_samples(self, series_ids: Sequence[int] | None = None) -> int: ...

    def delete_before(self, cutoff_us: int, series_ids: Sequence[int] | None = None) -> int:
        """Retention: drop raw samples older than ``cutoff_us``; return how many."""
        ...

    # -- rollups ----------------------------------------------------------------------------
    # The store keeps 1-minute and 1-hour rollups of every numeric series (count, sum, min, max,
    # first, last, and the two sums of a time-weighted average computed with the store's
    # ``rollup_staleness_us``), for the buckets each commit touches, late data included: inside
    # ``commit`` or (DuckDB) by a follower shortly after it. ``aggregate`` answers from the coarsest
    # rollup whose buckets align with every requested bucket (and, for twa, whose staleness equals
    # the query's) and that no sample not yet merged can change, else from raw; its results are the
    # same either way while raw data is there.

    def delete_rollups_before(self, level: str, cutoff_us: int, series_ids: Sequence[int] | None = None) -> int:
        """Retention of rollups; ``level`` is "1m" or "1h". Return rows dropped."""
        ...

    def rebuild_rollups(self, series_ids: Sequence[int] | None = None, start_us: int | None = None,
                        end_us: int | None = None) -> None:
        """Recompute rollups from raw (maintenance, and after an upgrade that adds them)."""
        ...

    def close(self) -> None: ...


class EventLog(Protocol):
    def events(self, tenant_id: int, *, asset_ids: Sequence[int] | None = None,
               kinds: Sequence[str] | None = None, start_us: int | None = None,
               end_us: int | None = None, limit: int = 1000) -> list[StoredEvent]:
        """Events of one tenant, oldest first within the window (the newest ``limit`` of them)."""
        ...

    def latest_events(self, tenant_id: int, kind: str,
                      asset_ids: Sequence[int] | None = None) -> dict[int, StoredEvent]:
        """The newest event of ``kind`` per asset."""
        ...

    def delete_events_before(self, cutoff_us: int) -> int: ...

    def events_since(self, seq: int, limit: int, upto: int | None = None) -> list[StoredEvent]:
        """Committed events of every tenant with ``seq < event.seq`` (``<= upto`` if given),
        ordered by (seq, ts, asset, kind, type), at most ``limit``."""
        ...


class DeadLetterLog(Protocol):
    def dead_letters(self, tenant_id: int | None, *, reason: str | None = None, device: str | None = None,
                     limit: int = 100) -> list[StoredDeadLetter]:
        """Newest first. ``tenant_id`` None lists the ones no tenant could be found for."""
        ...

    def dead_letter_counts(self, tenant_id: int | None) -> list[tuple[str, str, int]]:
        """(device, reason, count) for a tenant."""
        ...


class Historian(TimeSeriesStore, EventLog, DeadLetterLog, Protocol):
    """One object that is all three: what a store adapter provides."""
