"""What the broker asks about devices (services/devices.py) and the registry cache behind it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from shopfloor.domain.assets import Asset, Device, Level, MeasurementDef, ValueType
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.services.cache import RegistryCache
from shopfloor.services.devices import DeviceAccessService
from shopfloor.services.registry import PLATFORM, RegistryService
from shopfloor.services.stats import IngestStats
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

PRESS_PREFIX = "shopfloor/v1/acme/berlin/press-shop/line-1/press-01"
LINE_PREFIX = "shopfloor/v1/acme/berlin/press-shop/line-1"


@dataclass
class World:
    clock: FixedClock
    repo: InMemoryRegistry
    registry: RegistryService
    cache: RegistryCache
    stats: IngestStats
    access: DeviceAccessService
    ctx: TenantContext
    line: Asset
    machine: Asset
    plc: Device
    plc_secret: str
    gw: Device
    gw_secret: str


@pytest.fixture
def w() -> World:
    clock = FixedClock()
    repo = InMemoryRegistry(clock=clock)
    registry = RegistryService(repo)
    t = registry.create_tenant(PLATFORM, "acme")
    ctx = TenantContext(t.id, t.slug, Role.ENGINEER, "test")
    registry.put_asset_type(ctx, "press", measurements=[MeasurementDef("temperature", "degC"),
                                                       MeasurementDef("running", "", ValueType.BOOLEAN)],
                            events=["tool_change"])
    site = registry.create_asset(ctx, Level.SITE, "berlin")
    area = registry.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
    line = registry.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    machine = registry.create_asset(ctx, Level.MACHINE, "press-01", parent_id=line.id, type_name="press")
    plc, plc_secret = registry.create_device(ctx, "plc-1", [machine.id])
    gw, gw_secret = registry.create_device(ctx, "gw-1", [line.id], gateway=True)
    stats = IngestStats(clock)
    cache = RegistryCache(repo, clock)
    return World(clock, repo, registry, cache, stats, DeviceAccessService(cache, stats), ctx, line, machine,
                 plc, plc_secret, gw, gw_secret)


def test_authenticate(w: World) -> None:
    assert w.access.authenticate("acme.plc-1", w.plc_secret)
    assert w.access.authenticate("acme.gw-1", w.gw_secret)
    assert w.access.auth_failures == 0
    for user, password in (("acme.plc-1", w.gw_secret), ("acme.plc-1", ""), ("acme.nobody", w.plc_secret),
                           ("plc-1", w.plc_secret), ("", "")):
        assert not w.access.authenticate(user, password)
    assert w.access.auth_failures == 5


def test_rotation_and_disabling_lock_the_device_out(w: World) -> None:
    _, new = w.registry.rotate_device_secret(w.ctx, w.plc.id)
    w.cache.invalidate()
    assert not w.access.authenticate("acme.plc-1", w.plc_secret)
    assert w.access.authenticate("acme.plc-1", new)
    w.registry.update_device(w.ctx, w.plc.id, enabled=False)
    w.cache.invalidate()
    assert not w.access.authenticate("acme.plc-1", new)
    assert w.access.publish_prefixes("acme.plc-1") == ()


def test_publish_prefixes(w: World) -> None:
    # and each may speak Sparkplug as the edge node named like it in its tenant's group (domain.sparkplug)
    assert w.access.publish_prefixes("acme.plc-1") == (PRESS_PREFIX, "spBv1.0/acme/+/plc-1")
    assert w.access.publish_prefixes("acme.gw-1") == (LINE_PREFIX, "spBv1.0/acme/+/gw-1")
    assert w.access.publish_prefixes("acme.nobody") == ()


def test_connection_changes_are_counted_per_tenant(w: World) -> None:
    w.access.connection_changed("acme.plc-1", True)
    w.access.connection_changed("acme.gw-1", True)
    w.access.connection_changed("stranger", True)
    assert w.stats.online == {"acme.plc-1": w.ctx.tenant_id, "acme.gw-1": w.ctx.tenant_id, "stranger": None}
    w.access.connection_changed("acme.gw-1", False)
    assert w.stats.online_count(w.ctx.tenant_id) == 1 and w.stats.online_count() == 2


# -- the cache -------------------------------------------------------------------------------------


def test_machine_info_lists_the_types_measurements_and_events(w: World) -> None:
    info = w.cache.machine(w.ctx.require_tenant(), w.machine.path)
    assert info is not None
    series = {s.measurement: s for s in w.registry.series_of(w.ctx, w.machine.id)}
    assert {k: (v.series_id, v.type) for k, v in info.measurements.items()} == {
        k: (s.id, s.type) for k, s in series.items()}
    assert (info.tenant_id, info.asset_id, info.events) == (w.ctx.tenant_id, w.machine.id,
                                                            frozenset({"tool_change"}))
    assert w.cache.machine(w.ctx.require_tenant(), w.line.path) is None  # a line is not a machine
    assert w.cache.machine(w.ctx.require_tenant(), ("berlin", "nowhere")) is None
    assert w.cache.machine(w.ctx.require_tenant() + 1, w.machine.path) is None  # another tenant


def _enabled(w: World, username: str) -> bool:
    info = w.cache.device(username)
    assert info is not None
    return info.device.enabled


def test_changes_are_seen_after_the_check_interval_or_invalidate(w: World) -> None:
    assert _enabled(w, "acme.plc-1")
    w.registry.update_device(w.ctx, w.plc.id, enabled=False)
    assert _enabled(w, "acme.plc-1")  # within the check interval: still the cached entry
    w.clock.advance(499_999)
    assert _enabled(w, "acme.plc-1")
    w.clock.advance(1)
    assert not _enabled(w, "acme.plc-1")
    w.registry.update_device(w.ctx, w.plc.id, enabled=True)
    w.cache.invalidate()
    assert _enabled(w, "acme.plc-1")


def test_an_unknown_device_is_found_once_it_is_created(w: World) -> None:
    assert w.cache.device("acme.plc-2") is None
    w.registry.create_device(w.ctx, "plc-2", [w.machine.id])
    w.clock.advance(1_000_000)
    info = w.cache.device("acme.plc-2")
    assert info is not None and info.tenant_slug == "acme" and info.prefixes[0] == PRESS_PREFIX


def test_a_gateway_going_away_marks_every_machine_it_publishes_for_offline(w: World) -> None:
    w.registry.create_asset(w.ctx, Level.MACHINE, "press-02", parent_id=w.line.id, type_name="press")
    calls: list[tuple[str, list[str]]] = []
    access = DeviceAccessService(w.cache, w.stats, on_offline=lambda u, t: calls.append((u, t)))
    access.connection_changed(w.gw.username, True)
    assert calls == []
    access.connection_changed(w.gw.username, False)
    assert calls == [(w.gw.username, [f"{LINE_PREFIX}/press-01/status", f"{LINE_PREFIX}/press-02/status"])]
    access.connection_changed(w.plc.username, False)
    assert calls[-1] == (w.plc.username, [f"{PRESS_PREFIX}/status"])
    access.connection_changed("acme.nobody", False)
    assert len(calls) == 2
