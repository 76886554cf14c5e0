"""Health and readiness: the database, the broker link, and how far ingest is behind.

The service is given plain callables, so each deployment wires what it has: a ``SELECT 1`` on
DuckDB or the PostgreSQL pool, the embedded broker's ``running`` or an MQTT client's
``connected``, the ingest service's time of last commit and count of messages waiting.

Ready means: the database answered (within ``db_timeout_s``), the broker link is up (when
there is one), and ingest is not stuck. Ingest counts as stuck when messages are waiting and
nothing has been committed for ``max_lag_s`` (or more than ``max_pending`` wait). A long time
since the last commit with nothing waiting is only a quiet plant, not a fault: ``lag_s`` is
reported either way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from shopfloor.domain.timeutil import from_us
from shopfloor.ports.clock import Clock


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    ok: bool
    latency_ms: float | None  # None when it did not answer in time
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    connected: bool | None  # None: this process has no broker link


@dataclass(frozen=True, slots=True)
class IngestHealth:
    last_commit_us: int | None  # None: nothing committed since start
    lag_s: float | None  # now - last commit
    pending: int  # messages accepted but not yet committed
    stuck: bool


@dataclass(frozen=True, slots=True)
class HealthReport:
    database: DatabaseHealth
    broker: BrokerHealth
    ingest: IngestHealth

    @property
    def checks(self) -> dict[str, bool]:
        out = {"store": self.database.ok, "ingest": not self.ingest.stuck}
        if self.broker.connected is not None:
            out["broker"] = self.broker.connected
        return out

    @property
    def ready(self) -> bool:
        return all(self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        """The JSON body of ``/readyz`` and ``/healthz``."""
        db, ing = self.database, self.ingest
        last = None if ing.last_commit_us is None else _iso(ing.last_commit_us)
        return {
            "status": "ready" if self.ready else "not ready",
            "checks": self.checks,
            "database": {"ok": db.ok, "latency_ms": db.latency_ms, "error": db.error},
            "broker": {"connected": self.broker.connected},
            "ingest": {"last_commit": last, "lag_s": ing.lag_s, "pending": ing.pending, "stuck": ing.stuck},
        }


class HealthService:
    def __init__(self, clock: Clock, *, ping_database: Callable[[], object],
                 broker_connected: Callable[[], bool] | None = None,
                 last_commit_us: Callable[[], int | None] | None = None,
                 pending: Callable[[], int] | None = None,
                 max_lag_s: float = 60.0, max_pending: int | None = None, db_timeout_s: float = 2.0) -> None:
        self._clock = clock
        self._ping = ping_database
        self._broker = broker_connected
        self._last_commit = last_commit_us
        self._pending = pending
        self.max_lag_s = max_lag_s
        self.max_pending = max_pending
        self.db_timeout_s = db_timeout_s
        self._started_us = clock.now_us()
        self._pinger = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shopfloor-health")
        self._lock = threading.Lock()
        self._running: Future[float] | None = None

    def report(self) -> HealthReport:
        return HealthReport(self.database(), self.broker(), self.ingest())

    def database(self) -> DatabaseHealth:
        """One round trip to the database, timed; a ping still hanging from before is a failure at once."""
        with self._lock:
            if self._running is not None and not self._running.done():
                return DatabaseHealth(False, None, "the previous check has not come back yet")
            fut = self._running = self._pinger.submit(self._timed_ping)
        try:
            return DatabaseHealth(True, round(fut.result(timeout=self.db_timeout_s), 3))
        except FutureTimeout:
            return DatabaseHealth(False, None, f"no answer within {self.db_timeout_s:g} s")
        except Exception as exc:
            return DatabaseHealth(False, None, (str(exc) or type(exc).__name__)[:300])

    def broker(self) -> BrokerHealth:
        if self._broker is None:
            return BrokerHealth(None)
        try:
            return BrokerHealth(bool(self._broker()))
        except Exception:
            return BrokerHealth(False)

    def ingest(self) -> IngestHealth:
        now = self._clock.now_us()
        last = self._last_commit() if self._last_commit is not None else None
        pending = self._pending() if self._pending is not None else 0
        lag_s = None if last is None else max(0.0, (now - last) / 1e6)
        waited_s = (now - (last if last is not None else self._started_us)) / 1e6
        stuck = (pending > 0 and waited_s > self.max_lag_s) or (
            self.max_pending is not None and pending > self.max_pending)
        return IngestHealth(last, None if lag_s is None else round(lag_s, 3), pending, stuck)

    def close(self) -> None:
        self._pinger.shutdown(wait=False, cancel_futures=True)

    def _timed_ping(self) -> float:
        t0 = time.perf_counter()
        self._ping()
        return (time.perf_counter() - t0) * 1000.0


def _iso(us: int) -> str:
    return from_us(us).isoformat().replace("+00:00", "Z")
