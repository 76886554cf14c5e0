"""Ingest worker processes: the entry of one worker, and a supervisor that keeps N of them running.

The composition root owns what a worker commits into: it passes ``run_worker`` a *sink factory*, a
callable that returns an async context manager yielding a ``MessageSink`` (for example the ingest
service over the PostgreSQL store, closed on exit). This module never imports storage or services.

``run_workers(n, target)`` starts ``target(0)`` … ``target(n-1)`` in spawned processes, restarts one
that dies (quickly, with back-off if it keeps dying), and on SIGINT/SIGTERM stops them all
gracefully: each finishes and acknowledges the batches its sink has started, then disconnects while
keeping its broker session. ``target`` must be picklable: a module-level function, or a
``functools.partial`` of one with picklable arguments.

A worker must come back under the same index: the broker keeps its share of the messages in the
session of client ``ingest-{index}`` until it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from shopfloor.connectors.mqtt.worker import (
    DEFAULT_BATCH_MAX,
    DEFAULT_RECEIVE_MAXIMUM,
    DEFAULT_SESSION_EXPIRY_S,
    DEFAULT_SHARE_GROUP,
    DEFAULT_TOPICS,
    IngestWorker,
)
from shopfloor.domain.errors import StoreUnavailable
from shopfloor.ports.ingest import MessageSink

_log = logging.getLogger(__name__)

SinkFactory = Callable[[], AbstractAsyncContextManager[MessageSink]]


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker reaches the broker and batches; picklable, so it can cross into a spawned process."""

    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    share_group: str = DEFAULT_SHARE_GROUP
    topics: tuple[str, ...] = DEFAULT_TOPICS
    batch_max: int = DEFAULT_BATCH_MAX
    flush_ms: float = 20.0
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    pipeline: int = 2
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    keepalive_s: int = 30
    tls: bool = False
    tls_ca_file: str | None = None  # None with tls=True: the system's trusted CAs

    def __repr__(self) -> str:  # never print the password
        return (f"WorkerSettings(host={self.host!r}, port={self.port}, username={self.username!r}, "
                f"share_group={self.share_group!r}, batch_max={self.batch_max}, "
                f"receive_maximum={self.receive_maximum}, tls={self.tls})")


def build_worker(index: int, settings: WorkerSettings, sink: MessageSink,
                 on_subscribed: Callable[[], None] | None = None) -> IngestWorker:
    tls = ssl.create_default_context(cafile=settings.tls_ca_file) if settings.tls else None
    return IngestWorker(index, settings.host, settings.port, settings.username, settings.password, sink,
                        share_group=settings.share_group, topics=settings.topics, batch_max=settings.batch_max,
                        flush_ms=settings.flush_ms, receive_maximum=settings.receive_maximum,
                        pipeline=settings.pipeline, session_expiry_s=settings.session_expiry_s,
                        keepalive_s=settings.keepalive_s, tls=tls, on_subscribed=on_subscribed)


def run_worker(index: int, settings: WorkerSettings, sink_factory: SinkFactory, *,
               on_subscribed: Callable[[], None] | None = None) -> None:
    """Run worker ``index`` in this process until SIGTERM or SIGINT (the process entry).

    The sink is opened first (retried with back-off while the store is unavailable), then the
    worker connects as ``ingest-{index}``. Raises ``WorkerError`` if the broker refuses the
    subscriptions.
    """
    asyncio.run(_serve(index, settings, sink_factory, on_subscribed, retire_quiet_s=None))


def retire_worker(index: int, settings: WorkerSettings, sink_factory: SinkFactory, *,
                  quiet_s: float = 2.0) -> None:
    """Take worker ``index`` out of the share group for good, committing what its session holds.

    Run it (once, with that worker stopped) when the number of workers goes down: Mosquitto
    keeps routing a share of the messages to the session of ``ingest-{index}`` whether or not it
    is connected. Returns when the session is drained (nothing for ``quiet_s``) and ended.
    """
    asyncio.run(_serve(index, settings, sink_factory, None, retire_quiet_s=quiet_s))


async def _serve(index: int, settings: WorkerSettings, sink_factory: SinkFactory,
                 on_subscribed: Callable[[], None] | None, *, retire_quiet_s: float | None) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    worker: IngestWorker | None = None

    def stop() -> None:
        stopping.set()
        if worker is not None:
            worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    try:
        delay = 0.5
        while not stopping.is_set():
            try:
                async with sink_factory() as sink:
                    worker = build_worker(index, settings, sink, on_subscribed)
                    if stopping.is_set():
                        return
                    if retire_quiet_s is None:
                        await worker.run()
                    else:
                        await worker.retire(retire_quiet_s)
                    return
            except StoreUnavailable as exc:
                if worker is not None:
                    raise
                _log.warning("ingest-%d: store unavailable at start, retry in %.1f s: %s", index, delay, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)
            delay = min(delay * 2, 10.0)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# -- the supervisor ---------------------------------------------------------------------------------

def _child_main(target: Callable[[int], object], index: int, parent_pid: int, log_level: int) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=log_level,
                            format=f"%(asctime)s ingest-{index} %(levelname)s %(name)s: %(message)s")

    def orphaned() -> None:  # the supervisor died without stopping us: stop, keep the session
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        _log.warning("ingest-%d: supervisor %d is gone; stopping", index, parent_pid)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    target(index)


@dataclass(slots=True)
class _Slot:
    process: BaseProcess | None = None
    started: float = 0.0
    restart_at: float | None = None
    delay: float = 0.0
    restarts: int = 0


class Supervisor:
    """Keeps ``count`` worker processes alive; ``target(index)`` is each one's entry."""

    def __init__(self, count: int, target: Callable[[int], object], *, restart_delay_s: float = 0.5,
                 max_restart_delay_s: float = 30.0, healthy_after_s: float = 10.0,
                 stop_timeout_s: float = 20.0, log_level: int = logging.INFO) -> None:
        if count < 1:
            raise ValueError(f"need at least one worker, not {count}")
        self.count = count
        self._target = target
        self._restart_delay_s = restart_delay_s
        self._max_restart_delay_s = max_restart_delay_s
        self._healthy_after_s = healthy_after_s
        self._stop_timeout_s = stop_timeout_s
        self._log_level = log_level
        self._ctx = multiprocessing.get_context("spawn")
        self._slots = [_Slot(delay=restart_delay_s) for _ in range(count)]
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            for index in range(self.count):
                self._spawn(index)
        self._monitor = threading.Thread(target=self._watch, name="ingest-supervisor", daemon=True)
        self._monitor.start()

    def pid(self, index: int) -> int | None:
        with self._lock:
            proc = self._slots[index].process
            return proc.pid if proc is not None and proc.is_alive() else None

    def restarts(self, index: int) -> int:
        with self._lock:
            return self._slots[index].restarts

    def _spawn(self, index: int) -> None:
        slot = self._slots[index]
        proc = self._ctx.Process(target=_child_main, name=f"ingest-{index}",
                                 args=(self._target, index, os.getpid(), self._log_level))
        proc.start()
        slot.process, slot.started, slot.restart_at = proc, time.monotonic(), None
        _log.info("ingest-%d: started (pid %s)", index, proc.pid)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                live = [s.process.sentinel for s in self._slots if s.process is not None]
                due = [s.restart_at for s in self._slots if s.restart_at is not None]
            timeout = 0.5 if not due else max(0.0, min(0.5, min(due) - time.monotonic()))
            if live:
                multiprocessing.connection.wait(live, timeout)
            else:
                self._stopping.wait(timeout)
            with self._lock:
                if self._stopping.is_set():
                    return
                now = time.monotonic()
                for index, slot in enumerate(self._slots):
                    proc = slot.process
                    if proc is not None and not proc.is_alive():
                        lived = now - slot.started
                        # a worker that ran a while restarts at once; one that keeps dying backs off
                        slot.delay = (self._restart_delay_s if lived >= self._healthy_after_s
                                      else min(slot.delay * 2, self._max_restart_delay_s))
                        wait = slot.delay * (0.75 + random.random() / 2)
                        _log.warning("ingest-%d: pid %s exited with %s after %.1f s; restarting in %.1f s",
                                     index, proc.pid, _exit_text(proc.exitcode), lived, wait)
                        proc.close()
                        slot.process, slot.restart_at = None, now + wait
                    elif slot.restart_at is not None and now >= slot.restart_at:
                        slot.restarts += 1
                        self._spawn(index)

    def stop(self) -> None:
        """SIGTERM every worker, wait for them to finish their batches, kill what is left."""
        self._stopping.set()
        if self._monitor is not None:
            self._monitor.join()
        with self._lock:
            procs = [s.process for s in self._slots if s.process is not None]
            for slot in self._slots:
                slot.process = None
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                _log.error("%s: did not stop within %.0f s; killed", proc.name, self._stop_timeout_s)
                proc.kill()
                proc.join(5)
            proc.close()

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def run_workers(count: int, target: Callable[[int], object], *, restart_delay_s: float = 0.5,
                max_restart_delay_s: float = 30.0, stop_timeout_s: float = 20.0,
                log_level: int = logging.INFO) -> int:
    """Run ``count`` workers until SIGINT or SIGTERM; restart any that dies. Returns an exit code.

    ``target(index)`` runs in a spawned process (typically it calls ``run_worker``). Call from the
    main thread.
    """
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        _log.info("received %s; stopping %d ingest worker(s)", signal.Signals(signum).name, count)
        stop.set()

    with _signals(on_signal), Supervisor(count, target, restart_delay_s=restart_delay_s,
                                         max_restart_delay_s=max_restart_delay_s,
                                         stop_timeout_s=stop_timeout_s, log_level=log_level):
        while not stop.wait(0.5):
            pass
    return 0


@contextlib.contextmanager
def _signals(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"code {code}"
