/* The deleted tasks page: creation and end times in the browser's own time zone. */
(function () {
  "use strict";
  const CC = window.CC;
  document.querySelectorAll("td.when").forEach((td) => {
    const at = Number(td.dataset.epoch);
    if (at) td.prepend(CC.fmtDateTime(at) + (td.textContent ? " · " : ""));
  });
  document.body.dataset.ready = "1";
})();
