// pbxcrm screen pop: sign-in, live cards over server-sent events, notes, click-to-call.
// Plain browser JavaScript, no build step. Every value from the server is inserted as text
// (textContent), never as HTML: caller names come from CRMs and the PBX.
"use strict";

const API = "/agent/api";
const CHANGE = { "Content-Type": "application/json", "X-Pbxcrm-Agent": "1" };
const STATE_LABEL = { ringing: "Ringing", answered: "On call", ended: "Ended" };

const $ = (id) => document.getElementById(id);
const cardViews = new Map(); // call_id -> {root, card, dirty}
let events = null;

async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (method !== "GET") init.headers = { ...CHANGE };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(API + path, init);
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  return { ok: response.ok, status: response.status, data };
}

function errorText(result) {
  const data = result.data || {};
  if (Array.isArray(data.fields) && data.fields.length) {
    return data.fields.map((f) => `${f.field}: ${f.message}`).join("; ");
  }
  if (result.status === 401) return "Wrong extension, PIN or token.";
  if (result.status === 429) return "Too many attempts — wait a few minutes.";
  return data.error || `Error ${result.status}`;
}

// -- signing in and out ------------------------------------------------------------------

function showSignIn(message) {
  if (events) { events.close(); events = null; }
  $("who").hidden = true;
  $("desk").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
  for (const view of cardViews.values()) view.root.remove();
  cardViews.clear();
}

function showDesk(me) {
  $("sign-in").hidden = true;
  $("desk").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = me.name ? `${me.name} · ${me.extension}` : `Extension ${me.extension}`;
  document.body.dataset.extension = me.extension;
  connect();
}

async function signIn(extension, secret) {
  const result = await api("POST", "/session", { extension: extension || null, secret });
  if (!result.ok) { showSignIn(errorText(result)); return; }
  $("sign-in-secret").value = "";
  showDesk(result.data);
}

$("sign-in-form").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("sign-in-extension").value.trim(), $("sign-in-secret").value.trim());
});

$("sign-out").addEventListener("click", async () => {
  await api("DELETE", "/session");
  showSignIn("Signed out.");
});

// -- live cards --------------------------------------------------------------------------

function connect() {
  if (events) events.close();
  events = new EventSource(API + "/stream");
  events.addEventListener("open", () => { $("live-dot").className = "dot live"; });
  events.addEventListener("cards", (e) => render(JSON.parse(e.data)));
  events.addEventListener("signed_out", () => showSignIn("Your session ended; sign in again."));
  events.addEventListener("error", async () => {
    $("live-dot").className = "dot down";
    // EventSource retries by itself; find out whether it is the session that went away.
    const me = await api("GET", "/session");
    if (me.status === 401) showSignIn("Your session ended; sign in again.");
  });
}

function render(cards) {
  const seen = new Set();
  let previous = null;
  for (const card of cards) {
    seen.add(card.call_id);
    let view = cardViews.get(card.call_id);
    if (!view) {
      view = createCard(card);
      cardViews.set(card.call_id, view);
    }
    updateCard(view, card);
    // Keep the server's order (newest first) without moving nodes that are in place:
    // moving a node would take the focus out of a half-typed comment.
    const wanted = previous ? previous.nextSibling : $("cards").firstChild;
    if (wanted !== view.root) $("cards").insertBefore(view.root, wanted);
    previous = view.root;
  }
  for (const [callId, view] of cardViews) {
    if (!seen.has(callId)) { view.root.remove(); cardViews.delete(callId); }
  }
  $("idle").hidden = cards.length > 0;
}

function createCard(card) {
  const root = $("card-template").content.firstElementChild.cloneNode(true);
  root.dataset.callId = card.call_id;
  const view = { root, card, dirty: false, noteId: null };
  const form = root.querySelector("form.note");
  form.addEventListener("input", () => { view.dirty = true; });
  form.addEventListener("submit", (e) => { e.preventDefault(); saveNote(view); });
  root.querySelector(".dismiss").addEventListener("click", async () => {
    const result = await api("POST", `/calls/${encodeURIComponent(view.card.call_id)}/dismiss`);
    if (!result.ok) form.querySelector(".note-error").textContent = errorText(result);
  });
  return view;
}

function setText(root, selector, text) {
  const el = root.querySelector(selector);
  el.textContent = text || "";
  el.hidden = !text;
}

function updateCard(view, card) {
  const root = view.root;
  view.card = card;
  root.dataset.state = card.state;
  root.className = `card ${card.state}`;
  root.querySelector(".badge").textContent = STATE_LABEL[card.state] || card.state;
  setText(root, ".direction", card.direction);
  setText(root, ".queue", card.queue ? `queue ${card.queue}` : "");
  root.querySelector(".dismiss").hidden = card.state !== "ended";

  setText(root, ".number", card.number_display || card.number || "unknown number");
  const caller = card.caller || {};
  let name = caller.name;
  if (!name) {
    name = { pending: "Looking up…", unknown: "Unknown caller", error: "Lookup failed" }[caller.status] || "";
  }
  setText(root, ".caller-name", name);
  root.querySelector(".caller-name").dataset.status = caller.status || "";
  setText(root, ".company", caller.company);
  const link = root.querySelector(".crm-link");
  // The server filters too (ari_app/web/safe_links.py); same rule: http(s) with a host or a
  // path here, never `//host`, `/\host`, whitespace or control characters.
  if (caller.url && /^(https?:\/\/[^\/\\]|\/(?![\/\\]))/i.test(caller.url)
      && !/[\\\s\x00-\x1f\x7f]/.test(caller.url)) {
    link.href = caller.url;
    link.hidden = false;
  } else {
    link.removeAttribute("href");
    link.hidden = true;
  }

  const list = root.querySelector(".history ul");
  list.replaceChildren();
  for (const past of card.history || []) {
    const item = document.createElement("li");
    const when = past.time ? new Date(past.time).toLocaleString() : "";
    let text = `${when} · ${past.direction || ""} · ${past.disposition || "?"}`;
    if (past.extension) text += ` · ext ${past.extension}`;
    if (past.note) text += ` · ${past.note.status}${past.note.comments ? ": " + past.note.comments : ""}`;
    item.textContent = text;
    list.appendChild(item);
  }
  root.querySelector(".history").hidden = !(card.history || []).length;

  const form = root.querySelector("form.note");
  const note = card.note;
  const saved = root.querySelector(".saved-note");
  if (note) {
    const at = new Date(note.saved_at).toLocaleTimeString();
    saved.textContent = `Saved ${at}: ${note.status}`;
    // Fill the form from the store (after a reload), but never over what the agent is typing.
    if (!view.dirty && view.noteId !== note.id) {
      for (const radio of form.elements.status) radio.checked = radio.value === note.status;
      form.elements.comments.value = note.comments || "";
    }
    view.noteId = note.id;
  } else {
    saved.textContent = "";
  }
  tick(view);
}

async function saveNote(view) {
  const form = view.root.querySelector("form.note");
  const error = form.querySelector(".note-error");
  const status = form.elements.status.value;
  error.textContent = "";
  if (!status) { error.textContent = "Pick a status."; return; }
  const button = form.querySelector(".save");
  button.disabled = true;
  try {
    const result = await api("POST", `/calls/${encodeURIComponent(view.card.call_id)}/note`, {
      status, comments: form.elements.comments.value,
    });
    if (!result.ok) { error.textContent = errorText(result); return; }
    view.dirty = false;
    view.noteId = result.data.note_id;
    form.querySelector(".saved-note").textContent =
      `Saved ${new Date().toLocaleTimeString()}: ${result.data.status}`;
  } catch (_) {
    error.textContent = "Not saved: pbxcrm cannot be reached.";
  } finally {
    button.disabled = false;
  }
}

// -- time on the card ----------------------------------------------------------------------

function seconds(total) {
  const s = Math.max(0, Math.round(total));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function tick(view) {
  const card = view.card;
  let text = "";
  const now = Date.now();
  if (card.state === "ringing" && card.started_at) {
    text = `ringing ${seconds((now - Date.parse(card.started_at)) / 1000)}`;
  } else if (card.state === "answered" && card.answered_at) {
    text = `talking ${seconds((now - Date.parse(card.answered_at)) / 1000)}`;
  } else if (card.state === "ended") {
    text = `talked ${seconds(card.talk_seconds || 0)}`;
  }
  view.root.querySelector(".clock").textContent = text;
}

setInterval(() => { for (const view of cardViews.values()) tick(view); }, 1000);

// -- click-to-call -------------------------------------------------------------------------

$("dial-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const status = $("dial-status");
  const number = $("dial-number").value.trim();
  status.textContent = "Calling your phone…";
  const result = await api("POST", "/dial", { number });
  if (!result.ok) { status.textContent = errorText(result); return; }
  status.dataset.originateId = result.data.id;
  followDial(result.data.id);
});

async function followDial(id) {
  const status = $("dial-status");
  const done = new Set(["connected", "agent_no_answer", "agent_busy", "failed"]);
  for (let i = 0; i < 120; i++) {
    const result = await api("GET", `/dial/${encodeURIComponent(id)}`);
    if (!result.ok) { status.textContent = errorText(result); return; }
    const d = result.data;
    status.textContent = d.reason ? `${d.state.replaceAll("_", " ")} (${d.reason})` : d.state.replaceAll("_", " ");
    status.dataset.state = d.state;
    if (done.has(d.state)) return;
    await new Promise((r) => setTimeout(r, 1000));
  }
}

// -- start ---------------------------------------------------------------------------------

async function start() {
  // A bookmark `/agent#token=...` signs in without typing; the fragment never leaves the
  // browser except in this request's body, and is wiped from the address bar at once.
  const hash = new URLSearchParams(location.hash.slice(1));
  const token = hash.get("token");
  if (token) {
    history.replaceState(null, "", location.pathname + location.search);
    await signIn(null, token);
    return;
  }
  const me = await api("GET", "/session");
  if (me.ok) showDesk(me.data); else showSignIn("");
}

start();
