/* The task list. Rows are built from the tasks API's JSON (first from the page, then from the API on
   every (re)connect of the push socket). A state change arrives by push (`task_state` on the `tasks`
   stream); the row is then read again from the API, so the buttons are enabled exactly as the API's
   `actions` say. The import of an initializing task is followed by reading its progress until it
   ends (the import job does not push); an admin may cancel it there. Stop, delete and cancelling an
   import ask first. */
(function () {
  "use strict";
  const CC = window.CC;
  const t = CC.t;
  const h = CC.h;
  const $ = (id) => document.getElementById(id);

  const can = JSON.parse($("tasks-can").textContent);
  const tasks = new Map(); // id -> task (TaskPublic)
  const tbody = $("tasks-table").tBodies[0];
  const errorBox = $("list-error");
  // Every button of a row, and the permission that shows it; enabled per the task's `actions`.
  const BUTTONS = [
    ["start", "control"],
    ["pause", "control"],
    ["resume", "control"],
    ["stop", "control"],
    ["monitor", "monitor"],
    ["edit", "manage"],
    ["delete", "manage"],
  ];
  const ASK_FIRST = new Set(["stop", "delete"]);
  const IMPORT_POLL_MS = 400;

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  function gatewayBadge(task) {
    if (task.gateway_kind === "simulated") {
      return h("span", { class: "pill sim", title: t("gw.simulated_hint") }, t("gw.simulated"));
    }
    return h("span", { class: "hint" }, task.gateway_name + " (" + t("gw." + task.gateway_kind) + ")");
  }

  function listCell(task) {
    const p = task.import_progress;
    if (task.state === "initializing") {
      const total = p.total ? String(p.total) : "…";
      return h(
        "div",
        { class: "import-progress" },
        h("progress", { max: 100, value: p.percent }),
        h("span", { class: "mono pct" }, Math.floor(p.percent) + "%"),
        h("span", { class: "hint mono rate" }, p.done + " / " + total + " · " + Math.round(p.rows_per_s) + " " + t("task.rows_s")),
        can.manage
          ? h("button", { type: "button", class: "small danger-outline cancel-import", onclick: () => cancelImport(task.id) }, t("task.cancel_import"))
          : null
      );
    }
    return h(
      "div",
      { class: "import-result" },
      h("span", { class: "mono" }, task.list_filename),
      h("br"),
      h("span", { class: "imported" }, t("task.imported") + " " + p.imported),
      p.rejected
        ? [" · ", h("a", { class: "report", href: "/api/tasks/" + task.id + "/import-report.csv", download: "" }, t("task.rejected") + " " + p.rejected)]
        : null,
      p.error ? h("div", { class: "error import-error" }, p.error) : null
    );
  }

  function actionsCell(task) {
    const allowed = new Set(task.actions);
    const buttons = BUTTONS.filter(([, perm]) => can[perm]).map(([action]) =>
      h(
        "button",
        {
          type: "button",
          class: "small " + (action === "stop" || action === "delete" ? "danger-outline" : action === "start" || action === "resume" ? "" : "secondary"),
          dataset: { action },
          disabled: !allowed.has(action),
          onclick: () => act(task.id, action),
        },
        t("act." + action)
      )
    );
    return h("div", { class: "buttons" }, buttons);
  }

  function render(task) {
    const tr = h(
      "tr",
      { dataset: { taskId: task.id, state: task.state } },
      h("td", { class: "name" }, h("strong", {}, task.name), " ", h("span", { class: "hint mono" }, "#" + task.id), h("br"), gatewayBadge(task)),
      h("td", { class: "state" }, h("span", { class: "pill tstate-" + task.state }, t("tstate." + task.state))),
      h("td", { class: "group" }, task.skill_group_name),
      h(
        "td",
        { class: "pacing" },
        t("pace." + task.pacing_mode),
        h("br"),
        h("span", { class: "hint" }, t("task.max_lines") + " " + task.max_concurrency + " · " + t("task.ratio") + " " + task.agent_ratio)
      ),
      h("td", { class: "list" }, listCell(task)),
      h("td", { class: "created" }, CC.fmtDateTime(task.created_at), h("br"), h("span", { class: "hint" }, task.created_by)),
      h("td", { class: "row-actions" }, actionsCell(task))
    );
    const old = tbody.querySelector('tr[data-task-id="' + task.id + '"]');
    if (old) old.replaceWith(tr);
    else {
      // Newest first.
      const after = [...tbody.rows].find((r) => Number(r.dataset.taskId) < task.id);
      tbody.insertBefore(tr, after || null);
    }
  }

  function upsert(task) {
    if (task.state === "deleted") {
      tasks.delete(task.id);
      const tr = tbody.querySelector('tr[data-task-id="' + task.id + '"]');
      if (tr) tr.remove();
    } else {
      tasks.set(task.id, task);
      render(task);
    }
    $("tasks-none").hidden = tasks.size > 0;
    followImports();
  }

  function renderAll(list) {
    tasks.clear();
    tbody.replaceChildren();
    list.forEach(upsert);
    $("tasks-none").hidden = tasks.size > 0;
  }

  async function reload(id) {
    try {
      upsert(await CC.api("GET", "/api/tasks/" + id));
    } catch (e) {
      if (e.status === 404) upsert({ id, state: "deleted" });
    }
  }

  // --- the buttons ------------------------------------------------------------------------------

  const dialog = $("confirm");
  function confirmAction(task, action, yes) {
    $("confirm-title").textContent = t("task.confirm_" + action + "_title");
    $("confirm-text").textContent = t("task.confirm_" + action).replace("{name}", task.name);
    $("confirm-yes").textContent = yes || t("act." + action);
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true }));
  }

  async function act(id, action) {
    const task = tasks.get(id);
    if (!task) return;
    if (action === "monitor") {
      location.href = "/monitor#task-" + id;
      return;
    }
    if (action === "edit") {
      location.href = "/tasks/" + id + "/edit";
      return;
    }
    if (ASK_FIRST.has(action) && !(await confirmAction(task, action))) return;
    showError("");
    const tr = tbody.querySelector('tr[data-task-id="' + id + '"]');
    if (tr) tr.querySelectorAll("button").forEach((b) => (b.disabled = true));
    try {
      const updated =
        action === "delete" ? await CC.api("DELETE", "/api/tasks/" + id) : await CC.api("POST", "/api/tasks/" + id + "/" + action);
      upsert(updated);
    } catch (e) {
      showError(t("task.action_failed").replace("{name}", task.name) + ": " + e.message);
      reload(id);
    }
  }

  // An import that is stuck (its worker died and it was not restarted) or not wanted: the task goes
  // to stopped with an import error saying so, keeping the numbers imported so far.
  async function cancelImport(id) {
    const task = tasks.get(id);
    if (!task || !(await confirmAction(task, "cancel_import", t("task.cancel_import")))) return;
    showError("");
    try {
      upsert(await CC.api("POST", "/api/tasks/" + id + "/import/cancel"));
    } catch (e) {
      showError(t("task.action_failed").replace("{name}", task.name) + ": " + e.message);
      reload(id);
    }
  }

  // --- imports in progress ----------------------------------------------------------------------

  let importTimer = null;
  function followImports() {
    if (importTimer !== null) return;
    if (![...tasks.values()].some((x) => x.state === "initializing")) return;
    importTimer = setTimeout(async () => {
      importTimer = null;
      for (const task of [...tasks.values()].filter((x) => x.state === "initializing")) {
        try {
          const progress = await CC.api("GET", "/api/tasks/" + task.id + "/import");
          if (progress.state !== "initializing") await reload(task.id);
          else if (tasks.has(task.id)) upsert(Object.assign({}, task, { import_progress: progress }));
        } catch (e) {
          if (e.status === 404) upsert({ id: task.id, state: "deleted" });
        }
      }
      followImports();
    }, IMPORT_POLL_MS);
  }

  // --- push -------------------------------------------------------------------------------------

  async function onMessage(msg) {
    if (msg.type === "hello") {
      // A (re)connect: read the list again, so nothing that changed while we were away is missed.
      try {
        renderAll(await CC.api("GET", "/api/tasks"));
      } catch (e) {
        showError(e.message);
      }
      document.body.dataset.ready = "1";
    } else if (msg.type === "task_state") {
      const task = tasks.get(msg.campaign_id);
      if (task) {
        // Show the new state at once; the row's buttons follow when the API has answered.
        const pill = tbody.querySelector('tr[data-task-id="' + task.id + '"] .state .pill');
        if (pill) {
          pill.className = "pill tstate-" + msg.new;
          pill.textContent = t("tstate." + msg.new);
        }
      }
      reload(msg.campaign_id);
    }
  }

  renderAll(JSON.parse($("tasks-data").textContent));
  CC.tasks = { tasks };
  CC.connect({ streams: ["tasks"], onMessage, statusEl: $("live-status") });
})();
