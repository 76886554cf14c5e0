"""The FastAPI application: /api/v1 routers, problem+json errors, health and metrics at the root."""

from __future__ import annotations

from fastapi import FastAPI

from shopfloor import __version__
from shopfloor.api import errors
from shopfloor.api.deps import ApiServices
from shopfloor.api.routers import (
    admin,
    alarms,
    analytics,
    assets,
    data,
    devices,
    export,
    health,
    kpis,
    machine_writes,
    messages,
    overview,
    plant,
    rules,
    sparkplug,
    tenants,
)

API = "/api/v1"


def create_app(services: ApiServices) -> FastAPI:
    app = FastAPI(
        title="shopfloor",
        version=__version__,
        description="The shopfloor HTTP API. Authenticate with `Authorization: Bearer <token>`.",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
    )
    app.state.services = services
    errors.install(app)
    for r in (tenants.router, assets.router, devices.router, data.router, plant.router, export.router, admin.router,
              kpis.router, messages.router, sparkplug.router, overview.router, analytics.router,
              machine_writes.router, rules.router, alarms.router):
        app.include_router(r, prefix=API)
    app.include_router(health.router)
    return app
