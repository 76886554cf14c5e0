"""A short GIL switch interval while the embedded broker and its commit thread share one process.

The broker's event loop (amqtt) is busy with Python work for every packet; the store commits in
another thread that gives the GIL back at each call into DuckDB. With the interpreter's default
switch interval (5 ms) every one of those hand-backs waits up to 5 ms behind the loop: a
50,000-row DuckDB commit took 87 ms alone and ~400 ms beside a busy thread, and the embedded mode's
throughput was bound by it. With 0.2 ms it went up ~1.6x (bench/ingest.py, embedded rows;
docs/PERFORMANCE.md). The ingest workers do not use it: their loop is far less busy, and in the
same runs a short interval made the Mosquitto + DuckDB worker ~20% slower.

While anyone holds it (``acquire`` until ``release``), the interval is at most ``SWITCH_INTERVAL_S``;
when the last holder leaves, the earlier value comes back (unless someone else changed it meanwhile).
"""

from __future__ import annotations

import sys
import threading

SWITCH_INTERVAL_S = 0.0002

_lock = threading.Lock()
_holders = 0
_saved = 0.0


def acquire() -> None:
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = sys.getswitchinterval()
            if _saved > SWITCH_INTERVAL_S:
                sys.setswitchinterval(SWITCH_INTERVAL_S)
        _holders += 1


def release() -> None:
    global _holders
    with _lock:
        _holders = max(0, _holders - 1)
        if _holders == 0 and _saved > SWITCH_INTERVAL_S and abs(sys.getswitchinterval() - SWITCH_INTERVAL_S) < 1e-6:
            sys.setswitchinterval(_saved)

