"""bench/kpi_formulas.py runs on a small setting and prints its figures (speed is not asserted: the
figures go to docs/PERFORMANCE.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_kpi_formulas_bench_smoke() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "kpi_formulas.py"), "--groups", "700", "--rounds", "1",
                          "--no-docs"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    per_group = re.findall(r"^(.+?): [\d.]+ s, ([\d.]+) µs per group, [\d,]+ groups/s, CPU ([\d.]+) µs per group$",
                           out.stdout, re.M)
    assert [name.split(" ")[0] for name, _, _ in per_group] == ["compute", "cost_breakdown", "combine", "msgpack"]
    assert all(float(us) > 0 and float(cpu) > 0 for _, us, cpu in per_group)
    assert re.search(r"^calendar \+ tariff expansion of the month, 10 requests: [\d.]+ s, CPU [\d.]+ s$",
                     out.stdout, re.M)
    assert "700 groups" in out.stdout
