"""Labour hours from clock_in / clock_out events.

Each operator is clocked in from ``clock_in`` until their next ``clock_out``. A second clock_in
while already in changes nothing (the first one stands); a clock_out without a clock_in before it is
ignored (its start is unknown: give the events from the last one before the window). An operator
still clocked in at the window end counts to the end. Hours of different operators add up: two
people for an hour are two labour hours. Optionally spans can be left out (for example unpaid
breaks of the calendar, to get ISO 22400-2's attendance time without breaks).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.calendar import Span, clip, subtract, total

US_PER_HOUR = 3_600_000_000


class ClockEvent(msgspec.Struct, frozen=True):
    ts: int
    operator: str
    kind: str  # "in" or "out"


def attendance(events: Sequence[ClockEvent], start: int, end: int) -> dict[str, list[Span]]:
    """Each operator's clocked-in spans inside [start, end)."""
    if end <= start:
        raise InvalidInput("a KPI window must end after it starts")
    since: dict[str, int] = {}
    spans: dict[str, list[Span]] = {}
    for ev in sorted(events, key=lambda e: e.ts):
        if ev.ts >= end:
            break
        if ev.kind == "in":
            since.setdefault(ev.operator, ev.ts)
        elif ev.kind == "out":
            began = since.pop(ev.operator, None)
            if began is not None:
                spans.setdefault(ev.operator, []).append((began, ev.ts))
        else:
            raise InvalidInput(f"clock event kind {ev.kind!r} is not in or out")
    for operator, began in since.items():
        spans.setdefault(operator, []).append((began, end))
    return {op: clip(s, start, end) for op, s in sorted(spans.items())}


def labour_hours(events: Sequence[ClockEvent], start: int, end: int, exclude: Sequence[Span] = ()) -> float:
    """Clocked-in hours of all operators in [start, end), less the ``exclude`` spans."""
    per_operator = attendance(events, start, end)
    return sum(total(subtract(s, exclude)) for s in per_operator.values()) / US_PER_HOUR
