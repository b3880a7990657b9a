/* The create and edit forms of a task. Create: the list file goes up with the other fields in one
   multipart request (a progress bar for the upload), then the import is followed until the task
   leaves `initializing` (a second bar, percent and rows/s, the row-error report when rows were
   rejected). Edit: pacing settings only, as the API allows. The API's errors (422 with the field, or
   a domain error naming its field) are shown next to the field they are about. */
(function () {
  "use strict";
  const CC = window.CC;
  const t = CC.t;
  const $ = (id) => document.getElementById(id);
  const IMPORT_POLL_MS = 300;

  // --- errors next to their field ----------------------------------------------------------------

  function clearErrors(form) {
    form.querySelectorAll(".field-error").forEach((el) => (el.textContent = ""));
    form.querySelectorAll(".invalid").forEach((el) => el.classList.remove("invalid"));
    $("form-error").hidden = true;
  }

  function fieldError(form, field, message) {
    const slot = form.querySelector('.field-error[data-for="' + field + '"]');
    if (!slot) return false;
    slot.textContent = message;
    const input = form.querySelector('[name="' + field + '"]');
    if (input && input.classList) input.classList.add("invalid");
    return true;
  }

  function showErrors(form, status, data) {
    const general = [];
    const detail = data && data.detail;
    if (Array.isArray(detail)) {
      for (const item of detail) {
        const loc = item.loc || [];
        const field = loc[loc.length - 1];
        const msg = String(item.msg || "").replace(/^Value error, /, "");
        if (!fieldError(form, field, msg)) general.push((field ? field + ": " : "") + msg);
      }
    } else if (detail) {
      if (!(data.field && fieldError(form, data.field, detail))) general.push(detail);
    } else {
      general.push(t("task.request_failed") + " (" + status + ")");
    }
    if (general.length) {
      $("form-error").textContent = general.join("; ");
      $("form-error").hidden = false;
    }
    const first = form.querySelector(".field-error:not(:empty)");
    if (first) first.closest("label, fieldset, div").scrollIntoView({ block: "center" });
  }

  // --- create ------------------------------------------------------------------------------------

  function createBody(form) {
    const fd = new FormData();
    const value = (name) => form.elements[name].value.trim();
    for (const name of [
      "name",
      "skill_group_id",
      "caller_id",
      "caller_name",
      "phone_column",
      "pacing_mode",
      "max_concurrency",
      "agent_ratio",
      "abandon_target_pct",
      "predictive_min_agents",
      "ring_timeout_s",
      "wrap_up_s",
      "window_start",
      "window_end",
      "timezone",
      "max_attempts",
      "dispositions",
    ]) {
      fd.append(name, name === "dispositions" ? form.elements[name].value : value(name));
    }
    if (value("gateway_id")) fd.append("gateway_id", value("gateway_id"));
    fd.append("wrap_up_hold", form.elements.wrap_up_hold.checked ? "true" : "false");
    fd.append("recording", form.elements.recording.checked ? "true" : "false");
    fd.append("amd", form.elements.amd.checked ? "true" : "false");
    const days = [...form.querySelectorAll('input[name="window_days"]:checked')].map((x) => x.value).join("");
    fd.append("window_days", days);
    const delays = {};
    form.querySelectorAll("input[data-retry]").forEach((el) => {
      if (el.value.trim() !== "") delays[el.dataset.retry] = Number(el.value);
    });
    fd.append("retry_delays", JSON.stringify(delays));
    fd.append("file", form.elements.file.files[0]);
    return fd;
  }

  function upload(url, body, onProgress) {
    // XMLHttpRequest: fetch() cannot report upload progress.
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRF-Token", CC.csrfToken);
      xhr.responseType = "json";
      xhr.upload.onprogress = (ev) => {
        if (ev.lengthComputable) onProgress(ev.loaded / ev.total);
      };
      xhr.onload = () => resolve({ status: xhr.status, data: xhr.response });
      xhr.onerror = () => reject(new Error(t("task.request_failed")));
      xhr.send(body);
    });
  }

  function setBar(bar, pctEl, percent) {
    bar.value = percent;
    pctEl.textContent = Math.floor(percent) + "%";
  }

  async function followImport(task) {
    $("import-row").hidden = false;
    for (;;) {
      let p;
      try {
        p = await CC.api("GET", "/api/tasks/" + task.id + "/import");
      } catch (e) {
        $("import-error").textContent = e.message;
        $("import-error").hidden = false;
        return;
      }
      setBar($("import-bar"), $("import-pct"), p.percent);
      $("import-rate").textContent = p.done + " / " + (p.total || "…") + " · " + Math.round(p.rows_per_s) + " " + t("task.rows_s");
      if (p.state !== "initializing") {
        const summary = $("import-summary");
        summary.textContent = t("task.import_summary")
          .replace("{imported}", p.imported)
          .replace("{rejected}", p.rejected)
          .replace("{total}", p.total);
        summary.dataset.imported = p.imported;
        summary.dataset.rejected = p.rejected;
        summary.hidden = false;
        if (p.error) {
          $("import-error").textContent = p.error;
          $("import-error").hidden = false;
        }
        if (p.rejected) {
          $("report-link").href = "/api/tasks/" + task.id + "/import-report.csv";
          $("import-report").hidden = false;
        }
        $("import-done").hidden = false;
        $("progress").dataset.state = "done";
        return;
      }
      await new Promise((r) => setTimeout(r, IMPORT_POLL_MS));
    }
  }

  const createForm = $("task-form");
  if (createForm) {
    createForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(createForm);
      const missing = [];
      if (!createForm.elements.name.value.trim()) missing.push("name");
      if (!createForm.elements.file.files.length) missing.push("file");
      if (!createForm.elements.skill_group_id.value) missing.push("skill_group_id");
      if (missing.length) {
        missing.forEach((f) => fieldError(createForm, f, t("task.required")));
        return;
      }
      const submit = $("create-task");
      submit.disabled = true;
      $("progress").hidden = false;
      $("progress").dataset.state = "upload";
      $("progress").scrollIntoView({ block: "nearest" });
      setBar($("upload-bar"), $("upload-pct"), 0);
      try {
        const res = await upload("/api/tasks", createBody(createForm), (f) => setBar($("upload-bar"), $("upload-pct"), 100 * f));
        if (res.status !== 201) {
          $("progress").hidden = true;
          showErrors(createForm, res.status, res.data);
          submit.disabled = false;
          return;
        }
        setBar($("upload-bar"), $("upload-pct"), 100);
        createForm.querySelectorAll("fieldset").forEach((f) => (f.disabled = true));
        $("progress").dataset.state = "import";
        $("progress").dataset.taskId = res.data.id;
        await followImport(res.data);
      } catch (e) {
        $("progress").hidden = true;
        $("form-error").textContent = e.message;
        $("form-error").hidden = false;
        submit.disabled = false;
      }
    });
  }

  // --- edit --------------------------------------------------------------------------------------

  const editForm = $("edit-form");
  if (editForm) {
    editForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      clearErrors(editForm);
      const body = {};
      for (const el of editForm.elements) {
        if (!el.name) continue;
        const type = el.dataset.type;
        body[el.name] = type === "int" ? parseInt(el.value, 10) : type === "float" ? parseFloat(el.value) : el.value;
        if (type && Number.isNaN(body[el.name])) body[el.name] = el.value; // let the API say what is wrong
      }
      const status = $("save-status");
      status.textContent = t("task.saving");
      status.dataset.state = "saving";
      try {
        const resp = await fetch("/api/tasks/" + editForm.dataset.taskId, {
          method: "PATCH",
          credentials: "same-origin",
          headers: CC.headers({ "Content-Type": "application/json" }),
          body: JSON.stringify(body),
        });
        const data = await resp.json().catch(() => null);
        if (!resp.ok) {
          status.textContent = "";
          status.dataset.state = "error";
          showErrors(editForm, resp.status, data);
          return;
        }
        status.textContent = t("task.saved");
        status.dataset.state = "saved";
      } catch (e) {
        status.textContent = e.message;
        status.dataset.state = "error";
      }
    });
  }
  document.body.dataset.ready = "1";
})();
