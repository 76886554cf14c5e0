"""What field-bus connectors (OPC UA, Modbus TCP) hand on: readings of a machine's measurements.

A connector turns what a PLC reports into ``Reading`` values and passes them, in batches, to a
``ReadingSink``: the edge agent's store-and-forward buffer, which publishes them to the platform as
the machine's JSON telemetry. Readings name the machine by its asset path
(``site/area/line/machine``) and the measurement by its name in the machine's asset type.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from shopfloor.domain.records import Quality


class Reading(NamedTuple):
    asset: str  # machine path "site/area/line/machine"
    measurement: str
    ts_us: int  # source timestamp, epoch microseconds UTC
    value: float | bool | str | None  # None only with a bad quality
    quality: Quality = Quality.GOOD


class ReadingSink(Protocol):
    async def __call__(self, readings: Sequence[Reading]) -> None:
        """Take a batch of readings; return once they are safe (buffered on disk or published)."""
        ...
