"""Self-monitoring alarms: the platform watching itself (broker link down, ingest lag, disk nearly
full), with the same ISA-18.2 lifecycle and journal as process alarms.

They belong to no tenant: they are stored under tenant 0 (``SYSTEM_TENANT``), asset 0, with fixed
negative rule ids, and listed at ``GET /api/v1/alarms/system``. Each check is a plain callable that
the composition root wires to what the process has (``HealthService`` readings, the data
directory's disk).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shopfloor.domain.alarms import lifecycle as lc
from shopfloor.domain.alarms.engine import Output
from shopfloor.domain.alarms.model import Alarm, Priority
from shopfloor.ports.alarms import AlarmQuery, AlarmStore

SYSTEM_TENANT = 0
BROKER_DOWN = -1
INGEST_LAG = -2
DISK_FULL = -3
NAMES = {BROKER_DOWN: "broker link down", INGEST_LAG: "ingest lag", DISK_FULL: "disk nearly full"}


@dataclass(frozen=True, slots=True)
class Reading:
    """One check's verdict: the condition, the value it is based on, what to tell people."""

    active: bool
    value: float | None
    message: str


@dataclass(frozen=True, slots=True)
class Check:
    rule_id: int
    priority: Priority
    read: Callable[[], Reading | None]  # None: nothing to say now (no broker in this process)


def broker_check(connected: Callable[[], bool | None]) -> Check:
    def read() -> Reading | None:
        up = connected()
        if up is None:
            return None
        return Reading(not up, 0.0 if not up else 1.0, "the MQTT broker link is down: devices cannot deliver data")
    return Check(BROKER_DOWN, Priority.CRITICAL, read)


def lag_check(lag_s: Callable[[], float | None], pending: Callable[[], int], max_lag_s: float) -> Check:
    """Ingest is behind: messages are waiting and nothing has been committed for ``max_lag_s``."""
    def read() -> Reading:
        lag = lag_s() or 0.0
        waiting = pending()
        return Reading(waiting > 0 and lag > max_lag_s, lag,
                       f"ingest is {lag:.0f} s behind with {waiting} message(s) waiting (limit {max_lag_s:g} s)")
    return Check(INGEST_LAG, Priority.HIGH, read)


def disk_check(used_fraction: Callable[[], float | None], limit: float) -> Check:
    def read() -> Reading | None:
        used = used_fraction()
        if used is None:
            return None
        return Reading(used >= limit, round(used * 100, 1),
                       f"the data disk is {used * 100:.1f} % full (alarm at {limit * 100:.0f} %)")
    return Check(DISK_FULL, Priority.HIGH, read)


class SystemMonitor:
    def __init__(self, checks: list[Check]) -> None:
        self.checks = checks
        self.alarms: dict[int, Alarm] = {}

    def load(self, store: AlarmStore) -> None:
        self.alarms = {a.rule_id: a for a in store.alarms(SYSTEM_TENANT, AlarmQuery(limit=100))}

    def check(self, now_us: int) -> Output:
        """Read every check; the alarms that changed and their journal entries."""
        out = Output()
        for c in self.checks:
            try:
                r = c.read()
            except Exception as exc:
                r = Reading(True, None, f"{NAMES[c.rule_id]}: the check failed: {exc}")
            if r is None:
                continue
            alarm = self.alarms.get(c.rule_id) or lc.new_alarm(SYSTEM_TENANT, c.rule_id, 0, priority=c.priority,
                                                               message=NAMES[c.rule_id], ts_us=now_us)
            step = lc.condition(alarm, r.active, now_us, value=r.value, message=r.message if r.active else None)
            if step.entries:
                self.alarms[c.rule_id] = step.alarm
                out.entries.extend(step.entries)
                out.alarms[(c.rule_id, 0)] = step.alarm
        return out

    def act(self, rule_id: int, fn: Callable[[Alarm], lc.Step]) -> Output:
        """An operator action on a system alarm (acknowledge, shelve)."""
        from shopfloor.domain.errors import NotFound

        alarm = self.alarms.get(rule_id)
        if alarm is None:
            raise NotFound(f"no system alarm {rule_id}")
        step = fn(alarm)
        out = Output()
        if step.entries:
            self.alarms[rule_id] = step.alarm
            out.entries.extend(step.entries)
            out.alarms[(rule_id, 0)] = step.alarm
        return out
