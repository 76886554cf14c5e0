"""Use cases. Every call is explicit about its tenant (a ``TenantContext`` or a tenant id)."""
