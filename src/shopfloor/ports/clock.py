from __future__ import annotations

from typing import Protocol


class Clock(Protocol):
    def now_us(self) -> int: ...
