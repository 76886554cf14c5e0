"""Request dependencies: the services bundle and the tenant context (auth in one place)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from shopfloor.domain.tenancy import TenantContext
from shopfloor.ports.backup import Backup
from shopfloor.ports.ingest import MessageSink
from shopfloor.services.alarm_ops import AlarmOps
from shopfloor.services.analytics import AnalyticsService
from shopfloor.services.auth import TokenAuthenticator
from shopfloor.services.export import ExportService
from shopfloor.services.health import HealthService
from shopfloor.services.history import HistoryService
from shopfloor.services.kpis import KpiService
from shopfloor.services.machine_writes import MachineWriteService
from shopfloor.services.overview import OverviewService
from shopfloor.services.plant import PlantService
from shopfloor.services.registry import RegistryService
from shopfloor.services.sparkplug import SparkplugCommandService
from shopfloor.services.stats import IngestStats


@dataclass
class ApiServices:
    registry: RegistryService
    plant: PlantService
    history: HistoryService
    auth: TokenAuthenticator
    stats: IngestStats
    ready: Callable[[], dict[str, bool]] = field(default=lambda: {"store": True})
    invalidate: Callable[[], None] = field(default=lambda: None)
    backup: Backup | None = None  # POST /admin/backup answers 503 without it
    export: ExportService | None = None  # GET /export answers 503 without it
    health: HealthService | None = None  # /readyz falls back to ``ready`` without it
    broker_rejects: Callable[[], dict[str, int] | None] = field(default=lambda: None)  # counted by an external broker
    ingest: MessageSink | None = None  # POST /messages (back-fill) answers 503 without it
    kpis: KpiService | None = None  # /kpis answers 503 without it
    sparkplug_commands: SparkplugCommandService | None = None  # POST /devices/{id}/sparkplug/command: 503 without
    alarms: AlarmOps | None = None  # /rules and /alarms answer 503 without it
    analytics: AnalyticsService | None = None  # /analytics answers 503 without it
    overview: OverviewService | None = None  # /overview and /stream/states answer 503 without it
    machine_writes: MachineWriteService | None = None  # POST /assets/{id}/write: 503 without


def services(request: Request) -> ApiServices:
    svc: ApiServices = request.app.state.services
    return svc


Services = Annotated[ApiServices, Depends(services)]

SESSION_COOKIE = "shopfloor_session"


def tenant_context(request: Request, svc: Services) -> TenantContext:
    """The one place a request becomes a tenant context: bearer token (or session cookie)."""
    header = request.headers.get("authorization", "")
    secret: str | None = None
    if header.lower().startswith("bearer "):
        secret = header[7:].strip()
    elif SESSION_COOKIE in request.cookies:
        secret = request.cookies[SESSION_COOKIE]
    return svc.auth.context_for(secret)


Ctx = Annotated[TenantContext, Depends(tenant_context)]
