"""The demo started exactly as the README's first command, read through the API."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _readme_first_command() -> str:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README has no bash block"
    first = block.group(1).strip().splitlines()[0]
    return first.split("#")[0].strip()


class Demo:
    def __init__(self, data_dir: Path) -> None:
        self.http_port, self.mqtt_port = free_port(), free_port()
        env = dict(os.environ, SHOPFLOOR_HTTP_PORT=str(self.http_port), SHOPFLOOR_MQTT_PORT=str(self.mqtt_port),
                   SHOPFLOOR_DATA_DIR=str(data_dir), COLUMNS="200")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(shlex.split(_readme_first_command()), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self.token: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"(sft_[A-Za-z0-9_-]+)", line)
            if m and "demo API token" in line:
                self.token = m.group(1)

    def wait_token(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while self.token is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("demo did not print a token:\n" + "".join(self.lines[-40:]))
            time.sleep(0.1)
        return self.token

    def wait_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"demo did not print {text!r}:\n" + "".join(self.lines[-40:]))
            time.sleep(0.1)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}/api/v1",
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise


def _live_machines(c: httpx.Client) -> tuple[list[dict], dict[int, dict]]:
    machines = c.get("/assets", params={"level": "machine"}).json()
    latest = {m["id"]: c.get(f"/assets/{m['id']}/latest").json() for m in machines}
    return machines, latest


def test_demo_serves_live_values_and_restarts_on_the_same_data(tmp_path: Path) -> None:
    if sys.platform == "win32":
        pytest.skip("POSIX only")
    demo = Demo(tmp_path / "data")
    try:
        token = demo.wait_token(timeout=600)  # the first run may install into .venv
        assert f"http://127.0.0.1:{demo.http_port}" in "".join(demo.lines)
        with demo.client() as c:
            assert c.get("/assets", params={"level": "machine"}).status_code == 200, "the API serves at once"
        demo.wait_line("live simulation started", timeout=180)  # after the first start's history
        ready_at = time.monotonic()
        assert any("h back-filled for" in line for line in demo.lines), "the first start back-fills history"
        with demo.client() as c:
            live: set[int] = set()
            machines: list[dict] = []
            while time.monotonic() - ready_at < 10:
                machines, latest = _live_machines(c)
                live = {mid for mid, lt in latest.items()
                        if lt["status"] == "online" and any(v["value"] is not None for v in lt["values"])}
                if machines and live == {m["id"] for m in machines}:
                    break
                time.sleep(0.5)
            assert len(machines) >= 10, machines
            assert live == {m["id"] for m in machines}, "machines without live values within 10 s"
            _, before = _live_machines(c)
            time.sleep(2.5)
            _, after = _live_machines(c)
            changed = [mid for mid in before if before[mid]["values"] != after[mid]["values"]]
            assert changed, "values do not change"
            line_id = c.get("/assets", params={"level": "line"}).json()[0]["id"]
            # the last two hours (back-filled history): a last minute inside a meal break has no planned time
            k = c.get("/kpis", params={"asset": line_id, "from": str(int(time.time() * 1000) - 7_200_000)})
            assert k.status_code == 200, k.text
            kpis = k.json()["kpis"]
            for key in ("availability", "effectiveness", "quality_ratio", "oee", "energy_efficiency", "unit_cost"):
                assert key in kpis, key
            assert kpis["availability"]["value"] is not None and 0 <= kpis["availability"]["value"] <= 1
            stats = c.get("/ingest/stats").json()
            assert stats["points_total"] > 0 and stats["devices_online"] > 0
            energy_series = next(v["series_id"] for v in after[machines[0]["id"]]["values"]
                                 if v["measurement"] == "energy")
            since = {"from": str(int(time.time() * 1000) - 30 * 60_000)}  # the same window after the restart
            raw_before = c.get(f"/series/{energy_series}/history", params=since).json()["points"]
    finally:
        rc = demo.stop()
    assert rc == 0, "".join(demo.lines[-30:])
    assert "stopped cleanly" in "".join(demo.lines)

    again = Demo(tmp_path / "data")
    try:
        assert again.wait_token(timeout=120) == token, "a restart reuses the demo token"
        again.wait_line("live simulation started", timeout=60)
        assert not any("back-fill" in line for line in again.lines), "a restart does not back-fill again"
        with again.client() as c:
            deadline = time.monotonic() + 15
            while True:
                raw_after = c.get(f"/series/{energy_series}/history", params=since).json()["points"]
                if len(raw_after) > len(raw_before) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            ts_after = {p["ts"] for p in raw_after}
            assert {p["ts"] for p in raw_before} <= ts_after, "history from the first run is kept"
            assert len(raw_after) > len(raw_before), "new data after the restart"
    finally:
        assert again.stop() == 0
