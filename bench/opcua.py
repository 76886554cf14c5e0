"""OPC UA notifications per second: shopfloor's ``OpcUaSource`` into a sink, beside asyncua's ceiling.

Run with the project's interpreter::

    .venv/bin/python bench/opcua.py [--tags 2000] [--seconds 8] [--publishing-ms 100] [--no-docs]

An asyncua server runs in its own process with ``--tags`` Double variables and rewrites all of
them as fast as it can (each write a new value with a new source timestamp). In this process, one
after the other against the same server:

* **ceiling**: a bare asyncua subscription of every tag whose handler only counts (what asyncua
  itself delivers to Python code in one client process);
* **shopfloor**: ``OpcUaSource`` (mapping, quality, de-duplication, batching) into a sink that
  counts, with one connection and with the tags spread over two connections.

Each runs ``--seconds`` after a warm-up second. Figures are notifications per second and the
ratio to the ceiling of the same run (the box is shared: compare ratios, not absolute rates). The
figures go to the "OPC UA" section of docs/PERFORMANCE.md (the rest of the file is left as it is).
``measure()`` is also what bench/connectors.py can call.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "PERFORMANCE.md"
SECTION = "OPC UA"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def node_id(i: int) -> str:
    return f"ns=2;s=Bench.Tag{i:05d}"


def _note(path: Path, text: str) -> None:
    path.write_text(text)


# -- the server process ---------------------------------------------------------------------------
async def serve(port: int, tags: int, ready_file: Path) -> None:
    import logging

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace("urn:shopfloor:bench")
    folder = await server.nodes.objects.add_object(ua.NodeId("Bench", idx), ua.QualifiedName("Bench", idx))
    ids = []
    for i in range(tags):
        var = await folder.add_variable(ua.NodeId(f"Bench.Tag{i:05d}", idx), ua.QualifiedName(f"Tag{i:05d}", idx), 0.0)
        ids.append(var.nodeid)
    await server.start()
    _note(ready_file, "ready")
    counter = ready_file.with_suffix(".count")
    value, writes, told = 0.0, 0, time.monotonic()
    while True:
        value += 1.0
        now = datetime.now(UTC)
        for nid in ids:
            await server.write_attribute_value(nid, ua.DataValue(ua.Variant(value, ua.VariantType.Double),
                                                                 SourceTimestamp=now, ServerTimestamp=now))
        writes += len(ids)
        await asyncio.sleep(0)
        if time.monotonic() - told > 0.25:
            told = time.monotonic()
            _note(counter, f"{writes} {told}")


@contextlib.contextmanager
def server_process(tags: int) -> Any:
    port = free_port()
    ready = Path(f"/tmp/shopfloor-bench-opcua-{os.getpid()}.ready")
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--tags", str(tags),
                             "--ready-file", str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the bench server did not start")
            time.sleep(0.1)
        yield f"opc.tcp://127.0.0.1:{port}/bench", ready.with_suffix(".count")
    finally:
        proc.terminate()
        proc.wait(10)
        ready.unlink(missing_ok=True)
        ready.with_suffix(".count").unlink(missing_ok=True)


def writes_per_s(counter: Path, seconds: float) -> tuple[float, float]:
    """Wait ``seconds``; the server's writes per second over that time (from its counter file)."""
    def read() -> tuple[int, float]:
        n, t = counter.read_text().split()
        return int(n), float(t)

    n0, t0 = read()
    time.sleep(seconds)
    n1, t1 = read()
    return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0, seconds


# -- the clients --------------------------------------------------------------------------------
async def ceiling(url: str, tags: int, seconds: float, publishing_ms: float) -> float:
    """Notifications/s of a bare asyncua subscription whose handler only counts."""
    from asyncua import Client, ua

    class Count:
        n = 0

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            Count.n += 1

    async with Client(url, timeout=10) as client:
        handler = Count()
        sub = await client.create_subscription(publishing_ms, handler)
        nodes = [client.get_node(node_id(i)) for i in range(tags)]
        for start in range(0, tags, 1000):
            await sub.subscribe_data_change(nodes[start:start + 1000], queuesize=10, sampling_interval=0)
        await asyncio.sleep(1.0)
        n0, t0 = Count.n, time.perf_counter()
        await asyncio.sleep(seconds)
        rate = (Count.n - n0) / (time.perf_counter() - t0)
        _ = ua  # imported for its side effects on asyncua's type registry
    return rate


async def shopfloor_rate(url: str, tags: int, seconds: float, publishing_ms: float, connections: int) -> float:
    """Notifications/s that ``OpcUaSource`` hands to a sink (after mapping and de-duplication)."""
    from shopfloor.connectors.opcua import OpcUaSource
    from shopfloor.domain.opcua_map import opcua_from_obj

    count = 0

    async def sink(readings: Sequence[Any]) -> None:
        nonlocal count
        count += len(readings)

    per_sub = 1000
    subs_per_conn = max(1, -(-tags // (per_sub * connections)))
    spec = opcua_from_obj({"endpoint": url, "asset": "bench/area/line/machine", "publishing_interval_ms": publishing_ms,
                           "sampling_interval_ms": 0, "items_per_subscription": per_sub,
                           "subscriptions_per_connection": subs_per_conn,
                           "nodes": {node_id(i): {"measurement": f"tag{i}"} for i in range(tags)}})
    source = OpcUaSource(spec, sink, timeout_s=10)
    task = asyncio.create_task(source.run())
    try:
        await source.connected(60)
        await asyncio.sleep(1.0)
        n0, t0 = count, time.perf_counter()
        await asyncio.sleep(seconds)
        return (count - n0) / (time.perf_counter() - t0)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass
class Result:
    tags: int
    seconds: float
    publishing_ms: float
    ceiling: float
    produced: float  # the server's writes/s, measured while the ceiling client ran
    one: float
    two: float
    load: float


def measure(tags: int = 2000, seconds: float = 8.0, publishing_ms: float = 100.0) -> Result:
    """Run the three measurements against one server process (what bench/connectors.py may call)."""
    import logging

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    load = os.getloadavg()[0]
    with server_process(tags) as (url, counter):
        produced: list[float] = []

        async def top_and_produced() -> float:
            task = asyncio.create_task(ceiling(url, tags, seconds, publishing_ms))
            await asyncio.sleep(1.5)
            produced.append((await asyncio.to_thread(writes_per_s, counter, seconds - 1.0))[0])
            return await task

        top = asyncio.run(top_and_produced())
        one = asyncio.run(shopfloor_rate(url, tags, seconds, publishing_ms, 1))
        two = asyncio.run(shopfloor_rate(url, tags, seconds, publishing_ms, 2))
    return Result(tags, seconds, publishing_ms, top, produced[0], one, two, load)


def machine_line() -> str:
    return f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"


def update_docs(r: Result) -> None:
    """Rewrite the "OPC UA" section of docs/PERFORMANCE.md (the rest of the file is left as it is)."""
    text = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    head, found, rest = text.partition(f"\n## {SECTION}\n")
    after = ""
    if found:
        m = re.search(r"^## ", rest, flags=re.M)
        after = rest[m.start():] if m else ""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = f"""
## {SECTION}

Measured {when} on {machine_line()}; 1-minute load average {r.load:.1f} when the run began.
Run: `.venv/bin/python bench/opcua.py --tags {r.tags} --seconds {r.seconds:g} --publishing-ms {r.publishing_ms:g}`.
An asyncua server in its own process rewrites {r.tags:,} Double variables as fast as it can; this process
subscribes to all of them (sampling interval 0, publishing every {r.publishing_ms:g} ms, queue 10), one
client after the other, each for {r.seconds:g} s after a warm-up second. "ceiling" is a bare asyncua
subscription whose handler only counts; "shopfloor" is `OpcUaSource` (status to quality, scaling, source
timestamps, de-duplication by (node, timestamp), batches) into a sink that counts. Both share the two cores
with the server process, so compare the ratio, not the rates.

The server itself changed {r.produced:,.0f} values/s while the ceiling client ran: where the ceiling is
near that, the server (Python, on the same two cores) is the limit of this run, not the client.

| client | connections | notifications/s | of the ceiling |
|---|---:|---:|---:|
| asyncua ceiling (count only) | 1 | {r.ceiling:,.0f} | 100 % |
| shopfloor `OpcUaSource` | 1 | {r.one:,.0f} | {100 * r.one / r.ceiling:.0f} % |
| shopfloor `OpcUaSource` | 2 | {r.two:,.0f} | {100 * r.two / r.ceiling:.0f} % |

Connections in one process share its event loop: they spread the server's per-session limits (monitored
items, publish queue), not the client's CPU. Beyond one process's rate, run further edge agents, each with a
share of the tags.
"""
    DOCS.write_text(head.rstrip("\n") + "\n" + section + ("\n" + after if after else ""))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tags", type=int, default=2000, help="variables on the server")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per client")
    parser.add_argument("--publishing-ms", type=float, default=100.0, help="subscription publishing interval")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(serve(args.serve, args.tags, args.ready_file))
        return
    r = measure(args.tags, args.seconds, args.publishing_ms)
    print(f"server {r.produced:,.0f} writes/s · ceiling {r.ceiling:,.0f}/s · shopfloor 1 connection {r.one:,.0f}/s ({100 * r.one / r.ceiling:.0f} %) · "
          f"2 connections {r.two:,.0f}/s ({100 * r.two / r.ceiling:.0f} %) · load {r.load:.1f}")
    if not args.no_docs:
        update_docs(r)


if __name__ == "__main__":
    main()
