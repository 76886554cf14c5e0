"""The demo's first start back-fills history through ingest; later starts do not; 0 hours disables it.

The real demo (embedded broker, DuckDB, API, live simulator), run in-process; the data is read
back afterwards through the platform's services, as the API would.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from rich.console import Console

from shopfloor.bootstrap import Platform, build_platform
from shopfloor.config import Settings
from shopfloor.demo import run_demo
from shopfloor.domain.assets import Level
from shopfloor.domain.tenancy import TenantContext
from tests.conftest import free_port

pytestmark = pytest.mark.integration

HOURS = 10  # more than one 8 h shift, so the window spans at least two
LIVE = "live simulation started"


def _settings(data_dir: Path, hours: int) -> Settings:
    return Settings(data_dir=data_dir, http_port=free_port(), mqtt_port=free_port(), demo_history_hours=hours)


async def _run(settings: Settings, live_for_s: float) -> tuple[str, int]:
    """Run the demo until it has been live for ``live_for_s``; return its output and when it went live (ms)."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    stop = asyncio.Event()
    task = asyncio.create_task(run_demo(settings, stop, live=False, console=console))
    try:
        deadline = time.monotonic() + 240
        while LIVE not in out.getvalue():
            assert not task.done(), out.getvalue()
            assert time.monotonic() < deadline, "the demo did not go live:\n" + out.getvalue()
            await asyncio.sleep(0.1)
        live_ms = int(time.time() * 1000)
        await asyncio.sleep(live_for_s)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert "stopped cleanly" in out.getvalue()
    return out.getvalue(), live_ms


def _open(settings: Settings) -> tuple[Platform, TenantContext]:
    platform = build_platform(settings)
    token = (settings.data_dir / "demo-token").read_text().strip()
    return platform, platform.auth.context_for(token)


def _energy_points(p: Platform, ctx: TenantContext, start_ms: int, end_ms: int) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for m in p.registry.list_assets(ctx, Level.MACHINE):
        series = next(s for s in p.registry.series_of(ctx, m.id) if s.measurement == "energy")
        raw = p.history.raw(ctx, series.id, start_ms * 1000, end_ms * 1000)
        assert all(s.value is not None for s in raw)
        out[m.name] = [(s.ts_us, s.value or 0.0) for s in raw]
    return out


async def test_first_start_backfills_history_and_a_restart_does_not(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data", HOURS)
    t0_ms = int(time.time() * 1000)
    text, live_ms = await _run(settings, live_for_s=4)
    assert f"history: {HOURS} h back-filled for 12 machines" in text
    assert " 0 rejected" in text, text

    p, ctx = _open(settings)
    try:
        window = (t0_ms - HOURS * 3_600_000, t0_ms)
        line = p.registry.list_assets(ctx, Level.LINE)[0]
        report = p.kpis.kpis(ctx, line.id, window[0] * 1000, window[1] * 1000, by="shift")
        assert len(report.groups) >= 2, [g.key for g in report.groups]
        for g in report.groups:
            for key in ("availability", "performance", "quality", "oee"):
                value = g.kpis.value(key)
                assert value is not None and 0 <= value <= 1.2, (g.key, key, value)
        assert report.total.kpis.value("oee") is not None

        energy = _energy_points(p, ctx, window[0] - 60_000, int(time.time() * 1000))
        assert len(energy) == 12
        for name, points in energy.items():
            stamps = [ts for ts, _ in points]
            values = [v for _, v in points]
            assert stamps == sorted(stamps)
            assert values == sorted(values), f"{name}: the energy counter goes back"
            assert stamps[0] // 1000 <= window[0] + 60_000, f"{name}: history reaches back {HOURS} h"
            assert len([ts for ts in stamps if ts // 1000 < t0_ms]) >= HOURS * 3600 // 30
            assert any(ts // 1000 > live_ms for ts in stamps), f"{name}: live data after the hand-over"
        before_restart = {name: len(pts) for name, pts in _energy_points(p, ctx, window[0] - 60_000, t0_ms).items()}
        events_before = len(p.history.events(ctx, start_us=(window[0] - 60_000) * 1000, end_us=t0_ms * 1000,
                                             limit=100_000))
    finally:
        p.close()

    text, _ = await _run(settings, live_for_s=1)
    assert "back-fill" not in text and "history:" not in text, text
    p, ctx = _open(settings)
    try:
        again = {name: len(pts) for name, pts in _energy_points(p, ctx, window[0] - 60_000, t0_ms).items()}
        assert again == before_restart, "a restart adds no second history"
        assert len(p.history.events(ctx, start_us=(window[0] - 60_000) * 1000, end_us=t0_ms * 1000,
                                    limit=100_000)) == events_before
    finally:
        p.close()


async def test_zero_hours_starts_empty(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "data", 0)
    t0_ms = int(time.time() * 1000)
    text, _ = await _run(settings, live_for_s=2)
    assert "history:" not in text
    p, ctx = _open(settings)
    try:
        assert p.history.events(ctx, limit=10), "live events arrived"
        assert not p.history.events(ctx, end_us=(t0_ms - 1000) * 1000, limit=10), "nothing from before the start"
        energy = _energy_points(p, ctx, t0_ms - 48 * 3_600_000, int(time.time() * 1000))
        assert all(ts // 1000 >= t0_ms - 1000 for pts in energy.values() for ts, _ in pts)
        assert any(energy.values())
    finally:
        p.close()
