"""Alarm-flood statistics in the manner of ISA-18.2: annunciated alarms per 10 minutes per area.

ISA-18.2 (and EEMUA 191) count the alarms an operator is shown: activations that were not
shelved, suppressed or out of service. Their benchmarks: about 1 alarm per 10 minutes is very likely
acceptable, 2 is the most manageable; a *flood* is more than 10 alarms in 10 minutes, and an area
should be in flood less than about 1 % of the time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import msgspec

from shopfloor.domain.alarms.model import Action, JournalEntry

WINDOW_US = 600 * 1_000_000
FLOOD_ABOVE = 10


class AreaFlood(msgspec.Struct, kw_only=True):
    area: str
    alarms: int  # annunciated activations in the period
    windows: int  # 10-minute windows in the period
    per_10min_avg: float
    per_10min_max: int
    flood_windows: int  # windows with more than `flood_above` alarms
    flood_share: float  # flood_windows / windows
    top_rules: list[tuple[int, int]]  # (rule id, alarms), most frequent first (at most 10)


def flood_stats(entries: Iterable[JournalEntry], area_of: Mapping[int, str], start_us: int, end_us: int, *,
                window_us: int = WINDOW_US, flood_above: int = FLOOD_ABOVE) -> list[AreaFlood]:
    """Per area (``area_of`` maps asset ids to areas; others count under ``""``), over the windows of
    ``window_us`` that start at ``start_us`` and cover up to ``end_us``. Only annunciated activations
    count (not hidden, live or replayed alike); every area of ``area_of`` appears, quiet or not."""
    if end_us <= start_us or window_us <= 0:
        raise ValueError("flood statistics need a period with end after start, and a positive window")
    windows = -(-(end_us - start_us) // window_us)
    per: dict[str, Counter[int]] = {a: Counter() for a in sorted(set(area_of.values()))}
    rules: dict[str, Counter[int]] = {}
    for e in entries:
        if e.action is not Action.ACTIVATE or e.hidden or not start_us <= e.ts_us < end_us:
            continue
        area = area_of.get(e.asset_id, "")
        per.setdefault(area, Counter())[(e.ts_us - start_us) // window_us] += 1
        rules.setdefault(area, Counter())[e.rule_id] += 1
    out = []
    for area in sorted(per):
        counts = per[area]
        total = sum(counts.values())
        floods = sum(1 for c in counts.values() if c > flood_above)
        top = sorted(rules.get(area, Counter()).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        out.append(AreaFlood(area=area, alarms=total, windows=windows, per_10min_avg=total / windows,
                             per_10min_max=max(counts.values(), default=0), flood_windows=floods,
                             flood_share=floods / windows, top_rules=top))
    return out
