"""OPC UA commands of the ``shopfloor`` CLI (``shopfloor opcua ...``): registered by ``cli``.

``shopfloor opcua browse opc.tcp://plc:4840`` prints a server's address space as a tree, to find
the node ids a plant file's ``opcua`` section maps (docs/opcua.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from shopfloor.connectors.opcua.browse import OBJECTS, BrowsedNode, browse
from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.opcua_map import OpcUaSpec, opcua_from_obj

console = Console()

opcua_app = typer.Typer(help="OPC UA servers (PLCs): browse the address space to find node ids.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``shopfloor opcua`` to the main CLI."""
    app.add_typer(opcua_app, name="opcua")


def connection_spec(endpoint: str, user: str | None, password: str | None, security: str,
                    cert: str | None, key: str | None, server_cert: str | None) -> OpcUaSpec:
    """An ``opcua`` section with only the connection (a placeholder node, never read)."""
    policy, _, mode = security.partition(":")
    sec: dict[str, Any] = {"policy": policy or "None"}
    if mode:
        sec["mode"] = mode
    for name, value in (("certificate", cert), ("private_key", key), ("server_certificate", server_cert)):
        if value:
            sec[name] = value
    obj: dict[str, Any] = {"endpoint": endpoint, "security": sec, "asset": "browse/browse/browse/browse",
                           "nodes": {"i=2258": {"measurement": "browse"}}}
    if user:
        obj["username"] = user
        obj["password"] = password or ""
    elif password:
        raise InvalidInput("--password needs --user")
    return opcua_from_obj(obj, "opcua browse")


def render(node: BrowsedNode, tree: Tree | None = None) -> Tree:
    """The browsed tree as a rich tree: browse name, node id, and for variables type and value."""
    label = f"[bold]{escape(node.browse_name)}[/bold] [dim]{escape(node.node_id)}[/dim]"
    if node.node_class == "Variable":
        value = escape(repr(node.value))
        if len(value) > 80:
            value = value[:77] + "..."
        label += f" [cyan]{escape(node.data_type)}[/cyan] = {value}"
        if node.status and node.status != "Good":
            label += f" [red]{escape(node.status)}[/red]"
    elif node.node_class != "Object":
        label += f" [magenta]{escape(node.node_class)}[/magenta]"
    if node.truncated:
        label += " [dim]…[/dim]"
    branch = Tree(label) if tree is None else tree.add(label)
    for child in node.children:
        render(child, branch)
    return branch


@opcua_app.command("browse")
def browse_cmd(
    endpoint: Annotated[str, typer.Argument(help="The server's endpoint URL, like opc.tcp://plc:4840 (a path may follow)")],
    depth: Annotated[int, typer.Option("--depth", min=1, max=20, help="How many levels below the start node.")] = 3,
    start: Annotated[str, typer.Option("--node", help="The node to start from [default: the Objects folder, i=85]")] = OBJECTS,
    user: Annotated[str | None, typer.Option("--user", help="User name (none: anonymous).")] = None,
    password: Annotated[str | None, typer.Option("--password", envvar="SHOPFLOOR_OPCUA_PASSWORD",
                                                 help="Password of --user [env SHOPFLOOR_OPCUA_PASSWORD].")] = None,
    security: Annotated[str, typer.Option("--security", help="None, Basic256Sha256:Sign or "
                                                             "Basic256Sha256:SignAndEncrypt.")] = "None",
    cert: Annotated[str | None, typer.Option("--cert", help="Client certificate (PEM/DER) for Basic256Sha256.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Client private key (PEM) for Basic256Sha256.")] = None,
    server_cert: Annotated[str | None, typer.Option("--server-cert", help="The server certificate to trust "
                                                                          "[default: the one it presents].")] = None,
    standard: Annotated[bool, typer.Option("--standard", help="Also show standard nodes (namespace 0, "
                                                              "like the Server object).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
) -> None:
    """Print the server's address space as a tree: browse names, node ids, data types and values."""
    spec = connection_spec(endpoint, user, password, security, cert, key, server_cert)
    root = asyncio.run(browse(spec, start, depth, include_standard=standard))
    if as_json:
        console.print_json(json.dumps(root.to_obj()))
        return
    console.print(render(root))
