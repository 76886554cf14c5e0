"""``shopfloor edge``: run the edge agent on a gateway near the PLCs (docs/edge.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def register(app: typer.Typer) -> None:
    @app.command("edge")
    def edge(config: Annotated[Path, typer.Option("--config", help="The agent's edge.yaml.")],
             stats_every: Annotated[float, typer.Option("--stats-every",
                                                        help="Seconds between counter lines in the log.")] = 60.0,
             check: Annotated[bool, typer.Option("--check",
                                                 help="Only read and check the configuration, then exit.")] = False,
             ) -> None:
        """Poll Modbus devices (and OPC UA servers) and publish to the platform through a disk buffer."""
        from shopfloor.connectors.edge.config import load_edge_config
        from shopfloor.edgeboot import check_sources, run_edge

        resolved = load_edge_config(config)
        points = check_sources(resolved)
        if check:
            console.print(f"edge.yaml is valid: {len(resolved.modbus)} Modbus device(s), {len(resolved.opcua)} OPC UA "
                          f"server(s), {points} point(s), "
                          f"tenant {resolved.config.tenant}, broker {resolved.config.broker.host}:"
                          f"{resolved.config.broker.port}")
            return
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            agent = await run_edge(config, stop, stats_every)
            typer.echo(json.dumps(agent.describe(), default=str))

        asyncio.run(main())
