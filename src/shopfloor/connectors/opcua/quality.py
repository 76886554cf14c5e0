"""OPC UA status codes as sample qualities.

A status code's two top bits are its severity (OPC UA Part 4, 7.39): 00 good, 01 uncertain,
10 and 11 bad. Nothing else of the code decides the quality; the code itself is kept in logs.
"""

from __future__ import annotations

from shopfloor.domain.records import Quality

_SEVERITY = {0: Quality.GOOD, 1: Quality.UNCERTAIN, 2: Quality.BAD, 3: Quality.BAD}


def quality_of(status_code: int) -> Quality:
    """The quality of a 32-bit OPC UA status code."""
    return _SEVERITY[(status_code >> 30) & 0b11]
