/* The workstation keeps every outcome: what the agent types on a call is kept as a draft of that call
   (in this browser at once, on the server a moment later), put back after a reload or in another
   browser, and listed under "Unsaved outcomes" once the next call has taken the panel, with Save and
   Discard. During wrap-up a countdown shows the time left, with "extend"; when the task holds for an
   unsaved outcome, the end says so instead of sending the agent the next call.
   Follows the panel through the hooks of workstation.js (`CC.workstation.on`). */
(function () {
  "use strict";
  const CC = window.CC;
  const ws = CC.workstation;
  if (!ws) return;
  const t = CC.t;
  const h = CC.h;
  const $ = (id) => document.getElementById(id);
  const ui = {
    box: $("wrap-box"),
    left: $("wrap-left"),
    extend: $("wrap-extend"),
    hint: $("wrap-hint"),
    drafts: $("drafts"),
    list: $("drafts-list").tBodies[0],
  };
  const KEY = "cc.draft.";
  const SEND_AFTER_MS = 400;

  // --- the draft of the call on screen -------------------------------------------------------

  let pending = null; // {callId, timer}
  let typedSincePop = false;

  function local(callId) {
    try {
      return JSON.parse(localStorage.getItem(KEY + callId) || "null");
    } catch (e) {
      return null;
    }
  }
  function forget(callId) {
    try {
      localStorage.removeItem(KEY + callId);
    } catch (e) {
      /* private mode: nothing was kept */
    }
  }

  async function send(callId, body) {
    try {
      const res = await CC.api("PUT", "/api/workstation/calls/" + encodeURIComponent(callId) + "/draft", body);
      const kept = local(callId);
      if (kept && JSON.stringify(kept.body) === JSON.stringify(body) && res.call_id === callId) forget(callId); // the server has it
    } catch (e) {
      /* kept in this browser; sent again with the next keystroke or put back from here */
    }
  }
  function flush() {
    if (!pending) return;
    clearTimeout(pending.timer);
    const { callId, body } = pending;
    pending = null;
    send(callId, body);
  }

  ws.on("dirty", (call) => {
    if (call.preview === "offered") return; // nothing of a lead not dialled yet is worth keeping
    typedSincePop = true;
    const callId = call.pop.call_id;
    const body = ws.formBody();
    try {
      localStorage.setItem(KEY + callId, JSON.stringify({ at: CC.serverNow(), body }));
    } catch (e) {
      /* storage full or disabled: the server copy still goes */
    }
    if (pending && pending.callId !== callId) flush();
    if (pending) clearTimeout(pending.timer);
    pending = { callId, body, timer: setTimeout(flush, SEND_AFTER_MS) };
  });
  window.addEventListener("pagehide", flush);

  ws.on("pop", async (call) => {
    flush(); // the previous call's last keystrokes
    typedSincePop = false;
    const callId = call.pop.call_id;
    let server = null;
    try {
      server = await CC.api("GET", "/api/workstation/calls/" + encodeURIComponent(callId) + "/draft");
    } catch (e) {
      server = null;
    }
    refreshList();
    if (!ws.call || ws.call.pop.call_id !== callId || typedSincePop) return; // moved on, or typing
    const kept = local(callId);
    let body = null;
    if (kept && (!server || kept.at > server.updated_at)) {
      body = kept.body;
      send(callId, body);
    } else if (server && !server.settled && server.body && Object.keys(server.body).length) body = server.body;
    if (!body) return;
    ws.fillForm(body);
    ws.ui.saveStatus.textContent = t("ws.draft_restored");
    ws.ui.saveStatus.dataset.state = "draft";
  });

  ws.on("saved", (callId) => {
    if (pending && pending.callId === callId) {
      clearTimeout(pending.timer);
      pending = null;
    }
    forget(callId);
    refreshList();
    refreshWrap();
  });

  // --- unsaved outcomes of earlier calls -----------------------------------------------------

  async function refreshList() {
    let rows = [];
    try {
      rows = await CC.api("GET", "/api/workstation/drafts");
    } catch (e) {
      return;
    }
    const onScreen = ws.call && ws.call.pop.call_id;
    rows = rows.filter((d) => d.call_id !== onScreen);
    ui.list.replaceChildren(...rows.map(draftRow));
    ui.drafts.hidden = rows.length === 0;
  }
  function draftRow(d) {
    const b = d.body || {};
    const status = h("td", { class: "hint", role: "status" });
    const act = (fn) => async (ev) => {
      ev.target.disabled = true;
      try {
        await fn();
        forget(d.call_id);
        refreshList();
        refreshWrap();
      } catch (e) {
        status.textContent = e.message;
        ev.target.disabled = false;
      }
    };
    const url = "/api/workstation/calls/" + encodeURIComponent(d.call_id);
    return h(
      "tr",
      { dataset: { callId: d.call_id } },
      h("td", {}, CC.fmtDateTime(d.at)),
      h("td", { class: "mono" }, CC.fmtPhone(d.number)),
      h("td", { class: "disposition" }, b.disposition || ""),
      h("td", { class: "note" }, b.note || ""),
      h(
        "td",
        { class: "row-actions" },
        h("button", { type: "button", class: "draft-save", onclick: act(() => CC.api("POST", url + "/save", Object.assign({}, b, { day: CC.localMidnight() }))) }, t("ws.draft_save")),
        h("button", { type: "button", class: "secondary draft-discard", onclick: act(() => CC.api("DELETE", url + "/draft")) }, t("ws.draft_discard"))
      ),
      status
    );
  }

  // --- wrap-up: time left, extend, the hold ------------------------------------------------------

  let wrap = null; // the server's view: {call_id, ends_at, hold, saved, held, can_extend}

  async function refreshWrap() {
    if (ws.me.state !== "wrap_up") return showWrap(null);
    try {
      showWrap(await CC.api("GET", "/api/workstation/wrap"));
    } catch (e) {
      /* shown again at the next change */
    }
  }
  function showWrap(view) {
    wrap = view;
    ui.box.hidden = !wrap;
    if (!wrap) return;
    ui.extend.disabled = !wrap.can_extend;
    tick();
  }
  function tick() {
    if (!wrap) return;
    const left = wrap.ends_at - CC.serverNow();
    ui.left.textContent = CC.fmtDuration(Math.max(0, Math.ceil(left)));
    const held = left <= 0 && wrap.hold && !wrap.saved;
    ui.box.dataset.held = held ? "1" : "0";
    ui.hint.textContent = held ? t("ws.wrap_held") : wrap.saved ? t("ws.wrap_saved") : wrap.hold ? "" : t("ws.wrap_no_hold");
  }
  ui.extend.addEventListener("click", async () => {
    ui.extend.disabled = true;
    try {
      showWrap(await CC.api("POST", "/api/workstation/wrap/extend"));
    } catch (e) {
      ui.hint.textContent = e.message;
    }
  });

  ws.on("state", (state) => {
    if (state === "wrap_up") refreshWrap();
    else showWrap(null);
  });
  ws.on("ended", refreshWrap);
  CC.onTick(tick);
  refreshList();
})();
