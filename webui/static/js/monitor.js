/* Supervisor monitor.

   Tasks: `hello` carries every running or paused task with its latest counters; each task's card then
   follows `task_stats` (the dialer publishes it every second), `task_state` adds, updates or removes
   cards, and `gateway_status` (the dialer's view of each PBX: up, degraded, draining, down, disabled)
   shows a pill for every PBX that is not up (the latest ones come with `hello`). The chart of the last hour starts from
   `GET /api/tasks/<id>/history` and goes on from the pushed counters (their growth per minute).

   Agents: the grid arrives with `hello` and every `agent_state` updates one row (the web process adds
   the name, number and task). Listen / whisper / barge ring the supervisor's phone through the dialer
   (`POST /api/monitor/spy`); a refusal shows the dialer's reason. Nothing here polls. */
(function () {
  "use strict";
  const CC = window.CC;
  const t = CC.t;
  const h = CC.h;
  const $ = (id) => document.getElementById(id);
  const can = JSON.parse($("monitor-can").textContent);

  // --- agents grid --------------------------------------------------------------------------------

  const tbody = $("agents-grid").tBodies[0];
  const agents = new Map(); // agent_id -> row data
  const STATES = ["ready", "reserved", "on_call", "wrap_up", "not_ready", "away", "offline"];
  const ON_CALL = new Set(["on_call", "wrap_up"]);
  const SPY_MODES = ["listen", "whisper", "barge"];

  function rowFor(a) {
    let tr = tbody.querySelector('tr[data-agent-id="' + a.agent_id + '"]');
    if (!tr) {
      tr = h(
        "tr",
        { dataset: { agentId: a.agent_id } },
        h("td", { class: "ext mono" }),
        h("td", { class: "name" }),
        h("td", { class: "state" }, h("span", { class: "pill" })),
        h("td", { class: "in-state timer" }),
        h("td", { class: "call mono" }),
        h("td", { class: "talk timer" }),
        h("td", { class: "task" }),
        h(
          "td",
          { class: "spy row-actions" },
          SPY_MODES.map((mode) =>
            h("button", { type: "button", class: "small secondary", dataset: { spy: mode }, onclick: () => spy(a.agent_id, mode) }, t("mon.spy_" + mode))
          )
        )
      );
      // Keep the grid sorted by extension.
      const after = [...tbody.rows].find((r) => (agents.get(Number(r.dataset.agentId)) || {}).extension > a.extension);
      tbody.insertBefore(tr, after || null);
    }
    return tr;
  }

  function renderAgent(a) {
    const tr = rowFor(a);
    tr.dataset.state = a.state;
    tr.querySelector(".ext").textContent = a.extension;
    tr.querySelector(".name").textContent = a.name || "";
    const pill = tr.querySelector(".state .pill");
    pill.className = "pill state-" + a.state;
    // Why the dialer put the agent there (a missed call), until the agent's next move.
    pill.textContent = t("state." + a.state) + (a.reason ? " · " + CC.reasonLabel(a.reason) : "");
    tr.dataset.reason = a.reason || "";
    const onCall = ON_CALL.has(a.state) || a.state === "reserved";
    tr.querySelector(".call").textContent = onCall ? CC.fmtPhone(a.number || "") : "";
    tr.querySelector(".task").textContent = onCall ? a.campaign_name || (a.call_id ? t("dir.manual") : "") : "";
    // Listening needs a call that is up.
    tr.querySelectorAll("button[data-spy]").forEach((b) => (b.disabled = a.state !== "on_call"));
    // Who listens to this agent now (spy_session messages).
    const listeners = [...spies.values()].filter((s) => s.target_extension === a.extension);
    let badge = tr.querySelector(".listened");
    if (!badge) {
      badge = h("span", { class: "pill listened" });
      tr.querySelector(".state").append(badge);
    }
    badge.hidden = listeners.length === 0;
    badge.textContent = listeners
      .map((s) => t("mon.listened_by").replace("{ext}", s.supervisor_extension).replace("{mode}", t("mon.spy_" + s.mode)))
      .join(", ");
    tickAgent(tr, a);
  }

  // --- who listens to whom ------------------------------------------------------------------------

  const spies = new Map(); // spy_id -> spy_session

  function onSpySession(msg) {
    if (msg.ended_at) spies.delete(msg.spy_id);
    else spies.set(msg.spy_id, msg);
    for (const a of agents.values()) if (a.extension === msg.target_extension) renderAgent(a);
  }

  function tickAgent(tr, a) {
    const now = CC.serverNow();
    tr.querySelector(".in-state").textContent = CC.fmtDuration(now - a.since);
    tr.querySelector(".talk").textContent = a.state === "on_call" && a.connected_at ? CC.fmtDuration(now - a.connected_at) : "";
  }

  function summary() {
    const counts = {};
    for (const a of agents.values()) counts[a.state] = (counts[a.state] || 0) + 1;
    $("agent-summary").replaceChildren(
      ...STATES.filter((s) => counts[s]).map((s) =>
        h("span", { class: "pill state-" + s, dataset: { summary: s } }, t("state." + s) + " " + counts[s])
      )
    );
    $("agents-none").hidden = agents.size > 0;
  }

  function onAgentState(msg) {
    const old = agents.get(msg.agent_id);
    if (old && msg.since < old.since) return; // older than what the grid shows
    const a = Object.assign({}, old || {}, msg);
    if (!ON_CALL.has(a.state) && a.state !== "reserved") {
      a.number = "";
      a.campaign_name = "";
      a.connected_at = null;
    }
    agents.set(a.agent_id, a);
    renderAgent(a);
    summary();
  }

  // --- listen / whisper / barge ---------------------------------------------------------------------

  // An admin's not-ready reasons carry their own labels: named once the list is in.
  CC.loadReasons()
    .then(() => agents.forEach((a) => renderAgent(a)))
    .catch(() => {});

  // "My phone" is saved on the supervisor's account (the page comes with it filled in).
  const spyExt = $("spy-extension");
  spyExt.addEventListener("change", async () => {
    const status = $("spy-ext-status");
    if (!spyExt.checkValidity()) {
      status.textContent = t("mon.my_phone_invalid");
      status.dataset.state = "error";
      return;
    }
    try {
      const res = await CC.api("PUT", "/api/me/phone", { phone: spyExt.value.trim() });
      spyExt.value = res.phone;
      status.textContent = t("mon.my_phone_saved");
      status.dataset.state = "saved";
    } catch (e) {
      status.textContent = e.message;
      status.dataset.state = "error";
    }
  });

  function spyStatus(state, text) {
    const el = $("spy-status");
    el.dataset.state = state;
    el.className = "alert " + (state === "error" ? "error" : "ok");
    el.textContent = text;
    el.hidden = false;
  }

  async function spy(agentId, mode) {
    const a = agents.get(agentId);
    const body = { agent_id: agentId, mode };
    const ext = spyExt.value.trim();
    if (ext) body.supervisor_extension = ext;
    spyStatus("pending", t("mon.spy_pending").replace("{ext}", a ? a.extension : ""));
    try {
      await CC.api("POST", "/api/monitor/spy", body);
      spyStatus(
        "ok",
        t("mon.spy_ok")
          .replace("{mode}", t("mon.spy_" + mode))
          .replace("{agent}", a ? a.extension : "")
          .replace("{ext}", ext || "")
      );
    } catch (e) {
      spyStatus("error", t("mon.spy_refused") + ": " + e.message);
    }
  }

  // --- tasks ------------------------------------------------------------------------------------

  const cards = $("task-cards");
  const tasks = new Map(); // campaign_id -> {info, stats, card, chart, series, last}
  const LIVE = new Set(["running", "paused"]);
  const MINUTE = 60;
  const WINDOW_MIN = 60;
  const COUNTERS = [
    ["dialled", "mon.c.dialled"],
    ["ringing", "mon.c.ringing"],
    ["answered", "mon.c.answered"],
    ["connected", "mon.c.connected"],
    ["abandoned", "mon.c.abandoned"],
    ["abandon_pct", "mon.c.abandon_pct"],
    ["leads_left", "mon.c.leads_left"],
    ["lines_per_agent", "mon.c.lines_per_agent"],
  ];

  function fmtCounter(key, value) {
    if (value === undefined || value === null) return "–";
    if (key === "abandon_pct") return Number(value).toFixed(1) + "%";
    if (key === "lines_per_agent") return Number(value).toFixed(2);
    return String(value);
  }

  function causeLabel(key) {
    const m = /^([a-z_]+)(?: \((\d+)\))?$/.exec(key);
    if (!m) return key;
    return t("result." + m[1]) + (m[2] ? " (" + m[2] + ")" : "");
  }

  function buildCard(id) {
    const buttons = can.control
      ? ["pause", "resume", "stop"].map((action) =>
          h(
            "button",
            { type: "button", class: "small " + (action === "stop" ? "danger-outline" : action === "pause" ? "secondary" : ""), dataset: { action }, onclick: () => act(id, action) },
            t("act." + action)
          )
        )
      : [];
    return h(
      "article",
      { class: "task-card", id: "task-" + id, dataset: { taskId: id } },
      h(
        "header",
        { class: "task-card-head" },
        h("h3", { class: "task-name" }),
        h("span", { class: "pill task-state" }),
        h("span", { class: "pill pacing" }),
        h("span", { class: "gateway" }),
        h("span", { class: "spacer" }),
        h("div", { class: "task-actions" }, buttons)
      ),
      h("p", { class: "card-error error", role: "alert", hidden: true }),
      h(
        "div",
        { class: "kpis" },
        COUNTERS.map(([key, label]) =>
          h("div", { class: "kpi", dataset: { counter: key } }, h("span", { class: "label" }, t(label)), h("span", { class: "value" }, "–"))
        )
      ),
      h("div", { class: "failed" }, h("span", { class: "label" }, t("mon.c.failed")), h("span", { class: "causes" })),
      h("div", { class: "chart", "aria-label": t("mon.chart") })
    );
  }

  function renderTask(entry) {
    const { info, stats, card } = entry;
    card.dataset.state = info.state;
    card.querySelector(".task-name").textContent = info.name;
    const state = card.querySelector(".task-state");
    state.className = "pill task-state tstate-" + info.state;
    state.textContent = t("tstate." + info.state);
    card.querySelector(".pacing").textContent = t("pace." + (stats.pacing_mode || info.pacing_mode));
    const gw = card.querySelector(".gateway");
    gw.replaceChildren(
      info.gateway_kind === "simulated"
        ? h("span", { class: "pill sim", title: t("gw.simulated_hint") }, t("gw.simulated"))
        : h("span", { class: "hint" }, (info.gateway_name || "") + " (" + t("gw." + (info.gateway_kind || "")) + ")")
    );
    const allowed = new Set(info.actions || []);
    card.querySelectorAll("button[data-action]").forEach((b) => {
      b.disabled = !allowed.has(b.dataset.action) || entry.busy;
      b.hidden = (b.dataset.action === "pause" && info.state === "paused") || (b.dataset.action === "resume" && info.state === "running");
    });
    for (const [key] of COUNTERS) {
      const kpi = card.querySelector('.kpi[data-counter="' + key + '"]');
      kpi.querySelector(".value").textContent = fmtCounter(key, stats[key]);
    }
    const over = stats.abandon_pct > (info.abandon_target_pct || 3);
    card.querySelector('.kpi[data-counter="abandon_pct"]').classList.toggle("over", !!over);
    const causes = Object.entries(stats.failed_by_cause || {}).sort((a, b) => b[1] - a[1]);
    card.querySelector(".causes").replaceChildren(
      ...(causes.length
        ? causes.map(([k, n]) => h("span", { class: "chip cause", dataset: { cause: k } }, causeLabel(k) + " " + n))
        : [h("span", { class: "hint" }, "0")])
    );
  }

  function noneHint() {
    $("tasks-none").hidden = tasks.size > 0;
  }

  function addTask(info, stats) {
    const id = info.campaign_id !== undefined ? info.campaign_id : info.id;
    let entry = tasks.get(id);
    if (!entry) {
      entry = { id, info: {}, stats: {}, card: buildCard(id), chart: null, series: null, last: null, busy: false };
      tasks.set(id, entry);
      const after = [...cards.children].find((c) => Number(c.dataset.taskId) > id);
      cards.insertBefore(entry.card, after || null);
      loadHistory(entry);
      if (location.hash === "#task-" + id) {
        entry.card.scrollIntoView({ block: "start" });
        entry.card.classList.add("focus");
      }
    }
    Object.assign(entry.info, info, { campaign_id: id });
    if (stats) Object.assign(entry.stats, stats);
    renderTask(entry);
    noneHint();
    return entry;
  }

  function removeTask(id) {
    const entry = tasks.get(id);
    if (!entry) return;
    if (entry.chart) entry.chart.destroy();
    entry.card.remove();
    tasks.delete(id);
    noneHint();
  }

  // Details of a task this page has no card for (it was started after the page loaded).
  const fetching = new Set();
  async function fetchTask(id) {
    if (fetching.has(id)) return;
    fetching.add(id);
    try {
      const task = await CC.api("GET", "/api/tasks/" + id);
      if (LIVE.has(task.state)) addTask(Object.assign({}, task, { campaign_id: task.id }), null);
      else removeTask(id);
    } catch (e) {
      if (e.status === 404) removeTask(id);
    } finally {
      fetching.delete(id);
    }
  }

  function onTaskStats(msg) {
    const entry = tasks.get(msg.campaign_id);
    if (!entry) {
      if (LIVE.has(msg.state)) fetchTask(msg.campaign_id);
      return;
    }
    if (msg.state && msg.state !== entry.info.state) fetchTask(msg.campaign_id); // a state change we missed
    extendChart(entry, msg);
    Object.assign(entry.stats, msg);
    renderTask(entry);
  }

  function onTaskState(msg) {
    const entry = tasks.get(msg.campaign_id);
    if (!LIVE.has(msg.new)) {
      removeTask(msg.campaign_id);
      return;
    }
    if (entry) {
      entry.info.state = msg.new;
      renderTask(entry);
    }
    fetchTask(msg.campaign_id); // the card's buttons follow the API's `actions`
  }

  const dialog = $("confirm");
  function confirmStop(entry) {
    $("confirm-text").textContent = t("mon.confirm_stop").replace("{name}", entry.info.name);
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true }));
  }

  async function act(id, action) {
    const entry = tasks.get(id);
    if (!entry) return;
    if (action === "stop" && !(await confirmStop(entry))) return;
    const err = entry.card.querySelector(".card-error");
    err.hidden = true;
    entry.busy = true;
    renderTask(entry);
    try {
      const task = await CC.api("POST", "/api/tasks/" + id + "/" + action);
      entry.busy = false;
      if (LIVE.has(task.state)) addTask(Object.assign({}, task, { campaign_id: task.id }), { state: task.state });
      else removeTask(id);
    } catch (e) {
      entry.busy = false;
      err.textContent = t("act." + action) + ": " + e.message;
      err.hidden = false;
      renderTask(entry);
    }
  }

  // --- the chart: calls per minute and abandon rate over the last hour --------------------------------

  function emptySeries(start) {
    const s = { t: [], dialled: [], connected: [], abandoned: [], abandonPct: [] };
    for (let i = 0; i < WINDOW_MIN; i++) {
      s.t.push(start + i * MINUTE);
      s.dialled.push(0);
      s.connected.push(0);
      s.abandoned.push(0);
      s.abandonPct.push(null);
    }
    return s;
  }

  function pct(s, i) {
    const live = s.connected[i] + s.abandoned[i];
    s.abandonPct[i] = live ? (100 * s.abandoned[i]) / live : null;
  }

  async function loadHistory(entry) {
    let series;
    try {
      const hist = await CC.api("GET", "/api/tasks/" + entry.id + "/history?minutes=" + WINDOW_MIN);
      series = { t: [], dialled: [], connected: [], abandoned: [], abandonPct: [] };
      for (const b of hist.buckets) {
        series.t.push(b.t);
        series.dialled.push(b.dialled);
        series.connected.push(b.connected);
        series.abandoned.push(b.abandoned);
        series.abandonPct.push(b.abandon_pct);
      }
    } catch (e) {
      const now = CC.serverNow();
      series = emptySeries(Math.floor(now / MINUTE) * MINUTE - (WINDOW_MIN - 1) * MINUTE);
    }
    if (!tasks.has(entry.id)) return;
    entry.series = series;
    entry.last = null; // the next push sets the base its growth is counted from
    drawChart(entry);
  }

  function chartData(s) {
    return [s.t, s.dialled, s.connected, s.abandonPct];
  }

  function drawChart(entry) {
    const box = entry.card.querySelector(".chart");
    if (typeof uPlot === "undefined") return;
    const width = Math.max(280, box.clientWidth || 560);
    const opts = {
      width,
      height: 180,
      legend: { show: true },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, calls: { range: (u, min, max) => [0, Math.max(5, max)] }, pct: { range: [0, 100] } },
      axes: [
        { stroke: "#6b7385", grid: { stroke: "#eef1f6" } },
        { scale: "calls", stroke: "#6b7385", grid: { stroke: "#eef1f6" }, label: t("mon.chart_calls") },
        { scale: "pct", side: 1, stroke: "#cf222e", grid: { show: false }, values: (u, vals) => vals.map((v) => v + "%"), label: t("mon.chart_abandon") },
      ],
      series: [
        {},
        { label: t("mon.c.dialled"), scale: "calls", stroke: "#1f6feb", fill: "rgba(31,111,235,.08)", width: 2 },
        { label: t("mon.c.connected"), scale: "calls", stroke: "#1a7f37", width: 2 },
        { label: t("mon.c.abandon_pct"), scale: "pct", stroke: "#cf222e", width: 1.5, dash: [4, 3], spanGaps: false, value: (u, v) => (v === null ? "–" : v.toFixed(1) + "%") },
      ],
    };
    if (entry.chart) entry.chart.destroy();
    box.replaceChildren();
    entry.chart = new uPlot(opts, chartData(entry.series), box);
    box.dataset.points = String(entry.series.t.length);
  }

  function extendChart(entry, msg) {
    const s = entry.series;
    if (!s) return; // the history is still on its way
    const last = entry.last;
    entry.last = { dialled: msg.dialled, connected: msg.connected, abandoned: msg.abandoned };
    if (!last) return;
    const minute = Math.floor((msg.at || CC.serverNow()) / MINUTE) * MINUTE;
    while (s.t[s.t.length - 1] < minute) {
      s.t.push(s.t[s.t.length - 1] + MINUTE);
      s.dialled.push(0);
      s.connected.push(0);
      s.abandoned.push(0);
      s.abandonPct.push(null);
      if (s.t.length > WINDOW_MIN) ["t", "dialled", "connected", "abandoned", "abandonPct"].forEach((k) => s[k].shift());
    }
    const i = s.t.length - 1;
    // A dialer restart recounts from the rows: never let the line go backwards.
    s.dialled[i] += Math.max(0, msg.dialled - last.dialled);
    s.connected[i] += Math.max(0, msg.connected - last.connected);
    s.abandoned[i] += Math.max(0, msg.abandoned - last.abandoned);
    pct(s, i);
    if (entry.chart) entry.chart.setData(chartData(s));
    entry.card.querySelector(".chart").dataset.dialled = String(s.dialled.reduce((x, y) => x + y, 0));
  }

  // --- PBX links ------------------------------------------------------------------------------

  function onGatewayStatus(msg) {
    const box = $("gateway-alerts");
    const old = box.querySelector('[data-gateway="' + CSS.escape(msg.gateway) + '"]');
    if (old) old.remove();
    if (msg.state === "up") return;
    const text = t("mon.gateway_state")
      .replace("{name}", msg.name || msg.gateway)
      .replace("{state}", t("gw.state_" + msg.state));
    box.append(h("span", { class: "pill gw-" + msg.state, dataset: { gateway: msg.gateway }, title: msg.detail || "" }, text));
  }

  // --- messages -----------------------------------------------------------------------------------

  function onMessage(msg) {
    switch (msg.type) {
      case "hello": {
        agents.clear();
        tbody.replaceChildren();
        (msg.grid || []).forEach((a) => {
          agents.set(a.agent_id, a);
          renderAgent(a);
        });
        summary();
        const live = new Set();
        for (const task of msg.tasks || []) {
          live.add(task.campaign_id);
          const entry = addTask(task, task);
          entry.last = null;
        }
        for (const id of [...tasks.keys()]) if (!live.has(id)) removeTask(id);
        $("gateway-alerts").replaceChildren();
        (msg.gateways || []).forEach(onGatewayStatus);
        spies.clear();
        (msg.spies || []).forEach((s) => spies.set(s.spy_id, s));
        for (const a of agents.values()) renderAgent(a);
        noneHint();
        document.body.dataset.ready = "1";
        break;
      }
      case "agent_state":
        onAgentState(msg);
        break;
      case "task_stats":
        onTaskStats(msg);
        break;
      case "task_state":
        onTaskState(msg);
        break;
      case "gateway_status":
        onGatewayStatus(msg);
        break;
      case "spy_session":
        onSpySession(msg);
        break;
      default:
        break;
    }
  }

  CC.onTick(() => {
    for (const tr of tbody.rows) {
      const a = agents.get(Number(tr.dataset.agentId));
      if (a) tickAgent(tr, a);
    }
  });
  window.addEventListener("resize", () => {
    for (const entry of tasks.values()) {
      if (entry.chart) entry.chart.setSize({ width: Math.max(280, entry.card.querySelector(".chart").clientWidth), height: 180 });
    }
  });
  CC.monitor = { agents, tasks };
  CC.connect({ streams: ["monitor"], onMessage, statusEl: $("live-status") });
})();
