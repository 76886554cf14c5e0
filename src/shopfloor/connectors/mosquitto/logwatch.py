"""Count what Mosquitto refused, from its log: bad logins and publishes outside a device's prefix.

The lines, as Mosquitto 2.0.11 writes them (captured from a real broker, see the unit tests)::

    New client connected from 127.0.0.1:55171 as d2 (p2, c1, k30, u'acme.dev2').   notice
    Sending CONNACK to 127.0.0.1 (0, 5)                                               debug
    Client <unknown> disconnected, not authorised.                                    notice
    Denied PUBLISH from d2 (d0, q1, r0, m3, 'shopfloor/v1/...', ... (2 bytes))        debug

* A refused login (wrong secret, unknown or disabled user, no username) is answered with CONNACK 5
  (MQTT 3.1.1) or 135 (MQTT 5) and logged as ``not authorised``. Mosquitto 2.0.11 logs neither
  the username nor the client id of a refused login, only the remote address (on the debug CONNACK
  line just before), so these are counted per address.
* ``Denied PUBLISH`` names the client id; the parser learns client id -> username from the
  ``New client connected`` lines. It is logged at ``debug`` only, so counting denied publishes needs
  ``log_type debug`` (which also logs every accepted message: see docs/mosquitto.md).

Newlines cannot be smuggled into these lines: Mosquitto refuses control characters in client ids
and topics as a protocol error.

``RejectCounter`` is the pure parser (lines in, counts out); ``LogWatch`` tails the file, following
a rename (Mosquitto reopens its log on SIGHUP) or a truncation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_log = logging.getLogger(__name__)

LOGIN_REFUSED = "login_refused"
PUBLISH_DENIED = "publish_denied"
UNKNOWN = "?"

_TIMESTAMP = re.compile(r"^(?:\d{9,}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?): ")
_CONNECTED = re.compile(r"^New client connected from (\S+) as (.+) \(p\d+, c\d+, k\d+(?:, u'(.*)')?\)\.$")
_DENIED_PUBLISH = re.compile(r"^Denied PUBLISH from (.+) \(d\d+, q\d+, r\d+, m\d+, '(.*)', \.\.\. \(\d+ bytes\)\)$")
_CONNACK_REFUSED = re.compile(r"^Sending CONNACK to (\S+) \(\d+, (?:4|5|134|135)\)$")
_LOGIN_REFUSED = re.compile(r"^Client (.+) disconnected, (?:not authorised|bad user ?name or password)\.$")
_MAX_CLIENTS = 100_000  # client id -> username entries kept (oldest dropped first)


@dataclass(frozen=True, slots=True)
class BrokerRejects:
    """What the broker refused, since counting began."""

    login_refused_by_address: dict[str, int]  # remote IP -> refused logins
    publish_denied_by_username: dict[str, int]  # username ("?" when the client id was not seen connecting)
    publish_denied_by_client: dict[str, int]  # client id -> denied publishes

    @property
    def by_kind(self) -> dict[str, int]:
        return {LOGIN_REFUSED: sum(self.login_refused_by_address.values()),
                PUBLISH_DENIED: sum(self.publish_denied_by_username.values())}


class RejectCounter:
    """Feed it Mosquitto log lines, in order; read the counts with ``rejects()``."""

    def __init__(self) -> None:
        self._users: OrderedDict[str, str] = OrderedDict()  # client id -> username
        self._pending_address: str | None = None  # from a refusing CONNACK, for the line that follows
        self._logins: Counter[str] = Counter()
        self._denied_users: Counter[str] = Counter()
        self._denied_clients: Counter[str] = Counter()

    def feed(self, line: str, *, count: bool = True) -> None:
        """Take one line. With ``count=False`` it only learns who is who (used to catch up on old lines)."""
        line = line.rstrip("\r\n")
        ts = _TIMESTAMP.match(line)
        if ts:
            line = line[ts.end():]
        pending, self._pending_address = self._pending_address, None
        if line.startswith("New client connected from "):
            m = _CONNECTED.match(line)
            if m:
                self._learn(m.group(2), m.group(3) or "")
        elif line.startswith("Denied PUBLISH from "):
            m = _DENIED_PUBLISH.match(line)
            if m and count:
                client_id = m.group(1)
                self._denied_clients[client_id] += 1
                self._denied_users[self._users.get(client_id) or UNKNOWN] += 1
        elif line.startswith("Sending CONNACK to "):
            m = _CONNACK_REFUSED.match(line)
            if m:
                self._pending_address = m.group(1)
        elif line.startswith("Client "):
            m = _LOGIN_REFUSED.match(line)
            if m and count:
                self._logins[pending or UNKNOWN] += 1

    def feed_all(self, lines: Iterable[str]) -> RejectCounter:
        for line in lines:
            self.feed(line)
        return self

    def username(self, client_id: str) -> str | None:
        return self._users.get(client_id)

    def rejects(self) -> BrokerRejects:
        return BrokerRejects(dict(self._logins), dict(self._denied_users), dict(self._denied_clients))

    def _learn(self, client_id: str, username: str) -> None:
        self._users[client_id] = username
        self._users.move_to_end(client_id)
        while len(self._users) > _MAX_CLIENTS:
            self._users.popitem(last=False)


def count_rejects(lines: Iterable[str]) -> BrokerRejects:
    """Counts for a whole log (a list of lines, an open file)."""
    return RejectCounter().feed_all(lines).rejects()


class LogWatch:
    """Tails Mosquitto's log file into a ``RejectCounter``.

    With ``from_start=False`` (the default) only lines written after the first ``poll()`` are
    counted; the last ``learn_bytes`` before that are read to learn which client id is which user.
    """

    def __init__(self, path: Path, *, from_start: bool = False, learn_bytes: int = 8 * 1024 * 1024,
                 counter: RejectCounter | None = None) -> None:
        self.path = path
        self.counter = counter or RejectCounter()
        self._from_start = from_start
        self._learn_bytes = learn_bytes
        self._file: BinaryIO | None = None
        self._rest = b""
        self._first_open = True

    def rejects(self) -> BrokerRejects:
        return self.counter.rejects()

    def poll(self) -> int:
        """Read what was appended since the last call; return the number of lines taken."""
        f = self._file or self._open()
        if f is None:
            return 0
        taken = self._drain(f)
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return taken  # rotated away and not yet recreated; keep the old file until it is
        current = os.fstat(f.fileno())
        if (st.st_ino, st.st_dev) != (current.st_ino, current.st_dev):  # replaced: the old one is drained
            self.close()
            f = self._open()
            if f is not None:
                taken += self._drain(f)
        elif st.st_size < f.tell():  # truncated in place (copytruncate)
            f.seek(0)
            self._rest = b""
            taken += self._drain(f)
        return taken

    async def run(self, every_s: float = 1.0) -> None:
        """Poll until cancelled."""
        try:
            while True:
                try:
                    self.poll()
                except OSError as exc:
                    _log.warning("cannot read the Mosquitto log %s: %s", self.path, exc)
                await asyncio.sleep(every_s)
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._rest = b""

    def _open(self) -> BinaryIO | None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - kept open between polls
        except FileNotFoundError:
            return None
        first, self._first_open = self._first_open, False
        if first and not self._from_start:
            size = os.fstat(f.fileno()).st_size
            start = max(0, size - self._learn_bytes)
            f.seek(start)
            lines = f.read(size - start).split(b"\n")
            partial = lines.pop()  # b"" when the file ends with a newline
            whole_line_seen = start == 0 or bool(lines)
            if start > 0:
                lines = lines[1:]  # began mid-line
            for raw in lines:
                self.counter.feed(raw.decode("utf-8", "replace"), count=False)
            f.seek(size - len(partial) if whole_line_seen else size)  # a half-written line is read next
        self._file = f
        self._rest = b""
        return f

    def _drain(self, f: BinaryIO) -> int:
        taken = 0
        while True:
            chunk = f.read(1024 * 1024)
            if not chunk:
                return taken
            *lines, self._rest = (self._rest + chunk).split(b"\n")
            for raw in lines:
                self.counter.feed(raw.decode("utf-8", "replace"))
            taken += len(lines)
