"""Outbound notifications: the HTTP client that delivers signed webhooks."""

from __future__ import annotations

from typing import Protocol


class DeliveryError(Exception):
    """The receiver could not be reached, or answered with something other than 2xx."""


class WebhookSender(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """POST ``body``; return on a 2xx answer, raise ``DeliveryError`` (with the reason) otherwise."""
        ...

    async def aclose(self) -> None: ...
