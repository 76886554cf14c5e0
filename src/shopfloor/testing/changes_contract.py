"""The contract of the historian's ordered reads (``samples_since``, ``events_since``).

Subclass ``ChangesContract`` next to ``HistorianContract`` (same ``historian`` fixture). What it
fixes: rows of commits after ``seq`` (up to ``upto``), ordered by sequence; a duplicate that a later
commit brought is not listed again (it was not stored); ``limit`` cuts, and the rest follows when
read on from the last sequence number seen whole; a commit of dead letters only has no rows.
"""

from __future__ import annotations

import pytest

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.query import SampleChanges
from shopfloor.domain.records import IngestBatch, Reason
from shopfloor.ports.store import Historian
from shopfloor.testing.store_contract import MIN, T0, G, dead, event, sample_batch


def _keys(got: SampleChanges) -> list[tuple[int, int]]:
    return list(zip(got.seq, got.series_id, strict=True))


class ChangesContract:
    def test_samples_and_events_since_a_sequence(self, historian: Historian) -> None:
        s1 = historian.commit(sample_batch((2, T0 + MIN, 2.0, G), (1, T0, 1.0, G)))
        b2 = sample_batch((1, T0 + MIN, 3.0, G), (1, T0, 9.0, G))  # the second is a duplicate
        b2.events.append(event(1, 10, T0, kind="state", type_="running"))
        s2 = historian.commit(b2)
        s3 = historian.commit(IngestBatch(dead_letters=[dead(1, "plc", Reason.UNDECODABLE, T0)]))
        b4 = IngestBatch(events=[event(2, 20, T0 - MIN, kind="count", type_="good", n=3)])
        s4 = historian.commit(b4)
        assert s1 < s2 < s3 < s4

        got = historian.samples_since(0, 100)
        assert list(zip(got.seq, got.series_id, got.ts_us, got.value, strict=True)) == [
            (s1, 1, T0, 1.0), (s1, 2, T0 + MIN, 2.0), (s2, 1, T0 + MIN, 3.0)]
        assert _keys(historian.samples_since(s1, 100)) == [(s2, 1)]
        assert len(historian.samples_since(s2, 100)) == 0
        assert _keys(historian.samples_since(0, 100, upto=s1)) == [(s1, 1), (s1, 2)]
        assert got.text == [None, None, None] and got.quality == [0, 0, 0]

        evs = historian.events_since(0, 100)
        assert [(e.seq, e.tenant_id, e.asset_id, e.kind, e.data) for e in evs] == [
            (s2, 1, 10, "state", {}), (s4, 2, 20, "count", {"n": 3})]
        assert [e.seq for e in historian.events_since(s2, 100)] == [s4]
        assert historian.events_since(0, 100, upto=s1) == []

    def test_limit_cuts_and_reading_on_continues(self, historian: Historian) -> None:
        seqs = [historian.commit(sample_batch(*[(sid, T0 + i * MIN, float(i), G) for sid in (1, 2)]))
                for i in range(5)]
        first = historian.samples_since(0, 3)
        assert _keys(first) == [(seqs[0], 1), (seqs[0], 2), (seqs[1], 1)]
        assert _keys(first.cut(seqs[0])) == [(seqs[0], 1), (seqs[0], 2)]
        rest = historian.samples_since(seqs[0], 100)
        assert len(rest) == 8 and rest.seq[0] == seqs[1]
        assert len(historian.samples_since(0, 0)) == 0
        with pytest.raises(InvalidInput):
            historian.samples_since(0, -1)
        with pytest.raises(InvalidInput):
            historian.events_since(0, -1)
