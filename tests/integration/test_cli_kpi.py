"""The kpi, report compare and backfill commands against the real API app (in-process, through the
ApiClient's transport) over DuckDB."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from rich.console import Console
from typer.testing import CliRunner

from shopfloor import cli_kpi
from shopfloor.api.timeparams import iso
from shopfloor.cli import app
from shopfloor.client import ApiClient
from tests.integration.test_kpi_api import MACHINE, Api, LighthouseSource, _app, at, day_start, msg
from tests.unit.test_kpi_docs import lighthouse

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.integration

H = 3_600_000_000


def _wire(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    def client(url: str | None, token: str | None) -> ApiClient:
        c = ApiClient(url or "http://testserver", token)
        c.http.close()
        c.http = TestClient(api.client.app, base_url="http://testserver/api/v1",
                            headers={"Authorization": f"Bearer {token}"}, raise_server_exceptions=False)
        return c

    monkeypatch.setattr(cli_kpi, "api_client", client)
    monkeypatch.setattr(cli_kpi, "console", Console(width=250, force_terminal=False, color_system=None))


def run(*args: str) -> tuple[int, str, BaseException | None]:
    r = CliRunner().invoke(app, list(args))
    return r.exit_code, r.stdout, r.exception


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    for a in _app(tmp_path):
        _wire(a, monkeypatch)
        yield a


def test_backfill_then_kpi_as_tables_and_json(api: Api, tmp_path: Path) -> None:
    t = api.tenant("acme")
    d = day_start(1)
    lines = [
        msg("acme", "event", {"ts": at(d, 5), "type": "work_order_start", "order_id": "O1", "product": "A"}),
        msg("acme", "state", [{"ts": at(d, 6), "state": "running"}, {"ts": at(d, 12), "state": "unplanned_stop",
                                                                     "reason": "jam"}]),
        msg("acme", "state", {"ts": at(d, 13), "state": "running"}),
        msg("acme", "count", {"ts": at(d, 20), "good": 600, "reject": 10}),
        msg("rival", "state", {"ts": at(d, 6), "state": "running"}),
    ]
    file = tmp_path / "import.jsonl"
    file.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    code, out, exc = run("backfill", str(file), "--token", t["engineer"], "--batch", "2")
    assert code == 0, (out, exc)
    assert "5 messages: 4 accepted, 1 with rejections; 0 samples and 5 events taken" in out
    assert "outside_prefix" in out and "shopfloor/v1/rival/" in out

    window = ("--asset", MACHINE, "--from", at(d, 0), "--to", at(d, 24))
    code, out, exc = run("kpi", *window, "--token", t["viewer"])
    assert code == 0, (out, exc)
    assert MACHINE in out and "Availability" in out and "unplanned_stop/jam" in out
    assert "performance" not in out  # aliases are not repeated in the table
    code, out, exc = run("kpi", *window, "--by", "shift", "--token", t["viewer"])
    assert code == 0, (out, exc)
    assert f"{iso(d)[:10]} early" in out and f"{iso(d)[:10]} late" in out and "whole window" in out
    code, out, exc = run("kpi", *window, "--json", "--token", t["viewer"])
    assert code == 0, (out, exc)
    body = json.loads(out)
    # run 6-12 and 13-24 (17 h; a run off-shift is planned time too) in 18 planned hours
    assert body["kpis"]["availability"]["value"] == pytest.approx(17 / 18)
    assert body["kpis"]["mttr"]["value"] == pytest.approx(1.0)
    code, _, exc = run("kpi", "--asset", MACHINE, "--from", "yesterday", "--token", t["viewer"])
    assert code == 1 and exc is not None and "422" in str(exc)


def test_report_compare_prints_the_lighthouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc, _ = lighthouse()
    baseline = (1_767_225_600_000_000, 1_767_225_600_000_000 + 720 * H)
    current = (baseline[0] + 365 * 24 * H, baseline[0] + 365 * 24 * H + 720 * H)
    for api in _app(tmp_path, source=LighthouseSource(baseline, current, doc)):
        _wire(api, monkeypatch)
        t = api.tenant("acme")
        site = api.asset(t["viewer"], "berlin")
        api.ok("PUT", f"/sites/{site['id']}/cost-model", t["engineer"], json=doc["cost_model"])
        machine = api.asset(t["viewer"], MACHINE)
        api.ok("PATCH", f"/assets/{machine['id']}", t["engineer"], json={"attributes": {"ideal_cycle_time_s": 18}})
        args = ("report", "compare", "--asset", str(machine["id"]), "--baseline", f"{iso(baseline[0])}..{iso(baseline[1])}",
                "--current", f"{iso(current[0])}..{iso(current[1])}", "--token", t["viewer"])
        code, out, exc = run(*args)
        assert code == 0, (out, exc)
        for text in ("+33.0%", "+49.0%", "-22.1%", "unit cost 6.6480 -> 5.1784 EUR/unit: -1.4696 (-22.1%)",
                     "labour_hours", "OEE 0.5682 -> 0.7386: +0.1705", "█"):
            assert text in out, text
        chart = tmp_path / "lighthouse.svg"
        code, out, exc = run(*args, "--json", "--svg", str(chart))
        assert code == 0, (out, exc)
        body: dict[str, Any] = json.loads(out)
        assert round(body["changes"]["unit_cost"]["change"], 2) == -0.22
        root = ElementTree.fromstring(chart.read_text())  # well-formed SVG, one bar per effect and total
        texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
        assert len(list(root.iter("{http://www.w3.org/2000/svg}rect"))) == 6 + 4
        assert "-0.7990" in texts and "availability" in texts and any("(-22.1%)" in t for t in texts)
        code, out, exc = run("report", "compare", "--asset", "1", "--baseline", "2026-01-01", "--current", "x..y",
                             "--token", t["viewer"])
        assert code == 2 and "FROM..TO" in CliRunner().invoke(app, ["report", "compare", "--asset", "1", "--baseline",
                                                                    "a", "--current", "b..c"]).output
