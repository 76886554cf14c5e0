"""Operations commands of the ``shopfloor`` CLI (backup, restore, export): registered by ``cli``."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the operations commands to the main CLI."""
