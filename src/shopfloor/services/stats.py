"""Ingest statistics: totals, recent rates, rejects by device and reason, devices online."""

from __future__ import annotations

import threading
from collections import Counter, deque
from dataclasses import dataclass, field

from shopfloor.ports.clock import Clock

WINDOW_S = 10


@dataclass(slots=True)
class TenantStats:
    messages: int = 0
    points: int = 0
    rejected: int = 0
    rejects: Counter[tuple[str, str]] = field(default_factory=Counter)  # (device, reason)
    last_seen_us: dict[str, int] = field(default_factory=dict)  # device -> last message


class IngestStats:
    """Counted after commit. Thread-safe; cheap to update on the hot path."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.messages = 0
        self.points = 0
        self.rejected = 0
        self.commits = 0
        self.commit_failures = 0
        self.by_tenant: dict[int | None, TenantStats] = {}
        # per tenant (None: messages no tenant was found for) and "all": (second, messages, points)
        self._recent: dict[int | str | None, deque[tuple[int, int, int]]] = {}
        self.online: dict[str, int | None] = {}  # username -> tenant id

    def record(self, tenant_id: int | None, device: str, messages: int, points: int,
               rejects: list[tuple[str, str]]) -> None:
        now = self._clock.now_us()
        sec = now // 1_000_000
        with self._lock:
            self.messages += messages
            self.points += points
            self.rejected += len(rejects)
            ts = self.by_tenant.setdefault(tenant_id, TenantStats())
            ts.messages += messages
            ts.points += points
            ts.rejected += len(rejects)
            for r in rejects:
                ts.rejects[r] += 1
            if device:
                ts.last_seen_us[device] = now
            for key in (tenant_id, "all"):
                recent = self._recent.setdefault(key, deque())
                if recent and recent[-1][0] == sec:
                    _, m, p = recent[-1]
                    recent[-1] = (sec, m + messages, p + points)
                else:
                    recent.append((sec, messages, points))
                while recent and recent[0][0] <= sec - WINDOW_S:
                    recent.popleft()

    def commit_done(self, ok: bool) -> None:
        with self._lock:
            if ok:
                self.commits += 1
            else:
                self.commit_failures += 1

    def rates(self, tenant_id: int | str | None = "all") -> tuple[float, float]:
        """(messages/s, points/s) over the last complete seconds of the window."""
        sec = self._clock.now_us() // 1_000_000
        with self._lock:
            rows = [r for r in self._recent.get(tenant_id, ()) if sec - WINDOW_S < r[0] < sec]
        if not rows:
            return 0.0, 0.0
        span = WINDOW_S - 1
        return sum(r[1] for r in rows) / span, sum(r[2] for r in rows) / span

    def set_online(self, username: str, tenant_id: int | None, online: bool) -> None:
        with self._lock:
            if online:
                self.online[username] = tenant_id
            else:
                self.online.pop(username, None)

    def online_count(self, tenant_id: int | None = None) -> int:
        with self._lock:
            if tenant_id is None:
                return len(self.online)
            return sum(1 for t in self.online.values() if t == tenant_id)

    def tenant(self, tenant_id: int | None) -> TenantStats:
        with self._lock:
            ts = self.by_tenant.get(tenant_id, TenantStats())
            return TenantStats(ts.messages, ts.points, ts.rejected, Counter(ts.rejects), dict(ts.last_seen_us))
