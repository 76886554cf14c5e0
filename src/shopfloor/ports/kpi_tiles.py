"""Kept KPI inputs of closed windows ("tiles"), and how a store drops the ones late data touches.

A tile is one machine's ``PeriodInputs`` for one closed window (a shift, usually), stored with the
ingest sequence number it was computed at. It stays valid while no row committed after that number
could change it:

- an event of the machine with ``ts < w1`` (a state, count, order or clock event inside the window,
  or before it, where it may be the one in force at the window's start);
- a sample of the machine's energy series with ``ts <= dep_hi``: for a kWh counter ``dep_hi`` is the
  first good reading at or after the window's end (the increment up to it is spread over the window's
  last minutes; a window whose counter has no reading after it yet is not kept); for power samples,
  ``w1 - 1``.

Rows committed later with larger timestamps cannot change the window, so live data never touches
closed tiles; back-filled or late data drops exactly the tiles it could change (and perhaps a few
more: the check is conservative), and they are computed again. Everything else a window's inputs
depend on (calendar and tariff spans inside the window, the energy series and its kind, whether the
machine reports orders, the labour rule) is in the tile's key: ``fp``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TileKey:
    asset_id: int
    w0: int  # the window [w0, w1), epoch µs
    w1: int
    fp: str  # everything else the inputs depend on (see the module docs)
    series_id: int | None = None  # the energy series, whose late samples drop the tile


@dataclass(frozen=True, slots=True)
class Tile:
    key: TileKey
    dep_hi: int  # samples of ``key.series_id`` with ts <= dep_hi drop the tile
    inputs: bytes  # msgspec msgpack of the window's ``PeriodInputs``


@dataclass(frozen=True, slots=True)
class ReadingProbe:
    """Look for the first good reading of ``series_id`` at or after ``ts``."""

    series_id: int
    ts: int


class KpiTileStore(Protocol):
    def refresh(self, tenant_id: int, upto_seq: int) -> int:
        """Drop the tenant's tiles that rows committed in (its mark, ``upto_seq``] may change, and
        move its mark to ``upto_seq``. Returns how many tiles were dropped."""
        ...

    def lookup(self, tenant_id: int, keys: Sequence[TileKey]) -> list[bytes | None]:
        """The stored inputs of each key (None: not kept), in key order."""
        ...

    def store(self, tenant_id: int, tiles: Sequence[Tile], seq: int) -> int:
        """Keep ``tiles``, computed from everything committed up to ``seq``; those that rows committed
        in (``seq``, the tenant's mark] may change are left out. Returns how many were kept."""
        ...

    def first_readings(self, probes: Sequence[ReadingProbe]) -> list[int | None]:
        """Per probe, the timestamp of the series' first good reading at or after its ``ts``, or None."""
        ...

    def clear(self, tenant_id: int) -> int:
        """Forget every tile of the tenant (after a change the keys do not see). Returns how many."""
        ...

    def count(self, tenant_id: int) -> int: ...
