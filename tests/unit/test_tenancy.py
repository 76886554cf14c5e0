"""Roles, tenant contexts and API token secrets."""

from __future__ import annotations

import pytest

from shopfloor.domain.errors import Forbidden
from shopfloor.domain.tenancy import (
    TOKEN_PREFIX,
    ApiToken,
    Role,
    TenantContext,
    hash_token,
    new_token_secret,
    token_matches,
)
from shopfloor.domain.timeutil import from_us

ORDER = [Role.VIEWER, Role.OPERATOR, Role.ENGINEER, Role.ADMIN]


@pytest.mark.parametrize("have", ORDER)
@pytest.mark.parametrize("need", ORDER)
def test_roles_allow_what_ranks_below_them(have: Role, need: Role) -> None:
    assert have.allows(need) == (ORDER.index(have) >= ORDER.index(need))


def test_ranks_rise() -> None:
    assert [r.rank for r in ORDER] == sorted({r.rank for r in ORDER})


def test_context_require_names_the_token_and_the_role() -> None:
    viewer = TenantContext(1, "acme", Role.VIEWER, "dashboard")
    viewer.require(Role.VIEWER)
    with pytest.raises(Forbidden) as exc:
        viewer.require(Role.ENGINEER)
    assert "dashboard" in exc.value.message and "engineer" in exc.value.message
    assert exc.value.status == 403


def test_tenant_and_platform_contexts() -> None:
    tenant = TenantContext(3, "acme", Role.ADMIN, "ci")
    assert tenant.require_tenant() == 3
    with pytest.raises(Forbidden):
        tenant.require_platform()
    platform = TenantContext(None, None, Role.ADMIN, "root", platform=True)
    platform.require_platform()
    with pytest.raises(Forbidden):
        platform.require_tenant()


def test_token_secrets() -> None:
    secrets = {new_token_secret() for _ in range(100)}
    assert len(secrets) == 100
    for s in secrets:
        assert s.startswith(TOKEN_PREFIX) and len(s) >= len(TOKEN_PREFIX) + 40
    s = next(iter(secrets))
    h = hash_token(s)
    assert h == hash_token(s) and len(h) == 64 and s not in h
    assert token_matches(s, h)
    assert not token_matches(s + "x", h)
    assert not token_matches(s, "")
    assert hash_token("a") != hash_token("b")


def test_platform_tokens_have_no_tenant() -> None:
    created = from_us(0)
    assert ApiToken(1, None, "root", Role.ADMIN, "h", created).is_platform
    assert not ApiToken(2, 5, "ci", Role.ADMIN, "h", created).is_platform
