/* The agent workstation: state switch with time in state, today's counters, and the call panel that
   pops on `screen_pop`, turns to wrap-up on `call_ended` and saves everything with one click. */
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
  };

  const me = { state: "offline", since: CC.serverNow(), callId: null };
  let call = null; // the pop on screen: {pop, tags, ended, endedAt, saved}

  // --- agent state ----------------------------------------------------------------------------

  function showState(state, since) {
    me.state = state;
    me.since = since;
    ui.state.dataset.state = state;
    ui.state.className = "pill state-" + state;
    ui.state.textContent = t("state." + state);
    document.querySelectorAll("[data-set-state]").forEach((b) => {
      b.classList.toggle("current", b.dataset.setState === state);
      b.disabled = state === "on_call" || state === "reserved";
    });
    tickState();
  }
  function tickState() {
    ui.stateTimer.textContent = CC.fmtDuration(CC.serverNow() - me.since);
  }
  function onAgentState(msg) {
    // Older than what is shown (a message queued while the hello was read): ignore.
    if (typeof msg.since === "number" && msg.since < me.since) return;
    me.callId = msg.call_id;
    showState(msg.state, msg.since);
  }

  document.querySelectorAll("[data-set-state]").forEach((btn) =>
    btn.addEventListener("click", async () => {
      unlockAlerts();
      ui.stateError.hidden = true;
      try {
        const res = await CC.api("POST", "/api/agent/state", { state: btn.dataset.setState });
        onAgentState({ state: res.state, since: res.since, call_id: res.call_id });
      } catch (e) {
        ui.stateError.textContent = e.message;
        ui.stateError.hidden = false;
      }
    })
  );

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

  function notify(pop) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    try {
      const n = new Notification(t("ws.pop_title") + " " + pop.number, {
        body: [pop.crm && pop.crm.contact && pop.crm.contact.name, pop.campaign_name].filter(Boolean).join(" · "),
        tag: "screen-pop",
      });
      n.onclick = () => {
        window.focus();
        n.close();
      };
    } catch (e) {
      /* some browsers only allow notifications from a service worker */
    }
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
          h("td", {}, CC.fmtTime(c.at)),
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
    return h("li", { dataset: { noteId: n.id } }, h("div", { class: "note-meta" }, CC.fmtTime(n.at) + " · " + (n.author || "")), h("div", { class: "note-body" }, n.body));
  }

  function showContact(contact) {
    ui.name.value = contact.name || "";
    ui.company.value = contact.company || "";
    ui.email.value = contact.email || "";
    ui.phones.textContent = (contact.phones || []).join(", ");
    ui.contactStatus.textContent = contact.id ? t("ws.known_customer") : t("ws.new_customer");
    ui.contactStatus.dataset.known = contact.id ? "1" : "0";
  }

  function showPop(pop, { rebuilt }) {
    const crm = pop.crm || { contact: { id: null, name: "", company: "", email: "", phones: [pop.number], tags: [] }, calls: [], notes: [] };
    call = { pop, tags: [...(crm.contact.tags || [])], ended: !!pop.ended_at, endedAt: pop.ended_at || null, saved: false };
    ui.panel.dataset.callId = pop.call_id;
    ui.direction.textContent = t("dir." + pop.direction);
    ui.direction.className = "pill dir-" + pop.direction;
    ui.number.textContent = pop.number;
    ui.task.textContent = pop.campaign_name || "";
    showContact(crm.contact);
    renderTags();
    renderLeadFields(pop.lead_fields);
    renderDispositions(pop.dispositions || [], pop.disposition || "");
    renderHistory(crm);
    ui.note.value = "";
    ui.saveStatus.textContent = "";
    ui.saveStatus.dataset.state = "";
    showCallStatus();
    ui.idle.hidden = true;
    ui.panel.hidden = false;
    if (!rebuilt) {
      chime();
      notify(pop);
      ui.panel.classList.remove("flash");
      void ui.panel.offsetWidth; // restart the animation
      ui.panel.classList.add("flash");
    }
  }

  function showCallStatus() {
    ui.status.textContent = call.ended ? t("ws.wrap_up") : t("ws.on_call");
    ui.status.className = "pill " + (call.ended ? "state-wrap_up" : "state-on_call");
    ui.panel.dataset.phase = call.ended ? "wrap_up" : "on_call";
    ui.close.hidden = !call.ended;
    tickCall();
  }
  function tickCall() {
    if (!call) return;
    const start = call.pop.connected_at || CC.serverNow();
    const end = call.ended ? call.endedAt || CC.serverNow() : CC.serverNow();
    ui.timer.textContent = CC.fmtDuration(end - start);
  }

  function onCallEnded(msg) {
    showCounters(msg.counters);
    if (!call || call.pop.call_id !== msg.call_id) return;
    call.ended = true;
    call.endedAt = msg.at;
    showCallStatus();
  }

  function markDirty() {
    if (call && call.saved) {
      call.saved = false;
      ui.saveStatus.textContent = "";
      ui.saveStatus.dataset.state = "";
    }
  }
  ui.form.addEventListener("input", markDirty);

  ui.form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!call) return;
    if (ui.tagInput.value.trim()) {
      addTag(ui.tagInput.value);
      ui.tagInput.value = "";
    }
    const chosen = ui.form.querySelector("input[name=disposition]:checked");
    const body = {
      contact: { name: ui.name.value, company: ui.company.value, email: ui.email.value },
      tags: call.tags,
      note: ui.note.value,
      disposition: chosen ? chosen.value : "",
      day: CC.localMidnight(),
    };
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
    } catch (e) {
      ui.saveStatus.textContent = t("ws.save_failed") + ": " + e.message;
      ui.saveStatus.dataset.state = "error";
    } finally {
      ui.save.disabled = false;
    }
  });

  ui.close.addEventListener("click", () => {
    call = null;
    ui.panel.hidden = true;
    ui.idle.hidden = false;
  });

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
          if (msg.pop.ended_at && !call.ended) {
            call.ended = true;
            call.endedAt = msg.pop.ended_at;
            showCallStatus();
          }
        } else if (msg.pop) showPop(msg.pop, { rebuilt: true });
        else if (call && !call.ended && msg.agent && msg.agent.call_id !== call.pop.call_id) {
          // The call ended while we were disconnected: keep it on screen for the wrap-up.
          call.ended = true;
          showCallStatus();
        }
        break;
      case "agent_state":
        onAgentState(msg);
        break;
      case "screen_pop":
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
  CC.workstation = { get call() { return call; }, me };
  CC.connect({ streams: ["agent"], onMessage, statusEl: $("live-status") });
})();
