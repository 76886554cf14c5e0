"""The dashboard with a 500-machine plant: how fast the overview loads, and whether the page's memory
grows while it stays open and live.

Run with the project's interpreter: ``.venv/bin/python bench/dashboard.py [--machines 500] [--minutes 10]``.
Starts the demo with a synthetic plant of ``--machines`` machines (all simulated, publishing over the
embedded broker), opens the overview in headless Chromium (Debian's ``chromium``, driven by Playwright),
and measures: the time from navigation until every machine's tile is on the page; then, every 30 s for
``--minutes``, the page's JavaScript heap after a forced garbage collection and its DOM node count
(Chrome DevTools Protocol). Writes the "Dashboard" section of docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import yaml
from playwright.sync_api import sync_playwright

from shopfloor.domain.plant import plant_to_obj
from shopfloor.sim.publisher import scaled_plant

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "PERFORMANCE.md"
CHROMIUM = os.environ.get("SHOPFLOOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_demo(machines: int, workdir: Path) -> tuple[subprocess.Popen[str], int, str]:
    plant = workdir / "plant.yaml"
    plant.write_text(yaml.safe_dump(plant_to_obj(scaled_plant(machines, max(1, machines // 10)))))
    http_port, mqtt_port = _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopfloor.cli", "demo", "--plant", str(plant), "--data-dir", str(workdir / "data"),
         "--http-port", str(http_port), "--mqtt-port", str(mqtt_port), "--no-live"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 300
    for line in proc.stdout:
        m = re.search(r"(sft_[A-Za-z0-9_-]+)", line)
        if m:
            return proc, http_port, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit("the demo did not start")


def wait_live(base: str, token: str, machines: int, timeout: float = 300) -> float:
    """Seconds until every machine has reported a state."""
    t0 = time.monotonic()
    with httpx.Client(base_url=base + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        while time.monotonic() - t0 < timeout:
            tiles = c.get("/overview").json()["machines"]
            if len(tiles) == machines and all(t["live"]["state"] for t in tiles):
                return time.monotonic() - t0
            time.sleep(2)
    raise SystemExit("not every machine became live")


def measure(base: str, token: str, machines: int, minutes: float) -> dict[str, object]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1366, "height": 768}, base_url=base)
        page = context.new_page()
        page.goto("/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        page.wait_for_selector(".tile")
        loads = []
        for _ in range(3):  # warm and cold enough: the median of three loads
            t0 = time.perf_counter()
            page.goto("/")
            page.wait_for_function(f"document.querySelectorAll('.tile').length === {machines}", timeout=60_000)
            loads.append(time.perf_counter() - t0)
        cdp = context.new_cdp_session(page)
        cdp.send("Performance.enable")
        samples: list[tuple[float, float, int]] = []
        t_start = time.monotonic()
        while True:
            cdp.send("HeapProfiler.collectGarbage")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            samples.append((time.monotonic() - t_start, metrics["JSHeapUsedSize"] / 2**20, int(metrics["Nodes"])))
            print(f"  {samples[-1][0]:6.0f} s  heap {samples[-1][1]:6.2f} MiB  nodes {samples[-1][2]}", flush=True)
            if samples[-1][0] >= minutes * 60:
                break
            time.sleep(min(30.0, max(1.0, minutes * 60 - samples[-1][0])))
        live = page.inner_text("#status")
        browser.close()
    loads.sort()
    return {"load_s": loads[1], "loads": loads, "samples": samples, "status": live}


def machine_line() -> str:
    return f"{platform.node()} · {platform.machine()} · {os.cpu_count()} cores · Python {platform.python_version()}"


def update_docs(machines: int, minutes: float, live_s: float, r: dict[str, object]) -> None:
    samples = r["samples"]
    assert isinstance(samples, list)
    heap = [s[1] for s in samples]
    nodes = [s[2] for s in samples]
    loads = r["loads"]
    assert isinstance(loads, list)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = "\n".join(f"| {t:.0f} | {h:.2f} | {n:,} |" for t, h, n in samples)
    section = f"""
## Dashboard

Measured {when} on {machine_line()}.
Run: `.venv/bin/python bench/dashboard.py --machines {machines} --minutes {minutes:g}`. The demo with a synthetic
plant of {machines} machines, all simulated and publishing (every machine live after {live_s:.0f} s), and the
plant overview in headless Chromium at 1366x768. Load: from navigation until all {machines} tiles are on the page
(median of three: {", ".join(f"{x:.2f}" for x in loads)} s). Memory: the page's JavaScript heap after a forced
garbage collection and its DOM node count, every 30 s while the page stays open, live (state stream) and
refreshing its KPIs every 30 s.

| figure | value | target |
|---|---:|---|
| overview load, {machines} machines | **{r["load_s"]:.2f} s** | < 2 s |
| JS heap first → last | {heap[0]:.2f} → {heap[-1]:.2f} MiB (max {max(heap):.2f}) | no growth over {minutes:g} min |
| DOM nodes first → last | {nodes[0]:,} → {nodes[-1]:,} | no growth |

| s | heap MiB | DOM nodes |
|---:|---:|---:|
{rows}
"""
    text = DOCS.read_text() if DOCS.exists() else "# Performance\n"
    head, _, rest = text.partition("\n## Dashboard\n")
    m = re.search(r"^## ", rest, flags=re.M)
    after = rest[m.start():] if m else ""
    DOCS.write_text(head.rstrip("\n") + "\n" + section + ("\n" + after if after else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--machines", type=int, default=500)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the page stays open")
    parser.add_argument("--no-docs", action="store_true", help="print only; leave docs/PERFORMANCE.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="shopfloor-dash-") as tmp:
        proc, port, token = start_demo(args.machines, Path(tmp))
        try:
            base = f"http://127.0.0.1:{port}"
            live_s = wait_live(base, token, args.machines)
            print(f"{args.machines} machines live after {live_s:.0f} s")
            r = measure(base, token, args.machines, args.minutes)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=120)
    print(f"overview load: {r['load_s']:.2f} s (loads {r['loads']})")
    if not args.no_docs:
        update_docs(args.machines, args.minutes, live_s, r)


if __name__ == "__main__":
    main()
