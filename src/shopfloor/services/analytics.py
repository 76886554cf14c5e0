"""Analytics models in the platform: configure per asset type, train from stored history, score.

A model reads its input measurements of every machine of its asset type from the historian, aligned
into rows (one per timestamp at which any input has a value; each input holds its last good value,
and rows before every input has been seen are dropped). Training reads a chosen period: for RUL each
machine's rows in the period are one life that ends in a failure at the period's end; for an anomaly
detector they are normal operation. Scoring writes one output value per row through the ingest path
(``BatchSink``), as the model's output measurement (added to the asset type when configured), so the
scores are ordinary series with rollups that rules and the API read like any other.

Scoring *follows* a machine from a start time on: each later ``score_incoming`` (run periodically by
the server) scores the rows that arrived since. RUL recomputes from the start of the life (its
features look back over the machine's history) and writes only the new rows; a detector scores the
new rows only. Rewriting a row is harmless: the store keeps one sample per (series, ts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopfloor.domain.analytics import scorers
from shopfloor.domain.analytics.models import AnalyticsModel, ModelKind, ModelSpec, TrainedState, default_output
from shopfloor.domain.assets import Asset, AssetType, Level, MeasurementDef, ValueType
from shopfloor.domain.errors import InvalidInput, NotFound, ShopfloorError
from shopfloor.domain.records import IngestBatch
from shopfloor.domain.tenancy import Role, TenantContext
from shopfloor.ports.analytics import AnalyticsModelStore
from shopfloor.ports.clock import Clock
from shopfloor.ports.ingest import BatchSink
from shopfloor.ports.store import TimeSeriesStore
from shopfloor.services.registry import RegistryService

log = logging.getLogger(__name__)

PAGE = 10_000
MAX_ROWS = 2_000_000  # per machine and call: a bigger window is refused, not read into memory
WRITE_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class History:
    ts_us: np.ndarray  # int64, one per row
    values: np.ndarray  # float64, rows x inputs


@dataclass(slots=True)
class AssetScore:
    asset_id: int
    path: str
    rows: int = 0
    written: int = 0
    last_ts_us: int | None = None
    last_value: float | None = None


@dataclass(slots=True)
class ScoreReport:
    model: str
    output: str
    assets: list[AssetScore] = field(default_factory=list)

    @property
    def written(self) -> int:
        return sum(a.written for a in self.assets)


def align(columns: list[list[tuple[int, float]]]) -> History:
    """Rows at every timestamp any column has; each column holds its last value; leading rows
    where some column has no value yet are dropped."""
    stamps = sorted({ts for col in columns for ts, _ in col})
    if not stamps:
        return History(np.zeros(0, dtype=np.int64), np.zeros((0, len(columns))))
    index = {ts: i for i, ts in enumerate(stamps)}
    values = np.full((len(stamps), len(columns)), np.nan)
    for j, col in enumerate(columns):
        for ts, v in col:
            values[index[ts], j] = v
    for j in range(len(columns)):  # forward fill
        col_j = values[:, j]
        mask = np.isnan(col_j)
        idx = np.where(~mask, np.arange(len(col_j)), 0)
        np.maximum.accumulate(idx, out=idx)
        filled = col_j[idx]
        filled[np.cumsum(~mask) == 0] = np.nan
        values[:, j] = filled
    keep = ~np.isnan(values).any(axis=1)
    return History(np.asarray(stamps, dtype=np.int64)[keep], values[keep])


class AnalyticsService:
    def __init__(self, registry: RegistryService, store: TimeSeriesStore, models: AnalyticsModelStore,
                 clock: Clock, sink: BatchSink | None = None) -> None:
        self._registry = registry
        self._store = store
        self._models = models
        self._clock = clock
        self.sink = sink  # set once the ingest service exists (it is created inside the event loop)

    # -- configuration ---------------------------------------------------------------------------
    def configure(self, ctx: TenantContext, name: str, *, asset_type: str, inputs: list[str], kind: str,
                  params: dict[str, Any] | None = None, output: str | None = None,
                  description: str = "") -> AnalyticsModel:
        """Create or replace a model; adds its output measurement to the asset type if missing."""
        ctx.require(Role.ENGINEER)
        tid = ctx.require_tenant()
        try:
            model_kind = ModelKind(kind)
        except ValueError:
            raise InvalidInput(f"unknown model kind {kind!r}; known: {', '.join(k.value for k in ModelKind)}") from None
        at = self._registry.asset_type(ctx, asset_type)
        spec = ModelSpec(tid, name, asset_type, tuple(inputs), model_kind, dict(params or {}),
                         output or default_output(model_kind, tuple(inputs)) if inputs else "", description)
        for m in spec.inputs:
            d = at.measurement(m)
            if d is None:
                raise InvalidInput(f"asset type {asset_type!r} has no measurement {m!r}")
            if d.type is not ValueType.NUMERIC:
                raise InvalidInput(f"measurement {m!r} is {d.type.value}; a model needs numeric inputs")
        scorers.validate_params(model_kind, spec.params, len(spec.inputs))
        for other in self._models.list_models(tid):
            if other.spec.name != name and other.spec.asset_type == asset_type and other.spec.output == spec.output:
                raise InvalidInput(f"model {other.spec.name!r} already writes {spec.output!r} on {asset_type!r}")
        self._add_output(ctx, at, spec)
        return self._models.put_spec(spec)

    def _add_output(self, ctx: TenantContext, at: AssetType, spec: ModelSpec) -> None:
        existing = at.measurement(spec.output)
        if existing is not None:
            if existing.type is not ValueType.NUMERIC:
                raise InvalidInput(f"measurement {spec.output!r} of {at.name!r} is not numeric")
            return
        unit = "cycles" if spec.kind is ModelKind.RUL else ""
        what = "remaining useful life" if spec.kind is ModelKind.RUL else "anomaly score"
        self._registry.put_asset_type(ctx, at.name, description=at.description, attributes=at.attributes,
                                      measurements=[*at.measurements, MeasurementDef(
                                          spec.output, unit, ValueType.NUMERIC, f"{what} (model {spec.name})")],
                                      events=at.events)

    def list_models(self, ctx: TenantContext) -> list[AnalyticsModel]:
        return self._models.list_models(ctx.require_tenant())

    def model(self, ctx: TenantContext, name: str) -> AnalyticsModel:
        model = self._models.get(ctx.require_tenant(), name)
        if model is None:
            raise NotFound(f"no analytics model {name!r}")
        return model

    def delete(self, ctx: TenantContext, name: str) -> None:
        ctx.require(Role.ENGINEER)
        self._models.delete(ctx.require_tenant(), name)

    # -- reading history -------------------------------------------------------------------------
    def _machines(self, ctx: TenantContext, spec: ModelSpec, asset_ids: list[int] | None) -> list[Asset]:
        if asset_ids:
            machines = [self._registry.asset(ctx, a) for a in asset_ids]
            for m in machines:
                if m.type_name != spec.asset_type:
                    raise InvalidInput(f"asset {m.id} ({m.path_str}) is not of type {spec.asset_type!r}")
            return machines
        return [a for a in self._registry.list_assets(ctx, Level.MACHINE) if a.type_name == spec.asset_type]

    def _series_ids(self, ctx: TenantContext, asset_id: int, measurements: tuple[str, ...]) -> list[int]:
        by_name = {s.measurement: s.id for s in self._registry.series_of(ctx, asset_id)}
        missing = [m for m in measurements if m not in by_name]
        if missing:
            raise NotFound(f"asset {asset_id} has no series {', '.join(missing)}")
        return [by_name[m] for m in measurements]

    def history(self, ctx: TenantContext, spec: ModelSpec, asset_id: int, start_us: int, end_us: int) -> History:
        """The model's input rows of one machine in [start, end)."""
        columns: list[list[tuple[int, float]]] = []
        for sid in self._series_ids(ctx, asset_id, spec.inputs):
            col: list[tuple[int, float]] = []
            lo = start_us
            while lo < end_us:
                page = self._store.raw(sid, lo, end_us, PAGE)
                col.extend((s.ts_us, float(s.value)) for s in page
                           if s.value is not None and s.quality != 2 and math.isfinite(s.value))
                if len(col) > MAX_ROWS:
                    raise InvalidInput(f"more than {MAX_ROWS} samples of one series in the window; choose a shorter one")
                if len(page) < PAGE:
                    break
                lo = page[-1].ts_us + 1
            columns.append(col)
        return align(columns)

    # -- training --------------------------------------------------------------------------------
    def train(self, ctx: TenantContext, name: str, start_us: int, end_us: int,
              asset_ids: list[int] | None = None) -> AnalyticsModel:
        """Train from the stored history of [start, end) of the type's machines (or the given ones).
        CPU-bound: the API runs it in a worker thread."""
        ctx.require(Role.ENGINEER)
        if end_us <= start_us:
            raise InvalidInput("'to' must be after 'from'")
        model = self.model(ctx, name)
        spec = model.spec
        histories: list[np.ndarray] = []
        stamps: list[list[int]] = []
        used: list[int] = []
        rows: dict[str, int] = {}
        for machine in self._machines(ctx, spec, asset_ids):
            h = self.history(ctx, spec, machine.id, start_us, end_us)
            rows[machine.path_str] = len(h.ts_us)
            if len(h.ts_us) >= 2:
                histories.append(h.values)
                stamps.append(h.ts_us.tolist())
                used.append(machine.id)
        if not histories:
            raise InvalidInput(f"no stored history of {', '.join(spec.inputs)} on machines of type "
                               f"{spec.asset_type!r} in the window")
        scorer = scorers.train(spec.kind, spec.params, histories, spec.inputs, stamps)
        summary = {**scorer.summary(), "rows_by_asset": rows}
        state = TrainedState(scorer.to_bytes(), self._clock.now_us(), start_us, end_us, tuple(used),
                             sum(len(h) for h in histories), summary)
        return self._models.save_trained(spec.tenant_id, name, state)

    # -- scoring ---------------------------------------------------------------------------------
    async def score(self, ctx: TenantContext, name: str, start_us: int, end_us: int | None = None,
                    asset_ids: list[int] | None = None, follow: bool = True) -> ScoreReport:
        """Score the rows of [start, end) (end: now) and store the outputs as series; with
        ``follow``, keep scoring these machines' new rows from ``start`` on (their life start)."""
        ctx.require(Role.ENGINEER)
        end = end_us if end_us is not None else self._clock.now_us() + 1
        if end <= start_us:
            raise InvalidInput("'to' must be after 'from'")
        model = self.model(ctx, name)
        if model.trained is None:
            raise InvalidInput(f"model {name!r} is not trained yet: train it first")
        machines = await asyncio.to_thread(self._machines, ctx, model.spec, asset_ids)
        report = ScoreReport(name, model.spec.output)
        for machine in machines:
            report.assets.append(await self._score_asset(ctx, model, machine, start_us, end, None))
        if follow:
            await asyncio.to_thread(self._models.save_progress, model.spec.tenant_id, name,
                                    {m.id: start_us for m in machines},
                                    {a.asset_id: a.last_ts_us for a in report.assets if a.last_ts_us is not None})
        return report

    async def _score_asset(self, ctx: TenantContext, model: AnalyticsModel, machine: Asset, start_us: int,
                           end_us: int, after_us: int | None) -> AssetScore:
        """Score [start, end) of one machine; write the rows after ``after_us`` (all when None)."""
        if model.trained is None:
            raise InvalidInput(f"model {model.spec.name!r} is not trained yet: train it first")
        spec = model.spec
        out = AssetScore(machine.id, machine.path_str)
        h = await asyncio.to_thread(self.history, ctx, spec, machine.id, start_us, end_us)
        out.rows = len(h.ts_us)
        if out.rows == 0:
            return out
        scorer = scorers.load(spec.kind, model.trained.blob)
        values = await asyncio.to_thread(scorer.score_history, h.values, h.ts_us.tolist())
        (sid,) = await asyncio.to_thread(self._output_series, ctx, spec, machine.id)
        keep = np.ones(out.rows, dtype=bool) if after_us is None else h.ts_us > after_us
        ts, vals = h.ts_us[keep].tolist(), values[keep].tolist()
        out.last_ts_us, out.last_value = int(h.ts_us[-1]), round(float(values[-1]), 3)
        if self.sink is None:
            raise ShopfloorError("scoring needs the ingest path, which this process does not run")
        for i in range(0, len(ts), WRITE_CHUNK):
            batch = IngestBatch()
            for t, v in zip(ts[i:i + WRITE_CHUNK], vals[i:i + WRITE_CHUNK], strict=True):
                batch.samples.add(sid, int(t), round(float(v), 3))
            await self.sink.submit(batch)
        out.written = len(ts)
        return out

    def _output_series(self, ctx: TenantContext, spec: ModelSpec, asset_id: int) -> list[int]:
        try:
            return self._series_ids(ctx, asset_id, (spec.output,))
        except NotFound:  # a machine typed before the output was added: give it the series now
            unit = "cycles" if spec.kind is ModelKind.RUL else ""
            return [self._registry.repo.ensure_series(spec.tenant_id, asset_id, spec.output, unit,
                                                      ValueType.NUMERIC).id]

    async def score_incoming(self) -> int:
        """Score what arrived since the last run, for every followed machine of every trained
        model; return the number of values written. Errors of one model are logged, not raised."""
        written = 0
        now = self._clock.now_us() + 1
        for model in await asyncio.to_thread(self._models.list_trained):
            if not model.life_from_us:
                continue
            ctx = TenantContext(model.spec.tenant_id, None, Role.ENGINEER, f"analytics:{model.spec.name}")
            scored: dict[int, int] = {}
            try:
                for asset_id, life_from in model.life_from_us.items():
                    machine = await asyncio.to_thread(self._registry.asset, ctx, asset_id)
                    after = model.scored_to_us.get(asset_id)
                    start = life_from if model.spec.kind is ModelKind.RUL or after is None else after + 1
                    res = await self._score_asset(ctx, model, machine, start, now, after)
                    written += res.written
                    if res.last_ts_us is not None:
                        scored[asset_id] = res.last_ts_us
            except ShopfloorError as exc:
                log.warning("scoring model %s of tenant %d failed: %s", model.spec.name, model.spec.tenant_id,
                            exc.message)
            if scored:
                await asyncio.to_thread(self._models.save_progress, model.spec.tenant_id, model.spec.name, {}, scored)
        return written


async def score_periodically(service: AnalyticsService, every_s: float, stop: asyncio.Event) -> None:
    """Run ``score_incoming`` every ``every_s`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await service.score_incoming()
        except ShopfloorError as exc:
            log.warning("analytics scoring failed: %s", exc.message)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=every_s)
