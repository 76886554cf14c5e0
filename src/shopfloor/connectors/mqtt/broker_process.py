"""The embedded MQTT broker in a child process of its own, feeding this process's ingest.

amqtt is pure Python and busy for every packet. In the platform's process it shares one GIL with
decoding, commits, the rollup follower, rules and the HTTP API, so each slows the other (see
docs/PERFORMANCE.md, "Ingest end to end"). ``BrokerProcess`` runs the same ``EmbeddedBroker`` in a
child process, on a core of its own, and keeps everything else here:

* **Devices and topics** are checked here: at each CONNECT the child asks this process for the
  verdict (``DeviceAccess``), and reports connections opening and closing.
* **No loss.** The child hands the messages accepted in one loop turn to this process in one frame;
  ``sink.submit_messages`` decodes and commits them here, and only when it has returned does the
  child acknowledge them (QoS 1 PUBACK, QoS 2 PUBREC). If the sink fails, nothing is acknowledged.
  If this process goes away, the child stops acknowledging and exits; if the child dies, this
  process starts a new one on the same port and devices send again what was not acknowledged.
* **Commands down** (``publish``) and cutting a device's sessions (``disconnect_client``) are
  requests to the child, answered when done.

The two processes talk over a socket pair: frames of a 4-byte length and a msgpack array whose
first item says what it is.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import logging
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from shopfloor.connectors.mqtt.embedded_broker import (
    DEFAULT_MAX_PAYLOAD,
    BrokerStartError,
    EmbeddedBroker,
    MqttPortInUse,
)
from shopfloor.ports.ingest import DeviceAccess, MessageSink, RawMessage

# frame kinds; a request carries an id its reply repeats
_READY, _FAILED, _SUBMIT, _CHECK, _CONNECTION = 1, 2, 3, 4, 5  # child -> parent
_PUBLISH, _CUT, _STOP = 11, 12, 13  # parent -> child
_REPLY, _ERROR = 21, 22  # either way
_START_TIMEOUT_S = 30.0
_STOP_TIMEOUT_S = 15.0
_RESTART_DELAY_S = (0.5, 1.0, 2.0, 5.0)
_STABLE_S = 60.0  # a child that ran this long resets the restart delay
_GC_THRESHOLD = 50_000  # new container objects between the child's young-generation collections (see main)

_log = logging.getLogger(__name__)
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


class ChildGone(BrokerStartError):
    """The broker's child process ended (or never answered) while a request was open."""


class _Channel:
    """Frames over one stream: sends, requests awaiting their reply, and a read loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 handle: Callable[[list[Any]], None]) -> None:
        self._reader = reader
        self._writer = writer
        self._handle = handle
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.closed = False

    def send(self, *frame: Any) -> None:
        if self.closed:
            raise ChildGone("the broker channel is closed")
        body = _encode(frame)
        self._writer.write(len(body).to_bytes(4, "big") + body)

    async def request(self, kind: int, *args: Any) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            self.send(kind, ident, *args)
            return await future
        finally:
            self._pending.pop(ident, None)

    def reply(self, ident: int, value: Any) -> None:
        with contextlib.suppress(ChildGone):
            self.send(_REPLY, ident, value)

    def fail(self, ident: int, reason: str) -> None:
        with contextlib.suppress(ChildGone):
            self.send(_ERROR, ident, reason)

    async def run(self) -> None:
        """Read frames until the other side closes; then fail every open request."""
        read = self._reader.readexactly
        try:
            while True:
                size = int.from_bytes(await read(4), "big")
                frame: list[Any] = _decode(await read(size))
                kind = frame[0]
                if kind in (_REPLY, _ERROR):
                    future = self._pending.pop(frame[1], None)
                    if future is not None and not future.done():
                        if kind == _REPLY:
                            future.set_result(frame[2])
                        else:
                            future.set_exception(ChildGone(frame[2]))
                else:
                    self._handle(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ChildGone("the broker process ended"))
        self._pending.clear()
        with contextlib.suppress(Exception):
            self._writer.close()


class BrokerProcess:
    """``EmbeddedBroker`` in a child process; implements ``BrokerControl`` like it.

    ``sink`` and ``access`` live in this process. ``access.connection_changed`` is called as the
    child reports connections; when the child is restarted every user it had is reported gone.
    """

    def __init__(self, host: str, port: int, sink: MessageSink, access: DeviceAccess, *,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.host = host
        self.port = port
        self.max_payload = max_payload
        self._sink = sink
        self._access = access
        self._proc: asyncio.subprocess.Process | None = None
        self._channel: _Channel | None = None
        self._bound = 0
        self._started: asyncio.Future[int] | None = None
        self._connected: set[str] = set()
        self._work: set[asyncio.Task[Any]] = set()
        self._group: list[tuple[_Channel, int, list[RawMessage]]] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    # --- lifecycle ---

    @property
    def running(self) -> bool:
        return self._channel is not None and not self._channel.closed

    @property
    def bound_port(self) -> int:
        if not self._bound:
            raise BrokerStartError("the MQTT broker is not running")
        return self._bound

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        if self._supervisor is not None:
            return
        self._stopping = False
        self._bound = await self._spawn(self.port)
        self._supervisor = asyncio.ensure_future(self._supervise())
        _log.info("embedded MQTT broker (pid %s) listening on %s:%d", self.pid, self.host, self._bound)

    async def _spawn(self, port: int) -> int:
        mine, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__, "--fd", str(theirs.fileno()), "--host", self.host,
                "--port", str(port), "--max-payload", str(self.max_payload), "--log-level",
                str(logging.getLogger("amqtt").getEffectiveLevel()), pass_fds=(theirs.fileno(),))
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=mine)
        loop = asyncio.get_running_loop()
        self._started = loop.create_future()
        channel = self._channel = _Channel(reader, writer, lambda frame: self._on_frame(channel, frame))
        reading = asyncio.ensure_future(channel.run())
        self._work.add(reading)
        reading.add_done_callback(self._work.discard)
        try:
            return await asyncio.wait_for(asyncio.shield(self._started), _START_TIMEOUT_S)
        except BaseException:
            channel.close()
            await self._end_child()
            raise
        finally:
            self._started = None

    async def _supervise(self) -> None:
        """Start a new child, on the same port, whenever one ends unasked (waiting longer after
        each failure in a row; a child that ran for a minute resets that)."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            proc, born = self._proc, loop.time()
            if proc is not None:
                code = await proc.wait()
                if self._channel is not None:
                    self._channel.close()
                self._forget_connections()
                if self._stopping:
                    return
                _log.error("the embedded MQTT broker process ended (exit %s); starting a new one", code)
                if loop.time() - born > _STABLE_S:
                    attempt = 0
            await asyncio.sleep(_RESTART_DELAY_S[min(attempt, len(_RESTART_DELAY_S) - 1)])
            attempt += 1
            if self._stopping:
                return
            try:
                await self._spawn(self._bound)
                self.restarts += 1
            except Exception as exc:
                self._proc = None
                _log.error("could not restart the embedded MQTT broker: %s", exc)

    async def stop(self) -> None:
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is None:
            return
        self._stopping = True
        channel = self._channel
        if channel is not None and not channel.closed:
            with contextlib.suppress(ChildGone, TimeoutError):  # then _end_child kills it
                await asyncio.wait_for(channel.request(_STOP), _STOP_TIMEOUT_S)
        await self._end_child()
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        if channel is not None:
            channel.close()
        if self._work:
            await asyncio.wait(set(self._work), timeout=_STOP_TIMEOUT_S)
        self._forget_connections()
        self._bound = 0

    async def _end_child(self) -> None:
        proc = self._proc
        if proc is None:
            return
        try:
            await asyncio.wait_for(proc.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            _log.warning("the embedded MQTT broker process %s did not stop; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _forget_connections(self) -> None:
        for username in list(self._connected):
            self._notify(username, False)

    # --- BrokerControl ---

    async def disconnect_client(self, username: str) -> int:
        return int(await self._require_channel().request(_CUT, username))

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        await self._require_channel().request(_PUBLISH, topic, payload, qos, retain)

    def _require_channel(self) -> _Channel:
        if self._channel is None or self._channel.closed:
            raise BrokerStartError("the MQTT broker is not running")
        return self._channel

    # --- frames from the child ---

    def _on_frame(self, channel: _Channel, frame: list[Any]) -> None:
        kind = frame[0]
        if kind == _SUBMIT:
            if not self._group:
                asyncio.get_running_loop().call_soon(self._flush_group)
            self._group.append((channel, frame[1], [RawMessage(*m) for m in frame[2]]))
        elif kind == _CHECK:
            self._track(self._check(channel, frame[1], frame[2], frame[3]))
        elif kind == _CONNECTION:
            self._notify(frame[1], frame[2])
        elif kind == _READY:
            if self._started is not None and not self._started.done():
                self._started.set_result(frame[1])
        elif kind == _FAILED:
            if self._started is not None and not self._started.done():
                error = MqttPortInUse if frame[1] == "in-use" else BrokerStartError
                self._started.set_exception(error(frame[2]))
        else:
            _log.warning("unknown frame %r from the broker process", kind)

    def _flush_group(self) -> None:
        """Frames that arrived together go to the sink in one call: one decode pass, one commit."""
        group, self._group = self._group, []
        if group:
            self._track(self._submit(group))

    async def _submit(self, group: list[tuple[_Channel, int, list[RawMessage]]]) -> None:
        messages = group[0][2] if len(group) == 1 else [m for _, _, batch in group for m in batch]
        try:
            await self._sink.submit_messages(messages)
        except Exception as exc:
            _log.warning("sink did not take %d messages from the broker process: %s", len(messages), exc)
            for channel, ident, _ in group:
                channel.fail(ident, str(exc) or type(exc).__name__)
            return
        for channel, ident, _ in group:
            channel.reply(ident, None)

    async def _check(self, channel: _Channel, ident: int, username: str, password: str) -> None:
        try:
            granted = await asyncio.to_thread(self._credentials, username, password)
        except Exception as exc:
            _log.exception("device access check failed for %r", username)
            channel.fail(ident, str(exc) or type(exc).__name__)
            return
        channel.reply(ident, granted)

    def _credentials(self, username: str, password: str) -> list[str] | None:
        if not self._access.authenticate(username, password):
            return None
        return list(self._access.publish_prefixes(username))

    def _notify(self, username: str, connected: bool) -> None:
        if connected:
            self._connected.add(username)
        else:
            self._connected.discard(username)
        try:
            self._access.connection_changed(username, connected)
        except Exception:
            _log.exception("connection_changed(%r, %s) failed", username, connected)

    def _track(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._work.add(task)
        task.add_done_callback(self._work.discard)


# --- the child ---


class _ParentSink:
    """The child's sink: the parent's ``submit_messages``, returning when the parent has committed."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    async def submit_messages(self, messages: list[RawMessage]) -> None:
        await self.channel.request(_SUBMIT, [(m.device, m.topic, m.payload, m.received_us, m.live)
                                             for m in messages])


class _ParentAccess:
    """The child's ``DeviceAccess``: connections are reported; credentials go through ``_ChildBroker``."""

    def __init__(self, channel: _Channel) -> None:
        self.channel = channel

    def authenticate(self, username: str, password: str) -> bool:
        raise NotImplementedError("the child asks its parent asynchronously")

    def publish_prefixes(self, username: str) -> tuple[str, ...]:
        raise NotImplementedError("the child asks its parent asynchronously")

    def connection_changed(self, username: str, connected: bool) -> None:
        with contextlib.suppress(ChildGone):
            self.channel.send(_CONNECTION, username, connected)


class _ChildBroker(EmbeddedBroker):
    def __init__(self, channel: _Channel, host: str, port: int, max_payload: int) -> None:
        super().__init__(host, port, _ParentSink(channel), _ParentAccess(channel), max_payload=max_payload)
        self.channel = channel

    async def _credentials(self, username: str, password: str) -> tuple[str, ...] | None:
        granted = await self.channel.request(_CHECK, username, password)
        return None if granted is None else tuple(granted)


async def _child(fd: int, host: str, port: int, max_payload: int) -> int:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    stop = asyncio.Event()
    stop_ids: list[int] = []
    broker: _ChildBroker | None = None
    tasks: set[asyncio.Task[None]] = set()

    async def answer(ident: int, work: Any) -> None:
        try:
            channel.reply(ident, await work)
        except Exception as exc:
            channel.fail(ident, str(exc) or type(exc).__name__)

    def handle(frame: list[Any]) -> None:
        kind = frame[0]
        if kind == _STOP:
            stop_ids.append(frame[1])
            stop.set()
        elif broker is None:
            channel.fail(frame[1], "the broker is not running")
        elif kind == _PUBLISH:
            _, ident, topic, payload, qos, retain = frame
            work: Any = broker.publish(topic, payload, qos, retain)
            task = asyncio.ensure_future(answer(ident, work))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif kind == _CUT:
            task = asyncio.ensure_future(answer(frame[1], broker.disconnect_client(frame[2])))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    channel = _Channel(reader, writer, handle)
    reading = asyncio.ensure_future(channel.run())
    reading.add_done_callback(lambda _: stop.set())  # the parent is gone: stop acknowledging, end
    broker = _ChildBroker(channel, host, port, max_payload)
    try:
        await broker.start()
    except BrokerStartError as exc:
        channel.send(_FAILED, "in-use" if isinstance(exc, MqttPortInUse) else "other", exc.message)
        await writer.drain()
        return 1
    channel.send(_READY, broker.bound_port)
    gc.freeze()  # what start-up made lives as long as the process: no collection looks at it again
    await stop.wait()
    await broker.stop()
    if tasks:
        await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_S)
    for ident in stop_ids:
        channel.reply(ident, None)
    with contextlib.suppress(Exception):
        await writer.drain()
    channel.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The embedded MQTT broker's child process (started by BrokerProcess).")
    ap.add_argument("--fd", type=int, required=True, help="the socket to the parent process")
    ap.add_argument("--host", required=True, help="address to listen on")
    ap.add_argument("--port", type=int, required=True, help="port to listen on (0: any free one)")
    ap.add_argument("--max-payload", type=int, default=DEFAULT_MAX_PAYLOAD, help="largest payload broadcast")
    ap.add_argument("--log-level", type=int, default=logging.WARNING, help="amqtt's log level")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s broker[%(process)d] %(levelname)s %(name)s: "
                        "%(message)s")
    logging.getLogger("amqtt").setLevel(args.log_level)
    # amqtt makes a few dozen objects per message, and every message waits in flight until the
    # parent has committed it: at Python's default (a collection every 700 new objects) the child
    # spent a fifth of its time in the garbage collector with 30 ms commits (measured: json50 ceiling
    # 830k points/s, with a 30 ms sink 650k; with this threshold 1.04M and 1.06M). Reference counting
    # frees nearly all of them anyway; the collector is for cycles, which can wait for 50,000.
    gc.set_threshold(_GC_THRESHOLD, 10, 10)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us
    return asyncio.run(_child(args.fd, args.host, args.port, args.max_payload))


if __name__ == "__main__":
    sys.exit(main())
