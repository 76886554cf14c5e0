"""What ingest produces: columnar samples, events, dead letters, and the batch that carries them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Quality(enum.IntEnum):
    """Sample quality, OPC UA flavoured: good, uncertain, bad."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2


class Reason(enum.StrEnum):
    """Why a message or a value was dead-lettered."""

    UNDECODABLE = "undecodable"
    TOO_LARGE = "too_large"
    OUTSIDE_PREFIX = "outside_prefix"
    UNKNOWN_TOPIC = "unknown_topic"
    UNKNOWN_ASSET = "unknown_asset"
    UNKNOWN_DEVICE = "unknown_device"
    DEVICE_DISABLED = "device_disabled"
    UNKNOWN_MEASUREMENT = "unknown_measurement"
    WRONG_TYPE = "wrong_type"
    BAD_TIMESTAMP = "bad_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_OLD = "too_old"
    INVALID_STATE = "invalid_state"
    INVALID_COUNT = "invalid_count"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_STATUS = "invalid_status"
    STORE_REJECTED = "store_rejected"  # decoded fine, but the store refused to hold it


@dataclass(slots=True)
class SampleBatch:
    """Columnar samples: parallel lists, one entry per point. Series are integer ids."""

    series_id: list[int] = field(default_factory=list)
    ts_us: list[int] = field(default_factory=list)
    value: list[float | None] = field(default_factory=list)
    text: list[str | None] = field(default_factory=list)
    quality: list[int] = field(default_factory=list)

    def add(self, series_id: int, ts_us: int, value: float | None, text: str | None = None,
            quality: int = Quality.GOOD) -> None:
        self.series_id.append(series_id)
        self.ts_us.append(ts_us)
        self.value.append(value)
        self.text.append(text)
        self.quality.append(int(quality))

    def extend(self, other: SampleBatch) -> None:
        self.series_id.extend(other.series_id)
        self.ts_us.extend(other.ts_us)
        self.value.extend(other.value)
        self.text.extend(other.text)
        self.quality.extend(other.quality)

    def __len__(self) -> int:
        return len(self.series_id)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """A typed event of a machine: kind is state, count, event, status or command_reply."""

    tenant_id: int
    asset_id: int
    ts_us: int
    kind: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    tenant_id: int | None
    device: str
    topic: str
    reason: Reason
    detail: str
    payload: bytes
    received_us: int


@dataclass(slots=True)
class IngestBatch:
    """Everything one commit writes: accepted samples and events, and what was rejected."""

    samples: SampleBatch = field(default_factory=SampleBatch)
    events: list[EventRecord] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def extend(self, other: IngestBatch) -> None:
        self.samples.extend(other.samples)
        self.events.extend(other.events)
        self.dead_letters.extend(other.dead_letters)

    def __len__(self) -> int:
        return len(self.samples) + len(self.events) + len(self.dead_letters)


@dataclass(frozen=True, slots=True)
class Sample:
    series_id: int
    ts_us: int
    value: float | None
    text: str | None
    quality: int
