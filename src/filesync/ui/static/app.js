// The filesync status page: renders the view the server sends (the same shape as the rqt widget's), live through
// server-sent events; when those fail (a proxy that buffers) it asks once a second instead.
"use strict";

const $ = (id) => document.getElementById(id);
let lastArrival = 0;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;  // textContent only: file names are never markup
  return node;
}

function card(title, lines) {
  const box = element("div", "card");
  box.appendChild(element("div", "title", title));
  for (const line of lines) box.appendChild(typeof line === "string" ? element("div", "line", line) : line);
  return box;
}

function fill(container, items, empty) {
  container.replaceChildren(...(items.length ? items : [element("p", "note", empty)]));
}

function bar(percent) {
  const outer = element("div", "bar");
  const inner = element("div");
  inner.style.width = percent + "%";
  outer.append(inner, element("span", "", Math.round(percent) + " %"));
  outer.setAttribute("role", "progressbar");
  outer.setAttribute("aria-valuenow", String(percent));
  return outer;
}

async function act(path, label) {
  $("action-result").hidden = false;
  $("action-result").textContent = label + " ...";
  try {
    const reply = await fetch(path, {method: "POST", headers: {"X-Filesync-Action": "1"}, credentials: "same-origin"});
    const body = await reply.json();
    $("action-result").textContent = body.message || body.error;
  } catch (error) {
    $("action-result").textContent = label + " failed: " + error;
  }
}

function render(view) {
  lastArrival = Date.now();
  $("live").textContent = "live";
  $("live").className = "badge live";
  const ledger = view.ledger_problem ? "LEDGER " + view.ledger_problem + " - " : "";
  $("summary").textContent = `${ledger}rate ${view.rate}, ${view.to_move} still to move, ` +
    `${view.files_parked} parked; staging ${view.staging}`;
  $("last-error").hidden = !view.last_error;
  $("last-error").textContent = view.last_error ? `last error (${view.last_error_when}): ${view.last_error}` : "";
  $("read-only").hidden = view.can_act;
  $("read-only").textContent = view.read_only_reason;

  fill($("pipelines"), view.pipelines.map((p) =>
    card(`${p.source} \u2192 ${p.targets.join(", ")}`, [p.counts, `waiting ${p.waiting}`, `rate ${p.rate}`])), "none");

  fill($("transfers"), view.transfers.map((t) => {
    const item = card(`${t.kind} ${t.device}: ${t.path}`,
      [bar(t.percent), `${t.amount} \u00b7 ${t.rate} \u00b7 ETA ${t.eta}`]);
    item.dataset.fileId = t.file_id;
    item.classList.add("transfer");
    return item;
  }), "none");

  $("parked-count").textContent = view.files_parked ? `(${view.files_parked})` : "";
  $("retry-all").hidden = !(view.can_act && view.files_parked);
  fill($("parked"), view.parked.map((p) => {
    const lines = [element("div", "line error reason", p.reason), `${p.size} \u00b7 ${p.devices} \u00b7 id ${p.file_id}`];
    if (view.can_act) {
      const buttons = element("div", "actions");
      const retry = element("button", "retry", "Retry");
      retry.onclick = () => act(`/api/files/${p.file_id}/retry`, `retry ${p.file_id}`);
      const forget = element("button", "forget", "Forget");
      forget.onclick = () => act(`/api/files/${p.file_id}/forget`, `forget ${p.file_id}`);
      buttons.append(retry, forget);
      lines.push(buttons);
    }
    const item = card(`${p.source}/${p.path}`, lines);
    item.dataset.fileId = p.file_id;
    item.classList.add("parked");
    return item;
  }), "none");

  fill($("links"), view.links.map((l) => {
    const state = element("span", "state " + l.state, l.state);
    const why = l.reason || (l.last_location ? `last published ${l.last_location}` : "");
    return card(`${l.role} ${l.name}`, [state, `since ${l.since}`, ...(why ? [why] : [])]);
  }), "none");

  $("staging").textContent = `staging: ${view.staging}` + (view.downloads_held ? ` - ${view.downloads_held}` : "");
  $("staging").className = view.staging_low ? "error" : "";
}

function poll() {  // the fallback: one request a second
  fetch("/api/status", {credentials: "same-origin"}).then((r) => r.ok ? r.json() : null)
    .then((view) => { if (view) render(view); }).catch(() => {}).finally(() => setTimeout(poll, 1000));
}

function connect() {
  if (!window.EventSource) return poll();
  const events = new EventSource("/api/events");
  events.onmessage = (message) => render(JSON.parse(message.data));
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) poll();  // the browser gave up: ask instead
  };
}

setInterval(() => {  // say so when nothing came for a while (the status comes once a second)
  if (lastArrival && Date.now() - lastArrival > 5000) {
    $("live").textContent = `no news for ${Math.round((Date.now() - lastArrival) / 1000)} s`;
    $("live").className = "badge stale";
  }
}, 1000);
$("retry-all").onclick = () => act("/api/retry-all", "retry all");
connect();
