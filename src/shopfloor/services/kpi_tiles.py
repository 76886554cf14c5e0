"""KPIs of closed windows kept, so a month of shifts is read instead of recomputed.

``TiledKpiSource`` is a ``KpiSource`` in front of a store's own: every closed window it is asked for
is looked up among the kept tiles (``ports/kpi_tiles.py``); the rest is computed by the store in one
call, and the closed ones among them are kept for next time. Before each lookup the tenant's tiles
that rows committed since the last look may change are dropped, so an answer from tiles is the
answer the store would compute now (late and back-filled data included).

``keep_closed_shifts`` fills the tiles ahead of questions (the server runs it every few minutes:
``keep_periodically``): every machine's closed shifts of the last ``days`` days, for every site with
a shift calendar, a little after each shift ends, and again for windows that late data dropped.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import msgspec

from shopfloor.domain.errors import ShopfloorError
from shopfloor.domain.kpi.models import PeriodInputs
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.clock import Clock
from shopfloor.ports.kpi import EnergyKind, KpiRequest, KpiSource, LabelledSpan, Lap, Span, paused_gc
from shopfloor.ports.kpi_tiles import KpiTileStore, ReadingProbe, Tile, TileKey
from shopfloor.services.kpis import KpiService
from shopfloor.services.registry import PLATFORM, RegistryService

log = logging.getLogger(__name__)

DAY_US = 86_400_000_000


@dataclass(slots=True)
class _Memo:
    """Fingerprints of (calendar, tariff) inside a window, shared by the requests of one call."""

    spans: dict[tuple[int, int, int, int], str] = field(default_factory=dict)


class TiledKpiSource:
    """``KpiSource`` that answers closed windows from kept tiles (see the module docs).

    A window counts as closed once it ended ``settle_us`` ago: windows that end "now" (the current
    shift so far, asked for every few seconds by a dashboard) are computed each time and never kept.
    """

    def __init__(self, inner: KpiSource, tiles: KpiTileStore, last_seq: Callable[[], int], clock: Clock,
                 settle_us: int = 120_000_000) -> None:
        self._inner = inner
        self._tiles = tiles
        self._last_seq = last_seq
        self._clock = clock
        self._settle = settle_us  # a window is kept once it ended this long ago (not "until now" windows)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(PeriodInputs)
        self.timings: dict[str, float] = {}  # seconds per step of the last call (for benchmarks)
        self.last_hits = 0  # windows of the last call answered from tiles

    def period_inputs(self, tenant_id: int, requests: Sequence[KpiRequest]) -> list[PeriodInputs]:
        lap = Lap(self.timings)
        flat = [(r, w) for r in requests for w in r.windows]
        out: list[PeriodInputs | None] = [None] * len(flat)
        closed, keys = self._keys(requests, self._clock.now_us())
        if keys:  # only closed windows can come from tiles (the shift under way costs nothing here)
            self._tiles.refresh(tenant_id, self._last_seq())
        lap("refresh")
        blobs = self._tiles.lookup(tenant_id, keys)
        lap("lookup")
        decode = self._decoder.decode
        with paused_gc():  # tens of thousands of small structs: no cycles to find
            for i, blob in zip(closed, blobs, strict=True):
                if blob is not None:
                    out[i] = decode(blob)
        self.last_hits = sum(1 for b in blobs if b is not None)
        lap("decode")
        missing = [i for i, v in enumerate(out) if v is None]
        if missing:
            computed = self._compute(tenant_id, flat, missing, set(closed), dict(zip(closed, keys, strict=True)), lap)
            for i, inputs in zip(missing, computed, strict=True):
                out[i] = inputs
        return [o for o in out if o is not None]

    def fill(self, tenant_id: int, requests: Sequence[KpiRequest]) -> int:
        """Compute and keep the closed windows of ``requests`` not kept yet; returns how many."""
        self.timings.clear()
        self._tiles.refresh(tenant_id, self._last_seq())
        flat = [(r, w) for r in requests for w in r.windows]
        closed, keys = self._keys(requests, self._clock.now_us())
        blobs = self._tiles.lookup(tenant_id, keys)
        missing = [i for i, b in zip(closed, blobs, strict=True) if b is None]
        if missing:
            self._compute(tenant_id, flat, missing, set(closed), dict(zip(closed, keys, strict=True)),
                          Lap(self.timings))
        return len(missing)

    # -- internals ---------------------------------------------------------------------------------
    def _keys(self, requests: Sequence[KpiRequest], now: int) -> tuple[list[int], list[TileKey]]:
        """The flat positions of the closed windows and their tile keys."""
        memo = _Memo()
        closed: list[int] = []
        keys: list[TileKey] = []
        i = 0
        for r in requests:
            machine = _machine_part(r)
            series = r.energy.series_id if r.energy is not None else None
            for w0, w1 in r.windows:
                if w1 <= now - self._settle:
                    closed.append(i)
                    keys.append(TileKey(r.asset_id, w0, w1, f"{_window_part(memo, r, w0, w1)}|{machine}", series))
                i += 1
        return closed, keys

    def _compute(self, tenant_id: int, flat: list[tuple[KpiRequest, Span]], missing: list[int], closed: set[int],
                 keys: dict[int, TileKey], lap: Lap) -> list[PeriodInputs]:
        seq = self._last_seq()  # everything up to here is in what the store reads next
        subs: list[KpiRequest] = []
        order: list[int] = []
        by_request: dict[int, list[int]] = {}
        for i in missing:
            by_request.setdefault(id(flat[i][0]), []).append(i)
        for idx in by_request.values():
            r = flat[idx[0]][0]
            subs.append(KpiRequest(r.asset_id, [flat[i][1] for i in idx], r.scheduled, r.tariff, r.energy,
                                   r.reports_orders, r.labour_scheduled_only))
            order.extend(idx)
        computed = self._inner.period_inputs(tenant_id, subs)
        lap("compute")
        by_pos = dict(zip(order, computed, strict=True))
        self._keep(tenant_id, [(keys[i], flat[i][0], by_pos[i]) for i in missing if i in closed], seq)
        lap("keep")
        return [by_pos[i] for i in missing]

    def _keep(self, tenant_id: int, done: list[tuple[TileKey, KpiRequest, PeriodInputs]], seq: int) -> None:
        if not done:
            return
        counters = [j for j, (_, r, _) in enumerate(done) if r.energy is not None and r.energy.kind is EnergyKind.COUNTER]
        firsts = self._tiles.first_readings([ReadingProbe(done[j][0].series_id or 0, done[j][0].w1) for j in counters])
        dep: dict[int, int | None] = dict(zip(counters, firsts, strict=True))
        encode = self._encoder.encode
        tiles = []
        for j, (key, _, inputs) in enumerate(done):
            if j in dep:  # a counter: up to its first reading after the window
                found = dep[j]
                if found is None:  # none yet: the window's energy is still open; computed when asked
                    continue
                dep_hi = found
            else:
                dep_hi = key.w1 - 1
            tiles.append(Tile(key, dep_hi, encode(inputs)))
        try:
            self._tiles.store(tenant_id, tiles, seq)
        except ShopfloorError as exc:  # keeping is an optimisation: the answer stands
            log.warning("could not keep %d KPI tiles: %s", len(tiles), exc)


def _machine_part(r: KpiRequest) -> str:
    e = r.energy
    energy = "-" if e is None else f"{e.series_id}:{e.kind.value}:{e.staleness_us}"
    return f"{energy}|{int(r.reports_orders)}{int(r.labour_scheduled_only)}"


def _window_part(memo: _Memo, r: KpiRequest, w0: int, w1: int) -> str:
    key = (id(r.scheduled), id(r.tariff), w0, w1)
    found = memo.spans.get(key)
    if found is None:
        text = f"{_clip(r.scheduled, w0, w1)}|{_clip_labelled(r.tariff, w0, w1)}"
        found = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
        memo.spans[key] = found
    return found


def _clip(spans: Sequence[Span] | None, w0: int, w1: int) -> str:
    if spans is None:
        return "all"
    # the spans are merged and sorted (KpiRequest's contract); the first that may reach into the window
    i = max(bisect.bisect_right(spans, (w0, w0)) - 1, 0)
    parts = []
    for s, e in spans[i:]:
        if s >= w1:
            break
        if e > w0:
            parts.append(f"{max(s, w0)}-{min(e, w1)}")
    return ",".join(parts)


def _clip_labelled(spans: Sequence[LabelledSpan] | None, w0: int, w1: int) -> str:
    if spans is None:
        return "standard"
    return ",".join(f"{max(s, w0)}-{min(e, w1)}:{label}" for s, e, label in spans if s < w1 and e > w0)


def keep_closed_shifts(registry: RegistryService, kpis: KpiService, tiled: TiledKpiSource, clock: Clock,
                       days: float, settle_s: float, stopping: Callable[[], bool] = lambda: False) -> int:
    """One pass of the keeper: every tenant's closed shifts of the last ``days`` days that ended at
    least ``settle_s`` ago and are not kept yet, a day of shift starts at a time (``stopping`` is
    asked between days). Returns how many were computed."""
    now = clock.now_us()
    ended_by = now - round(settle_s * 1_000_000)
    start = ended_by - round(days * DAY_US)
    kept = 0
    for tenant in registry.list_tenants(PLATFORM):
        ctx = TenantContext(tenant.id, tenant.slug, Role.ENGINEER, "kpi-tiles")
        for day in range(start, ended_by, DAY_US):
            if stopping():
                return kept
            requests = kpis.closed_shift_requests(ctx, day, min(day + DAY_US, ended_by), ended_by)
            if requests:
                kept += tiled.fill(tenant.id, requests)
    return kept


async def keep_periodically(work: Callable[[Callable[[], bool]], int], every_s: float, stop: asyncio.Event) -> None:
    """Run ``work`` (``keep_closed_shifts`` bound to a platform, given a "stopping?" test) in a thread
    every ``every_s`` seconds (the first a minute after the start at most) until ``stop`` is set; a
    pass under way ends after its current day."""
    with contextlib.suppress(TimeoutError):  # not at once: a starting server has other work first
        await asyncio.wait_for(stop.wait(), timeout=min(every_s, 60))
    while not stop.is_set():
        try:
            kept = await asyncio.to_thread(work, stop.is_set)
            if kept:
                log.info("kept the KPI inputs of %d closed shifts", kept)
        except ShopfloorError as exc:
            log.warning("keeping KPI tiles failed: %s", exc.message)
        except Exception:  # a bug must not end the task silently
            log.exception("keeping KPI tiles failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
