"""Good, reject and rework units from count messages: deltas, or cumulative totals with resets.

A count message (core issue) carries any of ``good``, ``reject``, ``rework`` and a ``mode``:

- ``delta``: the numbers are units made since the previous message; each is counted as is.
- ``total``: the numbers are a device counter's running totals. Each field is its own counter.

The reset rule for totals, per field: the first total seen is only a baseline (what was counted
before it is unknown, so nothing is credited). After that a total ``v`` following ``last`` credits
``v - last`` when ``v ≥ last``; when ``v < last`` the counter was reset (power cycle, PLC restart,
shift-start zeroing) and restarted from zero, so ``v`` units are credited. Units made between the
last total before the reset and the reset itself are lost: no message ever reported them. A counter
that wraps around (16-bit at 65 535) is a reset by this rule and loses the same way.

Units are credited at the timestamp of the message that reports them: a message inside
``[start, end)`` counts for the window, even when part of its increment was made before ``start``.
Give the last message before ``start`` too, so the first total in the window has its baseline.
Deltas and totals are kept apart: a delta does not move a field's total baseline (devices send one
mode; mixing both for one field double-counts and is the device's error).

Each credited unit is attributed to the product of the work order open at the message's timestamp
(``NO_PRODUCT`` when none is open), so a work-order change switches the ideal cycle time exactly at
the order boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.kpi.models import NO_PRODUCT, Counts

FIELDS = ("good", "reject", "rework")


class CountMessage(msgspec.Struct, frozen=True):
    ts: int
    mode: str = "delta"
    good: int | None = None
    reject: int | None = None
    rework: int | None = None


def credit(last: int | None, value: int) -> int:
    """Units credited by a total ``value`` after the previous total ``last`` (the reset rule)."""
    if last is None:
        return 0
    return value - last if value >= last else value


def count_units(messages: Sequence[CountMessage], start: int, end: int,
                product_at: Callable[[int], str] | None = None) -> dict[str, Counts]:
    """Units credited in [start, end), by product (see the module's rules)."""
    if end <= start:
        raise InvalidInput("a KPI window must end after it starts")
    last_total: dict[str, int] = {}
    out: dict[str, list[int]] = {}
    for msg in sorted(messages, key=lambda m: m.ts):
        if msg.ts >= end:
            break
        if msg.mode not in ("delta", "total"):
            raise InvalidInput(f"count mode {msg.mode!r} must be delta or total")
        credited = [0, 0, 0]
        for i, name in enumerate(FIELDS):
            value = getattr(msg, name)
            if value is None:
                continue
            if value < 0:
                raise InvalidInput(f"{name}={value} is negative")
            if msg.mode == "delta":
                credited[i] = value
            else:
                credited[i] = credit(last_total.get(name), value)
                last_total[name] = value
        if msg.ts < start or not any(credited):
            continue
        product = product_at(msg.ts) if product_at else NO_PRODUCT
        acc = out.setdefault(product, [0, 0, 0])
        for i in range(3):
            acc[i] += credited[i]
    return {p: Counts(*v) for p, v in sorted(out.items())}
