"""What the broker asks about devices: authenticate, allowed prefixes, online/offline."""

from __future__ import annotations

import logging

from shopfloor.domain.credentials import verify_secret
from shopfloor.services.cache import RegistryCache
from shopfloor.services.stats import IngestStats

log = logging.getLogger(__name__)


class DeviceAccessService:
    """Implements ``ports.ingest.DeviceAccess`` from the registry."""

    def __init__(self, cache: RegistryCache, stats: IngestStats) -> None:
        self._cache = cache
        self._stats = stats
        self.auth_failures = 0

    def authenticate(self, username: str, password: str) -> bool:
        info = self._cache.device(username)
        ok = (info is not None and info.device.enabled and bool(password)
              and verify_secret(password, info.device.secret_hash))
        if not ok:
            self.auth_failures += 1
            log.info("MQTT login refused for %r", username[:100])
        return ok

    def publish_prefixes(self, username: str) -> tuple[str, ...]:
        info = self._cache.device(username)
        if info is None or not info.device.enabled:
            return ()
        return info.prefixes

    def connection_changed(self, username: str, connected: bool) -> None:
        info = self._cache.device(username)
        self._stats.set_online(username, info.device.tenant_id if info else None, connected)
