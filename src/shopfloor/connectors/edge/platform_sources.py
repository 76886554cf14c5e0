"""The edge agent's sources fetched from the platform: the device's ``opcua``/``modbus`` sections.

edge.yaml names the platform's API and the device (``platform_api: {url, token}``, ``device``);
the agent looks the device up (``GET /api/v1/devices``) and fetches its sections
(``GET /api/v1/devices/{id}/fieldbus``, engineer role). The answer is kept beside the buffer, so
an agent that restarts while the platform is unreachable runs with the sections it last fetched.
Secrets stay names: an OPC UA ``password_env`` is resolved on the edge, from its environment.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
import msgspec

from shopfloor.domain.errors import InvalidInput

_log = logging.getLogger(__name__)


class PlatformApi(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    url: str  # the platform's base URL, e.g. https://shopfloor.example.com
    token: str | None = None  # an engineer token of the tenant
    token_env: str | None = None  # or the environment variable holding it
    ca_file: str | None = None  # the CA of the platform's certificate (default: the system's)
    timeout_s: float = 10.0

    def __repr__(self) -> str:  # never print the token
        return f"PlatformApi(url={self.url!r})"

    def resolve_token(self) -> str | None:
        if self.token_env is None:
            return self.token
        value = os.environ.get(self.token_env)
        if value is None:
            raise InvalidInput(f"platform_api: the environment variable {self.token_env!r} (token_env) is not set")
        return value


class Unreachable(InvalidInput):
    """The platform did not answer (network); a cached copy may stand in."""


def fetch_device_sections(api: PlatformApi, device: str, base: Path | None = None) -> dict[str, Any]:
    """The device's ``{"device", "assets", "opcua", "modbus"}`` as the platform stores them."""
    verify: Any = True
    if api.ca_file is not None:
        verify = str((base or Path(".")) / api.ca_file)
    token = api.resolve_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    root = api.url.rstrip("/") + "/api/v1"
    with httpx.Client(base_url=root, headers=headers, timeout=api.timeout_s, verify=verify) as http:
        devices = _get(http, "/devices", api.url)
        found = [d for d in devices if isinstance(d, dict) and d.get("name") == device]
        if not found:
            raise InvalidInput(f"platform {api.url}: the tenant has no device {device!r}")
        sections: dict[str, Any] = _get(http, f"/devices/{found[0]['id']}/fieldbus", api.url)
    return sections


def _get(http: httpx.Client, path: str, url: str) -> Any:
    try:
        r = http.get(path)
    except httpx.HTTPError as exc:
        raise Unreachable(f"platform {url}: cannot reach it: {exc}") from None
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail", r.text)
        except ValueError:
            detail = r.text
        raise InvalidInput(f"platform {url}: GET {path}: {r.status_code} {detail}")
    return r.json()


def sections_with_cache(api: PlatformApi, device: str, cache: Path, base: Path | None = None) -> dict[str, Any]:
    """Fetch the device's sections and keep them in ``cache``; when the platform is unreachable,
    the cached copy (with a warning), else the error."""
    try:
        sections = fetch_device_sections(api, device, base)
    except Unreachable:
        if not cache.exists():
            raise
        _log.warning("edge: platform %s unreachable; using the sources fetched before (%s)", api.url, cache)
        cached: dict[str, Any] = json.loads(cache.read_text())
        return cached
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(cache.suffix + ".tmp")
        tmp.write_text(json.dumps(sections))
        tmp.replace(cache)
    except OSError as exc:
        _log.warning("edge: cannot keep the fetched sources in %s: %s", cache, exc)
    return sections
