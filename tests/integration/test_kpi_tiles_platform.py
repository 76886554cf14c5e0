"""The platform keeps its machines' closed shifts and answers from them, exactly as it computes them.

The real demo (embedded broker, DuckDB, simulated history back-filled through ingest) runs first;
then the keeper's pass keeps every closed shift, a second pass finds nothing to do, and a line's
KPIs by shift through the tiles equal the ones computed from raw data by a service without tiles.
A late state event drops the shifts it may change; the next pass keeps them again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shopfloor.config import Settings
from shopfloor.domain.assets import Level
from shopfloor.domain.records import EventRecord, IngestBatch
from shopfloor.services.kpis import KpiService
from tests.conftest import free_port
from tests.integration.test_demo_history import _open, _run

pytestmark = pytest.mark.integration

H = 3_600_000_000


def same(a: object, b: object) -> bool:
    """Equal, floats to a relative 1e-9: the store sums kWh in an order of its choosing (as the KPI
    contract allows), so a window computed in another call may differ in the last bits."""
    def walk(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return math.isclose(x, y, rel_tol=1e-9)
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(walk(x[k], y[k]) for k in x)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(walk(u, v) for u, v in zip(x, y, strict=True))
        return bool(x == y)
    return walk(msgspec.to_builtins(a), msgspec.to_builtins(b))


async def test_closed_shifts_are_kept_and_answer_like_raw_data(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", http_port=free_port(), mqtt_port=free_port(),
                        demo_history_hours=20)
    await _run(settings, live_for_s=2)
    p, ctx = _open(settings)
    try:
        assert p.kpi_tiles is not None and p.stores.kpi_tiles is not None
        tenant = ctx.require_tenant()
        p.keep_kpi_tiles()  # what the server's first pass did not keep yet
        kept = p.stores.kpi_tiles.count(tenant)
        machines = p.registry.list_assets(ctx, Level.MACHINE)
        assert kept >= len(machines)  # 20 h of history hold at least one whole shift per machine
        assert p.keep_kpi_tiles() == 0

        line = p.registry.list_assets(ctx, Level.LINE)[0]
        now = p.clock.now_us()
        window = (now - 20 * H, now)
        raw = KpiService(p.registry, p.stores.kpis, p.clock, p.historian)
        tiled_report = p.kpis.kpis(ctx, line.id, *window, by="shift")
        assert p.kpi_tiles.last_hits >= len(p.registry.list_assets(ctx, Level.MACHINE, parent_id=line.id))
        assert same(tiled_report, raw.kpis(ctx, line.id, *window, by="shift"))

        # a late state of one machine, inside the first whole shift: its tiles from there on are dropped
        machine = p.registry.list_assets(ctx, Level.MACHINE, parent_id=line.id)[0]
        machine_before = p.kpis.kpis(ctx, machine.id, *window, by="shift")
        whole = [g for g in tiled_report.groups if g.start_us > window[0]]
        inside = whole[0].start_us + H
        p.historian.commit(IngestBatch(events=[EventRecord(tenant, machine.id, inside, "state", "blocked",
                                                           {"state": "blocked"})]))
        now_kept = p.stores.kpi_tiles.count(tenant)
        assert p.stores.kpi_tiles.refresh(tenant, p.historian.last_seq()) > 0
        assert p.stores.kpi_tiles.count(tenant) < now_kept
        assert same(p.kpis.kpis(ctx, line.id, *window, by="shift"), raw.kpis(ctx, line.id, *window, by="shift"))
        after = p.kpis.kpis(ctx, machine.id, *window, by="shift")
        assert same(after, raw.kpis(ctx, machine.id, *window, by="shift"))
        assert not same(after.groups, machine_before.groups)
        p.keep_kpi_tiles()
        assert p.stores.kpi_tiles.count(tenant) >= now_kept
    finally:
        p.close()
