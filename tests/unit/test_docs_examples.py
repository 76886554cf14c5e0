"""The worked examples in docs/ run: the plant file applies (twice, idempotently), payloads decode."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shopfloor.domain.payloads import Decoder
from shopfloor.domain.plant import plant_from_obj
from shopfloor.domain.tenancy import Role
from shopfloor.domain.timeutil import parse_ts
from shopfloor.domain.topics import parse_topic
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.cache import RegistryCache
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _blocks(page: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (DOCS / page).read_text(), re.S)


def test_plant_file_example_applies_idempotently_and_publishes() -> None:
    spec = plant_from_obj(yaml.safe_load(_blocks("plant-file.md", "yaml")[0]))
    repo = InMemoryRegistry()
    reg = RegistryService(repo)
    reg.create_tenant(PLATFORM, "acme")
    _, token = reg.create_token(PLATFORM, "t", Role.ENGINEER, tenant_slug="acme")
    ctx = TokenAuthenticator(repo).context_for(token)
    plant = PlantService(reg)
    first = plant.apply(ctx, spec)
    assert first.created == {"asset_types": 1, "sites": 1, "areas": 1, "lines": 1, "machines": 2, "devices": 2}
    assert len(first.device_secrets) == 2
    second = plant.apply(ctx, spec)
    assert second.created == {} and second.updated == {} and second.device_secrets == []

    # the mosquitto_pub example of docs/mqtt.md, against this plant
    example = _blocks("mqtt.md", "bash")[-1]
    topic = re.search(r"-t (\S+)", example)
    payload = re.search(r"-m '(.*)'", example)
    assert topic and payload
    addr = parse_topic(topic.group(1))
    assert addr.tenant == "acme"
    clock = FixedClock(parse_ts("2026-11-23T08:00:05Z"))
    machine = RegistryCache(repo, clock).machine(ctx.require_tenant(), addr.path)
    assert machine is not None
    batch = Decoder().decode(addr.kind, payload.group(1).encode(), machine, device="acme.press-01-plc",
                             topic=topic.group(1), now_us=clock.now_us())
    assert batch.dead_letters == []
    assert sorted(batch.samples.value) == [18.5, 41.2]
