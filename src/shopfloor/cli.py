"""The ``shopfloor`` command.

``demo``, ``serve`` and ``admin`` run in-process on the data folder; everything else talks to a
running server's API (``--url``, ``--token`` or SHOPFLOOR_URL / SHOPFLOOR_TOKEN), since DuckDB
lets only one process open the file.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shopfloor import cli_alarms, cli_analytics, cli_edge, cli_kpi, cli_opcua, cli_ops, cli_sparkplug
from shopfloor.client import ApiClient
from shopfloor.config import Settings, load_settings
from shopfloor.domain.errors import ShopfloorError

console = Console()
err = Console(stderr=True)

app = typer.Typer(help="shopfloor: an open industrial-Internet platform.", no_args_is_help=True,
                  pretty_exceptions_enable=False, context_settings={"help_option_names": ["-h", "--help"]})
admin_app = typer.Typer(help="Platform administration on the local data folder (server stopped).",
                        no_args_is_help=True)
tenants_app = typer.Typer(help="Tenants (platform admin).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens of your tenant.", no_args_is_help=True)
assets_app = typer.Typer(help="The asset tree.", no_args_is_help=True)
devices_app = typer.Typer(help="Devices and their MQTT credentials.", no_args_is_help=True)
plant_app = typer.Typer(help="Whole-plant files: apply and export.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
app.add_typer(tenants_app, name="tenants")
app.add_typer(tokens_app, name="tokens")
app.add_typer(assets_app, name="assets")
app.add_typer(devices_app, name="devices")
app.add_typer(plant_app, name="plant")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Folder of the DuckDB file [default: .shopfloor]")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="A shopfloor.toml settings file.")]
HttpPort = Annotated[int | None, typer.Option("--http-port", help="HTTP port [default: 8000]")]
MqttPort = Annotated[int | None, typer.Option("--mqtt-port", help="Embedded MQTT broker port [default: 11883]")]
Url = Annotated[str | None, typer.Option("--url", help="Server URL [env SHOPFLOOR_URL, default http://127.0.0.1:8000]")]
Token = Annotated[str | None, typer.Option("--token", help="API token [env SHOPFLOOR_TOKEN]")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def main() -> None:
    try:
        app()
    except ShopfloorError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        sys.exit(1)


def _settings(config: Path | None = None, **overrides: Any) -> Settings:
    return load_settings(config, **overrides)


# -- server side -------------------------------------------------------------------------------
@admin_app.command("init")
def admin_init(data_dir: DataDir = None, config: ConfigOpt = None) -> None:
    """Create the platform and print the platform-admin token (once)."""
    from shopfloor.bootstrap import open_platform

    with open_platform(_settings(config, data_dir=data_dir)) as p:
        issued = p.registry.init_platform()
    console.print("Platform initialised. Platform-admin token (shown once, keep it safe):")
    console.print(issued.secret, highlight=False, soft_wrap=True)


@admin_app.command("token")
def admin_token(name: Annotated[str, typer.Option(help="A name for the token.")] = "platform-admin",
                data_dir: DataDir = None, config: ConfigOpt = None) -> None:
    """Issue another platform-admin token (for a lost one; revoke the old with the API)."""
    from shopfloor.bootstrap import open_platform

    with open_platform(_settings(config, data_dir=data_dir)) as p:
        issued = p.registry.issue_platform_token(name)
    console.print(issued.secret, highlight=False, soft_wrap=True)


def _run_until_signal(coro_factory: Any) -> None:
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await coro_factory(stop)

    asyncio.run(runner())


@app.command()
def serve(data_dir: DataDir = None, http_port: HttpPort = None, mqtt_port: MqttPort = None,
          http_host: Annotated[str | None, typer.Option(help="HTTP address [default: 127.0.0.1]")] = None,
          mqtt_host: Annotated[str | None, typer.Option(help="MQTT address [default: 127.0.0.1]")] = None,
          config: ConfigOpt = None) -> None:
    """Run the platform: embedded broker, DuckDB historian, HTTP API. Ctrl-C stops it."""
    from shopfloor.bootstrap import open_platform
    from shopfloor.bootstrap import serve as run

    s = _settings(config, data_dir=data_dir, http_port=http_port, mqtt_port=mqtt_port, http_host=http_host,
                  mqtt_host=mqtt_host)

    def started(_: Any) -> None:
        console.print(f"shopfloor on http://{s.http_host}:{s.http_port}  ·  MQTT ({s.broker}) "
                      f"{s.mqtt_host}:{s.mqtt_port}  ·  store {s.store}")

    with open_platform(s) as p:
        if not p.registry.is_initialised():
            console.print("[yellow]The platform has no admin yet: run 'shopfloor admin init' first "
                          "(with the server stopped).[/yellow]")
        if s.broker == "mosquitto":
            from shopfloor.servermode import mosquitto_running

            _run_until_signal(lambda stop: run(p, stop, started, broker=mosquitto_running))
        else:
            _run_until_signal(lambda stop: run(p, stop, started))


@app.command()
def ingest(workers: Annotated[int | None, typer.Option(help="Worker processes [default: ingest_workers]")] = None,
           retire: Annotated[int | None, typer.Option(help="Retire worker K for good (after scaling down) and exit")]
           = None,
           config: ConfigOpt = None) -> None:
    """Server mode: ingest workers on a shared MQTT subscription, committing to PostgreSQL before acking."""
    from shopfloor.servermode import retire as retire_worker
    from shopfloor.servermode import run_ingest

    s = _settings(config)
    if retire is not None:
        retire_worker(s, retire)
        console.print(f"worker ingest-{retire} retired")
        return
    count = workers or s.ingest_workers
    console.print(f"{count} JSON and {count} Sparkplug worker(s) on {s.mqtt_host}:{s.mqtt_port} → PostgreSQL schema "
                  f"{s.database_schema}; Ctrl-C stops")
    raise typer.Exit(run_ingest(s, count))


@app.command()
def demo(data_dir: DataDir = None, http_port: HttpPort = None, mqtt_port: MqttPort = None,
         plant: Annotated[Path | None, typer.Option(help="Plant YAML [default: the air-conditioner factory]")] = None,
         live: Annotated[bool, typer.Option(help="Show the live status line.")] = True,
         config: ConfigOpt = None) -> None:
    """Broker + DuckDB + API + simulated factory in one process; prints the URL and a demo token."""
    from shopfloor.demo import run_demo

    s = _settings(config, data_dir=data_dir, http_port=http_port, mqtt_port=mqtt_port)
    _run_until_signal(lambda stop: run_demo(s, stop, plant_file=plant, live=live, console=console))


@app.command()
def simulate(
    plant: Annotated[Path | None, typer.Option(help="Plant YAML [default: the air-conditioner factory]")] = None,
    machines: Annotated[int | None, typer.Option(help="Instead of a plant file: this many machines")] = None,
    gateways: Annotated[int, typer.Option(help="...published by this many gateway connections")] = 100,
    tenant: Annotated[str | None, typer.Option(help="Tenant slug [default: the token's tenant]")] = None,
    mqtt_host: Annotated[str, typer.Option(help="Broker address")] = "127.0.0.1",
    mqtt_port: Annotated[int, typer.Option(help="Broker port")] = 11883,
    speed: Annotated[float, typer.Option(help="Simulated seconds per real second")] = 1.0,
    apply: Annotated[bool, typer.Option(help="Apply the plant to the server first")] = True,
    url: Url = None, token: Token = None,
) -> None:
    """Publish like real devices: applies the plant, rotates the simulated devices' secrets, connects."""
    from shopfloor.demo import run_simulation

    _run_until_signal(lambda stop: run_simulation(_client(url, token), stop, plant_file=plant, machines=machines,
                                                  gateways=gateways, tenant=tenant, mqtt_host=mqtt_host,
                                                  mqtt_port=mqtt_port, speed=speed, apply=apply,
                                                  console=console))


# -- API clients ---------------------------------------------------------------------------------
def _client(url: str | None, token: str | None) -> ApiClient:
    s = _settings()
    secret = token or (s.token.get_secret_value() if s.token else None)
    if not secret:
        raise ShopfloorError("no API token: pass --token or set SHOPFLOOR_TOKEN")
    return ApiClient(url or s.url, secret)


def _table(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps(rows))
        return
    t = Table(*columns)
    for r in rows:
        t.add_row(*[escape(str(r.get(c, ""))) for c in columns])
    console.print(t)


@tenants_app.command("create")
def tenants_create(slug: str, name: Annotated[str, typer.Option(help="Display name")] = "",
                   url: Url = None, token: Token = None) -> None:
    """Create a tenant and print its first admin token."""
    c = _client(url, token)
    t = c.call("POST", "/tenants", json={"slug": slug, "name": name})
    tok = c.call("POST", f"/tenants/{slug}/tokens", json={"name": f"{slug}-admin", "role": "admin"})
    console.print(f"tenant {t['slug']} (id {t['id']}); admin token (shown once):")
    console.print(tok["token"], highlight=False, soft_wrap=True)


@tenants_app.command("list")
def tenants_list(url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """List tenants."""
    _table(_client(url, token).call("GET", "/tenants"), ["id", "slug", "name", "created_at"], as_json)


@tokens_app.command("create")
def tokens_create(name: str, role: Annotated[str, typer.Option(help="viewer, operator, engineer or admin")] = "viewer",
                  url: Url = None, token: Token = None) -> None:
    """Create a token of your tenant; prints the secret once."""
    tok = _client(url, token).call("POST", "/tokens", json={"name": name, "role": role})
    console.print(tok["token"], highlight=False, soft_wrap=True)


@tokens_app.command("list")
def tokens_list(url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """List tokens (names and roles; secrets are never shown again)."""
    _table(_client(url, token).call("GET", "/tokens"), ["id", "name", "role", "created_at", "revoked"], as_json)


@tokens_app.command("revoke")
def tokens_revoke(token_id: int, url: Url = None, token: Token = None) -> None:
    """Revoke a token by id."""
    _client(url, token).call("DELETE", f"/tokens/{token_id}")
    console.print(f"token {token_id} revoked")


@assets_app.command("list")
def assets_list(level: Annotated[str | None, typer.Option(help="site, area, line or machine")] = None,
                url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """List assets."""
    params = {"level": level} if level else {}
    _table(_client(url, token).call("GET", "/assets", params=params), ["id", "level", "path", "type"], as_json)


@assets_app.command("create")
def assets_create(level: Annotated[str, typer.Argument(help="site, area, line or machine")],
                  name: Annotated[str, typer.Argument(help="Slug, unique among its siblings")],
                  parent_id: Annotated[int | None, typer.Option(help="Parent asset (not for sites)")] = None,
                  type: Annotated[str | None, typer.Option("--type", help="Asset type (machines)")] = None,
                  timezone: Annotated[str | None, typer.Option(help="IANA time zone (sites)")] = None,
                  display_name: Annotated[str, typer.Option(help="Name shown to people")] = "",
                  url: Url = None, token: Token = None) -> None:
    """Create an asset in the tree."""
    body: dict[str, Any] = {"level": level, "name": name, "parent_id": parent_id, "type": type,
                            "timezone": timezone, "display_name": display_name}
    a = _client(url, token).call("POST", "/assets", json=body)
    console.print(f"asset {a['id']}: {a['path']}")


@assets_app.command("delete")
def assets_delete(asset_id: int, url: Url = None, token: Token = None) -> None:
    """Delete an asset (refused while it has children or devices)."""
    _client(url, token).call("DELETE", f"/assets/{asset_id}")
    console.print(f"asset {asset_id} deleted")


@assets_app.command("types")
def assets_types(url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """List asset types with their measurements."""
    rows = _client(url, token).call("GET", "/asset-types")
    for r in rows:
        r["measurements"] = ", ".join(f"{m['name']} [{m['unit'] or m['type']}]" for m in r["measurements"])
    _table(rows, ["name", "description", "measurements"], as_json)


@assets_app.command("latest")
def assets_latest(asset_id: int, url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """Latest values, state and status of an asset."""
    data = _client(url, token).call("GET", f"/assets/{asset_id}/latest")
    if as_json:
        console.print_json(json.dumps(data))
        return
    console.print(f"{data['asset']['path']}: state {data['state']} ({data['state_reason'] or '-'}), "
                  f"status {data['status']}")
    _table(data["values"], ["measurement", "value", "unit", "ts", "quality"], False)


@devices_app.command("list")
def devices_list(url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """List devices with online status and reject counts."""
    _table(_client(url, token).call("GET", "/devices"),
           ["id", "name", "username", "enabled", "online", "last_message", "rejects"], as_json)


@devices_app.command("create")
def devices_create(name: str, asset_id: Annotated[list[int], typer.Option("--asset-id", help="Bound asset (repeat for a gateway)")],
                   gateway: Annotated[bool, typer.Option(help="May publish for several assets")] = False,
                   url: Url = None, token: Token = None) -> None:
    """Create a device; prints its MQTT username and secret once."""
    d = _client(url, token).call("POST", "/devices", json={"name": name, "asset_ids": asset_id, "gateway": gateway})
    console.print(f"username: {d['username']}\nsecret:   {d['secret']}", highlight=False)


@devices_app.command("rotate")
def devices_rotate(device_id: int, url: Url = None, token: Token = None) -> None:
    """Issue a new secret (the old one stops working at once)."""
    d = _client(url, token).call("POST", f"/devices/{device_id}/rotate-secret")
    console.print(f"username: {d['username']}\nsecret:   {d['secret']}", highlight=False)


@devices_app.command("disable")
def devices_disable(device_id: int, url: Url = None, token: Token = None) -> None:
    """Disable a device and cut its live session."""
    _client(url, token).call("PATCH", f"/devices/{device_id}", json={"enabled": False})
    console.print(f"device {device_id} disabled")


@devices_app.command("enable")
def devices_enable(device_id: int, url: Url = None, token: Token = None) -> None:
    """Enable a device again."""
    _client(url, token).call("PATCH", f"/devices/{device_id}", json={"enabled": True})
    console.print(f"device {device_id} enabled")


@devices_app.command("delete")
def devices_delete(device_id: int, url: Url = None, token: Token = None) -> None:
    """Delete a device."""
    _client(url, token).call("DELETE", f"/devices/{device_id}")
    console.print(f"device {device_id} deleted")


@plant_app.command("apply")
def plant_apply(file: Path,
                secrets_out: Annotated[Path | None, typer.Option(help="Write new devices' secrets here (JSON, mode 600)")] = None,
                url: Url = None, token: Token = None) -> None:
    """Make the server's registry match a plant YAML (idempotent; nothing is deleted)."""
    body = file.read_bytes()
    res = _client(url, token).call("PUT", "/plant", content=body, headers={"content-type": "application/yaml"})
    for what in ("created", "updated", "unchanged"):
        if res[what]:
            console.print(f"{what}: " + ", ".join(f"{n} {k}" for k, n in sorted(res[what].items())))
    secrets = res["device_secrets"]
    if secrets and secrets_out:
        from shopfloor.bootstrap import write_secret_file

        write_secret_file(secrets_out, json.dumps({s["name"]: s["secret"] for s in secrets}, indent=2))
        console.print(f"{len(secrets)} new device secret(s) written to {secrets_out}")
    elif secrets:
        console.print("new device credentials (shown once):")
        _table(secrets, ["name", "username", "secret"], False)


@plant_app.command("export")
def plant_export(output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write [default: stdout]")] = None,
                 url: Url = None, token: Token = None) -> None:
    """Export the tenant's plant as YAML."""
    text = _client(url, token).call("GET", "/plant")
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


@app.command()
def history(series_id: int,
            from_: Annotated[str | None, typer.Option("--from", help="RFC 3339 or epoch ms [default: 1 h ago]")] = None,
            to: Annotated[str | None, typer.Option(help="RFC 3339 or epoch ms [default: now]")] = None,
            interval: Annotated[str | None, typer.Option(help="Bucket: 1m, 1h, 1d ... (raw if omitted)")] = None,
            agg: Annotated[str, typer.Option(help="avg, min, max, sum, count, first, last, twa")] = "avg",
            url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """A series' history: raw samples or aggregates."""
    params = {k: v for k, v in {"from": from_, "to": to, "interval": interval, "agg": agg}.items() if v}
    data = _client(url, token).call("GET", f"/series/{series_id}/history", params=params)
    rows = data["buckets"] if interval else data["points"]
    _table(rows, ["start", "value", "count"] if interval else ["ts", "value", "quality"], as_json)


@app.command("dead-letters")
def dead_letters(reason: Annotated[str | None, typer.Option(help="Only this reason")] = None,
                 limit: Annotated[int, typer.Option(help="How many")] = 50,
                 url: Url = None, token: Token = None, as_json: JsonOut = False) -> None:
    """Rejected messages and values with their reasons, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if reason:
        params["reason"] = reason
    _table(_client(url, token).call("GET", "/dead-letters", params=params),
           ["received_at", "device", "reason", "detail"], as_json)


@app.command()
def stats(url: Url = None, token: Token = None) -> None:
    """Ingest statistics of your tenant."""
    console.print_json(json.dumps(_client(url, token).call("GET", "/ingest/stats")))


@app.command("config")
def config_example() -> None:
    """Print every setting with its description and default, as a commented shopfloor.toml."""
    from shopfloor.config import example_toml

    sys.stdout.write(example_toml())


@app.command()
def version() -> None:
    """Print the version."""
    from shopfloor import __version__

    console.print(__version__)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


cli_ops.register(app)
cli_kpi.register(app)
cli_sparkplug.register(app)
cli_alarms.register(app)
cli_edge.register(app)
cli_opcua.register(app)
cli_analytics.register(app)

if __name__ == "__main__":
    main()
