"""``shopfloor demo`` and ``shopfloor simulate``: the platform with a simulated factory attached."""

from __future__ import annotations

import asyncio
import contextlib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.text import Text

from shopfloor.bootstrap import Platform, build_platform, serve, write_secret_file
from shopfloor.client import ApiClient
from shopfloor.config import Settings
from shopfloor.demo_history import backfill_history, store_is_empty
from shopfloor.domain.errors import ShopfloorError, Unauthenticated
from shopfloor.domain.plant import PlantSpec, plant_from_obj
from shopfloor.domain.tenancy import Role
from shopfloor.services.registry import PLATFORM
from shopfloor.sim.publisher import Simulator, scaled_plant

DEMO_TENANT = "demo"


def load_plant(path: Path | None) -> PlantSpec:
    if path is None:
        text = resources.files("shopfloor.sim").joinpath("default_plant.yaml").read_text()
    else:
        text = path.read_text()
    return plant_from_obj(yaml.safe_load(text))


def _demo_token(p: Platform) -> str:
    """The demo tenant's admin token, kept in the data folder so a restart reuses it."""
    data_dir = p.settings.data_dir
    if not p.registry.is_initialised():
        issued = p.registry.init_platform()
        write_secret_file(data_dir / "platform-token", issued.secret)
    if p.repo.find_tenant(DEMO_TENANT) is None:
        p.registry.create_tenant(PLATFORM, DEMO_TENANT, "Demo air-conditioner factory")
    path = data_dir / "demo-token"
    if path.exists():
        secret = path.read_text().strip()
        with contextlib.suppress(Unauthenticated):
            if p.auth.context_for(secret).tenant_slug == DEMO_TENANT:
                return secret
    _, secret = p.registry.create_token(PLATFORM, "demo", Role.ADMIN, tenant_slug=DEMO_TENANT)
    write_secret_file(path, secret)
    return secret


async def run_demo(settings: Settings, stop: asyncio.Event, *, plant_file: Path | None = None,
                   live: bool = True, console: Console | None = None) -> None:
    console = console or Console()
    platform = build_platform(settings)
    try:
        token = _demo_token(platform)
        ctx = platform.auth.context_for(token)
        spec = load_plant(plant_file)
        platform.plant.apply(ctx, spec)
        credentials: dict[str, str] = {}
        for dev in platform.registry.list_devices(ctx):
            if any(d.name == dev.name for d in spec.devices):
                _, credentials[dev.name] = platform.registry.rotate_device_secret(ctx, dev.id)
        inner = asyncio.Event()
        sim_running = False
        sim = Simulator(spec, DEMO_TENANT, credentials, settings.mqtt_host, settings.mqtt_port)
        url = f"http://{settings.http_host}:{settings.http_port}"
        hours = _history_hours(settings, console)
        tenant_id = ctx.require_tenant()
        if hours and not store_is_empty(platform.historian, tenant_id):
            hours = 0  # a later start: continue with the data there is
        going_live = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []

        async def history_then_live() -> None:
            nonlocal sim_running
            if hours:
                try:
                    await backfill_history(platform.ingest, sim.publishers(), DEMO_TENANT, hours, console=console,
                                           rejected=lambda: platform.stats.tenant(tenant_id).rejected, stop=stop)
                except ShopfloorError as exc:  # the store refused: the demo still runs, live only
                    console.print(f"history back-fill stopped: {exc.message}")
            if stop.is_set():
                return
            sim.start()  # the same models, live from where the history ended
            sim_running = True
            console.print(f"live simulation started: {sum(1 for _ in sim.machines())} machines.")
            going_live.set()

        def started(_: Platform) -> None:
            console.print(f"shopfloor demo running at [bold]{url}[/bold]  (API: {url}/api/v1/docs)")
            console.print(f"demo API token (tenant '{DEMO_TENANT}', admin): {token}", highlight=False,
                          soft_wrap=True)
            console.print(f"MQTT broker on {settings.mqtt_host}:{settings.mqtt_port}; "
                          f"data in {settings.data_dir}. Ctrl-C stops.")
            tasks.append(asyncio.create_task(history_then_live()))

        async def stop_sim() -> None:
            nonlocal sim_running
            for task in tasks:  # a back-fill in progress ends after its current batch
                await asyncio.wait({task})
            if sim_running:
                sim_running = False
                await asyncio.to_thread(sim.stop)

        async def watch() -> None:
            await stop.wait()
            await stop_sim()
            inner.set()

        watcher = asyncio.create_task(watch())
        status = asyncio.create_task(_status_line(platform, console, stop, live, going_live))
        try:
            await serve(platform, inner, started)
        finally:
            watcher.cancel()
            status.cancel()
            await stop_sim()
        console.print("stopped cleanly.")
    finally:
        platform.close()


def _history_hours(settings: Settings, console: Console) -> int:
    """``demo_history_hours``, kept an hour short of the raw retention (ingest refuses older data)."""
    limit = settings.raw_retention_days * 24 - 1
    if settings.demo_history_hours > limit:
        console.print(f"demo_history_hours {settings.demo_history_hours} reaches beyond raw_retention_days "
                      f"({settings.raw_retention_days}); back-filling {limit} h")
        return limit
    return settings.demo_history_hours


async def _status_line(p: Platform, console: Console, stop: asyncio.Event, live: bool,
                       going_live: asyncio.Event) -> None:
    await going_live.wait()  # the back-fill has its own progress bar
    def line() -> Text:
        mps, pps = p.stats.rates()
        return Text(f"devices online {p.stats.online_count():>4} · {pps:>9,.0f} points/s · {mps:>7,.0f} msg/s · "
                    f"{p.stats.points:>11,} points · {p.stats.rejected:,} rejected")

    if not live or not console.is_terminal:
        while not stop.is_set():
            await asyncio.sleep(10)
            console.print(line())
        return
    with Live(line(), console=console, refresh_per_second=2, transient=True) as view:
        while not stop.is_set():
            await asyncio.sleep(0.5)
            view.update(line())


async def run_simulation(client: ApiClient, stop: asyncio.Event, *, plant_file: Path | None, machines: int | None,
                         gateways: int, tenant: str | None, mqtt_host: str, mqtt_port: int, speed: float,
                         apply: bool, console: Console) -> None:
    """Simulate against a running server: apply the plant, rotate the simulated devices' secrets, publish."""
    spec = scaled_plant(machines, gateways) if machines else load_plant(plant_file)
    if tenant is None:
        tenants: list[dict[str, Any]] = client.call("GET", "/tenants")
        if len(tenants) != 1:
            raise Unauthenticated("use a tenant's token (or pass --tenant)")
        tenant = str(tenants[0]["slug"])
    if apply:
        import msgspec

        client.call("PUT", "/plant", content=msgspec.json.encode(spec),
                    headers={"content-type": "application/json"})
    names = {d.name for d in spec.devices}
    credentials = {}
    for dev in client.call("GET", "/devices"):
        if dev["name"] in names:
            credentials[dev["name"]] = client.call("POST", f"/devices/{dev['id']}/rotate-secret")["secret"]
    sim = Simulator(spec, tenant, credentials, mqtt_host, mqtt_port, speed=speed)
    sim.start()
    console.print(f"simulating {sum(len(ln.machines) for s in spec.sites for a in s.areas for ln in a.lines)} "
                  f"machines over {len(credentials)} connections to {mqtt_host}:{mqtt_port}; Ctrl-C stops")
    try:
        await stop.wait()
    finally:
        await asyncio.to_thread(sim.stop)
