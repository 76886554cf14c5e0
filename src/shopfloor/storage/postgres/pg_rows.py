"""A commit's rows as the columns binary COPY takes, checked for what PostgreSQL would refuse.

Two kinds of values need care: integers wider than their column (binary COPY would truncate them
silently, so they are refused as invalid input), and text PostgreSQL cannot hold - the NUL
character, in ``text`` and in ``jsonb``, and unpaired UTF-16 surrogates. Those are replaced by
U+FFFD (the replacement character) rather than refused, because a refused value would fail the
whole commit, and ingest retries a failed commit forever: one odd string in a device's payload
must not stop a worker. DuckDB stores them as they are; this is the one place the stores differ.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.records import DeadLetter, EventRecord, SampleBatch
from shopfloor.domain.timeutil import MAX_US, MIN_US

REPLACEMENT = "\ufffd"


def clean_text(text: str) -> str:
    """``text`` with NUL characters and unpaired surrogates replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = "".join(REPLACEMENT if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    return text


def _clean_column(values: Sequence[Any]) -> list[Any]:
    return [clean_text(v) if isinstance(v, str) else v for v in values]


def _clean_json(data: Any) -> Any:
    if isinstance(data, str):
        return clean_text(data)
    if isinstance(data, dict):
        return {clean_text(k) if isinstance(k, str) else k: _clean_json(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_clean_json(v) for v in data]
    return data


def sample_columns(s: SampleBatch) -> list[list[Any]]:
    n = len(s.series_id)
    if not (len(s.ts_us) == len(s.value) == len(s.text) == len(s.quality) == n):
        raise InvalidInput("malformed sample batch: the columns must be parallel lists of one length")
    _check_range(s.series_id, _INT4, "series_id")
    _check_range(s.quality, _INT2, "quality")
    return [s.series_id, s.ts_us, s.value, _clean_column(s.text), s.quality]


_INT4 = (-(2**31), 2**31 - 1)
_INT2 = (-(2**15), 2**15 - 1)


def _check_range(column: Sequence[Any], bounds: tuple[int, int], what: str) -> None:
    """Binary COPY would silently truncate an integer too wide for its column: refuse it first."""
    if not column:
        return
    try:
        ok = bounds[0] <= min(column) and max(column) <= bounds[1]
    except TypeError:
        ok = False
    if not ok:
        raise InvalidInput(f"{what} must be whole numbers between {bounds[0]} and {bounds[1]}")


def canonical_json(data: dict[str, Any]) -> str:
    """Sorted keys, no spaces; NaN and infinities refused; text PostgreSQL cannot hold replaced."""
    try:
        text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"event data is not JSON: {exc}") from exc
    if "\\u0000" in text or clean_text(text) != text:
        text = json.dumps(_clean_json(data), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text


def _check_ts(ts: int, what: str) -> int:
    if isinstance(ts, bool) or not isinstance(ts, int) or not MIN_US <= ts <= MAX_US:
        raise InvalidInput(f"{what} must be epoch microseconds between 0001-01-02 and 9999-12-30")
    return ts


def event_columns(events: list[EventRecord]) -> list[list[Any]]:
    tenants, assets = [e.tenant_id for e in events], [e.asset_id for e in events]
    _check_range(tenants, _INT4, "event tenant_id")
    _check_range(assets, _INT4, "event asset_id")
    return [tenants, assets,
            [_check_ts(e.ts_us, "event ts") for e in events], _clean_column([e.kind for e in events]),
            _clean_column([e.type for e in events]), [canonical_json(e.data) for e in events]]


def dead_letter_columns(rows: list[DeadLetter]) -> list[list[Any]]:
    tenants = [d.tenant_id for d in rows]
    _check_range([t for t in tenants if t is not None], _INT4, "dead letter tenant_id")
    return [tenants, _clean_column([d.device for d in rows]), _clean_column([d.topic for d in rows]),
            _clean_column([str(d.reason) for d in rows]), _clean_column([d.detail for d in rows]),
            [bytes(d.payload) for d in rows], [_check_ts(d.received_us, "dead letter received_us") for d in rows]]
