"""The error tree. Every error the platform raises on purpose is a ``ShopfloorError``.

The API maps each class to an HTTP status and a problem+json body; connectors map them to
dead-letter reasons. Messages are written for the person who has to act on them.
"""

from __future__ import annotations


class ShopfloorError(Exception):
    """Root of every error shopfloor raises on purpose."""

    status = 500
    title = "Internal error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ShopfloorError):
    """The caller sent something malformed or out of range."""

    status = 422
    title = "Invalid input"


class NotFound(ShopfloorError):
    status = 404
    title = "Not found"


class Conflict(ShopfloorError):
    status = 409
    title = "Conflict"


class Unauthenticated(ShopfloorError):
    status = 401
    title = "Not authenticated"


class Forbidden(ShopfloorError):
    status = 403
    title = "Forbidden"


class PayloadTooLarge(ShopfloorError):
    status = 413
    title = "Payload too large"


class StoreUnavailable(ShopfloorError):
    """The store could not commit; the caller must not acknowledge and should retry."""

    status = 503
    title = "Store unavailable"
