"""Shared test helpers: free ports, and 'skip here, fail in CI' for missing servers."""

from __future__ import annotations

import os
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def need(condition: bool, what: str) -> None:
    """Skip when ``what`` is missing on a laptop; fail in CI, where it must be there."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} is not available here")
