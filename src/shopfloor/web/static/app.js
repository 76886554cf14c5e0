// shopfloor dashboard: every figure comes from the public /api/v1, authenticated by the session cookie.
"use strict";
(function () {
  const API = "/api/v1";
  const $ = (sel) => document.querySelector(sel);
  const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");
  const num = (v, d = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(d));
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const STATES = ["running", "idle", "setup", "starved", "blocked", "planned_stop", "unplanned_stop"];
  const COLOURS = {running: "#2e9d4f", idle: "#c9a227", setup: "#3b7dd8", starved: "#d97a1e", blocked: "#9b59b6",
    planned_stop: "#7f8c8d", unplanned_stop: "#d64541", offline: "#4a4a4a", unknown: "#b8b8b8"};

  function status(text, bad) {
    const el = $("#status");
    if (el) { el.textContent = text; el.className = bad ? "bad" : ""; }
  }

  async function api(path, opts = {}) {
    const res = await fetch(API + path, {credentials: "same-origin", ...opts,
      headers: {"Accept": "application/json", ...(opts.headers || {})}});
    if (res.status === 401) { window.location.href = "/login"; throw new Error("signed out"); }
    if (!res.ok) {
      let detail = res.statusText;
      try { const p = await res.json(); detail = p.detail || p.title || detail; } catch (e) { /* not json */ }
      status(detail, true);
      throw new Error(detail);
    }
    return res.json();
  }

  function stateClass(live) {
    if (live.online === false) return "offline";
    return live.state || "unknown";
  }

  // -- plant overview ---------------------------------------------------------------------------------
  const tiles = new Map();
  function tileHtml(m) {
    const k = m.kpis;
    return `<a class="tile st-${stateClass(m.live)}" href="/machines/${m.asset_id}" id="tile-${m.asset_id}"
        data-asset-id="${m.asset_id}" aria-label="${esc(m.display_name)}">
      <span class="t-name">${esc(m.display_name)}</span>
      <span class="t-state" data-field="state">${esc(describe(m.live))}</span>
      <span class="t-oee" title="OEE this shift">OEE <b data-field="oee">${pct(k && k.oee)}</b></span>
      <span class="t-factors">A <b data-field="availability">${pct(k && k.availability)}</b>
        P <b data-field="effectiveness">${pct(k && k.effectiveness)}</b>
        Q <b data-field="quality_ratio">${pct(k && k.quality_ratio)}</b></span>
      <span class="t-parts">parts today <b data-field="good_today">${k ? k.good_today : "–"}</b></span>
      <span class="t-alarms" data-field="alarms" hidden></span>
    </a>`;
  }
  function describe(live) {
    if (live.online === false) return "offline";
    if (!live.state) return "no state yet";
    return live.state.replace("_", " ") + (live.reason ? " · " + live.reason : "");
  }
  function renderPlant(ov) {
    const groups = new Map();
    for (const m of ov.machines) {
      const key = [m.site, m.area, m.line].join(" / ");
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(m);
    }
    let html = "";
    for (const [key, ms] of groups) {
      html += `<section class="line"><h2>${esc(key)}</h2><div class="tiles">${ms.map(tileHtml).join("")}</div></section>`;
    }
    const plant = $("#plant");
    plant.innerHTML = html || '<p class="muted">No machines yet: apply a plant file (shopfloor plant apply).</p>';
    plant.setAttribute("aria-busy", "false");
    tiles.clear();
    for (const m of ov.machines) tiles.set(m.asset_id, document.getElementById("tile-" + m.asset_id));
    $("#kpi-age").textContent = ov.kpis_computed_us
      ? "Shift KPIs as of " + new Date(ov.kpis_computed_us / 1000).toLocaleTimeString() : "";
  }
  function updateKpis(ov) {
    if (tiles.size !== ov.machines.length) { renderPlant(ov); return; }
    for (const m of ov.machines) {
      const t = tiles.get(m.asset_id);
      if (!t) { renderPlant(ov); return; }
      const k = m.kpis || {};
      for (const f of ["oee", "availability", "effectiveness", "quality_ratio"]) {
        t.querySelector(`[data-field=${f}]`).textContent = pct(k[f]);
      }
      t.querySelector("[data-field=good_today]").textContent = m.kpis ? m.kpis.good_today : "–";
    }
    $("#kpi-age").textContent = ov.kpis_computed_us
      ? "Shift KPIs as of " + new Date(ov.kpis_computed_us / 1000).toLocaleTimeString() : "";
  }
  function applyStates(states) {
    for (const s of states) {
      const t = tiles.get(s.asset_id);
      if (!t) continue;
      t.className = "tile st-" + stateClass(s);
      t.querySelector("[data-field=state]").textContent = describe(s);
    }
    status("live · " + new Date().toLocaleTimeString());
  }
  async function tileAlarms() {
    let active = [];
    try { active = await api("/alarms?annunciated=true&limit=10000"); } catch (e) { return; }
    const per = new Map();
    for (const a of active) per.set(a.asset_id, (per.get(a.asset_id) || 0) + 1);
    for (const [id, t] of tiles) {
      const el = t.querySelector("[data-field=alarms]");
      const n = per.get(id) || 0;
      el.hidden = n === 0;
      el.textContent = n === 1 ? "1 alarm" : n + " alarms";
    }
  }
  async function overviewPage() {
    renderPlant(await api("/overview"));
    await tileAlarms();
    const alarmsLive = new EventSource(API + "/alarms/stream");
    let pending = null;
    const again = () => { if (!pending) pending = setTimeout(() => { pending = null; tileAlarms(); }, 500); };
    for (const ev of ["activate", "clear", "acknowledge", "shelve", "unshelve"]) alarmsLive.addEventListener(ev, again);
    alarmsLive.onopen = again;  // (re)connected: what changed before the stream was open is read again
    const source = new EventSource(API + "/stream/states");
    source.addEventListener("states", (ev) => applyStates(JSON.parse(ev.data)));
    source.addEventListener("heartbeat", () => status("live · " + new Date().toLocaleTimeString()));
    source.onerror = () => status("live updates interrupted; retrying…", true);
    setInterval(async () => { try { updateKpis(await api("/overview")); await tileAlarms(); } catch (e) { /* shown */ } }, 30000);
  }

  // -- machine ---------------------------------------------------------------------------------------
  let chart = null;
  function drawChart(el, xs, series, labels) {
    if (chart) { chart.destroy(); chart = null; }
    const width = Math.max(300, el.clientWidth || 600);
    const opts = {width, height: 260, scales: {x: {time: true}},
      series: [{}, ...labels.map((l, i) => ({label: l, stroke: ["#3b7dd8", "#d64541", "#2e9d4f"][i % 3], width: 1.5}))]};
    chart = new uPlot(opts, [xs, ...series], el);
  }
  function intervalFor(seconds) {
    if (seconds <= 3600) return "1m";
    if (seconds <= 86400) return "5m";
    if (seconds <= 604800) return "1h";
    return "1h";
  }
  async function loadChart() {
    const sid = $("#series").value;
    if (!sid) return;
    const secs = Number($("#window").value);
    const to = Date.now();
    const from = to - secs * 1000;
    const h = await api(`/series/${sid}/history?from=${from}&to=${to}&interval=${intervalFor(secs)}&agg=avg`);
    const xs = h.buckets.map((b) => Date.parse(b.start) / 1000);
    drawChart($("#chart"), xs, [h.buckets.map((b) => b.value)], [h.series.measurement + (h.series.unit ? " (" + h.series.unit + ")" : "")]);
  }
  function drawTimeline(events, from, to) {
    const el = $("#timeline");
    let html = "";
    for (let i = 0; i < events.length; i++) {
      const s = Math.max(Date.parse(events[i].ts), from);
      const e = i + 1 < events.length ? Date.parse(events[i + 1].ts) : to;
      if (e <= from) continue;
      const left = (100 * (s - from)) / (to - from);
      const width = Math.max(0.2, (100 * (e - s)) / (to - from));
      const st = events[i].type;
      html += `<span class="seg st-${esc(st)}" style="left:${left}%;width:${width}%" title="${esc(st)} ${when(events[i].ts)}"></span>`;
    }
    el.innerHTML = html;
  }
  async function machinePage() {
    const id = Number($("#machine").dataset.assetId);
    const showLatest = (latest) => {
      $("#m-title").textContent = latest.asset.display_name + " (" + latest.asset.path + ")";
      $("#m-state").innerHTML = `<span class="chip st-${esc(latest.status === "offline" ? "offline" : latest.state || "unknown")}">${esc(latest.state || "no state")}</span>
        ${latest.state_reason ? esc(latest.state_reason) : ""} since ${when(latest.state_since)} · ${esc(latest.status || "status unknown")}`;
      $("#latest").innerHTML = latest.values.map((v) => `<tr><td>${esc(v.measurement)}</td><td data-measurement="${esc(v.measurement)}">${esc(v.value ?? "–")}</td>
        <td>${esc(v.unit)}</td><td>${when(v.ts)}</td><td>${["good", "uncertain", "bad"][v.quality] || "–"}</td></tr>`).join("");
      status("updated " + new Date().toLocaleTimeString());
    };
    showLatest(await api(`/assets/${id}/latest`));
    const numeric = (await api(`/assets/${id}/series`)).filter((s) => s.type === "numeric");
    $("#series").innerHTML = numeric.map((s) => `<option value="${s.id}">${esc(s.measurement)}</option>`).join("");
    $("#series").addEventListener("change", loadChart);
    $("#window").addEventListener("change", loadChart);
    await loadChart();
    const to = Date.now(), from = to - 86400000;
    const evs = await api(`/events?asset_id=${id}&kind=state&from=${from}&to=${to}&limit=5000`);
    drawTimeline(evs, from, to);
    $("#states").innerHTML = evs.slice(-20).reverse().map((e) => `<tr><td>${when(e.ts)}</td>
      <td><span class="chip st-${esc(e.type)}">${esc(e.type)}</span></td><td>${esc(e.data.reason || "")}</td></tr>`).join("");
    const ov = await api("/overview");
    const me = ov.machines.find((m) => m.asset_id === id);
    const k = me && me.kpis;
    $("#m-kpis").innerHTML = k ? [["OEE", pct(k.oee)], ["Availability", pct(k.availability)],
      ["Performance", pct(k.effectiveness)], ["Quality", pct(k.quality_ratio)], ["Good this shift", k.good_shift],
      ["Good today", k.good_today]].map(([l, v]) => `<div class="kpi"><span>${l}</span><b>${v}</b></div>`).join("")
      : `<p class="muted">${esc((me && me.kpi_error) || "No KPIs yet.")}</p>`;
    setInterval(async () => { try { showLatest(await api(`/assets/${id}/latest`)); } catch (e) { /* shown */ } }, 2000);
  }

  // -- KPIs ------------------------------------------------------------------------------------------
  const day = (d) => d.toISOString().slice(0, 10);
  function kpiCells(k) {
    const v = (key) => (k.kpis[key] ? k.kpis[key].value : null);
    return {oee: v("oee"), a: v("availability"), p: v("effectiveness"), q: v("quality_ratio"),
      ee: v("energy_efficiency"), lp: v("labour_productivity"), uc: v("unit_cost")};
  }
  function bars(el, rows, fmt) {
    const max = Math.max(1e-9, ...rows.map((r) => Math.abs(r[1] || 0)));
    el.innerHTML = rows.length ? rows.map(([label, value]) => `<div class="bar-row"><span class="bar-label">${esc(label)}</span>
      <span class="bar ${value < 0 ? "neg" : ""}" style="width:${(48 * Math.abs(value || 0)) / max}%"></span>
      <span class="bar-value">${fmt(value)}</span></div>`).join("") : '<p class="muted">Nothing in this period.</p>';
  }
  async function loadKpis() {
    const asset = $("#kpi-asset").value;
    const from = $("#kpi-from").value, to = $("#kpi-to").value;
    const toTs = new Date(to + "T00:00:00").getTime() + 86400000;
    const r = await api(`/kpis?asset=${asset}&from=${new Date(from + "T00:00:00").getTime()}&to=${Math.min(toTs, Date.now())}&by=shift`);
    const t = kpiCells(r);
    $("#kpi-totals").innerHTML = [["OEE", pct(t.oee)], ["Availability", pct(t.a)], ["Performance", pct(t.p)],
      ["Quality", pct(t.q)], ["Good units / kWh", num(t.ee, 2)], ["Good units / labour h", num(t.lp, 1)],
      ["Unit cost" + (r.currency ? " (" + r.currency + ")" : ""), num(t.uc, 2)]]
      .map(([l, v]) => `<div class="kpi"><span>${l}</span><b>${v}</b></div>`).join("");
    $("#kpi-shifts").innerHTML = r.groups.map((g) => { const c = kpiCells(g);
      return `<tr><td>${esc(g.label)}</td><td>${pct(c.oee)}</td><td>${pct(c.a)}</td><td>${pct(c.p)}</td><td>${pct(c.q)}</td>
        <td>${num(c.ee, 2)}</td><td>${num(c.lp, 1)}</td><td>${num(c.uc, 2)}</td></tr>`; }).join("");
    const xs = r.groups.map((g) => Date.parse(g.from) / 1000);
    if (xs.length > 1) {
      drawChart($("#kpi-chart"), xs, [r.groups.map((g) => kpiCells(g).oee), r.groups.map((g) => kpiCells(g).a)], ["OEE", "Availability"]);
    } else { $("#kpi-chart").innerHTML = ""; }
    bars($("#pareto"), r.downtime.map((d) => [d.reason, d.seconds / 60]), (v) => num(v, 0) + " min");
  }
  async function compare() {
    const asset = $("#kpi-asset").value;
    const t = (id, end) => new Date($(id).value + "T00:00:00").getTime() + (end ? 86400000 : 0);
    const r = await api(`/kpis/compare?asset=${asset}&baseline_from=${t("#b-from")}&baseline_to=${t("#b-to", 1)}` +
      `&current_from=${t("#c-from")}&current_to=${Math.min(t("#c-to", 1), Date.now())}`);
    const rows = Object.entries(r.changes || {}).map(([k, v]) => [k.replaceAll("_", " "), v.change]);
    bars($("#compare"), rows.filter((x) => x[1] !== null && x[1] !== undefined), (v) => (v > 0 ? "+" : "") + num(100 * v, 1) + " %");
  }
  async function kpiPage() {
    const assets = await api("/assets");
    const choices = assets.filter((a) => a.level === "line" || a.level === "machine");
    $("#kpi-asset").innerHTML = choices.map((a) => `<option value="${a.id}">${esc(a.path)}</option>`).join("");
    const now = new Date();
    $("#kpi-to").value = day(now);
    $("#kpi-from").value = day(new Date(now.getTime() - 2 * 86400000));
    $("#c-to").value = day(now); $("#c-from").value = day(new Date(now.getTime() - 86400000));
    $("#b-to").value = day(new Date(now.getTime() - 2 * 86400000)); $("#b-from").value = day(new Date(now.getTime() - 3 * 86400000));
    $("#kpi-form").addEventListener("submit", (e) => { e.preventDefault(); loadKpis(); });
    $("#compare-form").addEventListener("submit", (e) => { e.preventDefault(); compare(); });
    await loadKpis();
  }

  // -- alarms ----------------------------------------------------------------------------------------
  const PRIORITY_ORDER = {critical: 0, high: 1, medium: 2, low: 3};
  const canOperate = () => document.body.dataset.canOperate === "true";
  async function names() {
    const [assets, rules] = await Promise.all([api("/assets?level=machine"), api("/rules")]);
    return {asset: new Map(assets.map((a) => [a.id, a.display_name || a.name])),
      rule: new Map(rules.map((r) => [r.id, r.name || String(r.id)]))};
  }
  function alarmQuery(view, priority, asset) {
    const q = new URLSearchParams({limit: "1000"});
    if (view === "annunciated") q.set("annunciated", "true");
    if (view === "active") { q.append("state", "active_unacknowledged"); q.append("state", "active_acknowledged"); }
    if (priority) q.set("priority", priority);
    if (asset) q.set("asset_id", asset);
    return "/alarms?" + q.toString();
  }
  function hiddenReason(a) {
    if (a.out_of_service) return "out of service";
    if (a.suppressed) return "suppressed by design";
    if (a.shelved_until_us) return "shelved until " + new Date(a.shelved_until_us / 1000).toLocaleTimeString();
    return "";
  }
  async function alarmsPage() {
    const n = await names();
    $("#f-asset").innerHTML += [...n.asset].map(([id, name]) => `<option value="${id}">${esc(name)}</option>`).join("");
    const load = async () => {
      const view = $("#f-view").value;
      let rows = await api(alarmQuery(view, $("#f-priority").value, $("#f-asset").value));
      if (view === "hidden") rows = rows.filter((a) => hiddenReason(a));
      rows.sort((a, b) => (PRIORITY_ORDER[a.priority] - PRIORITY_ORDER[b.priority]) || (b.updated_us - a.updated_us));
      $("#alarm-count").textContent = rows.length + (rows.length === 1 ? " alarm" : " alarms");
      $("#alarms").innerHTML = rows.map((a) => {
        const key = `${a.rule_id}/${a.asset_id}`;
        const unacked = a.state === "active_unacknowledged" || a.state === "cleared_unacknowledged";
        const actions = !canOperate() ? "" :
          (unacked ? `<button type="button" data-act="acknowledge" data-key="${key}">Acknowledge</button> ` : "") +
          (a.shelved_until_us ? `<button type="button" data-act="unshelve" data-key="${key}">Unshelve</button>`
            : `<button type="button" data-act="shelve" data-key="${key}">Shelve 1 h</button>`);
        return `<tr class="alarm pr-${esc(a.priority)}" data-key="${key}"><td><span class="chip pr-${esc(a.priority)}">${esc(a.priority)}</span></td>
          <td>${esc(a.state.replaceAll("_", " "))}${hiddenReason(a) ? "<br><small>" + esc(hiddenReason(a)) + "</small>" : ""}</td>
          <td><a href="/machines/${a.asset_id}">${esc(n.asset.get(a.asset_id) || a.asset_id)}</a></td>
          <td>${esc(n.rule.get(a.rule_id) || a.rule_id)}</td><td>${esc(a.message)}${a.comms_fault ? " (communications)" : ""}</td>
          <td>${a.active_since_us ? new Date(a.active_since_us / 1000).toLocaleString() : "–"}</td>
          <td>${a.acked_by ? esc(a.acked_by) + " " + new Date(a.acked_us / 1000).toLocaleTimeString() : "–"}</td>
          <td>${actions}</td></tr>`;
      }).join("") || '<tr><td colspan="8" class="muted">No alarms.</td></tr>';
      const journal = await api("/alarms/journal?limit=50&from=" + (Date.now() - 86400000));
      $("#journal").innerHTML = journal.reverse().map((j) => `<tr><td>${new Date(j.ts_us / 1000).toLocaleString()}</td>
        <td>${esc(n.asset.get(j.asset_id) || j.asset_id)}</td><td>${esc(n.rule.get(j.rule_id) || j.rule_id)}</td>
        <td>${esc(j.action)}</td><td>${esc(j.from_state)} → ${esc(j.to_state)}</td><td>${esc(j.user || "")}</td>
        <td>${esc(j.comment || "")}</td></tr>`).join("");
      const flood = await api("/alarms/flood?from=" + (Date.now() - 86400000));
      bars($("#flood"), flood.map((f) => [(f.area || "(no area)") + ` · ${f.alarms} in 24 h, ${num(100 * f.flood_share, 0)} % in flood`,
        f.per_10min_max]), (v) => num(v, 0) + " per 10 min at most");
    };
    $("#alarms").addEventListener("click", async (ev) => {
      const b = ev.target.closest("button[data-act]");
      if (!b) return;
      const act = b.dataset.act;
      let body = {};
      if (act === "acknowledge") body = {comment: window.prompt("Comment (optional)", "") || ""};
      if (act === "shelve") body = {minutes: 60, comment: window.prompt("Why shelve it for an hour?", "") || ""};
      b.disabled = true;
      try {
        await api(`/alarms/${b.dataset.key}/${act}`, {method: "POST", body: JSON.stringify(body),
          headers: {"Content-Type": "application/json"}});
        status(act + " done");
      } finally { await load(); }
    });
    for (const id of ["#f-view", "#f-priority", "#f-asset"]) $(id).addEventListener("change", load);
    await load();
    // An alarm that changes between that load and the stream's opening sends its event to nobody:
    // every (re)opening of the stream loads the page again, after which events keep it current.
    const source = new EventSource(API + "/alarms/stream");
    let pending = null;
    const again = () => { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 300); };
    for (const ev of ["activate", "clear", "acknowledge", "shelve", "unshelve", "suppress", "unsuppress",
      "out_of_service", "return_to_service"]) source.addEventListener(ev, again);
    source.onopen = () => { status("live · " + new Date().toLocaleTimeString()); again(); };
    source.onerror = () => status("live alarm updates interrupted; retrying…", true);
  }

  // -- devices ---------------------------------------------------------------------------------------
  async function devicesPage() {
    const load = async () => {
      const [devs, stats, dead] = await Promise.all([api("/devices"), api("/ingest/stats"), api("/dead-letters?limit=50")]);
      $("#ingest-rate").textContent = `${num(stats.messages_per_s, 1)} messages/s · ${num(stats.points_per_s, 0)} points/s · ${stats.devices_online} devices online · ${stats.rejected_total} rejected`;
      $("#devices").innerHTML = devs.map((d) => `<tr><td>${esc(d.name)}</td>
        <td><span class="chip st-${d.online ? "running" : "offline"}">${d.online ? "online" : "offline"}</span></td>
        <td>${when(d.last_message)}</td><td>${d.rejects}</td><td>${d.enabled ? "yes" : "no"}</td></tr>`).join("");
      $("#dead-letters").innerHTML = dead.map((d) => `<tr><td>${when(d.received_at)}</td><td>${esc(d.device)}</td>
        <td>${esc(d.reason)}</td><td>${esc(d.detail)}</td><td><code>${esc(d.topic)}</code></td></tr>`).join("");
      status("updated " + new Date().toLocaleTimeString());
    };
    await load();
    setInterval(load, 5000);
  }

  const pages = {overview: overviewPage, machine: machinePage, kpis: kpiPage, alarms: alarmsPage, devices: devicesPage};
  const start = pages[document.body.dataset.page];
  if (start) start().catch((e) => status(String(e.message || e), true));
  window.shopfloor = {api, COLOURS, STATES};
})();
