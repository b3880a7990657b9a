/* Supervisor monitor, agents part: the grid arrives with `hello` and every `agent_state` on the
   monitor stream updates one row (the web process adds the name, number and task to it).
   Phase 2 adds the task counters, chart and actions in <section id="tasks">. */
(function () {
  "use strict";
  const CC = window.CC;
  const t = CC.t;
  const h = CC.h;
  const $ = (id) => document.getElementById(id);

  const tbody = $("agents-grid").tBodies[0];
  const agents = new Map(); // agent_id -> row data
  const STATES = ["ready", "reserved", "on_call", "wrap_up", "not_ready", "away", "offline"];
  const ON_CALL = new Set(["on_call", "wrap_up"]);

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
        h("td", { class: "task" })
      );
      // Keep the grid sorted by extension.
      const after = [...tbody.rows].find((r) => (agents.get(Number(r.dataset.agentId)) || {}).extension > a.extension);
      tbody.insertBefore(tr, after || null);
    }
    return tr;
  }

  function render(a) {
    const tr = rowFor(a);
    tr.dataset.state = a.state;
    tr.querySelector(".ext").textContent = a.extension;
    tr.querySelector(".name").textContent = a.name || "";
    const pill = tr.querySelector(".state .pill");
    pill.className = "pill state-" + a.state;
    pill.textContent = t("state." + a.state);
    const onCall = ON_CALL.has(a.state) || a.state === "reserved";
    tr.querySelector(".call").textContent = onCall ? a.number || "" : "";
    tr.querySelector(".task").textContent = onCall ? a.campaign_name || (a.call_id ? t("dir.manual") : "") : "";
    tick(tr, a);
  }

  function tick(tr, a) {
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

  function onMessage(msg) {
    switch (msg.type) {
      case "hello":
        agents.clear();
        tbody.replaceChildren();
        (msg.grid || []).forEach((a) => {
          agents.set(a.agent_id, a);
          render(a);
        });
        summary();
        break;
      case "agent_state": {
        const old = agents.get(msg.agent_id);
        if (old && msg.since < old.since) break; // older than what the grid shows
        const a = Object.assign({}, old || {}, msg);
        if (!ON_CALL.has(a.state) && a.state !== "reserved") {
          a.number = "";
          a.campaign_name = "";
          a.connected_at = null;
        }
        agents.set(a.agent_id, a);
        render(a);
        summary();
        break;
      }
      // task_state, task_stats, gateway_link: phase 2 (section#tasks).
      default:
        break;
    }
  }

  CC.onTick(() => {
    for (const tr of tbody.rows) {
      const a = agents.get(Number(tr.dataset.agentId));
      if (a) tick(tr, a);
    }
  });
  CC.monitor = { agents };
  CC.connect({ streams: ["monitor"], onMessage, statusEl: $("live-status") });
})();
