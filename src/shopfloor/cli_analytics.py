"""Analytics commands of the ``shopfloor`` CLI (``shopfloor analytics ...``): registered by ``cli``.

They talk to a running server's API, like the other client commands; ``--json`` prints what the
API answered.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shopfloor.client import client_from_settings
from shopfloor.domain.errors import InvalidInput

console = Console()

Url = Annotated[str | None, typer.Option("--url", help="Server URL [env SHOPFLOOR_URL, default http://127.0.0.1:8000]")]
Token = Annotated[str | None, typer.Option("--token", help="API token [env SHOPFLOOR_TOKEN]")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
Name = Annotated[str, typer.Argument(help="The model's name.")]
Assets = Annotated[list[int] | None, typer.Option("--asset", help="A machine id (repeat for several) [default: every machine of the type].")]
TRAIN_TIMEOUT_S = 900

analytics_app = typer.Typer(help="Analytics models: configure per asset type, train from stored history, score.",
                            no_args_is_help=True)


api_client = client_from_settings  # the API client of a command (tests replace this)


def register(app: typer.Typer) -> None:
    """Add ``shopfloor analytics`` to the main CLI."""
    app.add_typer(analytics_app, name="analytics")


def _print_model(m: dict[str, Any]) -> None:
    t = m["trained"]
    trained = "not trained" if t is None else f"trained {t['at']} on {t['rows']} rows ({t['from']} .. {t['to']})"
    console.print(f"[bold]{escape(m['name'])}[/bold] {m['kind']} on {escape(m['asset_type'])}: "
                  f"{', '.join(m['inputs'])} -> {m['output']}; {trained}", highlight=False)


@analytics_app.command("list")
def list_models(url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """List the tenant's models: kind, asset type, inputs, output, trained state, machines followed."""
    body = api_client(url, token).call("GET", "/analytics/models")
    if as_json:
        console.print_json(json.dumps(body))
        return
    table = Table(title="Analytics models")
    for column in ("name", "kind", "asset type", "inputs", "output", "trained", "following"):
        table.add_column(column)
    for m in body:
        t = m["trained"]
        table.add_row(escape(m["name"]), m["kind"], escape(m["asset_type"]), ", ".join(m["inputs"]), m["output"],
                      "-" if t is None else f"{t['at']} ({t['rows']} rows)", str(len(m["following"])))
    console.print(table)


@analytics_app.command("configure")
def configure(
    name: Name,
    asset_type: Annotated[str, typer.Option("--asset-type", help="The asset type whose machines the model serves.")],
    inputs: Annotated[list[str], typer.Option("--input", help="An input measurement (repeat, in column order).")],
    kind: Annotated[str, typer.Option("--kind", help="rul (remaining useful life) or zscore (anomaly score).")],
    params: Annotated[str, typer.Option("--params", help='Settings of the kind as JSON, e.g. \'{"cap": 125}\'.')] = "{}",
    output: Annotated[str | None, typer.Option("--output", help="Output measurement [default: rul or <input>_anomaly].")] = None,
    description: Annotated[str, typer.Option("--description", help="What the model is for.")] = "",
    url: Url = None, token: Token = None, as_json: JsonOut = False,
) -> None:
    """Create or replace a model (engineer); its output measurement is added to the asset type."""
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--params is not JSON: {exc}") from None
    body = api_client(url, token).call("PUT", f"/analytics/models/{name}", json={
        "asset_type": asset_type, "inputs": inputs, "kind": kind, "params": parsed, "output": output,
        "description": description})
    if as_json:
        console.print_json(json.dumps(body))
        return
    _print_model(body)


@analytics_app.command("train")
def train(
    name: Name,
    from_: Annotated[str, typer.Option("--from", help="Start of the training period: RFC 3339 or epoch ms.")],
    to: Annotated[str, typer.Option("--to", help="End of the training period (for RUL: the failure).")],
    assets: Assets = None, url: Url = None, token: Token = None, as_json: JsonOut = False,
) -> None:
    """Train a model from the stored history of a period (engineer)."""
    body = api_client(url, token).call("POST", f"/analytics/models/{name}/train", timeout=TRAIN_TIMEOUT_S,
                                       json={"from": from_, "to": to, "assets": assets or None})
    if as_json:
        console.print_json(json.dumps(body))
        return
    _print_model(body)


@analytics_app.command("score")
def score(
    name: Name,
    from_: Annotated[str, typer.Option("--from", help="Start (for RUL: when the machines' current life began).")],
    to: Annotated[str | None, typer.Option("--to", help="End [default: now].")] = None,
    assets: Assets = None,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep scoring these machines' new data.")] = True,
    url: Url = None, token: Token = None, as_json: JsonOut = False,
) -> None:
    """Score stored history and write the outputs as the model's output series (engineer)."""
    body = api_client(url, token).call("POST", f"/analytics/models/{name}/score", timeout=TRAIN_TIMEOUT_S,
                                       json={"from": from_, "to": to, "assets": assets or None, "follow": follow})
    if as_json:
        console.print_json(json.dumps(body))
        return
    table = Table(title=f"{escape(body['model'])} -> {body['output']}: {body['written']} value(s) written")
    for column in ("asset", "rows", "written", "last ts", "last value"):
        table.add_column(column)
    for a in body["assets"]:
        table.add_row(escape(a["path"]), str(a["rows"]), str(a["written"]), a["last_ts"] or "-",
                      "-" if a["last_value"] is None else f"{a['last_value']:g}")
    console.print(table)
