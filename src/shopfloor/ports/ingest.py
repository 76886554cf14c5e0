"""Ports between connectors and the ingest service, and from services back to the broker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from shopfloor.domain.records import IngestBatch


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A message as a transport received it, before decoding."""

    device: str  # the broker username (or HTTP token name) that sent it
    topic: str
    payload: bytes
    received_us: int
    live: bool = True  # False for back-filled history: stored, but never notified as if it were live


class BatchSink(Protocol):
    async def submit(self, batch: IngestBatch) -> int:
        """Commit an already-resolved batch; return only after the store committed (its sequence)."""
        ...


class MessageSink(Protocol):
    async def submit_messages(self, messages: list[RawMessage]) -> None:
        """Decode, validate and commit; return only after the store committed.

        Never raises for bad input (that becomes dead letters); raises ``StoreUnavailable`` when
        nothing could be committed, in which case the transport must not acknowledge.
        """
        ...


class DeviceAccess(Protocol):
    """What a broker asks about a connecting or publishing device."""

    def authenticate(self, username: str, password: str) -> bool: ...

    def publish_prefixes(self, username: str) -> tuple[str, ...]:
        """Topic prefixes the device may publish (and subscribe) under; empty if none."""
        ...

    def connection_changed(self, username: str, connected: bool) -> None: ...


class BrokerControl(Protocol):
    """What services may ask of a running broker."""

    async def disconnect_client(self, username: str) -> int:
        """Cut the live sessions of ``username``; return how many were cut."""
        ...

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None: ...
