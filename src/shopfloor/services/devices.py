"""What the broker asks about devices: authenticate, allowed prefixes, online/offline."""

from __future__ import annotations

import logging
from collections.abc import Callable

from shopfloor.domain.credentials import verify_secret
from shopfloor.domain.topics import asset_prefix
from shopfloor.services.cache import RegistryCache
from shopfloor.services.stats import IngestStats

log = logging.getLogger(__name__)


class DeviceAccessService:
    """Implements ``ports.ingest.DeviceAccess`` from the registry."""

    def __init__(self, cache: RegistryCache, stats: IngestStats,
                 on_offline: Callable[[str, list[str]], None] | None = None) -> None:
        """``on_offline(username, status_topics)`` is called when a device's last connection ends,
        with the status topic of every machine it publishes for: a gateway's single Last Will
        covers one machine, so the platform marks the others offline itself."""
        self._cache = cache
        self._stats = stats
        self._on_offline = on_offline
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
        if connected or info is None or self._on_offline is None:
            return
        topics = []
        for aid in info.device.asset_ids:
            asset = self._cache.asset(info.device.tenant_id, aid)
            if asset is None:
                continue
            for path in self._cache.machine_paths_under(info.device.tenant_id, asset.path):
                topics.append(asset_prefix(info.tenant_slug, path) + "/status")
        if topics:
            self._on_offline(username, sorted(set(topics)))
