"""Query-string timestamps: RFC 3339 or epoch milliseconds."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.timeutil import TimestampError, from_us, parse_ts

_EPOCH_MS = re.compile(r"-?[0-9]{1,20}\Z")  # ASCII digits only: str.isdigit() also takes "²"


def parse_param(value: str | None, name: str, default_us: int | None = None) -> int:
    if value is None or value == "":
        if default_us is None:
            raise InvalidInput(f"'{name}' is required (RFC 3339 or epoch milliseconds)")
        return default_us
    raw: object = value
    if _EPOCH_MS.match(value):
        raw = int(value)
    try:
        return parse_ts(raw)
    except TimestampError as exc:
        raise InvalidInput(f"'{name}': {exc}") from None


def iso(us: int) -> str:
    return from_us(us).astimezone(UTC).isoformat().replace("+00:00", "Z")


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
