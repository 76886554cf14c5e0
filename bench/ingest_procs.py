"""The processes of ``bench/ingest.py``: a publisher, and every kind of consumer it measures.

Each consumer publishes how far it got in a shared counter (points committed, or for the bare
subscriber messages received) and sets ``ready`` once subscribed; it runs until ``stop`` is set.
All of them are module-level functions taking picklable arguments, for ``multiprocessing`` spawn.
Times are ``time.monotonic()``, which is one clock for every process on Linux.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

Counter = Synchronized  # a multiprocessing.Value("q")


# -- the publisher ------------------------------------------------------------------------------------

def publisher(port: int, username: str | None, password: str | None, prelude: list[tuple[str, bytes]],
              messages: list[tuple[str, bytes]], ready: Event, go: Event, result: Any,
              inflight: int = 1000, timeout_s: float = 60.0) -> None:
    """Publish ``prelude`` (waiting for its PUBACKs), set ``ready``, wait for ``go``, then publish
    ``messages`` at QoS 1 as fast as the broker takes them. Puts (t_first_publish, t_last_puback, acked)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{time.time_ns()}",
                         protocol=mqtt.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    acked = 0
    last = 0.0
    target = len(prelude)
    done = threading.Event()
    up = threading.Event()

    def on_publish(*_: object) -> None:
        nonlocal acked, last
        acked += 1
        if acked >= target:
            last = time.monotonic()
            done.set()

    client.on_connect = lambda *_: up.set()
    client.on_publish = on_publish
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    if not up.wait(15):
        raise SystemExit("publisher: cannot connect")
    for topic, payload in prelude:
        client.publish(topic, payload, qos=1)
    if prelude:
        done.wait(30)
    acked, target = 0, len(messages)
    done.clear()
    ready.set()
    go.wait()
    t0 = time.monotonic()
    for topic, payload in messages:
        client.publish(topic, payload, qos=1)
    done.wait(timeout_s)
    result.put((t0, last if done.is_set() else time.monotonic(), acked))
    client.disconnect()
    client.loop_stop()


# -- ceilings --------------------------------------------------------------------------------------------

def _subscriber(port: int, on_message: Callable[[mqtt.MQTTMessage], None], ready: Event) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{time.time_ns()}",
                         protocol=mqtt.MQTTv5)
    client.on_message = lambda _c, _u, msg: on_message(msg)
    client.on_subscribe = lambda *_: ready.set()
    client.on_connect = lambda c, *_: c.subscribe([("shopfloor/#", SubscribeOptions(qos=1)),
                                                   ("spBv1.0/#", SubscribeOptions(qos=1))])
    client.connect("127.0.0.1", port, keepalive=60)
    return client


def bare_subscriber(port: int, counter: Counter, ready: Event, stop: Event) -> None:
    """Mosquitto's own rate: a paho MQTT 5 subscriber at QoS 1 that only counts messages."""
    n = 0

    def count(_msg: mqtt.MQTTMessage) -> None:
        nonlocal n
        n += 1
        counter.value = n

    client = _subscriber(port, count, ready)
    client.loop_start()
    stop.wait()
    client.disconnect()
    client.loop_stop()


class _Rec(msgspec.Struct):
    ts: int
    values: dict[str, float]


def bare_pipeline(port: int, kind: str, series: dict[tuple[str, str], int], db_path: str, counter: Counter,
                  ready: Event, stop: Event) -> None:
    """paho → typed msgspec (or protobuf for Sparkplug) → Arrow arrays per batch → DuckDB append, one
    transaction per batch. No validation, tenancy, dead letters, rollups or commit-before-ack."""
    import duckdb
    import pyarrow as pa

    from shopfloor.connectors.sparkplug import sparkplug_b_pb2 as pb

    con = duckdb.connect(db_path)
    con.execute("CREATE TABLE samples (series_id INTEGER, ts BIGINT, value DOUBLE, text VARCHAR, quality SMALLINT,"
                " seq BIGINT)")
    inbox: collections.deque[tuple[str, bytes]] = collections.deque()
    arrived = threading.Event()
    dec = msgspec.json.Decoder(_Rec)
    by_alias = {k + 1: f"v{k}" for k in range(50)}

    def on_message(msg: mqtt.MQTTMessage) -> None:
        inbox.append((msg.topic, msg.payload))
        arrived.set()

    client = _subscriber(port, on_message, ready)
    client.loop_start()
    total, seq = 0, 0
    while not stop.is_set():
        if not arrived.wait(0.05):
            continue
        arrived.clear()
        time.sleep(0.005)  # let a batch gather
        sid: list[int] = []
        ts: list[int] = []
        val: list[float] = []
        while inbox:
            topic, payload = inbox.popleft()
            parts = topic.split("/")
            if kind == "spb50":
                if parts[2] != "DDATA":
                    continue  # births: the aliases are known beforehand
                machine = f"m{parts[-1][1:]}"
                p = pb.Payload.FromString(payload)
                for m in p.metrics:
                    sid.append(series[(machine, by_alias[m.alias])])
                    ts.append(m.timestamp * 1000)
                    val.append(m.double_value)
            else:
                machine = parts[6]
                rec = dec.decode(payload)
                t = rec.ts * 1000
                for name, v in rec.values.items():
                    sid.append(series[(machine, name)])
                    ts.append(t)
                    val.append(v)
        if not sid:
            continue
        seq += 1
        table = pa.table({"series_id": pa.array(sid, pa.int32()), "ts": pa.array(ts, pa.int64()),
                          "value": pa.array(val, pa.float64())})
        con.register("batch", table)
        con.execute("BEGIN")
        con.execute("INSERT INTO samples SELECT series_id, ts, value, NULL, 0, ? FROM batch", [seq])
        con.unregister("batch")
        con.execute("COMMIT")
        total += len(sid)
        counter.value = total
    client.disconnect()
    client.loop_stop()
    con.close()


# -- the real ingest paths -------------------------------------------------------------------------------

async def _watch(points: Callable[[], int], counter: Counter, stop: Event, stopper: Callable[[], None]) -> None:
    while not stop.is_set():
        counter.value = points()
        await asyncio.sleep(0.005)
    counter.value = points()
    stopper()


def duckdb_ingest(data_dir: str, port: int, kind: str, counter: Counter, ready: Event, stop: Event) -> None:
    """Mosquitto + one ingest process + DuckDB: the ingest service over the DuckDB stores, fed by one
    JSON ingest worker (shared subscription) or, for Sparkplug, one Sparkplug worker."""
    from shopfloor.bootstrap import build_platform
    from shopfloor.config import Settings

    async def main() -> None:
        p = build_platform(Settings(data_dir=Path(data_dir)))
        try:
            await _run_worker(kind, port, p.repo, p.cache, p.clock, p.ingest, counter, ready, stop, 0, 1)
            await p.ingest.drain()
        finally:
            p.close()

    asyncio.run(main())


def pg_ingest(index: int, workers: int, dsn: str, schema: str, port: int, kind: str, counter: Counter,
              ready: Event, stop: Event) -> None:
    """One of ``workers`` server-mode ingest processes: the ingest service over PostgreSQL."""
    from shopfloor.services.cache import RegistryCache
    from shopfloor.services.clock import SystemClock
    from shopfloor.services.ingest import IngestService
    from shopfloor.services.stats import IngestStats
    from shopfloor.storage.postgres.database import PgDatabase
    from shopfloor.storage.postgres.historian import PostgresHistorian
    from shopfloor.storage.postgres.registry import PostgresRegistry

    async def main() -> None:
        db = PgDatabase(dsn, schema, max_size=4, timeout=5.0)
        clock = SystemClock()
        repo = PostgresRegistry(db)
        historian = PostgresHistorian(db, clock=clock)
        cache = RegistryCache(repo, clock)
        service = IngestService(historian, cache, clock, IngestStats(clock))
        try:
            await _run_worker(kind, port, repo, cache, clock, service, counter, ready, stop, index, workers)
            await service.drain()
        finally:
            service.close()
            historian.close()
            db.close()

    asyncio.run(main())


async def _run_worker(kind: str, port: int, repo: Any, cache: Any, clock: Any, service: Any, counter: Counter,
                      ready: Event, stop: Event, index: int, workers: int) -> None:
    from shopfloor.connectors.mqtt.worker import IngestWorker
    from shopfloor.connectors.sparkplug.host import SparkplugHost
    from shopfloor.connectors.sparkplug.worker import SparkplugWorker
    from shopfloor.services.sparkplug_directory import SparkplugDirectoryService

    loop = asyncio.get_running_loop()
    subscribed = lambda: loop.call_soon_threadsafe(ready.set)  # noqa: E731
    runner: Any
    if kind == "spb50":  # Sparkplug: one host per group, so one worker whatever ``workers`` says
        directory = SparkplugDirectoryService(repo, cache, clock)
        host = SparkplugHost(directory, service, host_id=f"bench-{index}", limits=service.decoder.limits)
        runner = SparkplugWorker(0, 1, "127.0.0.1", port, None, None, host, directory.groups,
                                 batch_max=2000, receive_maximum=8000, on_subscribed=subscribed)
    else:
        runner = IngestWorker(index, "127.0.0.1", port, None, None, service, share_group="bench",
                              on_subscribed=subscribed)
    task = asyncio.create_task(runner.run())
    watch = asyncio.create_task(_watch(lambda: service.stats.points, counter, stop, runner.stop))
    await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    if not watch.done():
        watch.cancel()
    runner.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    if kind == "spb50":
        await host.drain()
