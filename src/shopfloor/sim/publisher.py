"""Publish simulated machines over MQTT, one paho client per device, exactly like real devices.

Each enabled device of the plant gets its own connection (username ``{tenant}.{device}`` unless
``username_for`` says otherwise, password from ``credentials``). A device bound to a machine
publishes that machine's topics; a gateway bound to a line (or an area, or a site) publishes for
every machine under it, each on the machine's own topics. Every device sets a Last Will of
``offline`` (QoS 1, retained) on the status topic of its first machine (MQTT allows one will per
connection, so a gateway's will covers only that machine), publishes ``online`` for each of its
machines on connect, and ``offline`` for each of them before a clean DISCONNECT.

Timestamps are wall-clock time. ``speed`` scales the simulated time each tick advances the
machines by (``speed=60`` makes an hour of production per wall minute, stamped in real time, so
ingest never sees future timestamps).

Telemetry is one message per machine per tick, or with ``telemetry_batch=n`` one message per
machine every n ticks holding a list of n records (each with its own ``ts``): the same data at the
same resolution in n times fewer messages. paho costs some 60 µs of CPU per QoS 1 message (publish
plus PUBACK), so 10,000 machines at a 1 s tick want ``telemetry_batch`` of 5 to 10 on two cores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from shopfloor.domain.errors import InvalidInput
from shopfloor.domain.plant import AreaSpec, DeviceSpec, LineSpec, MachineSpec, PlantSpec, SiteSpec
from shopfloor.domain.topics import Kind, asset_prefix
from shopfloor.sim import default_plant
from shopfloor.sim.machine import SimMachine, plant_profiles

log = logging.getLogger(__name__)

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
QOS = 1
_CORK: int | None = getattr(socket, "TCP_CORK", None)  # Linux


@dataclass(slots=True)
class SimStats:
    """Counters of a simulator run. ``acked`` counts PUBACKs, so it trails ``messages``."""

    devices: int = 0
    devices_connected: int = 0
    machines: int = 0
    ticks: int = 0
    overruns: int = 0  # ticks that started late because the previous one took too long
    messages: int = 0  # telemetry, state, count and event messages
    status_messages: int = 0  # online and offline
    points: int = 0  # telemetry values
    acked: int = 0
    dropped: int = 0  # refused by the client (queue full)
    last_tick_s: float = 0.0
    max_tick_s: float = 0.0
    total_tick_s: float = 0.0


class _Machine:
    __slots__ = ("model", "pending", "status_topic", "topics")

    def __init__(self, model: SimMachine, tenant: str) -> None:
        self.model = model
        prefix = asset_prefix(tenant, model.profile.path)
        self.topics = {kind: f"{prefix}/{kind.value}" for kind in Kind}
        self.status_topic = self.topics[Kind.STATUS]
        self.pending: list[Any] = []


class _Link:
    """One device's MQTT connection and the machines it publishes for."""

    def __init__(self, device: str, username: str, machines: list[_Machine]) -> None:
        self.device = device
        self.username = username
        self.machines = machines
        self.connected = threading.Event()
        self.acked = 0
        self.status_messages = 0  # online and offline
        self.last_error: str | None = None
        self.client: mqtt.Client | None = None
        self.retry_at = 0.0
        self.backoff = 1.0
        self.writing = False  # registered for EVENT_WRITE

    def on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                   _properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"connection refused: {reason_code}"
            log.warning("simulated device %s: %s", self.device, self.last_error)
            return
        self.last_error = None
        self.backoff = 1.0
        for m in self.machines:
            client.publish(m.status_topic, b"online", qos=QOS, retain=True)
        self.status_messages += len(self.machines)
        self.connected.set()

    def on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                      _properties: Any) -> None:
        self.connected.clear()
        self.retry_at = time.monotonic() + self.backoff  # a refused login must not retry every second
        self.backoff = min(30.0, self.backoff * 2)
        if reason_code.is_failure:
            self.last_error = f"connection lost ({reason_code})"

    def on_publish(self, _client: mqtt.Client, _userdata: Any, _mid: int, _reason_code: Any,
                   _properties: Any) -> None:
        self.acked += 1


class Simulator:
    """Simulated devices of ``plant`` publishing to the broker at ``host:port``.

    All connections are served by the thread that calls ``run`` (paho's external-loop API and one
    selector), not by a paho thread per device: with hundreds of gateways, per-client threads spend
    the tick fighting over the GIL. ``stats`` and ``wait_connected`` may be called from any thread;
    everything else belongs to the thread that runs the simulator.
    """

    def __init__(self, plant: PlantSpec, tenant: str, credentials: dict[str, str], host: str, port: int, *,
                 username_for: Callable[[str], str] | None = None, speed: float = 1.0, tick_s: float = 1.0,
                 seed: int = 0, telemetry_batch: int = 1, keepalive: int = 30,
                 connect_timeout_s: float = 10.0) -> None:
        if not speed > 0 or not tick_s > 0:
            raise InvalidInput("simulator speed and tick_s must be positive")
        if telemetry_batch < 1:
            raise InvalidInput("telemetry_batch must be at least 1")
        self.tenant = tenant
        self.host, self.port = host, port
        self.speed, self.tick_s = speed, tick_s
        self.telemetry_batch = telemetry_batch
        self.keepalive = keepalive
        self.connect_timeout_s = connect_timeout_s
        self._credentials = credentials
        self._username_for = username_for or (lambda name: f"{tenant}.{name}")
        self.links = self._bind(plant, seed)
        self._stats = SimStats(devices=len(self.links), machines=sum(len(ln.machines) for ln in self.links))
        self._sel: selectors.BaseSelector | None = None
        self._misc_at = 0.0
        self._closing = False
        self._thread: threading.Thread | None = None
        self._stop: threading.Event | None = None

    def _bind(self, plant: PlantSpec, seed: int) -> list[_Link]:
        """Each machine goes to the first enabled device whose asset path contains it."""
        profiles = plant_profiles(plant)
        claimed: set[tuple[str, ...]] = set()
        links = []
        for dev in plant.devices:
            if not dev.enabled:
                continue
            prefixes = [tuple(a.strip("/").split("/")) for a in dev.assets]
            machines = []
            for p in profiles:
                if p.path not in claimed and any(p.path[: len(pre)] == pre for pre in prefixes):
                    claimed.add(p.path)
                    machines.append(_Machine(SimMachine(p, seed), self.tenant))
            if machines:
                links.append(_Link(dev.name, self._username_for(dev.name), machines))
            else:
                log.warning("simulated device %s is bound to no machine; it stays offline", dev.name)
        return links

    # ---- connections (all on the calling thread) --------------------------------------------------
    def connect(self) -> None:
        """Create every device's client and open the connections (CONNACKs arrive in ``serve``)."""
        self._sel = selectors.DefaultSelector()
        self._closing = False
        for link in self.links:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=link.username, userdata=link,
                                 protocol=mqtt.MQTTv311, clean_session=True)
            client.username_pw_set(link.username, self._credentials.get(link.device))
            client.will_set(link.machines[0].status_topic, b"offline", qos=QOS, retain=True)
            client.max_inflight_messages_set(0)  # unlimited: paho's per-PUBACK queue scan is O(in flight)
            client.max_queued_messages_set(10_000 + 100 * len(link.machines) * self.telemetry_batch)
            client.on_connect = link.on_connect
            client.on_disconnect = link.on_disconnect
            client.on_publish = link.on_publish
            client.on_socket_open = self._socket_open
            client.on_socket_close = self._socket_close
            client.connect_timeout = 3.0  # a blocking TCP connect holds up every other device
            client.connect_async(self.host, self.port, self.keepalive)
            link.client = client
            self._open(link, time.monotonic())
        self._update_writes()

    def _socket_open(self, _client: mqtt.Client, link: _Link, sock: Any) -> None:
        if self._sel is not None:
            self._sel.register(sock, selectors.EVENT_READ, link)

    def _socket_close(self, _client: mqtt.Client, _link: _Link, sock: Any) -> None:
        if self._sel is not None:
            self._sel.unregister(sock)

    def _open(self, link: _Link, now: float) -> None:
        if link.client is None:
            return
        link.writing = False
        try:
            link.client.reconnect()
        except OSError as exc:
            link.last_error = f"cannot connect to {self.host}:{self.port}: {exc}"
            link.retry_at = now + link.backoff
            link.backoff = min(30.0, link.backoff * 2)

    def _update_writes(self, links: Iterable[_Link] | None = None) -> None:
        """Watch for writability exactly while a client has bytes the socket did not take."""
        if self._sel is None:
            return
        for link in self.links if links is None else links:
            client = link.client
            sock = client.socket() if client is not None else None
            if client is None or sock is None:
                continue
            want = client.want_write()
            if want != link.writing:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
                self._sel.modify(sock, events, link)
                link.writing = want

    def serve(self, timeout: float) -> None:
        """Read PUBACKs and CONNACKs, finish writes, keep alive and reconnect, for up to ``timeout`` s."""
        if self._sel is None:
            return
        if self._sel.get_map():
            ready = self._sel.select(max(0.0, timeout))
        else:  # nothing connected: epoll would return at once
            ready = []
            time.sleep(max(0.0, min(timeout, 0.2)))
        touched = []
        for key, mask in ready:
            link: _Link = key.data
            client = link.client
            if client is None:
                continue
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()
            touched.append(link)
        self._update_writes(touched)
        now = time.monotonic()
        if now >= self._misc_at:
            self._misc_at = now + 1.0
            for link in self.links:
                if link.client is None:
                    continue
                if link.client.socket() is None:
                    if now >= link.retry_at and not self._closing:
                        self._open(link, now)
                        self._update_writes([link])
                else:
                    link.client.loop_misc()

    def wait_connected(self, timeout: float) -> bool:
        """True when every device is connected within ``timeout`` seconds (any thread may ask)."""
        deadline = time.monotonic() + timeout
        return all(link.connected.wait(max(0.0, deadline - time.monotonic())) for link in self.links)

    def serve_until(self, done: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.serve(min(left, 0.1))
        return True

    def connection_errors(self) -> dict[str, str]:
        return {ln.device: ln.last_error for ln in self.links if ln.last_error}

    def disconnect(self, timeout: float = 5.0) -> None:
        """Flush batched telemetry, publish ``offline`` for every machine, then a clean DISCONNECT."""
        infos: list[mqtt.MQTTMessageInfo] = []
        self._closing = True
        for link in self.links:
            client = link.client
            if client is None or not link.connected.is_set():
                continue
            for m in link.machines:
                if m.pending:
                    infos.append(self._send(client, m.topics[Kind.TELEMETRY], m.pending))
                    self._stats.messages += 1
                    m.pending = []
                infos.append(client.publish(m.status_topic, b"offline", qos=QOS, retain=True))
            link.status_messages += len(link.machines)
        self._update_writes()
        self.serve_until(lambda: all(_settled(i) for i in infos), timeout)
        clients = [ln.client for ln in self.links if ln.client is not None]
        for client in clients:
            client.disconnect()  # paho closes the socket once the DISCONNECT is written
        self._update_writes()
        self.serve_until(lambda: all(c.socket() is None for c in clients), 2.0)
        for link in self.links:
            link.client = None
            link.connected.clear()
        if self._sel is not None:
            self._sel.close()
            self._sel = None

    # ---- ticks ----------------------------------------------------------------------------------
    def tick(self, ts_ms: int, dt_s: float) -> None:
        """Step every machine by ``dt_s`` simulated seconds and publish what it produced."""
        t0 = time.perf_counter()
        st = self._stats
        batch = self.telemetry_batch
        telemetry = Kind.TELEMETRY
        messages = points = 0
        for link in self.links:
            client = link.client
            sock = _cork(client, True)
            for m in link.machines:
                for msg in m.model.step(ts_ms, dt_s):
                    payload = msg.payload
                    if msg.kind is telemetry:
                        points += len(payload["values"])
                        if batch > 1:
                            m.pending.append(payload)
                            if len(m.pending) < batch:
                                continue
                            payload, m.pending = m.pending, []
                    if client is not None:
                        self._send(client, m.topics[msg.kind], payload)
                        messages += 1
            if sock is not None and client is not None and client.socket() is sock:
                _cork(client, False)
        if self._sel is not None:
            self._update_writes()
        elapsed = time.perf_counter() - t0
        st.ticks += 1
        st.messages += messages
        st.points += points
        st.last_tick_s = elapsed
        st.total_tick_s += elapsed
        st.max_tick_s = max(st.max_tick_s, elapsed)

    def _send(self, client: mqtt.Client, topic: str, payload: Any) -> mqtt.MQTTMessageInfo:
        info = client.publish(topic, _encode(payload).encode(), qos=QOS)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            self._stats.dropped += 1
        return info

    def run(self, stop_event: threading.Event) -> None:
        """Connect, tick every ``tick_s`` seconds until ``stop_event`` is set, then disconnect cleanly."""
        self.connect()
        try:
            if not self.serve_until(lambda: all(ln.connected.is_set() for ln in self.links) or
                                     stop_event.is_set(), self.connect_timeout_s):
                log.warning("simulator: %d of %d devices connected after %.0f s; publishing anyway (%s)",
                            sum(ln.connected.is_set() for ln in self.links), len(self.links),
                            self.connect_timeout_s, self.connection_errors() or "no error yet")
            next_at = prev = time.monotonic()
            dt = self.tick_s * self.speed
            while not stop_event.is_set():
                self.tick(int(time.time() * 1000), dt)
                next_at += self.tick_s
                if next_at < time.monotonic():
                    self._stats.overruns += 1
                    next_at = time.monotonic()
                self.serve(0)
                while not stop_event.is_set() and (left := next_at - time.monotonic()) > 0:
                    self.serve(min(left, 0.05))
                now = time.monotonic()
                dt, prev = (now - prev) * self.speed, now
        finally:
            self.disconnect()

    def start(self) -> None:
        """Run in a background thread until ``stop()``."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="shopfloor-sim",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is None or self._stop is None:
            return
        self._stop.set()
        self._thread.join(timeout)
        self._thread = None

    def stats(self) -> SimStats:
        """A snapshot of the counters (any thread may ask)."""
        st = self._stats
        st.acked = sum(ln.acked for ln in self.links)
        st.status_messages = sum(ln.status_messages for ln in self.links)
        st.devices_connected = sum(ln.connected.is_set() for ln in self.links)
        return dataclasses.replace(st)

    def machines(self) -> Iterable[tuple[str, SimMachine]]:
        """(device name, model) for every simulated machine."""
        for link in self.links:
            for m in link.machines:
                yield link.device, m.model

    def publishers(self) -> list[tuple[str, SimMachine]]:
        """(MQTT username, model) for every simulated machine: the models ``run`` will step. Models
        stepped before ``start`` (e.g. through past history, see ``sim.history``) continue from there."""
        return [(link.username, m.model) for link in self.links for m in link.machines]


def _cork(client: mqtt.Client | None, on: bool) -> socket.socket | None:
    """Hold back (or release) small writes, so a device's tick leaves in few TCP segments, not one
    per message: on loopback each segment costs a broker wake-up. Linux only; a no-op elsewhere."""
    sock = client.socket() if client is not None else None
    if _CORK is None or not isinstance(sock, socket.socket):
        return None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _CORK, 1 if on else 0)
    except OSError:
        return None
    return sock


def _settled(info: mqtt.MQTTMessageInfo) -> bool:
    """Acknowledged, or never going to be (not queued, connection lost)."""
    if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
        return True
    return info.is_published()


def scaled_plant(machines: int, gateways: int, *, site: str = "megafab", timezone: str = "Asia/Shanghai",
                 lines_per_area: int = 20, base: PlantSpec | None = None) -> PlantSpec:
    """A synthetic plant of ``machines`` machines behind at most ``gateways`` gateways.

    Each gateway is bound to one line; every line holds ``ceil(machines / gateways)`` machines (the
    last one fewer), typed in turn with the asset types of ``base`` (the default plant).
    """
    if machines < 1 or gateways < 1 or lines_per_area < 1:
        raise InvalidInput("scaled_plant needs at least one machine, one gateway and one line per area")
    types = (base or default_plant()).asset_types
    per_line = math.ceil(machines / gateways)
    n_lines = math.ceil(machines / per_line)
    width = max(4, len(str(machines)))
    areas: list[AreaSpec] = []
    devices: list[DeviceSpec] = []
    index = 0
    for li in range(n_lines):
        if li % lines_per_area == 0:
            areas.append(AreaSpec(name=f"area-{li // lines_per_area + 1:02d}"))
        line = LineSpec(name=f"line-{li + 1:04d}")
        for _ in range(min(per_line, machines - index)):
            type_name = types[index % len(types)].name if types else None
            line.machines.append(MachineSpec(name=f"m{index + 1:0{width}d}", type=type_name))
            index += 1
        areas[-1].lines.append(line)
        devices.append(DeviceSpec(name=f"gw-{line.name}", assets=[f"{site}/{areas[-1].name}/{line.name}"],
                                  gateway=True))
    return PlantSpec(asset_types=list(types), sites=[SiteSpec(name=site, timezone=timezone, areas=areas)],
                     devices=devices)
