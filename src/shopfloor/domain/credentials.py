"""Device secrets, hashed in Mosquitto's password-file format (``$7$``, PBKDF2-SHA512).

Mosquitto 2 writes ``$7$<iterations>$<base64 salt>$<base64 hash>``; storing the same string lets
the server-mode broker check a device's password from a file generated out of the registry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

MOSQUITTO_ITERATIONS = 101
MAX_ITERATIONS = 10_000_000
SALT_BYTES = 12


def new_device_secret() -> str:
    """A random device password (192 bits)."""
    return secrets.token_urlsafe(24)


def hash_secret(secret: str, *, iterations: int = MOSQUITTO_ITERATIONS, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    """True when ``secret`` matches a ``$7$`` hash. Malformed hashes never match."""
    try:
        _, kind, iterations, salt_b64, hash_b64 = stored.split("$")
        if kind != "7":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
        rounds = int(iterations)
    except ValueError:
        return False
    if not 1 <= rounds <= MAX_ITERATIONS:  # malformed, or so large that checking it is a denial of service
        return False
    digest = hashlib.pbkdf2_hmac("sha512", secret.encode(), salt, rounds)
    return hmac.compare_digest(digest, expected)
