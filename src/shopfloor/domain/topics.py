"""The JSON topic tree: ``shopfloor/v1/{tenant}/{site}/{area}/{line}/{machine}/{kind}``."""

from __future__ import annotations

import enum
from dataclasses import dataclass

ROOT = "shopfloor/v1"


class Kind(enum.StrEnum):
    TELEMETRY = "telemetry"
    STATE = "state"
    COUNT = "count"
    EVENT = "event"
    STATUS = "status"
    COMMAND = "command"
    COMMAND_REPLY = "command/reply"


UPLINK_KINDS = frozenset({Kind.TELEMETRY, Kind.STATE, Kind.COUNT, Kind.EVENT, Kind.STATUS, Kind.COMMAND_REPLY})


@dataclass(frozen=True, slots=True)
class TopicAddress:
    tenant: str
    path: tuple[str, str, str, str]  # site, area, line, machine
    kind: Kind

    @property
    def machine_prefix(self) -> str:
        return f"{ROOT}/{self.tenant}/" + "/".join(self.path)

    def topic(self) -> str:
        return f"{self.machine_prefix}/{self.kind.value}"


class TopicError(ValueError):
    """The topic is not one of ours."""


def parse_topic(topic: str) -> TopicAddress:
    parts = topic.split("/")
    if len(parts) < 8 or parts[0] != "shopfloor" or parts[1] != "v1":
        raise TopicError(f"topic {topic!r} is not shopfloor/v1/{{tenant}}/{{site}}/{{area}}/{{line}}/{{machine}}/{{kind}}")
    kind_s = "/".join(parts[7:])
    try:
        kind = Kind(kind_s)
    except ValueError:
        raise TopicError(f"unknown message kind {kind_s!r} in topic {topic!r}") from None
    if any(not p for p in parts[2:7]):
        raise TopicError(f"topic {topic!r} has an empty level")
    return TopicAddress(parts[2], (parts[3], parts[4], parts[5], parts[6]), kind)


def asset_prefix(tenant: str, path: tuple[str, ...]) -> str:
    """Topic prefix under which a device bound to the asset at ``path`` may publish."""
    return f"{ROOT}/{tenant}/" + "/".join(path)


def topic_within(topic: str, prefixes: tuple[str, ...]) -> bool:
    return any(topic.startswith(p + "/") for p in prefixes)


def filter_within(topic_filter: str, prefixes: tuple[str, ...]) -> bool:
    """A subscription filter is allowed when its literal start lies under one of the prefixes."""
    return any(topic_filter.startswith(p + "/") for p in prefixes)
