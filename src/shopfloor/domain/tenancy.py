"""Tenants, API tokens, roles, and the tenant context every call carries."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from shopfloor.domain.errors import Forbidden

TOKEN_PREFIX = "sft_"


class Role(enum.StrEnum):
    """Roles in rising order of power; each role may do what the ones below it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANKS = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ENGINEER: 2, Role.ADMIN: 3}


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    slug: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A stored token: only the SHA-256 of the secret is kept."""

    id: int
    tenant_id: int | None  # None: a platform token
    name: str
    role: Role
    token_hash: str
    created_at: datetime
    revoked: bool = False

    @property
    def is_platform(self) -> bool:
        return self.tenant_id is None


@dataclass(frozen=True, slots=True)
class TenantContext:
    """Who is calling and for which tenant. Built once per request or message."""

    tenant_id: int | None
    tenant_slug: str | None
    role: Role
    token_name: str
    platform: bool = False

    def require(self, role: Role) -> None:
        if not self.role.allows(role):
            raise Forbidden(
                f"token {self.token_name!r} has role {self.role.value!r}; this needs {role.value!r} or higher"
            )

    def require_tenant(self) -> int:
        if self.tenant_id is None:
            raise Forbidden(
                "this call works on one tenant's data; use a token of that tenant "
                "(the platform admin creates one with POST /api/v1/tenants/{slug}/tokens)"
            )
        return self.tenant_id

    def require_platform(self) -> None:
        if not self.platform:
            raise Forbidden("only the platform administrator may do this")


def new_token_secret() -> str:
    """A high-entropy bearer token (256 bits), recognisable by its prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> str:
    """Tokens are random, so a fast unsalted digest is enough to look them up safely."""
    return hashlib.sha256(secret.encode()).hexdigest()


def token_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(secret), stored_hash)
