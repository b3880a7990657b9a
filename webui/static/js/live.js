/* Shared by the live pages: translations, the push socket with reconnect, time and DOM helpers.
   No build step, no dependencies. */
(function () {
  "use strict";
  const CC = (window.CC = window.CC || {});

  const stringsEl = document.getElementById("i18n");
  CC.strings = stringsEl ? JSON.parse(stringsEl.textContent) : {};
  CC.t = (key) => (key in CC.strings ? CC.strings[key] : key);

  // Server clock minus browser clock (seconds), from the server_time of each hello / pop.
  CC.skew = 0;
  CC.serverNow = () => Date.now() / 1000 + CC.skew;
  CC.syncClock = (serverTime) => {
    if (typeof serverTime === "number") CC.skew = serverTime - Date.now() / 1000;
  };

  CC.fmtDuration = (seconds) => {
    const s = Math.max(0, Math.floor(seconds || 0));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + pad(m) : pad(m)) + ":" + pad(s % 60);
  };
  CC.fmtTime = (epoch) => {
    if (!epoch) return "";
    const d = new Date(epoch * 1000);
    const today = new Date();
    const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return d.toDateString() === today.toDateString() ? time : d.toLocaleDateString() + " " + time;
  };
  CC.localMidnight = () => {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    return d.getTime() / 1000;
  };

  // h("tr", {class: "x", dataset: {id: 1}}, "text", child) - text only, never HTML.
  CC.h = (tag, attrs, ...children) => {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "dataset") Object.assign(el.dataset, v);
      else if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  };

  // The session's CSRF token (the page's meta tag): every request that changes something sends it.
  const csrfEl = document.querySelector('meta[name="csrf-token"]');
  CC.csrfToken = csrfEl ? csrfEl.content : "";
  CC.headers = (extra) => Object.assign({ "X-CSRF-Token": CC.csrfToken }, extra || {});

  CC.api = async (method, url, body) => {
    const resp = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: CC.headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      let detail = data && data.detail;
      if (Array.isArray(detail)) detail = detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("; ");
      const err = new Error(detail || resp.statusText || String(resp.status));
      err.status = resp.status;
      err.field = data && data.field;
      throw err;
    }
    return data;
  };

  // The last messages received, newest last (for the console and the browser tests).
  CC.log = [];

  /* The push socket. Reconnects with backoff; every (re)connect starts with a `hello` carrying the
     full current state, so nothing is lost across a reconnect. Close code 4401 = signed out. */
  CC.connect = function ({ streams, onMessage, statusEl }) {
    let ws = null;
    let delay = 500;
    const setStatus = (state) => {
      if (!statusEl) return;
      statusEl.dataset.live = state;
      statusEl.textContent = CC.t("live." + state);
    };
    const open = () => {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      const params = new URLSearchParams({ streams: streams.join(","), day: String(CC.localMidnight()) });
      ws = new WebSocket(proto + "//" + location.host + "/ws?" + params);
      setStatus("connecting");
      ws.onmessage = (ev) => {
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch (e) {
          return;
        }
        CC.log.push(msg);
        if (CC.log.length > 200) CC.log.shift();
        if (msg.server_time) CC.syncClock(msg.server_time);
        if (msg.type === "hello") {
          delay = 500;
          setStatus("up");
        }
        try {
          onMessage(msg);
        } catch (e) {
          console.error("handling", msg.type, e);
        }
      };
      ws.onclose = (ev) => {
        if (ev.code === 4401) {
          location.href = "/login?next=" + encodeURIComponent(location.pathname);
          return;
        }
        if (ev.code === 4403) {
          setStatus("forbidden");
          return;
        }
        setStatus("down");
        const wait = delay * (0.75 + Math.random() / 2);
        delay = Math.min(delay * 2, 10000);
        setTimeout(open, wait);
      };
    };
    open();
    return { get socket() { return ws; } };
  };

  // One ticker for every on-screen timer (display only; all data comes by push).
  const tickers = new Set();
  CC.onTick = (fn) => tickers.add(fn);
  setInterval(() => tickers.forEach((fn) => fn()), 500);
})();
