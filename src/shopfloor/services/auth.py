"""API tokens to tenant contexts."""

from __future__ import annotations

from shopfloor.domain.errors import Unauthenticated
from shopfloor.domain.tenancy import TOKEN_PREFIX, TenantContext, hash_token
from shopfloor.ports.registry import RegistryRepository


class TokenAuthenticator:
    def __init__(self, repo: RegistryRepository) -> None:
        self._repo = repo

    def context_for(self, secret: str | None) -> TenantContext:
        if not secret:
            raise Unauthenticated("send an API token as 'Authorization: Bearer sft_...'")
        if not secret.startswith(TOKEN_PREFIX):
            raise Unauthenticated("that is not a shopfloor API token (they start with 'sft_')")
        token = self._repo.find_token(hash_token(secret))
        if token is None:
            raise Unauthenticated("unknown or revoked API token")
        if token.tenant_id is None:
            return TenantContext(None, None, token.role, token.name, platform=True)
        tenant = self._repo.get_tenant(token.tenant_id)
        if tenant is None:
            raise Unauthenticated("the token's tenant no longer exists")
        return TenantContext(tenant.id, tenant.slug, token.role, token.name)
