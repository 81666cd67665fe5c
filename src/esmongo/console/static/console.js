// The console's progressive enhancement: live overview and tail (EventSource), the
// time-travel slider, confirmations. Every page works without it. Text only ever goes in
// through textContent, never as HTML.
"use strict";

function liveOverview(root) {
  const source = new EventSource(root.dataset.live);
  source.addEventListener("figures", (message) => {
    const data = JSON.parse(message.data);
    for (const el of root.querySelectorAll("[data-field]")) {
      const value = data[el.dataset.field];
      if (value !== undefined) el.textContent = String(value);
    }
    const spark = document.getElementById("sparkline");
    if (spark && data.sparkline !== undefined) spark.setAttribute("points", data.sparkline);
    for (const p of data.projections || []) {
      const row = document.querySelector(`#projection-lag tr[data-projection="${CSS.escape(p.name)}"]`);
      if (!row) continue;
      for (const cell of row.querySelectorAll("[data-cell]")) {
        cell.textContent = String(p[cell.dataset.cell]);
      }
    }
  });
}

function cell(row, text, href) {
  const td = document.createElement("td");
  if (href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    td.appendChild(a);
  } else {
    td.textContent = text;
  }
  row.appendChild(td);
  return td;
}

function liveTail(table) {
  const body = table.querySelector("tbody");
  const state = document.getElementById("tail-state");
  const pause = document.getElementById("pause");
  let after = Number(table.dataset.after);
  let source = null;
  const open = () => {
    const query = new URLSearchParams({ after: String(after), type: table.dataset.type, aggregate: table.dataset.aggregate });
    source = new EventSource(`${table.dataset.stream}?${query}`);
    state.textContent = "live";
    source.addEventListener("append", (message) => {
      const e = JSON.parse(message.data);
      const row = document.createElement("tr");
      row.dataset.sequence = String(e.sequence);
      row.className = "fresh";
      cell(row, String(e.sequence), `/ui/events/${encodeURIComponent(e.eventId)}`);
      cell(row, e.timestamp);
      cell(row, e.eventType);
      cell(row, `${e.aggregateType}/${e.aggregateId}`,
        `/ui/streams/${encodeURIComponent(e.aggregateType)}/${encodeURIComponent(e.aggregateId)}`);
      cell(row, String(e.version));
      const code = document.createElement("code");
      code.textContent = JSON.stringify(e.data);
      cell(row, "").appendChild(code);
      body.insertBefore(row, body.firstChild);
      while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
    });
    source.addEventListener("position", (message) => {
      after = JSON.parse(message.data).position;
    });
    source.onerror = () => { state.textContent = "reconnecting…"; };
  };
  pause.hidden = false;
  pause.addEventListener("click", () => {
    if (source) {
      source.close();
      source = null;
      pause.textContent = "Resume";
      state.textContent = "paused";
    } else {
      pause.textContent = "Pause";
      open();
    }
  });
  open();
}

function autosubmit(input) {
  const shown = document.getElementById("version-shown");
  input.addEventListener("input", () => { if (shown) shown.textContent = input.value; });
  input.addEventListener("change", () => {
    const form = input.form;
    for (const field of form.querySelectorAll("input[name=at]")) field.value = "";
    form.requestSubmit();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const overview = document.querySelector("[data-live]");
  if (overview && window.EventSource) liveOverview(overview);
  const tail = document.getElementById("tail");
  if (tail && window.EventSource) liveTail(tail);
  for (const input of document.querySelectorAll("[data-autosubmit]")) autosubmit(input);
  for (const form of document.querySelectorAll("form[method=get]")) {
    // Empty fields mean "not given": leave them out of the (bookmarkable) URL.
    form.addEventListener("formdata", (event) => {
      for (const [name, value] of [...event.formData.entries()]) {
        if (value === "") event.formData.delete(name);
      }
    });
  }
  for (const button of document.querySelectorAll("[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }
});
