"""The virtual factory: simulated machines that publish over MQTT exactly like real devices.

``machine`` is the pure model (seeded, no I/O); ``publisher`` connects one MQTT client per device
and publishes what the models produce. The default plant is an air-conditioner factory.
"""

from __future__ import annotations

from importlib import resources

import yaml

from shopfloor.domain.plant import PlantSpec, plant_from_obj

DEFAULT_PLANT_RESOURCE = "default_plant.yaml"


def default_plant_text() -> str:
    """The default plant file as YAML text (what ``shopfloor plant apply`` accepts)."""
    return resources.files(__name__).joinpath(DEFAULT_PLANT_RESOURCE).read_text(encoding="utf-8")


def default_plant() -> PlantSpec:
    """The default plant, validated."""
    return plant_from_obj(yaml.safe_load(default_plant_text()))


__all__ = ["DEFAULT_PLANT_RESOURCE", "default_plant", "default_plant_text"]
