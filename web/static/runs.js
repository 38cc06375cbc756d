// The runs page: the table is re-fetched (as HTML) whenever the newest runs change, without a reload.
"use strict";
(function () {
  const table = document.getElementById("runs-table");
  if (!table) return;
  let pending = false;
  async function refresh() {
    if (pending) return;
    pending = true;
    try {
      const response = await fetch(`/fragments/runs${window.location.search}`, {headers: {"Accept": "text/html"}});
      if (response.ok) table.innerHTML = await response.text();
    } finally {
      pending = false;
    }
  }
  wf.listen(table.dataset.live, {runs: () => refresh()});
  // Counts come from a background count: fetch them again until they are there, then every 10 s.
  const counts = () => table.querySelector(".counts .count");
  setTimeout(function again() {
    refresh().finally(() => setTimeout(again, counts() ? 10000 : 1000));
  }, counts() ? 10000 : 1000);
  for (const select of document.querySelectorAll("#filters select")) {
    select.addEventListener("change", () => select.form.requestSubmit());
  }
})();
