"""bench/alarm_pipeline.py runs end to end on a small setting and reports its figures (speed is not
asserted: the figures go to docs/PERFORMANCE.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_alarm_pipeline_bench_smoke() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "alarm_pipeline.py"), "--machines", "10", "--rate", "5000",
                          "--seconds", "1", "--rounds", "3", "--no-docs"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    m = re.search(r"p99 ([\d.]+) ms, max [\d.]+ ms over (\d+) alarms; (\d+)/(\d+) late; .* sustained ([\d,]+) points/s",
                  out.stdout)
    assert m, out.stdout
    assert int(m.group(2)) == 2 * 10  # two spikes per batch, every one seen on the live stream
    assert int(m.group(4)) == 10
