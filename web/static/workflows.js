// The workflows page: start a run with JSON arguments, then link to it.
"use strict";
for (const form of document.querySelectorAll("form.start-form")) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const result = form.querySelector(".result");
    result.textContent = "";
    result.className = "result";
    let args, kwargs;
    try {
      args = JSON.parse(form.elements.args.value || "[]");
      kwargs = JSON.parse(form.elements.kwargs.value || "{}");
    } catch (e) {
      result.textContent = `not JSON: ${e.message}`;
      result.className = "result err";
      return;
    }
    try {
      const started = await wf.api("POST", "/api/runs", {workflow: form.dataset.workflow, args, kwargs});
      result.replaceChildren("started ", wf.el("a", {href: `/runs/${started.run_id}`, class: "mono"}, started.run_id));
    } catch (e) {
      result.textContent = e.message;
      result.className = "result err";
    }
  });
}
