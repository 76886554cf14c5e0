"""Rule and alarm commands of the ``shopfloor`` CLI (rules list/backtest, alarms list/ack/journal):
registered by ``cli``. They ask a running server over its API; ``--json`` prints what it answered."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shopfloor.client import client_from_settings

console = Console()
Url = Annotated[str | None, typer.Option("--url", help="Server URL [env SHOPFLOOR_URL, default http://127.0.0.1:8000]")]
Token = Annotated[str | None, typer.Option("--token", help="API token [env SHOPFLOOR_TOKEN]")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of tables.")]

rules_app = typer.Typer(help="Alarm rules: list them, backtest one over stored history.", no_args_is_help=True)
alarms_app = typer.Typer(help="Alarms: list, acknowledge, read the journal.", no_args_is_help=True)


api_client = client_from_settings  # the API client of a command (tests replace this)


def register(app: typer.Typer) -> None:
    rules_app.command("list")(list_rules)
    rules_app.command("backtest")(backtest)
    alarms_app.command("list")(list_alarms)
    alarms_app.command("ack")(ack)
    alarms_app.command("journal")(journal)
    app.add_typer(rules_app, name="rules")
    app.add_typer(alarms_app, name="alarms")


def _time(us: int | None) -> str:
    if us is None:
        return ""
    return datetime.fromtimestamp(us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print(body: Any, as_json: bool, table: Table) -> None:
    console.print_json(json.dumps(body)) if as_json else console.print(table)


def list_rules(as_json: JsonOut = False, url: Url = None, token: Token = None) -> None:
    """The tenant's alarm rules."""
    body = api_client(url, token).call("GET", "/rules")
    t = Table("id", "name", "kind", "target", "priority", "enabled")
    for r in body:
        t.add_row(str(r["id"]), escape(r["name"]), r["kind"], escape(str(r.get("asset") or f"type {r.get('asset_type')}")),
                  r.get("priority", "medium"), "yes" if r.get("enabled", True) else "no")
    _print(body, as_json, t)


def backtest(
    rule: Annotated[str, typer.Argument(help="The rule: its id or its name")],
    from_: Annotated[str, typer.Option("--from", help="Window start: RFC 3339 (2026-11-23T06:00:00Z) or epoch ms")],
    to: Annotated[str | None, typer.Option("--to", help="Window end [default: now]")] = None,
    as_json: JsonOut = False, url: Url = None, token: Token = None,
) -> None:
    """Replay stored history through RULE and list the alarms it would have raised (nothing is
    stored or notified), to tune it before enabling it."""
    params = {"from": from_, **({"to": to} if to else {})}
    body = api_client(url, token).call("POST", f"/rules/{rule}/backtest", params=params)
    t = Table("asset", "activated (UTC)", "cleared (UTC)", "value", "message")
    for a in body["alarms"]:
        t.add_row(escape(a["asset"]), _time(a["activated_us"]), _time(a["cleared_us"]),
                  "" if a["value"] is None else f"{a['value']:g}", escape(a["message"]))
    if not as_json:
        console.print(f"rule {escape(body['rule'])}: {len(body['alarms'])} alarm(s) on {body['assets']} asset(s) "
                      f"from {body['points']} point(s) and {body['events']} event(s)", highlight=False)
        for why in body["unresolved"]:
            console.print(f"[yellow]{escape(why)}[/yellow]")
    _print(body, as_json, t)


def list_alarms(
    state: Annotated[list[str] | None, typer.Option("--state", help="Only these states (repeatable), e.g. "
                                                                     "active_unacknowledged")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Also normal, shelved, suppressed and out-of-service alarms")] = False,
    as_json: JsonOut = False, url: Url = None, token: Token = None,
) -> None:
    """Alarms of the tenant, most recently changed first (by default the ones operators should see)."""
    params: dict[str, Any] = {}
    if state:
        params["state"] = state
    elif not all_:
        params["annunciated"] = "true"
    body = api_client(url, token).call("GET", "/alarms", params=params)
    t = Table("rule", "asset", "state", "priority", "since (UTC)", "value", "message")
    for a in body:
        t.add_row(str(a["rule_id"]), str(a["asset_id"]), a["state"], a["priority"], _time(a.get("active_since_us")),
                  "" if a.get("value") is None else f"{a['value']:g}", escape(a.get("message", "")))
    _print(body, as_json, t)


def ack(
    rule_id: Annotated[int, typer.Argument(help="The alarm's rule id")],
    asset_id: Annotated[int, typer.Argument(help="The alarm's asset id")],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why, for the journal")] = "",
    as_json: JsonOut = False, url: Url = None, token: Token = None,
) -> None:
    """Acknowledge an alarm (operator); the journal records the token's name and the comment."""
    body = api_client(url, token).call("POST", f"/alarms/{rule_id}/{asset_id}/acknowledge", json={"comment": comment})
    if as_json:
        console.print_json(json.dumps(body))
    else:
        console.print(f"alarm {rule_id}/{asset_id}: {body['state']}", highlight=False)


def journal(
    rule_id: Annotated[int | None, typer.Option("--rule", help="Only this rule id")] = None,
    asset_id: Annotated[int | None, typer.Option("--asset", help="Only this asset id")] = None,
    limit: Annotated[int, typer.Option("--limit", help="The newest N entries")] = 100,
    as_json: JsonOut = False, url: Url = None, token: Token = None,
) -> None:
    """The alarm journal: every transition and operator action, oldest first."""
    params: dict[str, Any] = {"limit": limit}
    if rule_id is not None:
        params["rule_id"] = rule_id
    if asset_id is not None:
        params["asset_id"] = asset_id
    body = api_client(url, token).call("GET", "/alarms/journal", params=params)
    t = Table("time (UTC)", "rule", "asset", "action", "to", "user", "live", "comment")
    for e in body:
        t.add_row(_time(e["ts_us"]), str(e["rule_id"]), str(e["asset_id"]), e["action"], e["to_state"],
                  escape(e.get("user") or ""), "yes" if e["live"] else "no", escape(e.get("comment", "")))
    _print(body, as_json, t)
