"""A small synchronous client of the shopfloor HTTP API (used by the CLI and the simulator command)."""

from __future__ import annotations

from typing import Any

import httpx

from shopfloor.domain.errors import ShopfloorError


class ApiClient:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/") + "/api/v1", headers=headers, timeout=60)
        self.url = url

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ShopfloorError(f"cannot reach {self.url}: {exc} (is 'shopfloor serve' running?)") from None
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ShopfloorError(f"{r.status_code}: {detail}")
        if r.status_code == 204 or not r.content:
            return None
        if "json" in r.headers.get("content-type", ""):
            return r.json()
        return r.text


def client_from_settings(url: str | None, token: str | None) -> ApiClient:
    """The API client of a CLI command: ``--url``/``--token``, else the settings (SHOPFLOOR_URL,
    SHOPFLOOR_TOKEN, the config file)."""
    from shopfloor.config import load_settings

    s = load_settings()
    secret = token or (s.token.get_secret_value() if s.token else None)
    if not secret:
        raise ShopfloorError("no API token: pass --token or set SHOPFLOOR_TOKEN")
    return ApiClient(url or s.url, secret)
