"""A device in its own process: publishes QoS 1 messages and records which ones got a PUBACK.

Message ``i`` goes to ``topics[i % len(topics)]`` as ``{"ts": base_ms + i, "values": {"temperature": i}}``,
so (topic, ts) names it. While running, ``OUT.progress`` holds how many were acknowledged so far;
at the end ``OUT`` holds JSON ``{"acked": [i, ...], "published": n, "seconds": s}``.
The client reconnects by itself and sends unacknowledged messages again (paho keeps them).

    python tests/integration/publisher_proc.py --port 1883 --count 20000 --rate 2000 \
        --topic shopfloor/v1/acme/s/a/l/m1/telemetry --out /tmp/acked.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def payload(i: int, base_ms: int) -> bytes:
    return json.dumps({"ts": base_ms + i, "values": {"temperature": i}}).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=0.0, help="messages per second; 0: as fast as possible")
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--base-ms", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--client-id", default="publisher")
    ap.add_argument("--timeout", type=float, default=120.0, help="give up waiting for PUBACKs after this")
    args = ap.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    connected = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(200)
    client.max_queued_messages_set(0)
    client.reconnect_delay_set(1, 2)
    client.on_connect = lambda *_: connected.set()
    client.connect_async(args.host, args.port, keepalive=10)
    client.loop_start()
    if not connected.wait(15):
        raise SystemExit("publisher: cannot connect")

    topics: list[str] = args.topic
    infos: list[mqtt.MQTTMessageInfo] = []
    progress = args.out.with_suffix(".progress")
    t0 = time.monotonic()
    last_note = 0.0
    for i in range(args.count):
        if stop.is_set():
            break
        infos.append(client.publish(topics[i % len(topics)], payload(i, args.base_ms), qos=1))
        if args.rate and i % 50 == 49:
            ahead = (i + 1) / args.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        now = time.monotonic()
        if now - last_note > 0.2:
            last_note = now
            _note(progress, sum(1 for x in infos if _acked(x)))
    deadline = time.monotonic() + args.timeout
    while not stop.is_set() and time.monotonic() < deadline:
        done = sum(1 for x in infos if _acked(x))
        _note(progress, done)
        if done == len(infos):
            break
        time.sleep(0.1)
    seconds = time.monotonic() - t0
    client.disconnect()
    client.loop_stop()
    acked = [i for i, x in enumerate(infos) if _acked(x)]
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"acked": acked, "published": len(infos), "seconds": seconds}))
    os.replace(tmp, args.out)


def _acked(info: mqtt.MQTTMessageInfo) -> bool:
    """PUBACK received. A message published while disconnected keeps rc NO_CONN (and is_published()
    raises) although paho sends it after reconnecting and marks it published on its PUBACK."""
    try:
        return info.is_published()
    except RuntimeError:
        return bool(info._published)


def _note(path: Path, done: int) -> None:
    tmp = path.with_suffix(".ptmp")
    tmp.write_text(str(done))
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
