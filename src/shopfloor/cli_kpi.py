"""KPI commands of the ``shopfloor`` CLI (kpi, report compare, backfill): registered by ``cli``.

They ask a running server over its API, like the other client commands; ``--json`` prints what the
API answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shopfloor.client import client_from_settings
from shopfloor.domain.errors import ShopfloorError

console = Console()

Url = Annotated[str | None, typer.Option("--url", help="Server URL [env SHOPFLOOR_URL, default http://127.0.0.1:8000]")]
Token = Annotated[str | None, typer.Option("--token", help="API token [env SHOPFLOOR_TOKEN]")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of tables.")]
AssetOpt = Annotated[str, typer.Option("--asset", help="A machine or line: its id or its path site/area/line or site/area/line/machine")]

SUMMARY = ["availability", "effectiveness", "quality_ratio", "oee", "teep", "energy_efficiency",
           "labour_productivity", "unit_cost"]
REPORTED = ["energy_efficiency", "kwh_per_good_unit", "labour_productivity", "unit_cost", "oee", "availability",
            "effectiveness", "quality_ratio", "teep", "mtbf", "mttr"]
BAR = 24  # characters of the widest bar

report_app = typer.Typer(help="Reports: the lighthouse before/after comparison.", no_args_is_help=True)


api_client = client_from_settings  # the API client of a command (tests replace this)


def register(app: typer.Typer) -> None:
    """Add the KPI commands to the main CLI."""
    app.command("kpi")(kpi)
    app.command("backfill")(backfill)
    report_app.command("compare")(compare)
    app.add_typer(report_app, name="report")


# -- kpi --------------------------------------------------------------------------------------------
def kpi(
    asset: AssetOpt,
    from_: Annotated[str, typer.Option("--from", help="Window start: RFC 3339 (2026-11-23T06:00:00Z) or epoch ms")],
    to: Annotated[str | None, typer.Option("--to", help="Window end [default: now]")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Group by shift, day, product or order")] = None,
    as_json: JsonOut = False, url: Url = None, token: Token = None,
) -> None:
    """KPIs of a machine or line: OEE and its factors, the ISO 22400-2 set, energy, labour, unit cost."""
    params = {"asset": asset, "from": from_, **({"to": to} if to else {}), **({"by": by} if by else {})}
    body = api_client(url, token).call("GET", "/kpis", params=params)
    if as_json:
        console.print_json(json.dumps(body))
        return
    a = body["asset"]
    console.print(f"[bold]{escape(a['path'])}[/bold] ({a['level']}) {body['from']} .. {body['to']}", highlight=False)
    if body.get("line"):
        ln = body["line"]
        console.print(f"line rule {ln['rule']}: the figures are those of {escape(str(ln['machine']))}", highlight=False)
    if body.get("groups"):
        t = Table(body["by"], *SUMMARY, "coverage")
        for g in body["groups"]:
            t.add_row(escape(g["label"]), *[_fmt(g["kpis"].get(k, {}).get("value")) for k in SUMMARY],
                      _pct(g["coverage"]))
        t.add_row("[bold]whole window[/bold]", *[_fmt(body["kpis"].get(k, {}).get("value")) for k in SUMMARY],
                  _pct(body["coverage"]))
        console.print(t)
    else:
        t = Table("kpi", "value", "unit", "coverage", "ISO 22400-2")
        for key, k in body["kpis"].items():
            if k["key"] != key:  # an alias (performance, quality)
                continue
            t.add_row(key, _fmt(k["value"]), escape(k["unit"]), _pct(k["coverage"]), escape(k.get("iso", "")))
        console.print(t)
    if body.get("cost"):
        c = body["cost"]
        console.print(f"cost {_fmt(c['total'])} {escape(c['currency'])}: energy {_fmt(c['energy'])}, labour "
                      f"{_fmt(c['labour'])}, material {_fmt(c['material'])}, overhead {_fmt(c['overhead'])}; "
                      f"{c['good']} good of {c['produced']} produced", highlight=False)
    if body.get("downtime"):
        t = Table("downtime reason", "hours", "share", "cumulative", title="Downtime (Pareto)")
        for row in body["downtime"][:10]:
            t.add_row(escape(row["reason"]), f"{row['seconds'] / 3600:.2f}", _pct(row["share"]),
                      _pct(row["cumulative"]))
        console.print(t)


# -- report compare ---------------------------------------------------------------------------------
def compare(
    asset: AssetOpt,
    baseline: Annotated[str, typer.Option("--baseline", help="The baseline period FROM..TO (RFC 3339 or epoch ms)")],
    current: Annotated[str, typer.Option("--current", help="The current period FROM..TO (RFC 3339 or epoch ms)")],
    svg: Annotated[Path | None, typer.Option("--svg", help="Also write the contributions as a bar chart (SVG)",
                                             dir_okay=False)] = None,
    as_json: JsonOut = False, url: Url = None, token: Token = None,
) -> None:
    """Before and after: the change of energy efficiency, labour productivity, unit cost, OEE and its
    factors, with the contributions that explain them (exact LMDI decomposition)."""
    b0, b1 = _period(baseline, "--baseline")
    c0, c1 = _period(current, "--current")
    body = api_client(url, token).call("GET", "/kpis/compare", params={
        "asset": asset, "baseline_from": b0, "baseline_to": b1, "current_from": c0, "current_to": c1})
    if svg is not None:
        svg.write_text(chart_svg(body), encoding="utf-8")
    if as_json:
        console.print_json(json.dumps(body))
        return
    console.print(f"[bold]{escape(body['asset']['path'])}[/bold]: {escape(b0)} .. {escape(b1)} against "
                  f"{escape(c0)} .. {escape(c1)}", highlight=False)
    t = Table("kpi", "baseline", "current", "change", "unit")
    for key in REPORTED:
        ch = body["changes"].get(key)
        if ch is not None:
            t.add_row(key, _fmt(ch["baseline"]), _fmt(ch["current"]), _signed_pct(ch["change"]), escape(ch["unit"]))
    console.print(t)
    u = body.get("unit_cost")
    if u:
        currency = escape(body.get("currency") or "")
        title = (f"unit cost {u['baseline']:.4f} -> {u['current']:.4f} {currency}/unit: {u['change']:+.4f} "
                 f"({_signed_pct(u['relative'])})")
        rel = u.get("relative_effects") or {}
        _effects(title, u["effects"], {k: _signed_pct(v) for k, v in rel.items()}, u["detail"])
    for key, name, per in (("oee", "OEE", ""), ("energy_efficiency", "energy efficiency", "produced_per_kwh"),
                           ("labour_productivity", "labour productivity", "produced_per_labour_hour")):
        d = body.get(key)
        if d:
            effects = {per if k == "produced_per_input" else k: v for k, v in d["effects"].items()}
            _effects(f"{name} {d['baseline']:.4f} -> {d['current']:.4f}: {d['change']:+.4f}", effects, {}, {})


def _effects(title: str, effects: dict[str, float], relative: dict[str, str], detail: dict[str, float]) -> None:
    """A table of contributions with a bar for each (left of the axis: down, right: up)."""
    widest = max((abs(v) for v in effects.values()), default=0.0) or 1.0
    t = Table("effect", "value", "points", "", title=title, title_justify="left")
    for name, value in effects.items():
        n = round(abs(value) / widest * BAR)
        bar = f"[red]{'█' * n:>{BAR}}[/red]│" if value < 0 else f"{'':>{BAR}}│[green]{'█' * n}[/green]"
        t.add_row(name, _signed(value), relative.get(name, ""), bar)
    for name, value in detail.items():
        t.add_row(f"  {name}", _signed(value), "", "")
    t.add_row("[bold]sum[/bold]", _signed(sum(effects.values())), "", "")
    console.print(t)


def chart_svg(body: dict[str, Any]) -> str:
    """The contributions to the unit-cost and OEE changes as horizontal bars around zero (SVG)."""
    panels: list[tuple[str, list[tuple[str, float]]]] = []
    u = body.get("unit_cost")
    if u:
        currency = body.get("currency") or ""
        panels.append((f"unit cost {u['baseline']:.4f} \u2192 {u['current']:.4f} {currency}/unit "
                       f"({_signed_pct(u['relative'])})", [*u["effects"].items(), ("total", u["change"])]))
    o = body.get("oee")
    if o:
        panels.append((f"OEE {o['baseline']:.4f} \u2192 {o['current']:.4f}", [*o["effects"].items(),
                                                                            ("total", o["change"])]))
    width, label_w, row_h, half = 720, 150, 26, 230
    axis = label_w + 20 + half
    parts: list[str] = []
    y = 10
    for title, rows in panels:
        parts.append(f'<text x="10" y="{y + 16}" font-weight="bold">{_xml(title)}</text>')
        y += 30
        scale = half / (max(abs(v) for _, v in rows) or 1.0)
        for name, value in rows:
            w = abs(value) * scale
            x = axis - w if value < 0 else axis
            colour = "#c0392b" if value < 0 else "#27ae60"
            if name == "total":
                colour = "#34495e"
            parts.append(f'<text x="{label_w}" y="{y + 17}" text-anchor="end">{_xml(name)}</text>')
            parts.append(f'<rect x="{x:.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" fill="{colour}"/>')
            tx, anchor = (x - 6, "end") if value < 0 else (x + w + 6, "start")
            parts.append(f'<text x="{tx:.1f}" y="{y + 17}" text-anchor="{anchor}">{value:+.4f}</text>')
            y += row_h
        parts.append(f'<line x1="{axis}" y1="{y - row_h * len(rows)}" x2="{axis}" y2="{y}" stroke="#333"/>')
        y += 20
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" '
            f'font-family="sans-serif" font-size="13">\n' + "\n".join(parts) + "\n</svg>\n")


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# -- backfill ---------------------------------------------------------------------------------------
def backfill(
    file: Annotated[Path, typer.Argument(help="A JSON list, or JSON lines, of {\"topic\": ..., \"payload\": ...}",
                                         exists=True, dir_okay=False, readable=True)],
    batch: Annotated[int, typer.Option("--batch", min=1, max=10_000, help="Messages per request")] = 5_000,
    as_json: JsonOut = False, url: Url = None, token: Token = None,
) -> None:
    """Back-fill history: post messages exactly as they would arrive over MQTT (engineer token).

    The server validates them like MQTT traffic; late data is in the next KPI answer, closed shifts too.
    """
    client = api_client(url, token)
    totals: dict[str, Any] = {"received": 0, "accepted": 0, "rejected": 0, "samples": 0, "events": 0, "reasons": {}}
    errors: list[dict[str, Any]] = []
    offset = 0
    for chunk in _chunks(_messages(file), batch):
        report = client.call("POST", "/messages", json=chunk)
        for key in ("received", "accepted", "rejected", "samples", "events"):
            totals[key] += report.get(key) or 0
        for reason, n in report["reasons"].items():
            totals["reasons"][reason] = totals["reasons"].get(reason, 0) + n
        errors.extend({**e, "index": e["index"] + offset} for e in report["errors"])
        offset += len(chunk)
    if as_json:
        console.print_json(json.dumps({**totals, "errors": errors[:100]}))
        return
    console.print(f"{totals['received']} messages: {totals['accepted']} accepted, {totals['rejected']} with "
                  f"rejections; {totals['samples']} samples and {totals['events']} events taken", highlight=False)
    if errors:
        t = Table("#", "reason", "topic", "detail", title="First rejections")
        for e in errors[:20]:
            t.add_row(str(e["index"]), e["reason"], escape(e["topic"]), escape(e["detail"]))
        console.print(t)


def _messages(file: Path) -> list[Any]:
    text = file.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            loaded = json.loads(text)
            return loaded if isinstance(loaded, list) else [loaded]
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ShopfloorError(f"{file}: not JSON or JSON lines: {exc}") from None


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# -- formatting -------------------------------------------------------------------------------------
def _period(text: str, option: str) -> tuple[str, str]:
    start, sep, end = text.partition("..")
    if not sep or not start.strip() or not end.strip():
        raise typer.BadParameter(f"{option} takes FROM..TO, e.g. 2026-01-01T00:00:00Z..2026-02-01T00:00:00Z")
    return start.strip(), end.strip()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _signed(value: float) -> str:
    return f"{round(value, 4) + 0.0:+.4f}"  # no "-0.0000" for a last-bit negative


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _signed_pct(value: float | None) -> str:
    return "-" if value is None else f"{round(value * 100, 1) + 0.0:+.1f}%"
