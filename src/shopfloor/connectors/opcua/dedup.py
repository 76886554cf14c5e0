"""De-duplication of readings by (node, source timestamp).

After a reconnect the same value can come three ways: the subscription's first notification
(the current value, already seen before the link was lost), the history read of the gap, and
live notifications that overlap it. Each node remembers its recent source timestamps; a reading
whose (node, timestamp) was seen is dropped.
"""

from __future__ import annotations

from collections import OrderedDict


class Deduplicator:
    """Remembers up to ``per_node`` recent timestamps per node (oldest forgotten first)."""

    def __init__(self, per_node: int = 4096) -> None:
        self._per_node = per_node
        self._seen: dict[str, OrderedDict[int, None]] = {}
        self._latest: dict[str, int] = {}
        self.dropped = 0

    def first_time(self, node: str, ts_us: int) -> bool:
        """True (and remembered) when ``(node, ts_us)`` is new; False for a duplicate."""
        seen = self._seen.get(node)
        if seen is None:
            seen = self._seen[node] = OrderedDict()
        if ts_us in seen:
            self.dropped += 1
            return False
        seen[ts_us] = None
        if len(seen) > self._per_node:
            seen.popitem(last=False)
        if ts_us > self._latest.get(node, -1):
            self._latest[node] = ts_us
        return True

    def latest(self, node: str) -> int | None:
        """The newest source timestamp seen of ``node`` (where a history read of the gap starts)."""
        return self._latest.get(node)
