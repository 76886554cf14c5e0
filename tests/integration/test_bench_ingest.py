"""``bench/ingest.py --quick`` runs every mode and ceiling end to end and writes its section.

It needs the ``mosquitto`` binary and PostgreSQL (skipped here without them, failing in CI). The
figures of a quick run mean nothing; this only shows that the one command works and writes one row
per figure, with the ratio to its ceiling, into the file it is given, leaving other sections alone.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_DSN, need, pg_available
from tests.integration.test_ingest_workers import _mosquitto_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_quick_run_writes_a_row_per_figure(tmp_path: Path) -> None:
    need(_mosquitto_binary() is not None, "the mosquitto binary")
    need(pg_available(), f"PostgreSQL at {PG_DSN}")
    doc = tmp_path / "PERFORMANCE.md"
    doc.write_text("# Performance\n\n## Another bench\n\nits own text\n")
    env = {**os.environ, "SHOPFLOOR_TEST_PG": PG_DSN}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "ingest.py"), "--quick", "--doc", str(doc)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=840)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = doc.read_text()
    assert "## Another bench\n\nits own text" in text
    section = text[text.index("## Ingest end to end"):]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| mode")]
    figures = {(cells[0], cells[1], cells[2]): cells for cells in
               ([c.strip() for c in line.strip("|").split("|")] for line in rows)}
    for payload in ("json1", "json50", "spb50"):
        for mode in ("embedded broker in a child process, counting sink (ceiling)",
                     "Mosquitto, bare subscriber (ceiling)", "bare paho → decode → Arrow → DuckDB (ceiling)",
                     "embedded (broker in a child process)", "Mosquitto + 1 ingest process",
                     "the same ceiling, a memory-copying process on the other core",
                     "Mosquitto + 1 ingest worker(s)", "embedded broker in this process, counting sink (ceiling)",
                     "embedded, broker in the same process (mqtt_broker_process = false)"):
            assert any(k[0] == mode and k[2] == payload for k in figures), (mode, payload, section)
    assert ("Mosquitto + 2 ingest worker(s)", "PostgreSQL", "json50") in figures
    for store in ("DuckDB", "PostgreSQL"):
        assert ("store only: historian commit", store, "rows") in figures
    assert ("store only: historian commit + rollup follower in one thread", "DuckDB", "rows") in figures
    for cells in figures.values():
        assert re.fullmatch(r"[\d,]+( \(cut at the deadline\))?", cells[3]), cells
        if cells[4] != "—":
            assert re.fullmatch(r"\d+\.\d\d|—", cells[5]), cells
    assert re.search(r"Measured \d{4}-\d\d-\d\d \d\d:\d\d UTC on .+ cores", section)
