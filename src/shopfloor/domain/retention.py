"""Retention policies: how long raw samples and each rollup level are kept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shopfloor.domain.errors import InvalidInput

DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    raw_days: int = 30
    rollup_1m_days: int = 90
    rollup_1h_days: int = 730

    def __post_init__(self) -> None:
        for name in ("raw_days", "rollup_1m_days", "rollup_1h_days"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"retention {name} must be at least 1 day")

    def override(self, attributes: dict[str, Any]) -> RetentionPolicy:
        """An asset type's attributes ``retention_raw_days`` etc. override the defaults."""
        values = {}
        for name in ("raw_days", "rollup_1m_days", "rollup_1h_days"):
            raw = attributes.get(f"retention_{name}")
            if raw is None:
                continue
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise InvalidInput(f"attribute retention_{name} must be a whole number of days")
            values[name] = raw
        if not values:
            return self
        return RetentionPolicy(**{**{"raw_days": self.raw_days, "rollup_1m_days": self.rollup_1m_days,
                                     "rollup_1h_days": self.rollup_1h_days}, **values})

    def cutoffs(self, now_us: int) -> dict[str, int]:
        """Oldest timestamp kept per level: "raw", "1m", "1h".

        Cutoffs fall on UTC midnights (rounded down: at most one day more is kept), so a store
        with daily partitions drops whole partitions instead of deleting rows.
        """
        def day(us: int) -> int:
            return us - us % DAY_US

        return {"raw": day(now_us - self.raw_days * DAY_US), "1m": day(now_us - self.rollup_1m_days * DAY_US),
                "1h": day(now_us - self.rollup_1h_days * DAY_US)}
