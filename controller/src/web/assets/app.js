// nasfleet console script: confirmation dialogs, live task and run updates
// over server-sent events, and showing the fields that fit a form's choices.
// Every page works without it, but for the live updates.
"use strict";

function confirmForms() {
  const dialog = document.getElementById("confirm");
  if (!dialog) return;
  let pending = null;
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (form.dataset.confirmed === "yes") return;
      event.preventDefault();
      pending = form;
      document.getElementById("confirm-text").textContent = form.dataset.confirm;
      dialog.showModal();
    });
  });
  document.getElementById("confirm-cancel").addEventListener("click", () => {
    pending = null;
    dialog.close();
  });
  document.getElementById("confirm-ok").addEventListener("click", () => {
    dialog.close();
    if (pending) {
      pending.dataset.confirmed = "yes";
      pending.requestSubmit();
    }
  });
}

// Forms marked data-async post in the background (Run Now): the page stays,
// and the task's status follows over the event stream.
function asyncForms() {
  document.querySelectorAll("form[data-async]").forEach((form) => {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const flash = document.getElementById("flash");
      const response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        headers: { "X-CSRF-Token": document.body.dataset.csrf },
        redirect: "manual",
      });
      // A redirect (opaque here) is the server's "done".
      if (response.type === "opaqueredirect" || response.ok) {
        flash.hidden = true;
        return;
      }
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const problem = page.getElementById("problem");
      flash.textContent = problem ? problem.textContent : "The request failed (" + response.status + ").";
      flash.hidden = false;
    });
  });
}

function statusMarkup(cell, status, reason) {
  cell.textContent = "";
  const badge = document.createElement("span");
  badge.className = "status s-" + status;
  badge.textContent = status;
  if (status === "FAILED" && reason) {
    const details = document.createElement("details");
    details.className = "reason";
    const summary = document.createElement("summary");
    summary.appendChild(badge);
    const text = document.createElement("p");
    text.className = "reason-text";
    text.textContent = reason;
    details.append(summary, text);
    cell.appendChild(details);
  } else {
    cell.appendChild(badge);
  }
}

function liveTasks() {
  const cells = document.querySelectorAll("[data-task-status]");
  if (cells.length === 0) return;
  const ids = Array.from(new Set(Array.from(cells, (c) => c.dataset.taskStatus)));
  const source = new EventSource("/events/tasks?ids=" + ids.join(","));
  source.addEventListener("task", (event) => {
    const task = JSON.parse(event.data);
    document.querySelectorAll('[data-task-status="' + task.id + '"]').forEach((cell) => {
      statusMarkup(cell, task.status, task.reason);
      if (task.status === "RUNNING" && task.progress) {
        const progress = document.createElement("div");
        progress.className = "muted progress";
        progress.textContent = task.progress;
        cell.appendChild(progress);
      }
    });
  });
}

function liveRun() {
  const run = document.querySelector("[data-run]");
  if (!run || run.dataset.live !== "true") return;
  const source = new EventSource("/events/runs/" + run.dataset.run);
  source.addEventListener("progress", (event) => {
    document.getElementById("run-progress").textContent = event.data;
  });
  source.addEventListener("log", (event) => {
    const log = document.getElementById("run-log");
    log.textContent += (log.textContent ? "\n" : "") + event.data;
  });
  source.addEventListener("state", (event) => {
    const state = JSON.parse(event.data);
    statusMarkup(document.getElementById("run-state"), state.state, state.reason);
    if (state.final) {
      source.close();
      // Steps, parts and times are final now: show the stored run.
      window.location.reload();
    }
  });
}

function showByChoice(selectId, attribute) {
  const select = document.getElementById(selectId);
  if (!select) return;
  const apply = () => {
    document.querySelectorAll("[" + attribute + "]").forEach((el) => {
      el.hidden = !el.getAttribute(attribute).split(" ").includes(select.value);
    });
  };
  select.addEventListener("change", apply);
  apply();
}

function reloadOnSystemChange() {
  document.querySelectorAll("select[data-reload]").forEach((select) => {
    select.addEventListener("change", () => {
      const button = select.form.querySelector("button.reload");
      if (button) button.click();
    });
  });
  // The script does it on change; the button is for browsers without it.
  document.querySelectorAll("button.reload").forEach((b) => { b.hidden = true; });
}

document.addEventListener("DOMContentLoaded", () => {
  confirmForms();
  asyncForms();
  liveTasks();
  liveRun();
  showByChoice("rsync-mode", "data-mode");
  showByChoice("period", "data-period");
  reloadOnSystemChange();
});
