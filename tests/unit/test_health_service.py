"""Health and readiness: database round trip and its timeout, broker link, ingest lag and stuck ingest."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from shopfloor.services.health import HealthService
from shopfloor.testing.fakes import FixedClock

S = 1_000_000


class Ingest:
    def __init__(self) -> None:
        self.last: int | None = None
        self.pending = 0


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def ingest() -> Ingest:
    return Ingest()


@pytest.fixture
def health(clock: FixedClock, ingest: Ingest) -> Iterator[HealthService]:
    svc = HealthService(clock, ping_database=lambda: None, broker_connected=lambda: True,
                        last_commit_us=lambda: ingest.last, pending=lambda: ingest.pending, max_lag_s=60)
    yield svc
    svc.close()


def test_all_up_is_ready_with_details(health: HealthService, clock: FixedClock, ingest: Ingest) -> None:
    ingest.last = clock.now_us() - 2_500_000
    report = health.report()
    assert report.ready
    body = report.as_dict()
    assert body["status"] == "ready"
    assert body["checks"] == {"store": True, "ingest": True, "broker": True}
    assert body["database"]["ok"] is True and body["database"]["latency_ms"] >= 0
    assert body["broker"] == {"connected": True}
    assert body["ingest"] == {"last_commit": "2023-11-14T22:13:17.500000Z", "lag_s": 2.5, "pending": 0,
                              "stuck": False}


def test_a_quiet_plant_is_not_a_fault(health: HealthService, clock: FixedClock, ingest: Ingest) -> None:
    ingest.last = clock.now_us()
    clock.advance(3_600 * S)  # nothing arrived for an hour, nothing waits
    report = health.report()
    assert report.ready and report.ingest.lag_s == 3_600.0


def test_messages_waiting_without_commits_is_stuck(health: HealthService, clock: FixedClock,
                                                    ingest: Ingest) -> None:
    ingest.last = clock.now_us()
    ingest.pending = 12
    clock.advance(30 * S)
    assert health.report().ready  # behind, but moving within the allowed lag
    clock.advance(31 * S)
    report = health.report()
    assert not report.ready and report.ingest.stuck and report.checks["ingest"] is False
    assert report.as_dict()["status"] == "not ready"


def test_never_committed_counts_from_start(health: HealthService, clock: FixedClock, ingest: Ingest) -> None:
    ingest.pending = 1
    assert health.report().ingest.last_commit_us is None and not health.report().ingest.stuck
    clock.advance(61 * S)
    assert health.report().ingest.stuck


def test_too_many_waiting_is_not_ready(clock: FixedClock) -> None:
    svc = HealthService(clock, ping_database=lambda: None, pending=lambda: 5_001, max_pending=5_000)
    try:
        assert svc.report().ingest.stuck
    finally:
        svc.close()


def test_database_failure_and_broker_down(clock: FixedClock) -> None:
    def broken() -> None:
        raise RuntimeError("connection refused")

    svc = HealthService(clock, ping_database=broken, broker_connected=lambda: False)
    try:
        report = svc.report()
        assert not report.ready
        assert report.checks == {"store": False, "ingest": True, "broker": False}
        assert report.database.error == "connection refused" and report.database.latency_ms is None
    finally:
        svc.close()


def test_a_hanging_database_answers_fast_and_is_not_queued_behind(clock: FixedClock) -> None:
    release = threading.Event()
    svc = HealthService(clock, ping_database=release.wait, db_timeout_s=0.05)
    try:
        first = svc.database()
        assert not first.ok and "no answer within 0.05 s" in (first.error or "")
        second = svc.database()
        assert not second.ok and "previous check" in (second.error or "")
        release.set()
        for _ in range(100):
            if svc.database().ok:
                break
            threading.Event().wait(0.01)
        assert svc.database().ok
    finally:
        release.set()
        svc.close()


def test_without_broker_or_ingest_only_the_store_counts(clock: FixedClock) -> None:
    svc = HealthService(clock, ping_database=lambda: None)
    try:
        report = svc.report()
        assert report.ready and report.checks == {"store": True, "ingest": True}
        assert report.as_dict()["broker"] == {"connected": None}
        assert report.as_dict()["ingest"] == {"last_commit": None, "lag_s": None, "pending": 0, "stuck": False}
    finally:
        svc.close()
