"""POST signed alarm notifications with httpx; every failure becomes a ``DeliveryError`` with a
reason a person can read in the dead-letter list (the HTTP status and the start of the answer, or
the network error)."""

from __future__ import annotations

import httpx

from shopfloor.ports.notify import DeliveryError


class HttpxWebhookSender:
    def __init__(self, timeout_s: float = 10.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, transport=transport,
                                         headers={"User-Agent": "shopfloor-webhook/1"})

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        try:
            resp = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__) from None
        if not 200 <= resp.status_code < 300:
            raise DeliveryError(f"HTTP {resp.status_code}: {resp.text[:200]}")

    async def aclose(self) -> None:
        await self._client.aclose()
