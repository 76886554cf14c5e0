"""The ingest workers' MQTT 5 connection (connectors/mqtt/link.py) against a real Mosquitto."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import mqtt5
import pytest

from shopfloor.connectors.mqtt.link import LinkRefused, MqttLink
from shopfloor.domain.credentials import hash_secret
from tests.integration.test_ingest_workers import Mosquitto, _mosquitto_binary, broker

__all__ = ["broker"]  # the fixture, imported for these tests

Got = list[tuple[str, bytes, int, int, bool]]


async def _open(port: int, client_id: str, **kw: object) -> MqttLink:
    link, _ = await MqttLink.open("127.0.0.1", port, client_id=client_id, on_publish=lambda *_: None, **kw)  # type: ignore[arg-type]
    return link


class _Got(list[tuple[str, bytes, int, int, bool]]):
    """Deliveries, with an event set once ``want`` of them arrived."""

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.enough = asyncio.Event()

    def __call__(self, *delivery: object) -> None:
        self.append(delivery)  # type: ignore[arg-type]
        if len(self) >= self.want:
            self.enough.set()

    async def wait(self) -> None:
        async with asyncio.timeout(10):
            await self.enough.wait()


def test_publish_subscribe_ack_and_redelivery(broker: Mosquitto) -> None:
    """QoS 1 deliveries arrive in order with packet ids; what is acknowledged is not delivered again
    to the persistent session, what is not comes again with the DUP flag."""

    async def main() -> None:
        got = _Got(300)
        sub, _ = await MqttLink.open("127.0.0.1", broker.port, client_id="link-sub", on_publish=got,
                                     clean_start=True, session_expiry_s=300)
        assert await sub.subscribe(["t/#"], qos=1) == [1]
        pub = await _open(broker.port, "link-pub")
        await asyncio.gather(*(pub.publish(f"t/{i % 3}", f"m{i}".encode()) for i in range(300)))
        await got.wait()
        assert [p for _, p, *_ in got] == [f"m{i}".encode() for i in range(300)]
        assert {(q, dup) for _, _, q, _, dup in got} == {(1, False)}
        assert sub.ack(pid for *_, pid, _ in got[:200]) == 200
        await asyncio.sleep(0.2)
        sub.disconnect()
        await sub.closed

        again = _Got(100)
        sub2, present = await MqttLink.open("127.0.0.1", broker.port, client_id="link-sub", on_publish=again,
                                            clean_start=False, session_expiry_s=300)
        assert present
        await again.wait()
        await asyncio.sleep(0.3)
        assert [p for _, p, *_ in again] == [f"m{i}".encode() for i in range(200, 300)]
        assert all(dup for *_, dup in again)
        sub2.ack(pid for *_, pid, _ in again)
        sub2.disconnect(session_expiry_s=0)
        await sub2.closed
        pub.disconnect()
        await pub.closed

    asyncio.run(main())


def test_keepalive_pings_keep_an_idle_link_open(broker: Mosquitto) -> None:
    async def main() -> None:
        link = await _open(broker.port, "link-idle", keepalive_s=1)
        await asyncio.sleep(3.5)  # the broker drops a silent client after 1.5 keep-alive periods
        assert link.is_open and not link.closed.done()
        assert await link.subscribe(["idle/#"]) == [1]
        link.disconnect()
        assert await link.closed is None

    asyncio.run(main())


def test_the_link_closes_when_the_broker_goes(broker: Mosquitto) -> None:
    async def main() -> None:
        link = await _open(broker.port, "link-gone")
        await asyncio.to_thread(broker.stop)
        async with asyncio.timeout(10):
            await link.closed
        assert not link.is_open
        assert link.ack([1, 2]) == 0  # nothing to send on: acks of a gone connection are dropped

    asyncio.run(main())


def test_the_will_is_published_when_the_link_drops_and_no_local_keeps_own_publications_away(
        broker: Mosquitto) -> None:
    async def main() -> None:
        watched = _Got(1)
        watcher, _ = await MqttLink.open("127.0.0.1", broker.port, client_id="link-watch", on_publish=watched)
        assert await watcher.subscribe(["wills/#"], qos=1) == [1]
        will = mqtt5.Will("wills/dev", payload=b"gone", qos=mqtt5.QoS.AT_LEAST_ONCE, retain=True)
        own = _Got(1)
        link, _ = await MqttLink.open("127.0.0.1", broker.port, client_id="link-will", on_publish=own, will=will)
        assert await link.subscribe(["echo/quiet"], qos=1, no_local=True) == [1]
        assert await link.subscribe(["echo/loud"], qos=1) == [1]
        await link.publish("echo/quiet", b"not back")
        await link.publish("echo/loud", b"back")
        await own.wait()
        await asyncio.sleep(0.2)
        assert [(t, p) for t, p, *_ in own] == [("echo/loud", b"back")]  # No Local held the other back
        assert not watched  # a live connection's Will is not sent
        link.abort()  # dropped without DISCONNECT: the broker publishes the Will
        await watched.wait()
        assert [(t, p, q) for t, p, q, *_ in watched] == [("wills/dev", b"gone", 1)]
        watcher.disconnect()

        # a clean DISCONNECT sends no Will
        calm = _Got(1)
        watcher, _ = await MqttLink.open("127.0.0.1", broker.port, client_id="link-watch2", on_publish=calm)
        assert await watcher.subscribe(["wills/other"], qos=1) == [1]
        link, _ = await MqttLink.open("127.0.0.1", broker.port, client_id="link-calm", on_publish=own,
                                      will=mqtt5.Will("wills/other", payload=b"gone", qos=mqtt5.QoS.AT_LEAST_ONCE))
        link.disconnect()
        await asyncio.sleep(0.3)
        assert not calm
        watcher.disconnect()

    asyncio.run(main())


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Mosquitto]:
    binary = _mosquitto_binary()
    assert binary is not None, "the broker fixture skips without mosquitto"
    passwd = tmp_path / "passwd"
    passwd.write_text(f"dev:{hash_secret('right')}\n")
    m = Mosquitto(binary, tmp_path)
    text = m.conf.read_text().replace("allow_anonymous true", f"allow_anonymous false\npassword_file {passwd}")
    m.conf.write_text(text)
    if os.geteuid() == 0:
        os.chmod(passwd, 0o600)
    m.start()
    try:
        yield m
    finally:
        m.stop()


def test_wrong_credentials_are_refused_with_the_reason(broker: Mosquitto, secured: Mosquitto) -> None:
    async def main() -> None:
        with pytest.raises(LinkRefused) as refused:
            await _open(secured.port, "link-bad", username="dev", password="wrong")
        assert refused.value.reason in (mqtt5.ConnAckReasonCode.BAD_USER_NAME_OR_PASSWORD,
                                        mqtt5.ConnAckReasonCode.NOT_AUTHORIZED)
        assert "BAD_USER_NAME_OR_PASSWORD" in str(refused.value) or "NOT_AUTHORIZED" in str(refused.value)
        ok = await _open(secured.port, "link-good", username="dev", password="right")
        ok.disconnect()
        await ok.closed

    asyncio.run(main())


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True


def test_packets_split_anywhere_are_read_whole_and_malformed_input_closes() -> None:
    """Unit: TCP reads cut packets at any byte; each PUBLISH reaches the callback once, whole."""

    async def main() -> None:
        got = _Got(40)
        link = MqttLink(got, keepalive_s=0)
        transport = _Transport()
        link.connection_made(transport)
        stream = b"".join(mqtt5.PublishPacket(f"a/{i}", bytes([i]) * i, qos=mqtt5.QoS(i % 2),
                                              packet_id=(i + 1) if i % 2 else None).write() for i in range(40))
        for cut in (1, 2, 7, 64):
            got.clear()
            for k in range(0, len(stream), cut):
                link.data_received(stream[k:k + cut])
            assert [(t, p, q, pid) for t, p, q, pid, _ in got] == [
                (f"a/{i}", bytes([i]) * i, i % 2, (i + 1) if i % 2 else 0) for i in range(40)]
        assert link.ack([5, 300]) == 2
        assert transport.written[-1] == b"\x40\x02\x00\x05\x40\x02\x01\x2c"
        link.data_received(b"\x30\xff\xff\xff\xff\x7f")  # a remaining length longer than MQTT allows
        assert transport.aborted

    asyncio.run(main())
