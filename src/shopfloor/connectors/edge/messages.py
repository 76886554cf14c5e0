"""Readings grouped into the machines' JSON telemetry messages, and command replies (docs/mqtt.md).

One message per machine and batch: a list of records ``{"ts", "values", "quality"}``, one record
per (timestamp, quality) with every measurement read at that moment. Telemetry has no null value:
a reading without a value (bad quality: the device did not answer) is counted by the caller, not
sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.records import Quality
from shopfloor.domain.timeutil import from_us
from shopfloor.domain.topics import ROOT

_ENC = msgspec.json.Encoder()
_QUALITY = {Quality.GOOD: None, Quality.UNCERTAIN: "uncertain", Quality.BAD: "bad"}


def machine_topic(tenant: str, asset: str, kind: str) -> str:
    return f"{ROOT}/{tenant}/{asset.strip('/')}/{kind}"


def rfc3339(ts_us: int) -> str:
    return from_us(ts_us).isoformat().replace("+00:00", "Z")


def telemetry_messages(tenant: str, readings: Sequence[Reading],
                       max_records: int = 200) -> tuple[list[tuple[str, bytes]], int]:
    """(topic, payload) messages for ``readings``, in the order machines first appear; and how many
    readings had no value (left out)."""
    by_asset: dict[str, dict[tuple[int, int], dict[str, Any]]] = {}
    empty = 0
    for r in readings:
        if r.value is None:
            empty += 1
            continue
        records = by_asset.setdefault(r.asset, {})
        records.setdefault((r.ts_us, int(r.quality)), {})[r.measurement] = r.value
    out = []
    for asset, records in by_asset.items():
        topic = machine_topic(tenant, asset, "telemetry")
        items = list(records.items())
        for i in range(0, len(items), max_records):
            payload = []
            for (ts_us, quality), values in items[i:i + max_records]:
                rec: dict[str, Any] = {"ts": rfc3339(ts_us), "values": values}
                q = _QUALITY.get(Quality(quality))
                if q is not None:
                    rec["quality"] = q
                payload.append(rec)
            out.append((topic, _ENC.encode(payload)))
    return out, empty


def reply_message(tenant: str, asset: str, ts_us: int, command_id: Any, status: str,
                  detail: dict[str, Any] | None = None) -> tuple[str, bytes]:
    body: dict[str, Any] = {"ts": rfc3339(ts_us), "id": command_id, "status": status, **(detail or {})}
    return machine_topic(tenant, asset, "command/reply"), _ENC.encode(body)
