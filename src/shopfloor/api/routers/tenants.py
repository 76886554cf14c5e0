"""Tenants (platform admin) and API tokens."""

from __future__ import annotations

from fastapi import APIRouter, status

from shopfloor.api.deps import Ctx, Services
from shopfloor.api.schemas import TenantIn, TenantOut, TokenCreated, TokenIn, TokenOut

router = APIRouter(tags=["tenants and tokens"])


@router.post("/tenants", status_code=status.HTTP_201_CREATED, response_model=TenantOut)
def create_tenant(body: TenantIn, ctx: Ctx, svc: Services) -> TenantOut:
    """Create a tenant (an enterprise). Platform admin only."""
    return TenantOut.of(svc.registry.create_tenant(ctx, body.slug, body.name))


@router.get("/tenants", response_model=list[TenantOut])
def list_tenants(ctx: Ctx, svc: Services) -> list[TenantOut]:
    """All tenants for the platform admin; a tenant token sees its own."""
    return [TenantOut.of(t) for t in svc.registry.list_tenants(ctx)]


@router.get("/tenants/{slug}", response_model=TenantOut)
def get_tenant(slug: str, ctx: Ctx, svc: Services) -> TenantOut:
    return TenantOut.of(svc.registry.tenant(ctx, slug))


@router.post("/tenants/{slug}/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def create_tenant_token(slug: str, body: TokenIn, ctx: Ctx, svc: Services) -> TokenCreated:
    """Platform admin: create a token for a tenant (typically its first admin token)."""
    ctx.require_platform()
    tok, secret = svc.registry.create_token(ctx, body.name, body.role, tenant_slug=slug)
    return TokenCreated(**TokenOut.of(tok).model_dump(), token=secret)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenCreated)
def create_token(body: TokenIn, ctx: Ctx, svc: Services) -> TokenCreated:
    """A tenant admin creates a token of its tenant with a role."""
    tok, secret = svc.registry.create_token(ctx, body.name, body.role)
    return TokenCreated(**TokenOut.of(tok).model_dump(), token=secret)


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(ctx: Ctx, svc: Services) -> list[TokenOut]:
    return [TokenOut.of(t) for t in svc.registry.list_tokens(ctx)]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_token(token_id: int, ctx: Ctx, svc: Services) -> None:
    svc.registry.revoke_token(ctx, token_id)
