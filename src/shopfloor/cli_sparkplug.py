"""Sparkplug commands of the ``shopfloor`` CLI (``shopfloor sparkplug ...``): registered by ``cli``.

They talk to a running server's API, like the other client commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shopfloor.client import client_from_settings
from shopfloor.domain.errors import InvalidInput

console = Console()

Url = Annotated[str | None, typer.Option("--url", help="Server URL [env SHOPFLOOR_URL, default http://127.0.0.1:8000]")]
Token = Annotated[str | None, typer.Option("--token", help="API token [env SHOPFLOOR_TOKEN]")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]

sparkplug_app = typer.Typer(help="Sparkplug B edge nodes: list, approve from quarantine, remove, send commands.",
                            no_args_is_help=True)


api_client = client_from_settings  # the API client of a command (tests replace this)


def register(app: typer.Typer) -> None:
    """Add ``shopfloor sparkplug`` to the main CLI."""
    app.add_typer(sparkplug_app, name="sparkplug")


@sparkplug_app.command("nodes")
def nodes(quarantined: Annotated[bool, typer.Option("--quarantined", help="Only those waiting for approval.")] = False,
          url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """List the tenant's edge nodes: device, group, edge node id, status, machines, what its births declared."""
    body = api_client(url, token).call("GET", "/sparkplug/nodes",
                                       params={"status": "quarantined"} if quarantined else None)
    if as_json:
        console.print_json(json.dumps(body))
        return
    table = Table(title=f"Sparkplug edge nodes (the tenant's group: {escape(body['group'])})")
    for column in ("device_id", "group", "edge_node", "status", "machines", "seen"):
        table.add_column(column)
    for n in body["nodes"]:
        machines = ", ".join(f"{d} -> {p}" for d, p in n["mapping"].get("devices", {}).items())
        if n["mapping"].get("node"):
            machines = f"(node) -> {n['mapping']['node']}" + (f", {machines}" if machines else "")
        seen = "; ".join(f"{k or '(node)'}: {len(v)} metric(s)" for k, v in n["seen"].items())
        table.add_row(str(n["device_id"]), escape(n["group"]), escape(n["edge_node"]), n["status"],
                      escape(machines), escape(seen))
    console.print(table)


def _mapping(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        obj = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    if isinstance(obj, dict) and "sparkplug" in obj:  # a device entry of a plant file
        obj = obj["sparkplug"]
    if not isinstance(obj, dict):
        raise InvalidInput(f"{path}: expected a sparkplug section (a mapping)")
    return obj


MappingOpt = Annotated[Path | None, typer.Option(
    "--mapping", help="A YAML/JSON file with the device's sparkplug section (node, devices, metrics).")]


@sparkplug_app.command("approve")
def approve(device_id: int, mapping: MappingOpt = None, url: Url = None, token: Token = None) -> None:
    """Approve a quarantined edge node (engineer); give its mapping to machines and measurements."""
    body = api_client(url, token).call("POST", f"/devices/{device_id}/sparkplug/approve", json=_mapping(mapping))
    console.print(f"edge node {escape(body['group'])}/{escape(body['edge_node'])} approved; the host asks it "
                  "for a rebirth at its next message")


@sparkplug_app.command("set")
def set_mapping(device_id: int, mapping: Annotated[Path, typer.Argument(help="YAML/JSON file with the sparkplug section")],
                url: Url = None, token: Token = None) -> None:
    """Make a device an approved edge node with this mapping (engineer)."""
    body = api_client(url, token).call("PUT", f"/devices/{device_id}/sparkplug", json=_mapping(mapping))
    console.print(f"device {device_id} is edge node {escape(body['group'])}/{escape(body['edge_node'])}")


@sparkplug_app.command("remove")
def remove(device_id: int, url: Url = None, token: Token = None) -> None:
    """The device is no longer an edge node (rejects a quarantined one; engineer)."""
    api_client(url, token).call("DELETE", f"/devices/{device_id}/sparkplug")
    console.print(f"device {device_id} is no longer a Sparkplug edge node")


def parse_write(text: str) -> dict[str, Any]:
    """``name=value`` or ``name=value:Type``; the value is read as JSON when it can be (1.5, true, "x")."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise InvalidInput(f"--metric {text!r}: write name=value or name=value:Type")
    datatype = None
    raw, colon, maybe_type = rest.rpartition(":")
    if colon and maybe_type and maybe_type.replace("_", "").isalnum() and not maybe_type.isdigit():
        rest, datatype = raw, maybe_type
    try:
        value = json.loads(rest)
    except ValueError:
        value = rest
    if not isinstance(value, bool | int | float | str):
        raise InvalidInput(f"--metric {text!r}: the value must be a number, true/false or a string")
    return {"name": name, "value": value, **({"datatype": datatype} if datatype else {})}


@sparkplug_app.command("command")
def command(device_id: int,
            metric: Annotated[list[str], typer.Option("--metric", help="name=value[:Type], repeat for several")],
            device: Annotated[str | None, typer.Option("--device", help="A Sparkplug device of the node (DCMD)")] = None,
            url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """Write metrics of an edge node (NCMD) or of one of its devices (DCMD); engineers only, logged."""
    body = {"device": device, "metrics": [parse_write(m) for m in metric]}
    sent = api_client(url, token).call("POST", f"/devices/{device_id}/sparkplug/command", json=body)
    if as_json:
        console.print_json(json.dumps(sent))
        return
    console.print(f"sent {len(sent['metrics'])} metric(s) on {escape(sent['topic'])} (logged as a command event)")
