"""Bound nodes: the plant file's node map made ready for the hot path, and DataValue -> Reading."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua

from shopfloor.connectors.opcua.quality import quality_of
from shopfloor.domain.fieldbus import Reading
from shopfloor.domain.opcua_map import Deadband, OpcUaSpec
from shopfloor.domain.records import Quality

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class BoundNode:
    node_id: str
    asset: str
    measurement: str
    scale: float
    offset: float
    deadband: Deadband | None
    sampling_interval_ms: float
    writable: bool

    def reading(self, dv: ua.DataValue) -> Reading:
        """The reading of one DataValue: scaled value, quality from the status, source timestamp."""
        status = dv.StatusCode.value if dv.StatusCode is not None else 0
        quality = quality_of(status)
        raw = dv.Value.Value if dv.Value is not None else None
        value = self.scaled(raw)
        if value is None and raw is not None:  # a type a measurement cannot hold (array, structure)
            quality = Quality.BAD
        if value is None and quality is Quality.GOOD:
            quality = Quality.BAD
        if quality is Quality.BAD:
            value = None
        return Reading(self.asset, self.measurement, timestamp_us(dv), value, quality)

    def scaled(self, raw: Any) -> float | bool | str | None:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int | float):
            return float(raw) * self.scale + self.offset
        if isinstance(raw, str):
            return raw
        if isinstance(raw, ua.LocalizedText):
            return str(raw.Text) if raw.Text is not None else None
        if isinstance(raw, datetime):
            return raw.isoformat()
        return None


def bind(spec: OpcUaSpec) -> list[BoundNode]:
    """Every node of the section with its defaults filled in, in the file's order."""
    return [BoundNode(node_id, spec.node_asset(node_id), n.measurement, n.scale, n.offset, n.deadband,
                      n.sampling_interval_ms if n.sampling_interval_ms is not None else spec.sampling_interval_ms,
                      n.writable)
            for node_id, n in spec.nodes.items()]


def timestamp_us(dv: ua.DataValue) -> int:
    """The source timestamp (else the server's, else now) in epoch microseconds UTC."""
    ts = dv.SourceTimestamp or dv.ServerTimestamp
    if ts is None:
        return time.time_ns() // 1000
    return datetime_us(ts)


def datetime_us(ts: datetime) -> int:
    """Epoch microseconds of a datetime (naive ones are UTC, as asyncua gives them)."""
    return (ts - (_EPOCH_NAIVE if ts.tzinfo is None else _EPOCH)) // _MICROSECOND


def us_datetime(ts_us: int) -> datetime:
    return datetime.fromtimestamp(ts_us / 1_000_000, tz=UTC)
