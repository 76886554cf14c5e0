"""The port the poller talks through: plain primitives only (tables, addresses, 16-bit words).

``adapter.PymodbusTransport`` implements it over pymodbus; ``fake.FakeTransport`` in memory, for
unit tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Transport(Protocol):
    """One TCP connection to one device (unit). Every method raises only ``ModbusError`` subclasses."""

    @property
    def connected(self) -> bool: ...

    async def connect(self) -> None:
        """Open the connection; ``ModbusLinkError`` when it cannot."""
        ...

    async def read(self, table: str, address: int, count: int) -> list[int]:
        """``count`` registers (0..65535) or bits (0/1) of ``table`` from ``address``."""
        ...

    async def write(self, table: str, address: int, values: Sequence[int]) -> None:
        """Write registers of the holding table, or coils (0/1), from ``address``."""
        ...

    async def close(self) -> None: ...

    @property
    def retries_used(self) -> int:
        """Attempts repeated after a timeout since the transport was made (for the counters)."""
        ...
