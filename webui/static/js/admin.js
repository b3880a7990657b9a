/* Admin pages: dialogs whose forms write JSON to /api/admin/* and reload the page on success.

   <form data-api="/api/admin/users/{id}" data-method="PATCH"> - `{id}` comes from the row being edited.
   Inputs: data-type="int" | "bool" (checkbox) | "list" / "int-list" (checkbox group of one name);
   data-optional: left out of the body when empty. Buttons: data-open="<dialog id>" opens an empty
   form, data-edit="<dialog id>" with data-row='{json}' opens it filled with that row. */
(function () {
  "use strict";
  const CC = window.CC;

  function body(form) {
    const out = {};
    const seen = new Set();
    for (const el of form.elements) {
      if (!el.name || seen.has(el.name + ":" + el.type) || el.disabled) continue;
      const type = el.dataset.type || "str";
      if (type === "list" || type === "int-list") {
        seen.add(el.name + ":" + el.type);
        const values = [...form.querySelectorAll('input[name="' + el.name + '"]:checked')].map((x) => x.value);
        out[el.name] = type === "int-list" ? values.map(Number) : values;
      } else if (type === "bool") {
        out[el.name] = el.checked;
      } else if (el.dataset.optional !== undefined && el.value === "") {
        continue;
      } else {
        out[el.name] = type === "int" || type === "num" ? Number(el.value) : el.value;
      }
    }
    return out;
  }

  function fill(form, row) {
    form.reset();
    form.dataset.id = row ? row.id : "";
    form.querySelectorAll("[data-show]").forEach((el) => (el.textContent = row ? row[el.dataset.show] || "" : ""));
    if (!row) return;
    for (const el of form.elements) {
      if (!el.name || !(el.name in row)) continue;
      const value = row[el.name];
      const type = el.dataset.type || "str";
      if (type === "list" || type === "int-list") el.checked = (value || []).map(String).includes(el.value);
      else if (type === "bool") el.checked = !!value;
      else el.value = value === null || value === undefined ? "" : value;
    }
  }

  function open(dialogId, row) {
    const dialog = document.getElementById(dialogId);
    const form = dialog.querySelector("form");
    fill(form, row);
    form.querySelector(".form-error").textContent = "";
    form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    dialog.showModal();
  }

  document.querySelectorAll("[data-open]").forEach((b) => b.addEventListener("click", () => open(b.dataset.open, null)));
  document.querySelectorAll("[data-edit]").forEach((b) =>
    b.addEventListener("click", () => open(b.dataset.edit, JSON.parse(b.dataset.row)))
  );
  document.querySelectorAll("dialog [data-close]").forEach((b) =>
    b.addEventListener("click", () => b.closest("dialog").close())
  );

  document.querySelectorAll("form[data-api]").forEach((form) =>
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const url = form.dataset.api.replace("{id}", encodeURIComponent(form.dataset.id || ""));
      const error = form.querySelector(".form-error");
      const submit = form.querySelector("button[type=submit]");
      error.textContent = "";
      form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
      submit.disabled = true;
      try {
        await CC.api(form.dataset.method || "POST", url, body(form));
        location.reload();
      } catch (e) {
        error.textContent = CC.t("adm.js.failed") + ": " + e.message;
        if (e.field && form.elements[e.field] && form.elements[e.field].classList) {
          form.elements[e.field].classList.add("invalid");
        }
        submit.disabled = false;
      }
    })
  );
  // Gateways: "Test" logs in to the PBX from the web process and shows what happened.
  document.querySelectorAll("[data-test-gateway]").forEach((b) =>
    b.addEventListener("click", async () => {
      const out = b.parentElement.querySelector(".gw-test-result");
      out.className = "gw-test-result hint";
      out.textContent = CC.t("adm.js.testing");
      b.disabled = true;
      try {
        const r = await CC.api("POST", "/api/admin/gateways/" + encodeURIComponent(b.dataset.testGateway) + "/test");
        out.className = "gw-test-result " + (r.ok ? "ok" : "error");
        out.textContent = (r.ok ? CC.t("adm.js.test_ok") : CC.t("adm.js.test_failed")) + ": " + r.detail;
      } catch (e) {
        out.className = "gw-test-result error";
        out.textContent = CC.t("adm.js.test_failed") + ": " + e.message;
      } finally {
        b.disabled = false;
      }
    })
  );
  document.body.dataset.ready = "1"; // the buttons and forms above are live
})();
