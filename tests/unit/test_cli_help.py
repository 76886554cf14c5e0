"""Every CLI command and option has help text, and --help works for each."""

from __future__ import annotations

from typing import Any

import typer.main
from typer.testing import CliRunner

from shopfloor.cli import app


def _commands(group: Any, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Walk the command tree (typer ships its own click; duck-type it)."""
    out = []
    for name, cmd in getattr(group, "commands", {}).items():
        out.append(((*prefix, name), cmd))
        out.extend(_commands(cmd, (*prefix, name)))
    return out


def test_every_command_and_option_has_help() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert len(commands) > 20
    missing = []
    for path, cmd in commands:
        if not (cmd.help or cmd.short_help):
            missing.append(" ".join(path))
        for param in cmd.params:
            if getattr(param, "param_type_name", "") == "option" and not param.help and param.name != "help":
                missing.append(f"{' '.join(path)} --{param.name}")
    assert missing == [], f"without help text: {missing}"


def test_help_runs_for_each_command() -> None:
    runner = CliRunner()
    root = typer.main.get_command(app)
    for path, _ in _commands(root):
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output


def test_every_setting_is_documented() -> None:
    from pathlib import Path

    from shopfloor.config import Settings, example_toml

    text = example_toml()
    doc = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
        assert f"# {name} =" in text
        assert f"`{name}`" in doc, f"docs/configuration.md does not mention {name}"
