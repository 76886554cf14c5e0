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
import socket
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
#
# A load generator must outrun what it measures. paho's publish() costs ~200 µs a message in Python on
# this box with QoS 1 acknowledgements coming back (~4k msg/s whatever the payload), so every figure
# would be the publisher's. This one encodes every MQTT 3.1.1 packet before the clock starts and then
# only writes bytes, keeping at most ``inflight`` PUBLISHes unacknowledged; a thread reads the
# broker's packets and counts the PUBACKs.

def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first: int, body: bytes) -> bytes:
    n, length = len(body), bytearray()
    while True:
        digit, n = n % 128, n // 128
        length.append(digit | (0x80 if n else 0))
        if not n:
            return bytes([first]) + bytes(length) + body


def _connect(client_id: str, username: str | None, password: str | None) -> bytes:
    flags = 0x02  # clean session
    payload = _utf8(client_id)
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
        if password is not None:
            flags |= 0x40
            payload += _utf8(password)
    return _packet(0x10, _utf8("MQTT") + bytes([4, flags]) + (0).to_bytes(2, "big") + payload)


def _publishes(messages: list[tuple[str, bytes]]) -> list[bytes]:
    topics: dict[str, bytes] = {}
    out = []
    for i, (topic, payload) in enumerate(messages):
        t = topics.get(topic)
        if t is None:
            t = topics[topic] = _utf8(topic)
        out.append(_packet(0x32, t + (i % 65535 + 1).to_bytes(2, "big") + payload))  # QoS 1
    return out


class _Acks:
    """Reads the broker's packets off ``sock``: CONNACK (must accept), PUBACKs (counted)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self.last = 0.0
        self.connected = threading.Event()
        self.cond = threading.Condition()
        self.error: str | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    raise ConnectionError("the broker closed the connection")
                buf += chunk
                acks, pos = 0, 0
                while len(buf) - pos >= 2:
                    first, n, mult, k = buf[pos], 0, 1, pos + 1
                    while k < len(buf):
                        n += (buf[k] & 0x7F) * mult
                        mult *= 128
                        k += 1
                        if not buf[k - 1] & 0x80:
                            break
                    else:
                        break
                    if len(buf) - k < n:
                        break
                    kind = first >> 4
                    if kind == 4:
                        acks += 1
                    elif kind == 2:
                        if buf[k + 1] != 0:
                            raise ConnectionError(f"the broker refused the connection (code {buf[k + 1]})")
                        self.connected.set()
                    pos = k + n
                buf = buf[pos:]
                if acks:
                    with self.cond:
                        self.count += acks
                        self.last = time.monotonic()
                        self.cond.notify_all()
        except OSError as exc:
            self.error = str(exc)
            with self.cond:
                self.cond.notify_all()
            self.connected.set()

    def wait_for(self, n: int, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        with self.cond:
            while self.count < n and self.error is None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
            return self.count >= n


def _send(sock: socket.socket, acks: _Acks, packets: list[bytes], base: int, inflight: int,
          timeout_s: float) -> None:
    """Write ``packets`` keeping at most ``inflight`` unacknowledged (``base``: acks counted before)."""
    chunk = max(1, min(256, inflight // 4))
    for start in range(0, len(packets), chunk):
        end = min(start + chunk, len(packets))
        if not acks.wait_for(base + end - inflight, timeout_s):
            return
        sock.sendall(b"".join(packets[start:end]))


def publisher(port: int, username: str | None, password: str | None, prelude: list[tuple[str, bytes]],
              messages: list[tuple[str, bytes]], ready: Event, go: Event, result: Any,
              inflight: int = 1000, timeout_s: float = 60.0) -> None:
    """Publish ``prelude`` (waiting for its PUBACKs), set ``ready``, wait for ``go``, then publish
    ``messages`` at QoS 1 as fast as the broker acknowledges them (at most ``inflight`` waiting).
    Puts (t_first_publish, t_last_puback, acked)."""
    first = _publishes(prelude)
    data = _publishes(messages)
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    acks = _Acks(sock)
    sock.sendall(_connect(f"bench-pub-{time.time_ns()}", username, password))
    if not acks.connected.wait(15) or acks.error is not None:
        raise SystemExit(f"publisher: cannot connect ({acks.error or 'no CONNACK'})")
    _send(sock, acks, first, 0, inflight, 30)
    acks.wait_for(len(first), 30)
    base = acks.count
    ready.set()
    go.wait()
    t0 = time.monotonic()
    _send(sock, acks, data, base, inflight, timeout_s)
    complete = acks.wait_for(base + len(data), max(1.0, timeout_s - (time.monotonic() - t0)))
    result.put((t0, acks.last if complete else time.monotonic(), acks.count - base))
    with contextlib.suppress(OSError):
        sock.sendall(_packet(0xE0, b""))
        sock.close()


# -- ceilings --------------------------------------------------------------------------------------------

def memory_neighbour(counter: Counter, ready: Event, stop: Event, megabytes: int = 128) -> None:
    """Copy one large array into another until ``stop`` (counting the copies): a process that keeps
    the other core and the memory bus busy, as the platform's own work does beside its broker (see
    the embedded rows)."""
    import numpy as np

    a = np.ones(megabytes * 131_072)  # float64: 8 bytes each
    b = np.empty_like(a)
    ready.set()
    while not stop.is_set():
        np.copyto(b, a)
        counter.value += 1


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
        from shopfloor.connectors.sparkplug.host_wire import WIRE

        await asyncio.to_thread(WIRE.start, wait=True)  # the compiled reader is ready before the clock starts
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
