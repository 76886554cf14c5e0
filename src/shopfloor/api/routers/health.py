"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, CounterMetricFamily, GaugeMetricFamily

from shopfloor.api.deps import ApiServices, Services

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(svc: Services) -> dict[str, Any]:
    """The process is alive (always 200); with the readiness details when the server has them."""
    if svc.health is None:
        return {"status": "ok"}
    report = svc.health.report()
    return {**report.as_dict(), "status": "ok", "ready": report.ready}


@router.get("/readyz")
def readyz(svc: Services) -> JSONResponse:
    """Ready when the store answers, the broker link is up and ingest is not stuck; else 503."""
    if svc.health is not None:
        report = svc.health.report()
        return JSONResponse(report.as_dict(), status_code=200 if report.ready else 503)
    checks = svc.ready()
    ok = all(checks.values())
    return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503)


class _StatsCollector:
    def __init__(self, svc: ApiServices) -> None:
        self._svc = svc

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        s = self._svc.stats
        yield CounterMetricFamily("shopfloor_ingest_messages", "Messages committed", value=s.messages)
        yield CounterMetricFamily("shopfloor_ingest_points", "Samples and events committed", value=s.points)
        yield CounterMetricFamily("shopfloor_ingest_rejected", "Dead-lettered messages or values", value=s.rejected)
        yield CounterMetricFamily("shopfloor_store_commits", "Store commits", value=s.commits)
        yield CounterMetricFamily("shopfloor_store_commit_failures", "Failed store commits",
                                  value=s.commit_failures)
        mps, pps = s.rates()
        yield GaugeMetricFamily("shopfloor_ingest_messages_per_second", "Recent message rate", value=mps)
        yield GaugeMetricFamily("shopfloor_ingest_points_per_second", "Recent point rate", value=pps)
        yield GaugeMetricFamily("shopfloor_devices_online", "Connected devices", value=s.online_count())
        rejects = self._svc.broker_rejects()
        if rejects is not None:
            family = CounterMetricFamily("shopfloor_broker_rejects", "Refused by the external broker (from its log)",
                                         labels=["kind"])
            for kind, n in sorted(rejects.items()):
                family.add_metric([kind], n)
            yield family


@router.get("/metrics")
def metrics(svc: Services) -> Response:
    """Prometheus text format."""
    registry = CollectorRegistry()
    registry.register(_StatsCollector(svc))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
