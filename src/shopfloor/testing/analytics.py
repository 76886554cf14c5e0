"""The analytics model store: an in-memory fake and the contract every implementation passes.

Subclass ``AnalyticsStoreContract`` in a test module (its name starting with ``Test``) and give it
a ``store`` fixture returning a new, empty store.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest

from shopfloor.domain.analytics.models import AnalyticsModel, ModelKind, ModelSpec, TrainedState
from shopfloor.domain.errors import NotFound
from shopfloor.ports.analytics import AnalyticsModelStore


class InMemoryAnalyticsStore:
    def __init__(self) -> None:
        self._models: dict[tuple[int, str], AnalyticsModel] = {}

    def _require(self, tenant_id: int, name: str) -> AnalyticsModel:
        model = self._models.get((tenant_id, name))
        if model is None:
            raise NotFound(f"no analytics model {name!r}")
        return model

    def put_spec(self, spec: ModelSpec) -> AnalyticsModel:
        self._models[(spec.tenant_id, spec.name)] = AnalyticsModel(spec)
        return self._models[(spec.tenant_id, spec.name)]

    def get(self, tenant_id: int, name: str) -> AnalyticsModel | None:
        return self._models.get((tenant_id, name))

    def list_models(self, tenant_id: int) -> list[AnalyticsModel]:
        return [m for (t, _), m in sorted(self._models.items()) if t == tenant_id]

    def list_trained(self) -> list[AnalyticsModel]:
        return [m for _, m in sorted(self._models.items()) if m.trained is not None]

    def delete(self, tenant_id: int, name: str) -> None:
        self._require(tenant_id, name)
        del self._models[(tenant_id, name)]

    def save_trained(self, tenant_id: int, name: str, trained: TrainedState) -> AnalyticsModel:
        model = dataclasses.replace(self._require(tenant_id, name), trained=trained, life_from_us={}, scored_to_us={})
        self._models[(tenant_id, name)] = model
        return model

    def save_progress(self, tenant_id: int, name: str, life_from_us: dict[int, int],
                      scored_to_us: dict[int, int]) -> None:
        model = self._require(tenant_id, name)
        self._models[(tenant_id, name)] = dataclasses.replace(
            model, life_from_us={**model.life_from_us, **life_from_us},
            scored_to_us={**model.scored_to_us, **scored_to_us})


def spec(tenant_id: int = 1, name: str = "press-rul", **kw: object) -> ModelSpec:
    values: dict[str, object] = {"asset_type": "press", "inputs": ("temperature", "vibration"),
                                 "kind": ModelKind.RUL, "params": {"window": 20, "cap": 100.0},
                                 "output": "rul", "description": "wear"}
    values.update(kw)
    return ModelSpec(tenant_id, name, **values)  # type: ignore[arg-type]


def trained(blob: bytes = b"\x00\x01model\xff") -> TrainedState:
    return TrainedState(blob, 1_700_000_000_000_000, 1_600_000_000_000_000, 1_650_000_000_000_000, (3, 4), 1234,
                        {"threshold": 2.5, "config": {"window": 20}})


class AnalyticsStoreContract:
    def test_spec_round_trip_and_listing(self, store: AnalyticsModelStore) -> None:
        s = spec()
        assert store.put_spec(s) == AnalyticsModel(s)
        assert store.get(1, "press-rul") == AnalyticsModel(s)
        assert store.get(1, "missing") is None
        assert store.get(2, "press-rul") is None  # another tenant sees nothing
        z = spec(name="oil-anomaly", kind=ModelKind.ZSCORE, inputs=("temperature",), params={"quantile": 0.99},
                 output="temperature_anomaly")
        store.put_spec(z)
        store.put_spec(spec(tenant_id=2))
        assert [m.spec.name for m in store.list_models(1)] == ["oil-anomaly", "press-rul"]
        assert [m.spec for m in store.list_models(2)] == [spec(tenant_id=2)]

    def test_trained_state_and_progress(self, store: AnalyticsModelStore) -> None:
        store.put_spec(spec())
        store.put_spec(spec(name="untrained"))
        t = trained()
        model = store.save_trained(1, "press-rul", t)
        assert model.trained == t and model.trained.blob == b"\x00\x01model\xff"
        store.save_progress(1, "press-rul", {3: 100}, {3: 500})
        store.save_progress(1, "press-rul", {4: 200}, {3: 600, 4: 700})
        got = store.get(1, "press-rul")
        assert got is not None
        assert got.life_from_us == {3: 100, 4: 200}
        assert got.scored_to_us == {3: 600, 4: 700}
        assert [m.spec.name for m in store.list_trained()] == ["press-rul"]
        # training again restarts the scoring progress
        again = store.save_trained(1, "press-rul", trained(b"v2"))
        assert again.trained is not None and again.trained.blob == b"v2"
        assert again.life_from_us == {} and again.scored_to_us == {}

    def test_reconfiguring_drops_the_trained_state(self, store: AnalyticsModelStore) -> None:
        store.put_spec(spec())
        store.save_trained(1, "press-rul", trained())
        changed = spec(params={"window": 40})
        assert store.put_spec(changed) == AnalyticsModel(changed)
        assert store.list_trained() == []

    def test_missing_models(self, store: AnalyticsModelStore) -> None:
        with pytest.raises(NotFound):
            store.delete(1, "nope")
        with pytest.raises(NotFound):
            store.save_trained(1, "nope", trained())
        with pytest.raises(NotFound):
            store.save_progress(1, "nope", {}, {1: 1})
        store.put_spec(spec())
        store.delete(1, "press-rul")
        assert store.get(1, "press-rul") is None

    def test_concurrent_progress_of_different_assets_is_kept(self, store: AnalyticsModelStore) -> None:
        store.put_spec(spec())
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda a: store.save_progress(1, "press-rul", {a: a}, {a: a * 10}), range(1, 21)))
        got = store.get(1, "press-rul")
        assert got is not None and got.scored_to_us == {a: a * 10 for a in range(1, 21)}
