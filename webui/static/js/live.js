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
  // Times and dates in the page's language (the one the user chose), not the browser's.
  CC.lang = document.documentElement.lang || "en";
  CC.fmtClock = (epoch) =>
    epoch ? new Date(epoch * 1000).toLocaleTimeString(CC.lang, { hour: "2-digit", minute: "2-digit" }) : "";
  CC.fmtDate = (epoch) =>
    epoch ? new Date(epoch * 1000).toLocaleDateString(CC.lang, { year: "numeric", month: "2-digit", day: "2-digit" }) : "";
  // A time with its date unless it is today (status lines).
  CC.fmtTime = (epoch) => {
    if (!epoch) return "";
    const d = new Date(epoch * 1000);
    return d.toDateString() === new Date().toDateString() ? CC.fmtClock(epoch) : CC.fmtDate(epoch) + " " + CC.fmtClock(epoch);
  };
  // A time in a list: always with its date, so rows of different days never look alike.
  CC.fmtDateTime = (epoch) => (epoch ? CC.fmtDate(epoch) + " " + CC.fmtClock(epoch) : "");

  /* Phone numbers for people: "+8613964221019" -> "+86 139 6422 1019" (as libphonenumber's
     international format for the common plans: CN, NANP, UK, HK/MO/TW/SG; others in groups after the
     country code). Anything that is not E.164 (an extension) is shown as it is. */
  const CC2 = new Set("20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 63 64 65 66 81 82 84 86 90 91 92 93 94 95 98".split(" "));
  const groups = (digits, sizes) => {
    const out = [];
    let i = 0;
    for (const n of sizes) {
      if (i >= digits.length) break;
      out.push(digits.slice(i, i + n));
      i += n;
    }
    if (i < digits.length) out.push(digits.slice(i));
    return out.join(" ");
  };
  CC.fmtPhone = (number) => {
    const m = /^\+(\d{6,15})$/.exec(number || "");
    if (!m) return number || "";
    const d = m[1];
    if (d[0] === "1" && d.length === 11) return "+1 " + d.slice(1, 4) + "-" + d.slice(4, 7) + "-" + d.slice(7);
    if (d.startsWith("86")) {
      const n = d.slice(2);
      if (/^1\d{10}$/.test(n)) return "+86 " + groups(n, [3, 4, 4]);
      const area = /^(10|2\d)/.test(n) ? 2 : 3;
      const rest = n.slice(area);
      return "+86 " + n.slice(0, area) + " " + (rest.length === 8 ? groups(rest, [4, 4]) : groups(rest, [3, 4]));
    }
    if (d.startsWith("44")) {
      const n = d.slice(2);
      if (/^7\d{9}$/.test(n)) return "+44 " + groups(n, [4, 6]);
      if (/^2\d{9}$/.test(n)) return "+44 " + groups(n, [2, 4, 4]);
      return "+44 " + groups(n, [4, 6]);
    }
    if (/^(852|853|886|65)\d{8}$/.test(d)) {
      const cc = d.startsWith("65") ? 2 : 3;
      return "+" + d.slice(0, cc) + " " + groups(d.slice(cc), [4, 4]);
    }
    const cc = d[0] === "1" || d[0] === "7" ? 1 : CC2.has(d.slice(0, 2)) ? 2 : 3;
    return "+" + d.slice(0, cc) + " " + groups(d.slice(cc), [3, 3, 4]);
  };

  // Not-ready reasons: built-in ones are translated, an admin's carry their own label.
  CC.reasonLabels = {};
  // (pages that name reasons send the "reason." keys; elsewhere the code or the admin's label shows)
  CC.reasonLabel = (code) => {
    const key = "reason." + code;
    return key in CC.strings ? CC.t(key) : CC.reasonLabels[code] || code;
  };
  CC.loadReasons = async () => {
    const list = await CC.api("GET", "/api/not-ready-reasons");
    list.forEach((r) => {
      if (r.label) CC.reasonLabels[r.code] = r.label;
    });
    return list;
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
