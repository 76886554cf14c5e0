"""Notifications of live alarm transitions: the live stream (server-sent events for the dashboard)
and signed webhooks with retries.

Only journal entries that are ``live`` and not ``hidden`` notify anyone: replayed or back-filled
history and shelved, suppressed or out-of-service alarms are recorded, never announced.

Webhooks: the service queues one delivery per entry and subscription in the same transaction that
stores the entry (an outbox), so a crash between the two cannot lose or invent a notification;
``WebhookDispatcher`` sends what is due. Each POST carries::

    X-Shopfloor-Timestamp: <unix seconds>
    X-Shopfloor-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>

A failed delivery (no answer, or not 2xx) is tried again after ``base_delay_s * 2**attempts``
(at most ``max_delay_s``); after ``max_attempts`` it is dead-lettered with its last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import msgspec

from shopfloor.domain.alarms.lifecycle import priority_rank
from shopfloor.domain.alarms.model import Alarm, JournalEntry
from shopfloor.ports.alarms import AlarmStore, Delivery, NewDelivery, Subscription
from shopfloor.ports.clock import Clock
from shopfloor.ports.notify import DeliveryError, WebhookSender

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Shopfloor-Signature"
TIMESTAMP_HEADER = "X-Shopfloor-Timestamp"


class Notice(msgspec.Struct, kw_only=True):
    """What a webhook and the live stream receive for one transition."""

    event: str  # the journal action: activate, clear, acknowledge, shelve, ...
    entry: JournalEntry
    alarm: Alarm


def notifies(entry: JournalEntry) -> bool:
    return entry.live and not entry.hidden


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (docs/alarms-api.md shows it without shopfloor installed)."""
    if not timestamp.isdigit():
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def deliveries_for(notices: list[Notice], subscriptions: list[Subscription], now_us: int) -> list[NewDelivery]:
    out: list[NewDelivery] = []
    for n in notices:
        rank = priority_rank(n.alarm.priority)
        body = msgspec.json.encode(n).decode()
        for s in subscriptions:
            if s.enabled and s.tenant_id == n.alarm.tenant_id and rank >= priority_rank(s.min_priority):
                out.append(NewDelivery(subscription_id=s.id, tenant_id=s.tenant_id, body=body, due_us=now_us))
    return out


class AlarmHub:
    """Fans live notices out to stream subscribers (each with a bounded queue: a slow reader loses
    the oldest notices, and is told so, rather than slowing evaluation)."""

    def __init__(self, queue_size: int = 1000) -> None:
        self._subs: set[tuple[int | None, asyncio.Queue[Notice | None]]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.queue_size = queue_size

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def publish(self, notices: list[Notice]) -> None:
        """Thread-safe: hand notices to the subscribers on the event loop."""
        if not notices or self._loop is None or not self._subs:
            return
        self._loop.call_soon_threadsafe(self._deliver, notices)

    def _deliver(self, notices: list[Notice]) -> None:
        for tenant, q in list(self._subs):
            for n in notices:
                if tenant is not None and n.alarm.tenant_id != tenant:
                    continue
                if q.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        q.get_nowait()
                q.put_nowait(n)

    @contextlib.asynccontextmanager
    async def subscribe(self, tenant_id: int | None) -> AsyncIterator[asyncio.Queue[Notice | None]]:
        """Notices of one tenant (every tenant with None) while the block runs."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        q: asyncio.Queue[Notice | None] = asyncio.Queue(self.queue_size)
        key = (tenant_id, q)
        self._subs.add(key)
        try:
            yield q
        finally:
            self._subs.discard(key)

    def close(self) -> None:
        """End every stream (shutdown)."""
        for _, q in list(self._subs):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)

    @property
    def subscribers(self) -> int:
        return len(self._subs)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 600.0

    def delay_us(self, attempts: int) -> int:
        """The wait after the ``attempts``-th failed attempt (1, 2, ...)."""
        return int(min(self.max_delay_s, self.base_delay_s * 2 ** (attempts - 1)) * 1_000_000)


class WebhookDispatcher:
    """Sends due deliveries from the store's outbox; run ``run(stop)`` as a task."""

    def __init__(self, store: AlarmStore, sender: WebhookSender, clock: Clock, executor: Executor,
                 policy: RetryPolicy | None = None, poll_s: float = 0.5) -> None:
        self._store = store
        self._sender = sender
        self._clock = clock
        self._executor = executor
        self.policy = policy or RetryPolicy()
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        self._secrets: Callable[[], dict[int, Subscription]] = lambda: {
            s.id: s for s in store.subscriptions()}

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.send_due()
            except Exception:
                log.exception("webhook dispatch failed; trying again")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def send_due(self) -> int:
        """Attempt every delivery due now; return how many were attempted."""
        loop = asyncio.get_running_loop()
        due: list[Delivery] = await loop.run_in_executor(self._executor, self._store.due_deliveries,
                                                         self._clock.now_us(), 100)
        if not due:
            return 0
        hooks = await loop.run_in_executor(self._executor, self._secrets)
        await asyncio.gather(*(self._attempt(d, hooks.get(d.subscription_id)) for d in due))
        return len(due)

    async def _attempt(self, d: Delivery, hook: Subscription | None) -> None:
        loop = asyncio.get_running_loop()
        if hook is None:  # the subscription went away meanwhile
            await loop.run_in_executor(self._executor, self._store.delivery_failed, d.id, "subscription deleted", None)
            return
        body = d.body.encode()
        ts = self._clock.now_us() // 1_000_000
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
                   SIGNATURE_HEADER: sign(hook.secret, ts, body), "X-Shopfloor-Delivery": str(d.id)}
        try:
            await self._sender.post(hook.url, body, headers)
        except DeliveryError as exc:
            attempts = d.attempts + 1
            retry = None if attempts >= self.policy.max_attempts else (
                self._clock.now_us() + self.policy.delay_us(attempts))
            if retry is None:
                log.warning("webhook %d: giving up delivery %d after %d attempts: %s", hook.id, d.id, attempts, exc)
            await loop.run_in_executor(self._executor, self._store.delivery_failed, d.id, str(exc), retry)
            return
        await loop.run_in_executor(self._executor, self._store.delivery_succeeded, d.id)
