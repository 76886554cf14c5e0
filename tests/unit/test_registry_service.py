"""The registry service over the in-memory registry: roles, tenancy, tree rules, device secrets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from shopfloor.domain.assets import Asset, Device, Level, MeasurementDef, ValueType
from shopfloor.domain.credentials import verify_secret
from shopfloor.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from shopfloor.domain.tenancy import Role, TenantContext, hash_token
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.registry import PLATFORM, RegistryService, measurement_defs
from shopfloor.testing.fakes import FixedClock, InMemoryRegistry

PRESS = [MeasurementDef("temperature", "degC"), MeasurementDef("running", "", ValueType.BOOLEAN)]


@dataclass
class Tree:
    site: Asset
    area: Asset
    line: Asset
    machine: Asset


@dataclass
class World:
    repo: InMemoryRegistry
    svc: RegistryService
    revoked: list[Device]

    def ctx(self, slug: str, role: Role = Role.ADMIN) -> TenantContext:
        tenant = self.repo.find_tenant(slug)
        assert tenant is not None
        return TenantContext(tenant.id, tenant.slug, role, f"{slug}-{role.value}")


@pytest.fixture
def world() -> World:
    repo = InMemoryRegistry(clock=FixedClock())
    svc = RegistryService(repo)
    revoked: list[Device] = []
    svc.on_device_revoked(revoked.append)
    svc.create_tenant(PLATFORM, "acme", "ACME")
    svc.create_tenant(PLATFORM, "globex")
    return World(repo, svc, revoked)


def build_tree(w: World, slug: str = "acme", machine_type: str | None = "press") -> Tree:
    ctx = w.ctx(slug, Role.ENGINEER)
    if machine_type is not None:
        w.svc.put_asset_type(ctx, machine_type, measurements=PRESS, events=["tool_change"])
    site = w.svc.create_asset(ctx, Level.SITE, "berlin", timezone="Europe/Berlin")
    area = w.svc.create_asset(ctx, Level.AREA, "press-shop", parent_id=site.id)
    line = w.svc.create_asset(ctx, Level.LINE, "line-1", parent_id=area.id)
    machine = w.svc.create_asset(ctx, Level.MACHINE, "press-01", parent_id=line.id, type_name=machine_type)
    return Tree(site, area, line, machine)


# -- roles -----------------------------------------------------------------------------------


def test_viewer_and_operator_cannot_create_assets_engineer_can(world: World) -> None:
    for role in (Role.VIEWER, Role.OPERATOR):
        with pytest.raises(Forbidden):
            world.svc.create_asset(world.ctx("acme", role), Level.SITE, "berlin")
        with pytest.raises(Forbidden):
            world.svc.put_asset_type(world.ctx("acme", role), "press")
    assert world.repo.list_assets(world.ctx("acme").require_tenant()) == []
    site = world.svc.create_asset(world.ctx("acme", Role.ENGINEER), Level.SITE, "berlin")
    assert site.timezone == "UTC"
    assert world.svc.list_assets(world.ctx("acme", Role.VIEWER)) == [site]  # viewers read


def test_viewer_cannot_change_or_delete(world: World) -> None:
    tree = build_tree(world)
    viewer = world.ctx("acme", Role.VIEWER)
    with pytest.raises(Forbidden):
        world.svc.update_asset(viewer, tree.machine.id, display_name="x")
    with pytest.raises(Forbidden):
        world.svc.delete_asset(viewer, tree.machine.id)
    with pytest.raises(Forbidden):
        world.svc.create_device(viewer, "plc", [tree.machine.id])
    with pytest.raises(Forbidden):
        world.svc.delete_asset_type(viewer, "press")
    assert world.svc.asset(viewer, tree.machine.id) == tree.machine


def test_only_admins_create_list_and_revoke_tokens(world: World) -> None:
    for role in (Role.VIEWER, Role.OPERATOR, Role.ENGINEER):
        with pytest.raises(Forbidden):
            world.svc.create_token(world.ctx("acme", role), "t", Role.VIEWER)
        with pytest.raises(Forbidden):
            world.svc.list_tokens(world.ctx("acme", role))
    admin = world.ctx("acme", Role.ADMIN)
    tok, secret = world.svc.create_token(admin, "dashboard", Role.VIEWER)
    assert secret.startswith("sft_") and secret not in tok.token_hash
    assert tok.tenant_id == admin.tenant_id and tok.role is Role.VIEWER
    assert world.svc.list_tokens(admin) == [tok]
    with pytest.raises(Forbidden):
        world.svc.revoke_token(world.ctx("acme", Role.ENGINEER), tok.id)
    world.svc.revoke_token(admin, tok.id)
    assert world.repo.find_token(tok.token_hash) is None


def test_a_token_needs_a_name(world: World) -> None:
    with pytest.raises(InvalidInput):
        world.svc.create_token(world.ctx("acme"), "   ", Role.VIEWER)


def test_only_the_platform_creates_tenants(world: World) -> None:
    with pytest.raises(Forbidden):
        world.svc.create_tenant(world.ctx("acme", Role.ADMIN), "initech")
    t = world.svc.create_tenant(PLATFORM, "initech", "Initech")
    assert (t.slug, t.name) == ("initech", "Initech")
    with pytest.raises(Conflict):
        world.svc.create_tenant(PLATFORM, "initech")
    with pytest.raises(InvalidInput):
        world.svc.create_tenant(PLATFORM, "Not A Slug")
    assert [x.slug for x in world.svc.list_tenants(PLATFORM)] == ["acme", "globex", "initech"]
    assert [x.slug for x in world.svc.list_tenants(world.ctx("acme", Role.VIEWER))] == ["acme"]


def test_platform_creates_a_tenants_first_token(world: World) -> None:
    tok, _ = world.svc.create_token(PLATFORM, "first-admin", Role.ADMIN, tenant_slug="globex")
    assert tok.tenant_id == world.ctx("globex").tenant_id
    with pytest.raises(NotFound):
        world.svc.create_token(PLATFORM, "x", Role.ADMIN, tenant_slug="nobody")
    with pytest.raises(Forbidden):  # the platform owns no tenant data itself
        world.svc.create_token(PLATFORM, "x", Role.ADMIN)


def test_a_tenant_admin_cannot_create_tokens_for_another_tenant(world: World) -> None:
    acme = world.ctx("acme")
    with pytest.raises(NotFound):
        world.svc.create_token(acme, "sneaky", Role.ADMIN, tenant_slug="globex")
    assert world.repo.list_tokens(world.ctx("globex").tenant_id) == []
    assert world.repo.list_tokens(acme.tenant_id) == []


def test_platform_initialisation_happens_once(world: World) -> None:
    assert not world.svc.is_initialised()
    issued = world.svc.init_platform()
    assert world.svc.is_initialised()
    tok = world.repo.find_token(hash_token(issued.secret))
    assert tok is not None and tok.is_platform and tok.role is Role.ADMIN
    with pytest.raises(Conflict):
        world.svc.init_platform()


# -- tenancy ---------------------------------------------------------------------------------


def test_another_tenant_sees_nothing_by_id(world: World) -> None:
    tree = build_tree(world, "acme")
    dev, _ = world.svc.create_device(world.ctx("acme", Role.ENGINEER), "plc-1", [tree.machine.id])
    series = world.svc.series_of(world.ctx("acme"), tree.machine.id)
    assert series
    other = world.ctx("globex", Role.ADMIN)
    reads: list[Callable[[], object]] = [
        lambda: world.svc.asset(other, tree.machine.id),
        lambda: world.svc.series_of(other, tree.machine.id),
        lambda: world.svc.series(other, series[0].id),
        lambda: world.svc.device(other, dev.id),
        lambda: world.svc.asset_type(other, "press"),
    ]
    writes: list[Callable[[], object]] = [
        lambda: world.svc.update_asset(other, tree.machine.id, display_name="mine now"),
        lambda: world.svc.delete_asset(other, tree.machine.id),
        lambda: world.svc.create_asset(other, Level.AREA, "hijack", parent_id=tree.site.id),
        lambda: world.svc.create_device(other, "spy", [tree.machine.id]),
        lambda: world.svc.update_device(other, dev.id, enabled=False),
        lambda: world.svc.rotate_device_secret(other, dev.id),
        lambda: world.svc.delete_device(other, dev.id),
        lambda: world.svc.delete_asset_type(other, "press"),
        lambda: world.svc.tenant(other, "acme"),
    ]
    for call in reads + writes:
        with pytest.raises(NotFound):
            call()
    assert world.svc.list_assets(other) == []
    assert world.svc.list_devices(other) == []
    assert world.svc.list_asset_types(other) == []
    # and nothing of acme's changed
    acme = world.ctx("acme")
    assert world.svc.asset(acme, tree.machine.id) == tree.machine
    assert world.svc.device(acme, dev.id) == dev
    assert world.revoked == []


def test_a_tenant_token_cannot_rebind_a_device_to_another_tenants_asset(world: World) -> None:
    a = build_tree(world, "acme")
    g = build_tree(world, "globex")
    gctx = world.ctx("globex", Role.ENGINEER)
    dev, _ = world.svc.create_device(gctx, "plc-1", [g.machine.id])
    with pytest.raises(NotFound):
        world.svc.update_device(gctx, dev.id, asset_ids=[a.machine.id])
    assert world.svc.device(gctx, dev.id).asset_ids == (g.machine.id,)


def test_same_names_in_two_tenants_are_independent(world: World) -> None:
    a = build_tree(world, "acme")
    g = build_tree(world, "globex")
    assert a.machine.path == g.machine.path and a.machine.id != g.machine.id
    da, _ = world.svc.create_device(world.ctx("acme"), "plc-1", [a.machine.id])
    dg, _ = world.svc.create_device(world.ctx("globex"), "plc-1", [g.machine.id])
    assert (da.username, dg.username) == ("acme.plc-1", "globex.plc-1")


def test_platform_context_has_no_tenant_data(world: World) -> None:
    with pytest.raises(Forbidden):
        world.svc.list_assets(PLATFORM)
    with pytest.raises(Forbidden):
        world.svc.create_asset(PLATFORM, Level.SITE, "berlin")


# -- the tree --------------------------------------------------------------------------------


def test_parents_follow_the_isa95_levels(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    assert tree.machine.path == ("berlin", "press-shop", "line-1", "press-01")
    with pytest.raises(InvalidInput, match="line"):
        world.svc.create_asset(eng, Level.MACHINE, "m", parent_id=tree.area.id)
    with pytest.raises(InvalidInput):
        world.svc.create_asset(eng, Level.MACHINE, "m", parent_id=tree.machine.id)
    with pytest.raises(InvalidInput):
        world.svc.create_asset(eng, Level.LINE, "l", parent_id=tree.site.id)
    with pytest.raises(InvalidInput):
        world.svc.create_asset(eng, Level.AREA, "a")  # no parent
    with pytest.raises(InvalidInput):
        world.svc.create_asset(eng, Level.SITE, "s", parent_id=tree.site.id)
    with pytest.raises(NotFound):
        world.svc.create_asset(eng, Level.MACHINE, "m", parent_id=99_999)
    with pytest.raises(Conflict):
        world.svc.create_asset(eng, Level.MACHINE, "press-01", parent_id=tree.line.id)
    with pytest.raises(InvalidInput):
        world.svc.create_asset(eng, Level.MACHINE, "Press 02", parent_id=tree.line.id)
    with pytest.raises(NotFound):
        world.svc.create_asset(eng, Level.MACHINE, "m2", parent_id=tree.line.id, type_name="unknown")
    assert len(world.svc.list_assets(eng)) == 4


def test_only_sites_have_time_zones(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    with pytest.raises(InvalidInput):
        world.svc.create_asset(eng, Level.AREA, "a2", parent_id=tree.site.id, timezone="Europe/Berlin")
    with pytest.raises(InvalidInput):
        world.svc.update_asset(eng, tree.line.id, timezone="Europe/Berlin")
    site = world.svc.update_asset(eng, tree.site.id, timezone="America/Chicago")
    assert site.timezone == "America/Chicago"
    assert world.svc.site_of(eng, tree.machine).timezone == "America/Chicago"


@pytest.mark.parametrize("bad", ["Mars/Olympus", "Europe/Berlinn", "europe berlin", "../../etc/passwd",
                                 "America", "Europe/", "x" * 300, "/etc/localtime"])
def test_bad_time_zones_are_rejected(world: World, bad: str) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    with pytest.raises(InvalidInput):
        world.svc.create_asset(eng, Level.SITE, "hamburg", timezone=bad)
    with pytest.raises(InvalidInput):
        world.svc.update_asset(eng, tree.site.id, timezone=bad)
    assert world.svc.asset(eng, tree.site.id).timezone == "Europe/Berlin"


def test_deleting_assets_and_types(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    with pytest.raises(Conflict):
        world.svc.delete_asset(eng, tree.line.id)  # has a machine
    with pytest.raises(Conflict):
        world.svc.delete_asset_type(eng, "press")  # used by the machine
    world.svc.delete_asset(eng, tree.machine.id)
    world.svc.delete_asset_type(eng, "press")
    with pytest.raises(NotFound):
        world.svc.asset_type(eng, "press")
    with pytest.raises(NotFound):
        world.svc.delete_asset(eng, tree.machine.id)


# -- asset types and series --------------------------------------------------------------------


def test_series_follow_the_type_of_a_machine(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    series = world.svc.series_of(eng, tree.machine.id)
    assert {(s.measurement, s.unit, s.type) for s in series} == {("temperature", "degC", ValueType.NUMERIC),
                                                                 ("running", "", ValueType.BOOLEAN)}
    # a new measurement on the type appears on every machine of the type; old ids stay
    world.svc.put_asset_type(eng, "press", measurements=[*PRESS, MeasurementDef("power", "kW")])
    after = world.svc.series_of(eng, tree.machine.id)
    assert {s.measurement for s in after} == {"temperature", "running", "power"}
    assert {s.id for s in series} <= {s.id for s in after}
    # typing an untyped machine creates its series
    plain = world.svc.create_asset(eng, Level.MACHINE, "press-02", parent_id=tree.line.id)
    assert world.svc.series_of(eng, plain.id) == []
    world.svc.update_asset(eng, plain.id, type_name="press")
    assert len(world.svc.series_of(eng, plain.id)) == 3


def test_asset_type_validation(world: World) -> None:
    eng = world.ctx("acme", Role.ENGINEER)
    with pytest.raises(InvalidInput, match="twice"):
        world.svc.put_asset_type(eng, "press", measurements=[MeasurementDef("t"), MeasurementDef("t")])
    with pytest.raises(InvalidInput):
        world.svc.put_asset_type(eng, "press", measurements=[MeasurementDef("Temp C")])
    with pytest.raises(InvalidInput):
        world.svc.put_asset_type(eng, "Press!")
    with pytest.raises(InvalidInput):
        world.svc.put_asset_type(eng, "press", events=["tool change"])
    assert world.svc.list_asset_types(eng) == []


def test_measurement_defs_from_plain_dicts() -> None:
    defs = measurement_defs([{"name": "t", "unit": "degC"}, {"name": "on", "type": "boolean"}])
    assert defs == [MeasurementDef("t", "degC"), MeasurementDef("on", "", ValueType.BOOLEAN)]
    with pytest.raises(InvalidInput):
        measurement_defs([{"name": "t", "type": "complex"}])


# -- devices ---------------------------------------------------------------------------------


def test_device_secret_is_shown_once_and_stored_as_a_mosquitto_hash(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    dev, secret = world.svc.create_device(eng, "plc-1", [tree.machine.id], description="S7-1500")
    assert dev.username == "acme.plc-1" and dev.enabled and not dev.gateway
    assert dev.secret_hash.startswith("$7$")
    assert verify_secret(secret, dev.secret_hash)
    stored = world.repo.get_device(dev.tenant_id, dev.id)
    assert stored is not None and secret not in repr(stored)
    # reading it back never gives the secret again
    assert secret not in repr(world.svc.device(eng, dev.id))
    with pytest.raises(Conflict):
        world.svc.create_device(eng, "plc-1", [tree.machine.id])
    with pytest.raises(InvalidInput):
        world.svc.create_device(eng, "PLC 1", [tree.machine.id])


def test_rotation_changes_the_hash_and_fires_the_revoked_listener(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    dev, old = world.svc.create_device(eng, "plc-1", [tree.machine.id])
    assert world.revoked == []
    rotated, new = world.svc.rotate_device_secret(eng, dev.id)
    assert new != old
    assert rotated.secret_hash != dev.secret_hash and rotated.secret_hash.startswith("$7$")
    assert verify_secret(new, rotated.secret_hash) and not verify_secret(old, rotated.secret_hash)
    assert [d.id for d in world.revoked] == [dev.id]
    with pytest.raises(Forbidden):
        world.svc.rotate_device_secret(world.ctx("acme", Role.VIEWER), dev.id)


def test_disabling_fires_the_listener_enabling_does_not(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    dev, _ = world.svc.create_device(eng, "plc-1", [tree.machine.id])
    world.svc.update_device(eng, dev.id, description="renamed")
    assert world.revoked == []
    off = world.svc.update_device(eng, dev.id, enabled=False)
    assert not off.enabled
    assert [(d.id, d.enabled) for d in world.revoked] == [(dev.id, False)]
    world.svc.update_device(eng, dev.id, enabled=False)  # already off: nothing to cut
    world.svc.update_device(eng, dev.id, enabled=True)
    assert len(world.revoked) == 1
    world.svc.delete_device(eng, dev.id)
    assert [d.id for d in world.revoked] == [dev.id, dev.id]
    with pytest.raises(NotFound):
        world.svc.device(eng, dev.id)


def test_only_a_gateway_publishes_for_several_assets(world: World) -> None:
    tree = build_tree(world)
    eng = world.ctx("acme", Role.ENGINEER)
    m2 = world.svc.create_asset(eng, Level.MACHINE, "press-02", parent_id=tree.line.id)
    with pytest.raises(InvalidInput):
        world.svc.create_device(eng, "plc-1", [tree.machine.id, m2.id])
    with pytest.raises(InvalidInput):
        world.svc.create_device(eng, "plc-1", [])
    assert world.svc.list_devices(eng) == []
    gw, _ = world.svc.create_device(eng, "gw-1", [tree.machine.id, m2.id], gateway=True)
    assert gw.gateway and gw.asset_ids == (tree.machine.id, m2.id)
    plc, _ = world.svc.create_device(eng, "plc-1", [tree.machine.id])
    with pytest.raises(InvalidInput):
        world.svc.update_device(eng, plc.id, asset_ids=[tree.machine.id, m2.id])
    with pytest.raises(InvalidInput):
        world.svc.update_device(eng, plc.id, asset_ids=[])
    moved = world.svc.update_device(eng, plc.id, asset_ids=[m2.id])
    assert moved.asset_ids == (m2.id,)
    assert [d.id for d in world.revoked] == [plc.id]  # rebinding cuts the session: new prefixes
    assert world.svc.device_prefix_paths(gw) == [tree.machine.path, m2.path]


# -- tokens to contexts ------------------------------------------------------------------------


def test_token_authentication(world: World) -> None:
    auth = TokenAuthenticator(world.repo)
    _, secret = world.svc.create_token(PLATFORM, "acme-admin", Role.ADMIN, tenant_slug="acme")
    ctx = auth.context_for(secret)
    assert (ctx.tenant_slug, ctx.role, ctx.token_name, ctx.platform) == ("acme", Role.ADMIN, "acme-admin", False)
    root = world.svc.issue_platform_token("root")
    pctx = auth.context_for(root.secret)
    assert pctx.platform and pctx.tenant_id is None
    for bad in (None, "", "not-a-token", "sft_unknown", secret + "x"):
        with pytest.raises(Unauthenticated):
            auth.context_for(bad)
    tok = next(t for t in world.repo.list_tokens(ctx.tenant_id))
    world.svc.revoke_token(ctx, tok.id)
    with pytest.raises(Unauthenticated):
        auth.context_for(secret)
