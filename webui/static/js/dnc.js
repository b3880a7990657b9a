/* The do-not-call list: search, add numbers (one per line), upload a file, remove one number. Each
   change answers what was added and which entries were refused, and why. */
(function () {
  "use strict";
  const CC = window.CC;
  const t = CC.t;
  const h = CC.h;
  const $ = (id) => document.getElementById(id);
  const tbody = $("dnc-table").tBodies[0];
  const PAGE = 200;

  async function load() {
    const q = $("dnc-search").value.trim();
    const data = await CC.api("GET", "/api/dnc?" + new URLSearchParams({ q, limit: String(PAGE) }));
    tbody.replaceChildren(
      ...data.items.map((item) =>
        h(
          "tr",
          { dataset: { number: item.number } },
          h("td", { class: "mono" }, item.number),
          h("td", {}, CC.fmtDateTime(item.added_at)),
          h("td", {}, item.source),
          h("td", {}, item.note),
          h(
            "td",
            { class: "row-actions" },
            h("button", { type: "button", class: "small danger-outline", dataset: { remove: item.number }, onclick: () => remove(item.number) }, t("dnc.remove"))
          )
        )
      )
    );
    $("dnc-total").textContent = "(" + data.total + ")";
    $("dnc-none").hidden = data.items.length > 0;
    $("dnc-more").hidden = data.total <= data.items.length;
    $("dnc-more").textContent = t("dnc.more").replace("{shown}", data.items.length).replace("{total}", data.total);
  }

  function result(res) {
    $("dnc-result").hidden = false;
    const text = $("dnc-result-text");
    text.textContent = t("dnc.result")
      .replace("{added}", res.added)
      .replace("{already}", res.already_listed)
      .replace("{rejected}", res.rejected.length);
    text.dataset.added = res.added;
    text.dataset.rejected = res.rejected.length;
    $("dnc-rejected").replaceChildren(
      ...res.rejected.map((r) =>
        h("li", {}, (r.row ? t("dnc.row") + " " + r.row : "#" + (r.index + 1)) + ": " + r.number + " — " + r.reason)
      )
    );
  }

  function failed(e) {
    $("dnc-result").hidden = false;
    $("dnc-result-text").textContent = t("dnc.failed") + ": " + e.message;
    $("dnc-result-text").dataset.added = "";
    $("dnc-rejected").replaceChildren();
  }

  async function remove(number) {
    try {
      await CC.api("DELETE", "/api/dnc/" + encodeURIComponent(number));
      await load();
    } catch (e) {
      failed(e);
    }
  }

  $("dnc-add").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const numbers = form.elements.numbers.value
      .split(/[\n,;]+/)
      .map((x) => x.trim())
      .filter(Boolean);
    if (!numbers.length) return;
    try {
      result(await CC.api("POST", "/api/dnc", { numbers, note: form.elements.note.value }));
      form.reset();
      await load();
    } catch (e) {
      failed(e);
    }
  });

  $("dnc-upload").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    if (!form.elements.file.files.length) return;
    const fd = new FormData();
    fd.append("file", form.elements.file.files[0]);
    try {
      const resp = await fetch("/api/dnc/upload", {
        method: "POST",
        body: fd,
        credentials: "same-origin",
        headers: CC.headers(),
      });
      const data = await resp.json().catch(() => null);
      if (!resp.ok) throw new Error((data && typeof data.detail === "string" && data.detail) || String(resp.status));
      result(data);
      form.reset();
      await load();
    } catch (e) {
      failed(e);
    }
  });

  let searchTimer = null;
  $("dnc-search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => load().catch(failed), 250); // after typing stops, not a poll
  });

  load()
    .catch(failed)
    .finally(() => (document.body.dataset.ready = "1"));
})();
