"""Timestamps: RFC 3339 strings or epoch milliseconds in, integer epoch microseconds inside."""

from __future__ import annotations

from datetime import UTC, datetime

US = 1_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class TimestampError(ValueError):
    pass


def parse_ts(raw: object) -> int:
    """Epoch microseconds from an RFC 3339 string (with offset) or epoch milliseconds."""
    if isinstance(raw, bool):
        raise TimestampError("ts must be an RFC 3339 string or epoch milliseconds, not a boolean")
    if isinstance(raw, int | float):
        if raw != raw or raw in (float("inf"), float("-inf")):
            raise TimestampError("ts is not a finite number")
        if not -(2**53) < raw < 2**53:
            raise TimestampError(f"ts {raw!r} is out of range for epoch milliseconds")
        return _in_range(round(raw * 1000), raw)
    if isinstance(raw, str):
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError:
            raise TimestampError(f"ts {raw[:64]!r} is not an RFC 3339 timestamp") from None
        if dt.tzinfo is None:
            raise TimestampError(f"ts {raw[:64]!r} has no time zone offset (add 'Z' or '+01:00')")
        return _in_range(to_us(dt), raw)
    raise TimestampError("ts is missing or not an RFC 3339 string or epoch milliseconds")


def _in_range(us: int, raw: object) -> int:
    if not MIN_US <= us <= MAX_US:
        raise TimestampError(f"ts {str(raw)[:64]!r} is outside 0001-01-02 to 9999-12-30, the range shopfloor keeps")
    return us


def to_us(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise TimestampError("naive datetime: a time zone is required")
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


# what a timestamp may be: a day inside datetime's own range, so that it shows in any time zone
MIN_US = to_us(datetime(1, 1, 2, tzinfo=UTC))
MAX_US = to_us(datetime(9999, 12, 30, tzinfo=UTC))


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // US, tz=UTC).replace(microsecond=us % US)


def now_us() -> int:
    return to_us(datetime.now(UTC))
