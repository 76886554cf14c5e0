"""Plant apply's check of field-bus sections: every mapped machine and measurement exists.

Checked before anything is written: a machine is looked up in the file first (its type's
measurements from the file or, for a type only in the registry, from there), then in the registry.
"""

from __future__ import annotations

from shopfloor.domain.assets import Level
from shopfloor.domain.opcua_map import check_opcua_targets
from shopfloor.domain.plant import PlantSpec, machine_paths
from shopfloor.ports.registry import RegistryRepository


def check_fieldbus_targets(repo: RegistryRepository, tenant_id: int, spec: PlantSpec) -> None:
    """Raise ``InvalidInput`` naming the device and node whose machine or measurement is missing."""
    if not any(d.opcua is not None for d in spec.devices):
        return
    file_types = {t.name: frozenset(m.name for m in t.measurements) for t in spec.asset_types}

    def type_measurements(name: str | None) -> frozenset[str] | None:
        if name is None:
            return None
        if name in file_types:
            return file_types[name]
        stored = repo.get_asset_type(tenant_id, name)
        return None if stored is None else frozenset(m.name for m in stored.measurements)

    known: dict[str, frozenset[str] | None] = {}
    for parts, machine in machine_paths(spec):
        stored = repo.find_asset(tenant_id, parts)
        type_name = machine.type or (stored.type_name if stored is not None else None)
        known["/".join(parts)] = type_measurements(type_name)
    for d in spec.devices:
        if d.opcua is None:
            continue
        measurements = dict(known)
        for node_id in d.opcua.nodes:
            path = d.opcua.node_asset(node_id)
            if path not in measurements:
                asset = repo.find_asset(tenant_id, tuple(p for p in path.split("/") if p))
                if asset is not None and asset.level is Level.MACHINE:
                    measurements[path] = type_measurements(asset.type_name)
        check_opcua_targets(d.opcua, d.assets, measurements, f"device {d.name!r}: opcua")
