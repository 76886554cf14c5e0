"""The analytics model store: model configurations, their trained state and scoring progress.

Implemented by DuckDB and PostgreSQL (a table ``analytics_models``); ``shopfloor.testing.analytics``
holds the in-memory fake and the contract suite every implementation passes. Every call takes the
tenant id first; nothing crosses tenants.
"""

from __future__ import annotations

from typing import Protocol

from shopfloor.domain.analytics.models import AnalyticsModel, ModelSpec, TrainedState


class AnalyticsModelStore(Protocol):
    def put_spec(self, spec: ModelSpec) -> AnalyticsModel:
        """Create or replace a model's configuration. Replacing it drops the trained state and the
        scoring progress (they belong to the old configuration)."""
        ...

    def get(self, tenant_id: int, name: str) -> AnalyticsModel | None: ...

    def list_models(self, tenant_id: int) -> list[AnalyticsModel]:
        """The tenant's models, by name."""
        ...

    def delete(self, tenant_id: int, name: str) -> None:
        """``NotFound`` when there is no such model."""
        ...

    def save_trained(self, tenant_id: int, name: str, trained: TrainedState) -> AnalyticsModel:
        """Store what training produced; resets the scoring progress. ``NotFound`` for no model."""
        ...

    def save_progress(self, tenant_id: int, name: str, life_from_us: dict[int, int],
                      scored_to_us: dict[int, int]) -> None:
        """Merge per-asset scoring progress into the model's (given assets overwrite theirs)."""
        ...

    def list_trained(self) -> list[AnalyticsModel]:
        """Every tenant's trained models (the background scorer's work list)."""
        ...
