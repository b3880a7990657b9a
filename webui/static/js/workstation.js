/* The agent workstation: state switch with time in state, today's counters, and the call panel that
   pops on `screen_pop`, turns to wrap-up on `call_ended` and saves everything with one click.
   In preview mode the same panel shows the lead offered (`preview`) with Dial and Skip; when the
   dialled call connects, its `screen_pop` turns the panel into the call without losing what the
   agent typed meanwhile. */
(function () {
  "use strict";
  const CC = window.CC;
  const t = CC.t;
  const h = CC.h;
  const $ = (id) => document.getElementById(id);

  const ui = {
    state: $("agent-state"),
    stateTimer: $("state-timer"),
    stateError: $("state-error"),
    idle: $("idle"),
    idleText: $("idle-text"),
    reasonMenu: $("reason-menu"),
    panel: $("call-panel"),
    direction: $("call-direction"),
    number: $("call-number"),
    task: $("call-task"),
    status: $("call-status"),
    timer: $("call-timer"),
    form: $("outcome-form"),
    name: $("contact-name"),
    company: $("contact-company"),
    email: $("contact-email"),
    phones: $("contact-phones"),
    contactStatus: $("contact-status"),
    tags: $("contact-tags"),
    tagInput: $("tag-input"),
    tagList: $("tag-list"),
    leadFields: $("lead-fields").tBodies[0],
    leadNone: $("lead-none"),
    dispositions: $("dispositions"),
    note: $("note"),
    save: $("save-call"),
    close: $("close-call"),
    saveStatus: $("save-status"),
    calls: $("history-calls").tBodies[0],
    callsNone: $("calls-none"),
    notes: $("history-notes"),
    notesNone: $("notes-none"),
    previewBar: $("preview-bar"),
    previewDial: $("preview-dial"),
    previewSkip: $("preview-skip"),
    previewStatus: $("preview-status"),
  };

  const me = { state: "offline", since: CC.serverNow(), callId: null, reason: null };
  // The pop on screen: {pop, tags, ended, endedAt, saved, preview ("offered" | "dialling" | null)}
  let call = null;

  // Other modules (drafts.js) follow the panel through these: pop, dirty, ended, saved, closed, state.
  const hooks = {};
  const on = (name, fn) => (hooks[name] = hooks[name] || []).push(fn);
  const emit = (name, arg) =>
    (hooks[name] || []).forEach((fn) => {
      try {
        fn(arg);
      } catch (e) {
        console.error("hook", name, e);
      }
    });

  // --- agent state ----------------------------------------------------------------------------

  function showState(state, since) {
    me.state = state;
    me.since = since;
    ui.state.dataset.state = state;
    ui.state.dataset.reason = me.reason || "";
    ui.state.className = "pill state-" + state;
    // A lead offered in preview holds the agent (reserved) but nothing is connecting yet.
    const previewing = state === "reserved" && call && call.preview && !call.ended;
    const picked = state === "not_ready" && me.reason && !SYSTEM_REASONS.has(me.reason);
    ui.state.textContent = previewing ? t("ws.preview_pill") : t("state." + state) + (picked ? " · " + CC.reasonLabel(me.reason) : "");
    ui.idleText.textContent = t(state === "ready" || state === "reserved" || state === "on_call" ? "ws.waiting" : "ws.idle." + state);
    document.querySelectorAll("[data-set-state]").forEach((b) => {
      b.classList.toggle("current", b.dataset.setState === state);
      b.disabled = state === "on_call" || state === "reserved";
    });
    tickState();
    emit("state", state);
  }
  const SYSTEM_REASONS = new Set(["missed_call", "workstation_disconnected", "after_manual_call"]);
  function tickState() {
    ui.stateTimer.textContent = CC.fmtDuration(CC.serverNow() - me.since);
  }
  function onAgentState(msg) {
    // Older than what is shown (a message queued while the hello was read): ignore.
    if (typeof msg.since === "number" && msg.since < me.since) return;
    me.callId = msg.call_id;
    me.reason = msg.reason || null;
    showState(msg.state, msg.since);
    if (msg.reason === "missed_call") {
      // The dialer took the agent out of routing: say why, loudly, until they change state.
      ui.stateError.textContent = t("ws.missed_call");
      ui.stateError.hidden = false;
      chime();
      notify(t("ws.missed_call"), "", "missed-call");
    } else if (msg.reason === "workstation_disconnected") {
      ui.stateError.textContent = t("ws.workstation_disconnected");
      ui.stateError.hidden = false;
    } else {
      ui.stateError.hidden = true;
    }
  }

  async function setState(state, reason) {
    ui.reasonMenu.hidden = true;
    ui.stateError.hidden = true;
    try {
      const res = await CC.api("POST", "/api/agent/state", { state, reason: reason || null });
      onAgentState({ state: res.state, since: res.since, call_id: res.call_id, reason: res.reason });
    } catch (e) {
      ui.stateError.textContent = e.message;
      ui.stateError.hidden = false;
    }
  }
  document.querySelectorAll("[data-set-state]").forEach((btn) =>
    btn.addEventListener("click", () => {
      unlockAlerts();
      // Not ready asks why (break, lunch, training, the admin's own): the supervisor and the reports see it.
      if (btn.dataset.setState === "not_ready" && ui.reasonMenu.querySelector("[data-reason]")) ui.reasonMenu.hidden = !ui.reasonMenu.hidden;
      else setState(btn.dataset.setState);
    })
  );
  async function loadReasons() {
    try {
      const list = await CC.loadReasons();
      ui.reasonMenu.replaceChildren(
        h("span", { class: "hint" }, t("ws.reason_pick")),
        ...list.map((r) => h("button", { type: "button", class: "secondary", dataset: { reason: r.code }, onclick: () => setState("not_ready", r.code) }, CC.reasonLabel(r.code))),
        h("button", { type: "button", class: "link", onclick: () => (ui.reasonMenu.hidden = true) }, t("ws.reason_cancel"))
      );
      showState(me.state, me.since);
    } catch (e) {
      /* without the list, Not ready is set without a reason */
    }
  }

  // --- counters -------------------------------------------------------------------------------

  function showCounters(c) {
    if (!c) return;
    $("c-calls").textContent = c.calls;
    $("c-talk").textContent = CC.fmtDuration(c.talk_s);
    $("c-avg").textContent = CC.fmtDuration(c.avg_talk_s);
    $("c-saved").textContent = c.saved;
    $("c-manual").textContent = c.manual;
  }

  // --- alerts: a short tone (WebAudio, generated) and a browser notification ---------------------

  let audio = null;
  function unlockAlerts() {
    // Browsers allow sound and the permission prompt only after a user gesture.
    try {
      audio = audio || new (window.AudioContext || window.webkitAudioContext)();
      if (audio.state === "suspended") audio.resume();
    } catch (e) {
      audio = null;
    }
    if ("Notification" in window && Notification.permission === "default") {
      Notification.requestPermission().catch(() => {});
    }
  }
  document.addEventListener("click", unlockAlerts, { once: true });

  function chime() {
    if (!audio || audio.state !== "running") return;
    const now = audio.currentTime;
    [880, 1320].forEach((freq, i) => {
      const osc = audio.createOscillator();
      const gain = audio.createGain();
      osc.type = "sine";
      osc.frequency.value = freq;
      const start = now + i * 0.16;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.25, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.14);
      osc.connect(gain).connect(audio.destination);
      osc.start(start);
      osc.stop(start + 0.15);
    });
  }

  function notify(title, body, tag) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      const n = new Notification(title, { body, tag });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    } catch (e) {
      /* some browsers only allow notifications from a service worker */
    }
  }
  function notifyPop(pop) {
    const who = [pop.crm && pop.crm.contact && pop.crm.contact.name, pop.campaign_name].filter(Boolean);
    notify(t("ws.pop_title") + " " + pop.number, who.join(" · "), "screen-pop");
  }

  // --- the call panel -------------------------------------------------------------------------

  function renderTags() {
    ui.tags.replaceChildren(
      ...call.tags.map((tag) =>
        h(
          "span",
          { class: "chip", dataset: { tag } },
          tag,
          h("button", { type: "button", class: "chip-x", title: t("ws.remove_tag"), "aria-label": t("ws.remove_tag"), onclick: () => removeTag(tag) }, "×")
        )
      )
    );
  }
  function addTag(raw) {
    const tag = raw.trim().replace(/\s+/g, " ");
    if (!tag || !call) return;
    if (!call.tags.some((x) => x.toLowerCase() === tag.toLowerCase())) call.tags.push(tag);
    renderTags();
    markDirty();
  }
  function removeTag(tag) {
    call.tags = call.tags.filter((x) => x !== tag);
    renderTags();
    markDirty();
  }
  ui.tagInput.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" || ev.key === ",") {
      ev.preventDefault();
      addTag(ui.tagInput.value);
      ui.tagInput.value = "";
    }
  });
  ui.tagInput.addEventListener("change", () => {
    // Picking from the datalist fires `change`.
    if (ui.tagInput.value.trim()) {
      addTag(ui.tagInput.value);
      ui.tagInput.value = "";
    }
  });

  function renderDispositions(list, chosen) {
    ui.dispositions.replaceChildren(
      ...list.map((d, i) =>
        h(
          "label",
          { class: "choice" },
          h("input", { type: "radio", name: "disposition", value: d, id: "disp-" + i, checked: d === chosen, onchange: markDirty }),
          h("span", {}, d)
        )
      )
    );
  }

  function renderLeadFields(fields) {
    const entries = Object.entries(fields || {});
    ui.leadFields.replaceChildren(
      ...entries.map(([k, v]) => h("tr", { dataset: { leadField: k } }, h("th", {}, k), h("td", {}, v === null ? "" : String(v))))
    );
    ui.leadNone.hidden = entries.length > 0;
  }

  function renderHistory(crm) {
    const calls = (crm && crm.calls) || [];
    ui.calls.replaceChildren(
      ...calls.map((c) =>
        h(
          "tr",
          { dataset: { callId: c.call_id } },
          h("td", {}, CC.fmtDateTime(c.at)),
          h("td", {}, c.campaign_name || t("dir." + c.direction)),
          h("td", {}, c.result ? t("result." + c.result) : ""),
          h("td", { class: "disposition" }, c.disposition || ""),
          h("td", {}, c.talk_s === null || c.talk_s === undefined ? "" : CC.fmtDuration(c.talk_s)),
          h("td", {}, c.extension || "")
        )
      )
    );
    ui.callsNone.hidden = calls.length > 0;
    const notes = (crm && crm.notes) || [];
    ui.notes.replaceChildren(...notes.map(noteItem));
    ui.notesNone.hidden = notes.length > 0;
  }
  function noteItem(n) {
    return h("li", { dataset: { noteId: n.id } }, h("div", { class: "note-meta" }, CC.fmtDateTime(n.at) + " · " + (n.author || "")), h("div", { class: "note-body" }, n.body));
  }

  function showContact(contact) {
    ui.name.value = contact.name || "";
    ui.company.value = contact.company || "";
    ui.email.value = contact.email || "";
    ui.phones.textContent = (contact.phones || []).map(CC.fmtPhone).join(", ");
    ui.contactStatus.textContent = contact.id ? t("ws.known_customer") : t("ws.new_customer");
    ui.contactStatus.dataset.known = contact.id ? "1" : "0";
  }

  function showPop(pop, { rebuilt }) {
    const crm = pop.crm || { contact: { id: null, name: "", company: "", email: "", phones: [pop.number], tags: [] }, calls: [], notes: [] };
    const preview = pop.direction === "preview" ? "offered" : null;
    call = { pop, tags: [...(crm.contact.tags || [])], ended: !!pop.ended_at, endedAt: pop.ended_at || null, saved: false, preview };
    ui.panel.dataset.callId = pop.call_id;
    ui.direction.textContent = t("dir." + pop.direction);
    ui.direction.className = "pill dir-" + pop.direction;
    ui.number.textContent = CC.fmtPhone(pop.number);
    ui.number.dataset.number = pop.number;
    ui.task.textContent = pop.campaign_name || "";
    showContact(crm.contact);
    renderTags();
    renderLeadFields(pop.lead_fields);
    renderDispositions(pop.dispositions || [], pop.disposition || "");
    renderHistory(crm);
    ui.note.value = "";
    ui.saveStatus.textContent = "";
    ui.saveStatus.dataset.state = "";
    // Nothing of the lead before stays beside this one (its result, a refusal).
    ui.previewStatus.textContent = "";
    ui.previewStatus.dataset.state = "";
    showCallStatus();
    ui.idle.hidden = true;
    ui.panel.hidden = false;
    showState(me.state, me.since);
    if (!rebuilt) announce(pop);
    emit("pop", call);
  }

  function announce(pop) {
    chime();
    notifyPop(pop);
    ui.panel.classList.remove("flash");
    void ui.panel.offsetWidth; // restart the animation
    ui.panel.classList.add("flash");
  }

  // The preview's call connected: the same panel becomes the call; what the agent typed stays.
  function previewConnected(pop) {
    call.preview = null;
    showState(me.state, me.since);
    call.pop = Object.assign({}, call.pop, pop, { crm: call.pop.crm });
    ui.direction.textContent = t("dir." + pop.direction);
    ui.direction.className = "pill dir-" + pop.direction;
    showCallStatus();
    announce(pop);
  }

  function onPop(msg) {
    if (call && call.preview && call.pop.call_id === msg.call_id) previewConnected(msg);
    else showPop(msg, { rebuilt: false });
  }

  function showCallStatus() {
    const phase = call.preview ? (call.ended ? "preview_ended" : "preview") : call.ended ? "wrap_up" : "on_call";
    const label = {
      preview: call.preview === "dialling" ? t("ws.preview_dialling") : t("ws.preview"),
      preview_ended: t("ws.preview_ended"),
      wrap_up: t("ws.wrap_up"),
      on_call: t("ws.on_call"),
    }[phase];
    ui.status.textContent = label;
    ui.status.className = "pill " + (call.preview ? "state-reserved" : call.ended ? "state-wrap_up" : "state-on_call");
    ui.panel.dataset.phase = phase;
    ui.close.hidden = !call.ended;
    ui.save.hidden = !!call.preview;
    ui.previewBar.hidden = !call.preview || call.ended;
    ui.previewDial.disabled = ui.previewSkip.disabled = call.preview !== "offered";
    tickCall();
  }
  function tickCall() {
    if (!call) return;
    if (call.preview) {
      ui.timer.textContent = call.ended ? "" : CC.fmtDuration(CC.serverNow() - (call.offeredAt || (call.offeredAt = CC.serverNow())));
      return;
    }
    const start = call.pop.connected_at || CC.serverNow();
    const end = call.ended ? call.endedAt || CC.serverNow() : CC.serverNow();
    ui.timer.textContent = CC.fmtDuration(end - start);
  }

  function onCallEnded(msg) {
    showCounters(msg.counters);
    if (!call || call.pop.call_id !== msg.call_id) return;
    if (call.preview === "offered" && (msg.result === "cancelled" || msg.result === "skipped")) {
      closePanel(); // skipped here, or taken back by the dialer (task paused or stopped)
      return;
    }
    call.ended = true;
    call.endedAt = msg.at;
    if (call.preview) ui.previewStatus.textContent = msg.result ? t("result." + msg.result) : "";
    showCallStatus();
    showState(me.state, me.since);
    emit("ended", call);
  }

  async function previewClick(action) {
    if (!call || call.preview !== "offered") return;
    const callId = call.pop.call_id;
    ui.previewDial.disabled = ui.previewSkip.disabled = true;
    ui.previewStatus.textContent = "";
    try {
      await CC.api("POST", "/api/agent/preview/" + encodeURIComponent(callId) + "/" + action);
      if (!call || call.pop.call_id !== callId) return;
      if (action === "skip") closePanel();
      else {
        call.preview = "dialling";
        showCallStatus();
      }
    } catch (e) {
      if (!call || call.pop.call_id !== callId) return;
      ui.previewStatus.textContent = t("ws.preview_failed") + ": " + e.message;
      ui.previewStatus.dataset.state = "error";
      showCallStatus();
    }
  }
  ui.previewDial.addEventListener("click", () => previewClick("dial"));
  ui.previewSkip.addEventListener("click", () => previewClick("skip"));

  function markDirty() {
    if (call && call.saved) {
      call.saved = false;
      ui.saveStatus.textContent = "";
      ui.saveStatus.dataset.state = "";
    }
    if (call) emit("dirty", call);
  }

  // The panel as the save (and a draft) sends it, and back.
  function formBody() {
    const chosen = ui.form.querySelector("input[name=disposition]:checked");
    return {
      contact: { name: ui.name.value, company: ui.company.value, email: ui.email.value },
      tags: call ? call.tags : [],
      note: ui.note.value,
      disposition: chosen ? chosen.value : "",
    };
  }
  function fillForm(body) {
    if (!call || !body) return;
    const c = body.contact || {};
    ui.name.value = c.name || "";
    ui.company.value = c.company || "";
    ui.email.value = c.email || "";
    call.tags = Array.isArray(body.tags) ? body.tags.slice() : call.tags;
    renderTags();
    ui.form.querySelectorAll("input[name=disposition]").forEach((r) => (r.checked = r.value === body.disposition));
    ui.note.value = body.note || "";
  }
  ui.form.addEventListener("input", markDirty);

  ui.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!call) return;
    if (ui.tagInput.value.trim()) {
      addTag(ui.tagInput.value);
      ui.tagInput.value = "";
    }
    const body = Object.assign(formBody(), { day: CC.localMidnight() });
    const callId = call.pop.call_id;
    ui.save.disabled = true;
    ui.saveStatus.textContent = t("ws.saving");
    ui.saveStatus.dataset.state = "saving";
    try {
      const res = await CC.api("POST", "/api/workstation/calls/" + encodeURIComponent(callId) + "/save", body);
      if (!call || call.pop.call_id !== callId) return;
      call.saved = true;
      call.tags = res.contact.tags;
      renderTags();
      showContact(res.contact);
      if (res.note) {
        ui.notes.prepend(noteItem(res.note));
        ui.notesNone.hidden = true;
      }
      ui.note.value = "";
      showCounters(res.counters);
      ui.saveStatus.textContent = t("ws.saved");
      ui.saveStatus.dataset.state = "saved";
      refreshTagList();
      emit("saved", callId);
    } catch (e) {
      ui.saveStatus.textContent = t("ws.save_failed") + ": " + e.message;
      ui.saveStatus.dataset.state = "error";
    } finally {
      ui.save.disabled = false;
    }
  });

  function closePanel() {
    call = null;
    ui.panel.hidden = true;
    ui.idle.hidden = false;
    ui.previewStatus.textContent = "";
    ui.previewStatus.dataset.state = "";
    showState(me.state, me.since);
    emit("closed");
  }
  ui.close.addEventListener("click", closePanel);

  async function refreshTagList() {
    try {
      const tags = await CC.api("GET", "/api/crm/tags");
      ui.tagList.replaceChildren(...tags.map((x) => h("option", { value: x })));
    } catch (e) {
      /* the datalist is only a convenience */
    }
  }

  // --- messages -------------------------------------------------------------------------------

  function onMessage(msg) {
    switch (msg.type) {
      case "hello":
        if (msg.agent) {
          me.since = 0; // take the hello's state whatever was shown
          onAgentState(msg.agent);
        }
        showCounters(msg.counters);
        if (msg.pop && call && call.pop.call_id === msg.pop.call_id) {
          // A reconnect during the call on screen: keep what the agent has typed, catch up the phase.
          if (call.preview) previewConnected(msg.pop);
          if (msg.pop.ended_at && !call.ended) {
            call.ended = true;
            call.endedAt = msg.pop.ended_at;
            showCallStatus();
            emit("ended", call);
          }
        } else if (msg.pop) showPop(msg.pop, { rebuilt: true });
        else if (msg.preview && !(call && call.pop.call_id === msg.preview.call_id)) showPop(msg.preview, { rebuilt: true });
        else if (call && call.preview === "offered" && !msg.preview) closePanel(); // taken back while away
        else if (call && !call.ended && msg.agent && msg.agent.call_id !== call.pop.call_id) {
          // The call ended while we were disconnected: keep it on screen for the wrap-up.
          call.ended = true;
          showCallStatus();
          emit("ended", call);
        }
        break;
      case "agent_state":
        onAgentState(msg);
        break;
      case "screen_pop":
        onPop(msg);
        break;
      case "preview":
        showPop(msg, { rebuilt: false });
        break;
      case "call_ended":
        onCallEnded(msg);
        break;
      default:
        break;
    }
  }

  CC.onTick(() => {
    tickState();
    tickCall();
  });
  refreshTagList();
  loadReasons();
  CC.workstation = { get call() { return call; }, me, on, formBody, fillForm, ui };
  CC.connect({ streams: ["agent"], onMessage, statusEl: $("live-status") });
})();
