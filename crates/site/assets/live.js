// Live pages: the list (/) and a task's page (/tasks/:id) follow the change stream
// (GET /api/events) and update in place. Rows and cards come rendered (and escaped) by the
// server from /fragments/…; this script only puts them where they belong. Without
// JavaScript the pages work as before: this file is their only script (CSP default-src 'self').
"use strict";
(function () {
  const list = document.getElementById("tasks");
  const card = document.getElementById("task-card");
  const indicator = document.getElementById("live");
  if (!list && !card) return;
  if (typeof EventSource === "undefined") return;

  function show(state, title) {
    if (!indicator) return;
    indicator.hidden = false;
    indicator.dataset.state = state;
    indicator.textContent = state === "live" ? "live" : state === "reconnecting" ? "reconnecting…" : "connecting…";
    indicator.title = title;
  }

  async function fetchFragment(path) {
    const resp = await fetch(path, { headers: { accept: "text/html" }, cache: "no-store" });
    if (resp.status === 404) return null;
    if (!resp.ok) throw new Error(path + " answered " + resp.status);
    const tpl = document.createElement("template");
    tpl.innerHTML = (await resp.text()).trim();
    return tpl.content.firstElementChild;
  }

  const segment = (id) => encodeURIComponent(id);
  const rowOf = (id) => document.getElementById("task-" + id);

  function syncEmptyState() {
    const empty = document.getElementById("empty-state");
    const box = document.getElementById("task-list");
    const has = list.children.length > 0;
    if (box) box.hidden = !has;
    if (empty) empty.hidden = has;
  }

  // Rows are ordered by id (byte order, as the server sorts them).
  function insertInOrder(row) {
    const limit = parseInt(list.dataset.limit || "50", 10);
    const id = row.dataset.id;
    let before = null;
    for (const li of list.children) {
      if (li.dataset.id > id) { before = li; break; }
    }
    // A full page whose last row sorts first: the task belongs to a later page.
    if (!before && list.children.length >= limit) return;
    list.insertBefore(row, before);
    while (list.children.length > limit) list.lastElementChild.remove();
  }

  async function onListChange(kind, change) {
    const existing = rowOf(change.id);
    if (kind === "deleted") {
      if (existing) existing.remove();
      syncEmptyState();
      return;
    }
    const filter = list.dataset.status;
    const first = list.dataset.first === "true";
    if (!existing && !first) return; // later pages only keep their own rows current
    const row = await fetchFragment("/fragments/row/" + segment(change.id));
    const current = rowOf(change.id);
    if (!row || (filter && row.dataset.status !== filter)) {
      if (current) current.remove();
    } else if (current) {
      current.replaceWith(row);
    } else if (first) {
      insertInOrder(row);
    }
    syncEmptyState();
  }

  async function onCardChange(kind, change) {
    if (change.id !== card.dataset.id) return;
    const current = document.getElementById("task-card");
    if (!current) return;
    if (kind === "deleted") {
      current.classList.add("gone");
      current.setAttribute("aria-disabled", "true");
      const note = document.createElement("p");
      note.className = "gone-note";
      note.textContent = "This task was deleted.";
      current.prepend(note);
      return;
    }
    const fresh = await fetchFragment("/fragments/task/" + segment(change.id));
    if (fresh) current.replaceWith(fresh);
  }

  const params = new URLSearchParams();
  if (list && list.dataset.status) params.set("status", list.dataset.status);
  const url = "/api/events" + (params.toString() ? "?" + params : "");
  let queue = Promise.resolve();

  function connect() {
    show("connecting", "connecting to the change stream");
    const source = new EventSource(url);
    source.onopen = () => show("live", "updates appear as they happen");
    source.onerror = () => show("reconnecting", "the change stream dropped; reconnecting");
    for (const kind of ["created", "updated", "deleted"]) {
      source.addEventListener(kind, (ev) => {
        const change = JSON.parse(ev.data);
        // One change at a time, in stream order.
        queue = queue
          .then(() => (list ? onListChange(kind, change) : onCardChange(kind, change)))
          .catch((e) => console.warn("live update failed:", e));
      });
    }
    source.addEventListener("reset", () => location.reload());
  }
  connect();
})();
