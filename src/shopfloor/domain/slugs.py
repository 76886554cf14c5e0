"""Names that appear in MQTT topics, URLs and broker usernames."""

from __future__ import annotations

import re

from shopfloor.domain.errors import InvalidInput

SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_slug(value: str, what: str) -> str:
    """Return ``value`` if it is a valid slug, else raise ``InvalidInput`` naming ``what``."""
    if not isinstance(value, str) or not SLUG_RE.match(value):
        raise InvalidInput(
            f"{what} {value!r} is not a valid name: use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value
