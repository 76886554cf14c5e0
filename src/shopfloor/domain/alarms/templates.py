"""Which rule runs on which asset: one-asset rules, and templates per asset type.

A template (``asset_type: press``) runs on every asset of that type: expanding the rules again
after a machine is added gives the new machine its instances, and the engine keeps the state of
the instances it already had (``RuleEngine.configure``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shopfloor.domain.alarms.rules import Rule


@dataclass(frozen=True, slots=True)
class AssetRef:
    """What rules need of an asset: its id, path (``site/area/line/machine``), type, and the area it
    belongs to (``site/area``, for flood statistics)."""

    id: int
    path: str
    type_name: str | None = None
    area: str = ""

    @staticmethod
    def of_path(asset_id: int, path: str, type_name: str | None = None) -> AssetRef:
        parts = path.split("/")
        return AssetRef(asset_id, path, type_name, "/".join(parts[:2]))


@dataclass(slots=True)
class Expansion:
    """Each enabled rule with the assets it runs on, and the rules that found no asset (with why)."""

    bound: list[tuple[Rule, AssetRef]] = field(default_factory=list)
    unresolved: list[tuple[Rule, str]] = field(default_factory=list)


def expand(rules: Sequence[Rule], assets: Sequence[AssetRef]) -> Expansion:
    """Bind rules to assets, in rule order then asset id order (deterministic)."""
    by_id = {a.id: a for a in assets}
    by_path = {a.path: a for a in assets}
    by_type: dict[str, list[AssetRef]] = {}
    for a in sorted(assets, key=lambda a: a.id):
        if a.type_name is not None:
            by_type.setdefault(a.type_name, []).append(a)
    out = Expansion()
    for rule in rules:
        if not rule.enabled:
            continue
        if rule.asset_type is not None:
            out.bound.extend((rule, a) for a in by_type.get(rule.asset_type, []))
            continue
        target = by_id.get(rule.asset) if isinstance(rule.asset, int) else by_path.get(str(rule.asset))
        if target is None:
            out.unresolved.append((rule, f"rule {rule.name}: no asset {rule.asset!r}"))
        else:
            out.bound.append((rule, target))
    return out
