"""The embedded broker's child process: what happens when one side of the pair dies.

The behaviour shared with the in-process broker (acknowledging after commit, access, Wills,
commands) runs for both in ``test_embedded_broker.py``; here the child is killed, and the parent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator

import pytest

from shopfloor.connectors.mqtt.broker_process import BrokerProcess
from shopfloor.testing.recording_sink import RecordingSink
from tests.integration.test_embedded_broker import HOST, M1, USERS, Device, FakeAccess, eventually

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited, whoever reaps it
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
async def broker() -> AsyncIterator[tuple[BrokerProcess, RecordingSink, FakeAccess]]:
    sink, access = RecordingSink(), FakeAccess()
    made = BrokerProcess(HOST, 0, sink, access)
    await made.start()
    try:
        yield made, sink, access
    finally:
        await made.stop()


async def test_a_killed_child_is_replaced_on_the_same_port_and_devices_send_again(
        broker: tuple[BrokerProcess, RecordingSink, FakeAccess]) -> None:
    proc, sink, access = broker
    port, first_pid = proc.bound_port, proc.pid
    assert first_pid is not None and first_pid != os.getpid()
    dev = Device(port, "dev1", USERS["dev1"][0])
    try:
        await dev.connect()
        assert await eventually(lambda: ("dev1", True) in access.events)
        sink.gate.clear()  # commits hang: what the device sends now is not acknowledged
        mid = dev.publish(f"{M1}/telemetry", b"in flight")
        assert await eventually(lambda: len(sink.arrivals) == 1)
        os.kill(first_pid, signal.SIGKILL)
        assert await eventually(lambda: proc.restarts == 1, within=15), "no new broker process"
        assert proc.pid != first_pid and proc.bound_port == port and proc.running
        assert ("dev1", False) in access.events  # the dead child's connections are reported gone
        sink.gate.set()
        # paho reconnects and sends the unacknowledged PUBLISH again; it is committed and acknowledged
        assert await eventually(lambda: mid in dev.acked_at, within=15)
        assert b"in flight" in sink.payloads()
    finally:
        await asyncio.to_thread(dev.close)


def test_the_child_ends_when_its_parent_dies() -> None:
    """A parent killed without a word: the child sees its socket close, stops acknowledging, exits."""
    script = textwrap.dedent(f"""
        import asyncio, sys, time
        from shopfloor.connectors.mqtt.broker_process import BrokerProcess
        from shopfloor.testing.recording_sink import RecordingSink
        from tests.integration.test_embedded_broker import FakeAccess

        async def main():
            broker = BrokerProcess({HOST!r}, 0, RecordingSink(), FakeAccess())
            await broker.start()
            print(broker.pid, flush=True)
            await asyncio.sleep(60)

        asyncio.run(main())
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 15
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the broker process outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()


async def test_stop_ends_the_child(broker: tuple[BrokerProcess, RecordingSink, FakeAccess]) -> None:
    proc, _, _ = broker
    pid = proc.pid
    assert pid is not None and _alive(pid)
    await proc.stop()
    assert not proc.running and not _alive(pid)
    await proc.stop()  # twice is fine
