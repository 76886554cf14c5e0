"""De-duplication of readings by (node, source timestamp).

After a reconnect the same value can come three ways: the subscription's first notification
(the current value, already seen before the link was lost), the history read of the gap, and
live notifications that overlap it. Each node keeps its newest source timestamp, and the
timestamps of what a history read delivered (the only readings that live ones can repeat out of
order). A reading is new when it is newer than the node's newest, or older but neither the newest
nor remembered. The live path costs one dictionary look-up.
"""

from __future__ import annotations

from collections import deque


class Deduplicator:
    """Remembers each node's newest timestamp, and up to ``per_node`` back-filled ones."""

    def __init__(self, per_node: int = 4096) -> None:
        self._per_node = per_node
        self._latest: dict[str, int] = {}
        self._filled: dict[str, tuple[set[int], deque[int]]] = {}
        self.dropped = 0

    def first_time(self, node: str, ts_us: int, remember: bool = False) -> bool:
        """True (and noted) when ``(node, ts_us)`` is new; False for a duplicate. ``remember``
        keeps the timestamp even once it is no longer the newest (back-filled readings)."""
        latest = self._latest.get(node, -1)
        if ts_us > latest:
            self._latest[node] = ts_us
        elif ts_us == latest or (node in self._filled and ts_us in self._filled[node][0]):
            self.dropped += 1
            return False
        if remember:
            seen, order = self._filled.setdefault(node, (set(), deque()))
            seen.add(ts_us)
            order.append(ts_us)
            if len(order) > self._per_node:
                seen.discard(order.popleft())
        return True

    def latest(self, node: str) -> int | None:
        """The newest source timestamp seen of ``node`` (where a history read of the gap starts)."""
        return self._latest.get(node)
