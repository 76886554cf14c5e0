"""``bench/ingest.py --quick`` runs every mode and ceiling end to end and writes its section.

It needs the ``mosquitto`` binary and PostgreSQL (skipped here without them, failing in CI). The
figures of a quick run mean nothing; this only shows that the one command works and writes one row
per figure, with the ratio to its ceiling, into the file it is given, leaving other sections alone.
"""

from __future__ import annotations

import itertools
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
    figures = table(section, "| mode | store | payload | points/s |")
    where = table(section, "| mode | store | payload | busy |")
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
    # where the CPU went: a row per end-to-end figure, the machine's busy share and µs per message
    assert set(where) == {k for k in figures if k[2] != "rows"}, sorted(set(figures) ^ set(where))
    for cells in where.values():
        assert re.fullmatch(r"\d+%", cells[3]), cells
        assert all(re.fullmatch(r"[\d,]+\.\d|—", c) for c in cells[4:]), cells


def table(section: str, header: str) -> dict[tuple[str, str, str], list[str]]:
    """The rows of the Markdown table under ``header``, by (mode, store, payload)."""
    rows = itertools.takewhile(lambda line: line.startswith("| "), section[section.index(header):].splitlines()[2:])
    cells = ([c.strip() for c in line.strip("|").split("|")] for line in rows)
    return {(c[0], c[1], c[2]): c for c in cells}
