"""The contract every ``Historian`` (time series + event log + dead-letter log) must pass.

Subclass ``HistorianContract`` in a test module (its name starting with ``Test``) and give it a
``historian`` fixture that returns a new, empty historian for each test. Needs pytest and
hypothesis (the dev extras); import it from tests only.

What the contract fixes beyond the port's docstrings:
* every non-empty commit gets a new, larger sequence number (also when all of it was a duplicate);
  an empty batch returns ``last_seq()`` and does not advance it;
* aggregates use good and uncertain samples; bad ones are left out (for twa they end a hold);
  ``count`` of an ``AggRow`` is the number of samples used; empty buckets are (None, 0);
* dead letters record deliveries: the same bad message delivered twice is listed twice;
  dead-letter counts are ordered by device, then reason.

``RollupContract`` (subclass it next to ``HistorianContract``) checks the 1-minute and 1-hour
rollups against ``aggregate_reference.reference_aggregate``. The ``historian`` fixture must build
the store with ``rollup_staleness_us`` from the fixture of that name: ``RollupContract`` defines it
(parametrised: 5 minutes, and 90 s, which is no whole number of minutes), so give the test module a
default fixture of that name for the other suites. What it fixes:
* every aggregate, twa included, over 1-minute, 15-minute, hourly and local-day (Europe/Berlin,
  across a DST change) buckets equals the raw semantics, also after late samples landed in the
  middle of older data in a later commit; twa with another staleness than the rollups' is
  answered from raw;
* rollups keep text samples for count/first/last as raw does (a text sample counts, and is a
  first/last of value None), so those answers too survive raw retention;
* raw retention (``delete_before``): buckets that rollups tile keep their answers; others (7-minute
  buckets of a window that starts at no whole minute) show the deletion;
* a bucket is answered by the coarsest level that tiles it and whose retention cutoff
  (``delete_rollups_before``) is not after the bucket's start, else by a finer level, else raw;
* ``rebuild_rollups`` gives the rollups incremental maintenance gave, and does not drop what
  rollups know where raw data is gone.
"""

from __future__ import annotations

import itertools
import random
import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import Agg, AggRow, Interval, buckets
from shopfloor.domain.records import DeadLetter, EventRecord, IngestBatch, Quality, Reason, Sample
from shopfloor.domain.timeutil import to_us
from shopfloor.ports.store import Historian
from shopfloor.testing.aggregate_reference import irregular_samples, reference_aggregate

S = 1_000_000
MIN = 60 * S
H = 60 * MIN
T0 = to_us(datetime(2024, 1, 1, tzinfo=UTC))
G, U, B = Quality.GOOD, Quality.UNCERTAIN, Quality.BAD

Row = tuple[Any, ...]


def sample_batch(*rows: Row) -> IngestBatch:
    """A batch of samples given as (series, ts_us, value, quality[, text])."""
    batch = IngestBatch()
    for row in rows:
        series, ts, value, quality = row[:4]
        batch.samples.add(series, ts, value, row[4] if len(row) > 4 else None, quality)
    return batch


def event(tenant: int, asset: int, ts: int, kind: str = "state", type_: str = "running",
          **data: Any) -> EventRecord:
    return EventRecord(tenant, asset, ts, kind, type_, dict(data))


def dead(tenant: int | None, device: str, reason: Reason, received: int,
         payload: bytes = b"{}") -> DeadLetter:
    return DeadLetter(tenant, device, f"shopfloor/v1/{device}", reason, f"{reason} detail", payload, received)


def tenminute_buckets(n: int) -> list[tuple[int, int]]:
    return [(T0 + i * 10 * MIN, T0 + (i + 1) * 10 * MIN) for i in range(n)]


def values(rows: list[AggRow]) -> list[tuple[object, int]]:
    """(value, count) per row, typed loosely so it compares with ``pytest.approx`` values."""
    return [(r.value, r.count) for r in rows]


_example_series = itertools.count(1_000)


class HistorianContract:
    # -- commit, sequence, idempotence ---------------------------------------------------------

    def test_fresh_store_is_empty(self, historian: Historian) -> None:
        assert historian.count_samples() == 0
        assert historian.latest([1, 2]) == {}
        assert historian.raw(1, 0, 2**62) == []
        assert historian.events(1) == []
        assert historian.dead_letters(None) == []
        assert historian.dead_letter_counts(1) == []

    def test_seq_is_monotonic_and_empty_batch_does_not_advance_it(self, historian: Historian) -> None:
        s1 = historian.commit(sample_batch((1, T0, 1.0, G)))
        s2 = historian.commit(IngestBatch(events=[event(1, 10, T0)]))
        s3 = historian.commit(IngestBatch(dead_letters=[dead(1, "plc-1", Reason.UNDECODABLE, T0)]))
        assert s1 < s2 < s3
        assert historian.last_seq() == s3
        assert historian.commit(IngestBatch()) == s3
        assert historian.last_seq() == s3
        s4 = historian.commit(sample_batch((1, T0, 1.0, G)))  # a pure duplicate still gets a number
        assert s4 > s3 and historian.last_seq() == s4

    def test_same_batch_twice_is_stored_once(self, historian: Historian) -> None:
        batch = sample_batch((1, T0, 1.0, G), (1, T0 + S, 2.0, G), (2, T0, 3.0, U))
        batch.events.append(event(1, 10, T0, reason="setup"))
        batch.dead_letters.append(dead(1, "plc-1", Reason.WRONG_TYPE, T0))
        historian.commit(batch)
        historian.commit(batch)
        assert historian.count_samples() == 3
        assert len(historian.events(1)) == 1
        # dead letters record deliveries, so a redelivered bad message is listed twice
        assert historian.dead_letter_counts(1) == [("plc-1", "wrong_type", 2)]

    def test_first_sample_for_a_series_and_ts_wins(self, historian: Historian) -> None:
        historian.commit(sample_batch((1, T0, 1.0, G), (1, T0, 9.0, B), (1, T0 + S, 2.0, G)))
        historian.commit(sample_batch((1, T0 + S, 7.0, G), (1, T0 + 2 * S, 3.0, G)))
        got = historian.raw(1, T0, T0 + H)
        assert [(s.ts_us, s.value, s.quality) for s in got] == [
            (T0, 1.0, G), (T0 + S, 2.0, G), (T0 + 2 * S, 3.0, G)]

    def test_identical_events_once_different_events_at_same_ts_both(self, historian: Historian) -> None:
        a = EventRecord(1, 10, T0, "state", "stopped", {"reason": "jam", "code": 7})
        same = EventRecord(1, 10, T0, "state", "stopped", {"code": 7, "reason": "jam"})
        other_data = EventRecord(1, 10, T0, "state", "stopped", {"reason": "tool change", "code": 7})
        other_type = EventRecord(1, 10, T0, "state", "idle", {})
        other_asset = EventRecord(1, 11, T0, "state", "stopped", {"reason": "jam", "code": 7})
        historian.commit(IngestBatch(events=[a, same, other_data]))
        historian.commit(IngestBatch(events=[a, other_type, other_asset]))
        got = historian.events(1)
        assert len(got) == 4
        assert sorted((e.asset_id, e.type, e.data.get("reason")) for e in got) == [
            (10, "idle", None), (10, "stopped", "jam"), (10, "stopped", "tool change"),
            (11, "stopped", "jam")]

    def test_commits_from_several_threads(self, historian: Historian) -> None:
        seqs: list[int] = []
        lock = threading.Lock()

        def work(t: int) -> None:
            for i in range(10):
                seq = historian.commit(sample_batch((t, T0 + i * S, float(i), G)))
                with lock:
                    seqs.append(seq)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(1, 5)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(set(seqs)) == 40
        assert historian.last_seq() == max(seqs)
        assert historian.count_samples() == 40

    # -- raw, latest, count, retention --------------------------------------------------------

    def test_raw_window_is_start_inclusive_end_exclusive_oldest_first(self, historian: Historian) -> None:
        historian.commit(sample_batch(
            (1, T0 + 3 * S, 3.0, G), (1, T0, 0.0, G), (1, T0 + S, None, U, "open"),
            (1, T0 + 2 * S, 2.0, B), (2, T0 + S, 5.0, G)))
        got = historian.raw(1, T0, T0 + 3 * S)
        assert got == [Sample(1, T0, 0.0, None, G), Sample(1, T0 + S, None, "open", U),
                       Sample(1, T0 + 2 * S, 2.0, None, B)]
        assert [s.ts_us for s in historian.raw(1, T0 + S, T0 + 4 * S, limit=2)] == [T0 + S, T0 + 2 * S]
        assert historian.raw(1, T0 + 4 * S, T0 + 9 * S) == []
        assert historian.raw(3, T0, T0 + H) == []

    def test_latest_is_the_newest_sample_of_each_series(self, historian: Historian) -> None:
        historian.commit(sample_batch((1, T0, 1.0, G), (1, T0 + 2 * S, 2.0, G), (2, T0 + S, None, G, "on")))
        historian.commit(sample_batch((1, T0 + S, 9.0, G), (3, T0, 4.0, B)))
        got = historian.latest([1, 2, 3, 4])
        assert got == {1: Sample(1, T0 + 2 * S, 2.0, None, G), 2: Sample(2, T0 + S, None, "on", G),
                       3: Sample(3, T0, 4.0, None, B)}
        assert historian.latest([]) == {}

    def test_count_samples(self, historian: Historian) -> None:
        historian.commit(sample_batch((1, T0, 1.0, G), (1, T0 + S, 1.0, G), (2, T0, 1.0, G)))
        assert historian.count_samples() == 3
        assert historian.count_samples([1]) == 2
        assert historian.count_samples([2, 5]) == 1
        assert historian.count_samples([]) == 0

    def test_delete_before_drops_older_samples_and_counts_them(self, historian: Historian) -> None:
        historian.commit(sample_batch(*[(s, T0 + i * MIN, float(i), G) for s in (1, 2) for i in range(5)]))
        assert historian.delete_before(T0 + 2 * MIN, [1]) == 2
        assert [s.ts_us for s in historian.raw(1, 0, 2**62)] == [T0 + 2 * MIN, T0 + 3 * MIN, T0 + 4 * MIN]
        assert historian.count_samples([2]) == 5
        assert historian.delete_before(T0 + 3 * MIN) == 4
        assert historian.count_samples() == 4
        assert historian.delete_before(T0) == 0
        # a deleted sample that arrives again is stored again
        historian.commit(sample_batch((2, T0, 42.0, G)))
        assert historian.raw(2, T0, T0 + 1) == [Sample(2, T0, 42.0, None, G)]

    # -- aggregates ---------------------------------------------------------------------------

    def _plain_series(self, historian: Historian) -> None:
        historian.commit(sample_batch(
            (1, T0 - MIN, 50.0, G),                 # before the window: not counted
            (1, T0 + 1 * MIN, 1.0, G),
            (1, T0 + 2 * MIN, 3.0, U),
            (1, T0 + 3 * MIN, 100.0, B),            # bad: left out
            (1, T0 + 4 * MIN, None, G, "text"),     # text: only count/first/last see it
            (1, T0 + 5 * MIN, 5.0, G),
            (1, T0 + 25 * MIN, 2.0, G),
            (1, T0 + 30 * MIN, 77.0, G),            # at the window's end: not counted
            (2, T0 + 5 * MIN, 1000.0, G),           # another series
        ))

    @pytest.mark.parametrize(("agg", "expected"), [
        (Agg.AVG, [(3.0, 3), (None, 0), (2.0, 1)]),
        (Agg.MIN, [(1.0, 3), (None, 0), (2.0, 1)]),
        (Agg.MAX, [(5.0, 3), (None, 0), (2.0, 1)]),
        (Agg.SUM, [(9.0, 3), (None, 0), (2.0, 1)]),
        (Agg.COUNT, [(4.0, 4), (None, 0), (1.0, 1)]),
        (Agg.FIRST, [(1.0, 4), (None, 0), (2.0, 1)]),
        (Agg.LAST, [(5.0, 4), (None, 0), (2.0, 1)]),
    ])
    def test_aggregates_per_bucket(self, historian: Historian, agg: Agg,
                                   expected: list[tuple[float | None, int]]) -> None:
        self._plain_series(historian)
        rows = historian.aggregate(1, tenminute_buckets(3), agg, 5 * MIN)
        assert [(r.start_us, r.end_us) for r in rows] == tenminute_buckets(3)
        assert values(rows) == [(pytest.approx(v) if v is not None else None, n) for v, n in expected]

    def test_aggregate_without_samples_or_buckets(self, historian: Historian) -> None:
        for agg in Agg:
            assert values(historian.aggregate(9, tenminute_buckets(2), agg, MIN)) == [(None, 0), (None, 0)]
            assert historian.aggregate(9, [], agg, MIN) == []

    def _twa_series(self, historian: Historian) -> None:
        historian.commit(sample_batch(
            (1, T0 - 2 * MIN, 10.0, G),             # before the first bucket, in force at its start
            (1, T0 + 1 * MIN, 20.0, G),
            (1, T0 + 4 * MIN, 999.0, B),            # bad: ends the hold of 20, adds nothing
            (1, T0 + 6 * MIN, 30.0, U),
            (1, T0 + 18 * MIN, 40.0, G),
            (1, T0 + 22 * MIN, None, G, "text"),    # a text sample ends the hold of 40
        ))

    def test_twa_with_staleness(self, historian: Historian) -> None:
        self._twa_series(historian)
        rows = historian.aggregate(1, tenminute_buckets(4), Agg.TWA, 5 * MIN)
        # 10 holds [-2, 1), 20 [1, 4), 30 [6, 11) (stale at 11), 40 [18, 22)
        assert values(rows) == [
            (pytest.approx((10 * 1 + 20 * 3 + 30 * 4) / 8), 3),
            (pytest.approx((30 * 1 + 40 * 2) / 3), 2),
            (pytest.approx(40.0), 1),
            (None, 0),
        ]

    def test_twa_holds_until_the_next_sample_when_staleness_is_long(self, historian: Historian) -> None:
        self._twa_series(historian)
        rows = historian.aggregate(1, tenminute_buckets(4), Agg.TWA, H)
        # 30 now holds [6, 18)
        assert values(rows) == [
            (pytest.approx(23.75), 3), (pytest.approx((30 * 8 + 40 * 2) / 10), 2),
            (pytest.approx(40.0), 1), (None, 0)]

    def test_twa_ignores_a_sample_gone_stale_before_the_window(self, historian: Historian) -> None:
        self._twa_series(historian)
        rows = historian.aggregate(1, tenminute_buckets(4), Agg.TWA, MIN)
        # 10 holds [-2, -1), 20 [1, 2), 30 [6, 7), 40 [18, 19)
        assert values(rows) == [(pytest.approx(25.0), 2), (pytest.approx(40.0), 1), (None, 0), (None, 0)]

    def test_twa_of_a_bucket_inside_one_hold(self, historian: Historian) -> None:
        self._twa_series(historian)
        rows = historian.aggregate(1, [(T0 + 7 * MIN, T0 + 8 * MIN), (T0 + 4 * MIN, T0 + 6 * MIN)],
                                   Agg.TWA, 5 * MIN)
        assert values(rows) == [(pytest.approx(30.0), 1), (None, 0)]

    def test_aggregates_over_dst_days_of_23_and_25_hours(self, historian: Historian) -> None:
        berlin = "Europe/Berlin"
        spring = buckets(to_us(datetime(2024, 3, 30, 12, tzinfo=UTC)),
                         to_us(datetime(2024, 3, 31, 12, tzinfo=UTC)), Interval(1, "d"), berlin)
        autumn = buckets(to_us(datetime(2024, 10, 27, 12, tzinfo=UTC)),
                         to_us(datetime(2024, 10, 27, 13, tzinfo=UTC)), Interval(1, "d"), berlin)
        assert [(b1 - b0) // H for b0, b1 in spring] == [24, 23]
        assert [(b1 - b0) // H for b0, b1 in autumn] == [25]
        (d1, _), (d2, _) = spring
        ((d3, _),) = autumn
        noon_cest = to_us(datetime(2024, 3, 31, 10, tzinfo=UTC))   # 12:00 local, 11 h after midnight
        noon_cet = to_us(datetime(2024, 10, 27, 11, tzinfo=UTC))   # 12:00 local, 13 h after midnight
        historian.commit(sample_batch((1, d1, 1.0, G), (1, d2, 2.0, G), (1, noon_cest, 3.0, G),
                                      (1, d3, 2.0, G), (1, noon_cet, 3.0, G)))
        two_days = 48 * H
        assert values(historian.aggregate(1, spring, Agg.TWA, two_days)) == [
            (pytest.approx(1.0), 1), (pytest.approx((2 * 11 + 3 * 12) / 23), 2)]
        assert values(historian.aggregate(1, autumn, Agg.TWA, two_days)) == [
            (pytest.approx((2 * 13 + 3 * 12) / 25), 2)]
        assert values(historian.aggregate(1, spring, Agg.AVG, two_days)) == [(1.0, 1), (2.5, 2)]

    # -- events -------------------------------------------------------------------------------

    def _events(self, historian: Historian) -> None:
        historian.commit(IngestBatch(events=[
            event(1, 10, T0, "state", "running"),
            event(1, 10, T0 + MIN, "count", "good", n=5),
            event(1, 10, T0 + 2 * MIN, "state", "stopped", reason="jam"),
            event(1, 11, T0 + 3 * MIN, "state", "idle"),
            event(1, 11, T0 + 4 * MIN, "state", "running"),
            event(2, 10, T0 + 5 * MIN, "state", "stopped", reason="other tenant"),
        ]))

    def test_events_filters_and_tenant_isolation(self, historian: Historian) -> None:
        self._events(historian)

        def ts(**kw: Any) -> list[int]:
            return [(e.ts_us - T0) // MIN for e in historian.events(1, **kw)]

        assert ts() == [0, 1, 2, 3, 4]
        assert ts(asset_ids=[11]) == [3, 4]
        assert ts(kinds=["count"]) == [1]
        assert ts(start_us=T0 + MIN, end_us=T0 + 3 * MIN) == [1, 2]
        assert ts(limit=2) == [3, 4]   # the newest two, oldest first
        assert ts(asset_ids=[]) == []
        assert [(e.tenant_id, e.data) for e in historian.events(2)] == [(2, {"reason": "other tenant"})]
        assert historian.events(3) == []
        first = historian.events(1, kinds=["count"])[0]
        assert (first.tenant_id, first.asset_id, first.kind, first.type, first.data) == (
            1, 10, "count", "good", {"n": 5})

    def test_latest_events_per_asset(self, historian: Historian) -> None:
        self._events(historian)
        got = historian.latest_events(1, "state")
        assert {a: (e.type, (e.ts_us - T0) // MIN) for a, e in got.items()} == {
            10: ("stopped", 2), 11: ("running", 4)}
        assert list(historian.latest_events(1, "state", [11])) == [11]
        assert historian.latest_events(1, "count")[10].data == {"n": 5}
        assert list(historian.latest_events(2, "state")) == [10]
        assert historian.latest_events(3, "state") == {}

    def test_delete_events_before(self, historian: Historian) -> None:
        self._events(historian)
        assert historian.delete_events_before(T0 + 2 * MIN) == 2
        assert [(e.ts_us - T0) // MIN for e in historian.events(1)] == [2, 3, 4]
        assert len(historian.events(2)) == 1

    # -- dead letters -------------------------------------------------------------------------

    def _dead_letters(self, historian: Historian) -> None:
        historian.commit(IngestBatch(dead_letters=[
            dead(1, "plc-1", Reason.UNDECODABLE, T0, b"\x00\xffnot json"),
            dead(1, "plc-1", Reason.UNDECODABLE, T0 + S),
            dead(1, "plc-2", Reason.WRONG_TYPE, T0 + 2 * S),
            dead(2, "plc-9", Reason.WRONG_TYPE, T0 + 3 * S),
            dead(None, "stranger", Reason.UNKNOWN_DEVICE, T0 + 4 * S),
        ]))

    def test_dead_letters_newest_first_filtered_per_tenant(self, historian: Historian) -> None:
        self._dead_letters(historian)
        got = historian.dead_letters(1)
        assert [(d.device, d.reason, d.received_us - T0) for d in got] == [
            ("plc-2", "wrong_type", 2 * S), ("plc-1", "undecodable", S), ("plc-1", "undecodable", 0)]
        assert got[-1].payload == b"\x00\xffnot json" and got[-1].tenant_id == 1
        assert got[-1].topic == "shopfloor/v1/plc-1" and got[-1].detail == "undecodable detail"
        assert len({d.id for d in got}) == 3
        assert [d.device for d in historian.dead_letters(1, reason="undecodable")] == ["plc-1", "plc-1"]
        assert [d.reason for d in historian.dead_letters(1, device="plc-2")] == ["wrong_type"]
        assert len(historian.dead_letters(1, limit=1)) == 1
        assert [d.device for d in historian.dead_letters(2)] == ["plc-9"]
        unowned = historian.dead_letters(None)
        assert [(d.device, d.tenant_id) for d in unowned] == [("stranger", None)]

    def test_dead_letter_counts(self, historian: Historian) -> None:
        self._dead_letters(historian)
        assert historian.dead_letter_counts(1) == [("plc-1", "undecodable", 2), ("plc-2", "wrong_type", 1)]
        assert historian.dead_letter_counts(2) == [("plc-9", "wrong_type", 1)]
        assert historian.dead_letter_counts(None) == [("stranger", "unknown_device", 1)]
        assert historian.dead_letter_counts(3) == []

    # -- property -----------------------------------------------------------------------------

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(batches=st.lists(st.lists(st.tuples(
        st.integers(0, 3), st.integers(0, 40),
        st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64))),
        max_size=30), min_size=1, max_size=4))
    def test_raw_returns_the_first_value_per_series_and_ts(
            self, historian: Historian, batches: list[list[tuple[int, int, float | None]]]) -> None:
        base = next(_example_series) * 10  # each example writes its own series ids
        expected: dict[tuple[int, int], float | None] = {}
        for rows in batches:
            batch = IngestBatch()
            for s, t, v in rows:
                batch.samples.add(base + s, T0 + t * S, v, None if v is not None else "t", G)
                expected.setdefault((base + s, T0 + t * S), v)
            historian.commit(batch)
        got = {(x.series_id, x.ts_us): x.value for s in range(4) for x in historian.raw(base + s, 0, 2**62)}
        assert got == expected


# ---- rollups ----------------------------------------------------------------------------------

D0 = to_us(datetime(2024, 3, 29, 22, tzinfo=UTC))  # 23:00 in Berlin; the data spans its DST change
_DATA_END = D0 + 50 * H
ALIGNED_GRIDS: dict[str, list[tuple[int, int]]] = {
    "1m": buckets(D0 + 25 * H, D0 + 28 * H, Interval(1, "m")),
    "15m": buckets(D0 + 10 * H, D0 + 40 * H, Interval(15, "m")),
    "1h": buckets(D0 - 2 * H, D0 + 52 * H, Interval(1, "h")),
    "1d Europe/Berlin": buckets(D0 + 2 * H, D0 + 48 * H, Interval(1, "d"), "Europe/Berlin"),
}
# 7-minute buckets of a window that starts at no whole minute: no rollup tiles them
UNALIGNED_GRID = [(D0 + 3 * H + 30 * S + i * 7 * MIN, D0 + 3 * H + 30 * S + (i + 1) * 7 * MIN)
                  for i in range(200)]
GRIDS = {**ALIGNED_GRIDS, "7m unaligned": UNALIGNED_GRID}


def check_aggregates(historian: Historian, series_id: int, samples: list[Sample],
                     grid: list[tuple[int, int]], agg: Agg, staleness_us: int, what: str = "") -> None:
    """``aggregate`` equals the reference over ``samples`` (floating-point tolerance only)."""
    got = historian.aggregate(series_id, grid, agg, staleness_us)
    expected = reference_aggregate(samples, grid, agg, staleness_us)
    assert [(r.start_us, r.end_us) for r in got] == list(grid)
    for row, (value, count) in zip(got, expected, strict=True):
        where = f"{what} {agg} bucket at {(row.start_us - D0) / H:+.4f} h"
        assert row.count == count, f"{where}: count {row.count}, expected {count}"
        if value is None:
            assert row.value is None, f"{where}: {row.value}, expected None"
        else:
            assert row.value == pytest.approx(value, rel=1e-9, abs=1e-9), where


class RollupContract:
    @pytest.fixture(params=[5 * MIN, 90 * S], ids=["staleness-5min", "staleness-90s"])
    def rollup_staleness_us(self, request: pytest.FixtureRequest) -> int:
        return int(request.param)

    def _load(self, historian: Historian, *, shuffled: bool = True) -> dict[int, list[Sample]]:
        """Two irregular series, committed in seven batches (shuffled: each batch scattered
        over the whole span, so most commits land between older samples)."""
        data = {sid: irregular_samples(sid, D0, _DATA_END, seed=sid) for sid in (1, 2)}
        rows = [s for series in data.values() for s in series]
        if shuffled:
            random.Random(7).shuffle(rows)
        else:
            rows.sort(key=lambda s: s.ts_us)
        for k in range(7):
            part = rows[k * len(rows) // 7:(k + 1) * len(rows) // 7]
            historian.commit(sample_batch(*[(s.series_id, s.ts_us, s.value, s.quality, s.text) for s in part]))
        return data

    def _check_grids(self, historian: Historian, series_id: int, samples: list[Sample], staleness_us: int,
                     grids: dict[str, list[tuple[int, int]]], what: str) -> None:
        for name, grid in grids.items():
            for agg in Agg:
                check_aggregates(historian, series_id, samples, grid, agg, staleness_us, f"{what}, {name}:")

    @pytest.mark.parametrize("grid", list(GRIDS))
    def test_aggregates_equal_the_raw_semantics(self, historian: Historian, rollup_staleness_us: int,
                                                grid: str) -> None:
        data = self._load(historian)
        for sid in (1, 2):
            for agg in Agg:
                check_aggregates(historian, sid, data[sid], GRIDS[grid], agg, rollup_staleness_us, f"series {sid}")
        # a twa with another staleness than the rollups' is answered from raw, the same way
        check_aggregates(historian, 1, data[1], GRIDS[grid], Agg.TWA, 2 * MIN + 7 * S, "other staleness")

    def test_late_samples_update_the_rollups(self, historian: Historian, rollup_staleness_us: int) -> None:
        data = self._load(historian, shuffled=False)
        self._check_grids(historian, 1, data[1], rollup_staleness_us, ALIGNED_GRIDS, "before")
        old = data[1]
        short = [i for i in range(len(old) - 1) if 2 * S < old[i + 1].ts_us - old[i].ts_us < 90 * S]
        long = [i for i in range(len(old) - 1) if old[i + 1].ts_us - old[i].ts_us > 20 * MIN]
        late = [Sample(1, (old[i].ts_us + old[i + 1].ts_us) // 2, value, text, quality)
                for i, (value, text, quality) in zip(
                    [short[3], short[len(short) // 2], short[-5], long[0], long[-1]],
                    [(55.5, None, G), (None, "late text", G), (999.0, None, B), (-7.25, None, U), (3.0, None, G)],
                    strict=True)]
        historian.commit(sample_batch(*[(s.series_id, s.ts_us, s.value, s.quality, s.text) for s in late]))
        everything = old + late
        historian.delete_before(_DATA_END + H)  # only rollups can answer now
        self._check_grids(historian, 1, everything, rollup_staleness_us, ALIGNED_GRIDS, "with late samples")

    def test_raw_retention_keeps_aligned_answers(self, historian: Historian, rollup_staleness_us: int) -> None:
        data = self._load(historian)
        cutoff = D0 + 20 * H + 17 * S + 3
        older = [s for s in data[1] if s.ts_us < cutoff]
        assert historian.delete_before(cutoff, [1]) == len(older)
        self._check_grids(historian, 1, data[1], rollup_staleness_us, ALIGNED_GRIDS, "raw partly gone")
        kept = [s for s in data[1] if s.ts_us >= cutoff]
        for agg in Agg:
            check_aggregates(historian, 1, kept, UNALIGNED_GRID, agg, rollup_staleness_us, "unaligned")
        self._check_grids(historian, 2, data[2], rollup_staleness_us, GRIDS, "other series")
        historian.delete_before(_DATA_END)
        self._check_grids(historian, 1, data[1], rollup_staleness_us, ALIGNED_GRIDS, "raw all gone")
        for agg in Agg:
            check_aggregates(historian, 1, [], UNALIGNED_GRID, agg, rollup_staleness_us, "unaligned, raw gone")

    def test_delete_rollups_before(self, historian: Historian, rollup_staleness_us: int) -> None:
        data = self._load(historian)
        historian.delete_before(_DATA_END)
        cutoff = D0 + 24 * H
        hourly = ALIGNED_GRIDS["1h"]
        assert historian.delete_rollups_before("1h", cutoff, [1]) > 0
        assert historian.delete_rollups_before("1h", cutoff, [1]) == 0
        # hours before the cutoff now come from the 1-minute rollups
        self._check_grids(historian, 1, data[1], rollup_staleness_us, {"1h": hourly}, "1h dropped")
        assert historian.delete_rollups_before("1m", cutoff, [1]) > 0
        newer = [b for b in hourly if b[0] >= cutoff]
        self._check_grids(historian, 1, data[1], rollup_staleness_us, {"1h": newer, "1m": ALIGNED_GRIDS["1m"]},
                          "after the cutoff")
        for agg in Agg:
            assert values(historian.aggregate(1, [b for b in hourly if b[0] < cutoff], agg, rollup_staleness_us)) \
                == [(None, 0)] * (len(hourly) - len(newer)), agg
        self._check_grids(historian, 2, data[2], rollup_staleness_us, ALIGNED_GRIDS, "other series")
        assert historian.delete_rollups_before("1h", cutoff) > 0  # the other series' rows
        assert historian.delete_rollups_before("1m", cutoff, []) == 0
        with pytest.raises(InvalidInput):
            historian.delete_rollups_before("1d", cutoff)

    def test_rollup_retention_while_raw_is_there_changes_no_answer(self, historian: Historian,
                                                                    rollup_staleness_us: int) -> None:
        data = self._load(historian)
        historian.delete_rollups_before("1h", _DATA_END + H)
        historian.delete_rollups_before("1m", D0 + 30 * H)
        self._check_grids(historian, 1, data[1], rollup_staleness_us, ALIGNED_GRIDS, "rollups dropped")

    def test_rebuild_equals_incremental(self, historian: Historian, rollup_staleness_us: int) -> None:
        data = self._load(historian)
        historian.rebuild_rollups()
        historian.rebuild_rollups([1], D0 + 5 * H + 7 * S, D0 + 9 * H)
        historian.rebuild_rollups([2], start_us=D0 + 40 * H)
        historian.rebuild_rollups([])
        historian.delete_before(_DATA_END)
        for sid in (1, 2):
            self._check_grids(historian, sid, data[sid], rollup_staleness_us, ALIGNED_GRIDS, f"rebuilt {sid}")

    def test_rebuild_keeps_rollups_where_raw_is_gone(self, historian: Historian,
                                                     rollup_staleness_us: int) -> None:
        data = self._load(historian)
        historian.delete_before(D0 + 30 * H + 11 * S)
        historian.rebuild_rollups()
        historian.rebuild_rollups([1], D0, D0 + 40 * H)
        self._check_grids(historian, 1, data[1], rollup_staleness_us, ALIGNED_GRIDS, "rebuilt after retention")
