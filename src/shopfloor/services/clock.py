from __future__ import annotations

from shopfloor.domain.timeutil import now_us


class SystemClock:
    """The wall clock (implements ``ports.clock.Clock``)."""

    def now_us(self) -> int:
        return now_us()
