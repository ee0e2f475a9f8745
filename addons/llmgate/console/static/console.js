// llmgate console: JSON writes with the session's CSRF token, forms built from config schemas,
// the live request feed. Plain JavaScript, no build step.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;

function say(text, ok) {
  const m = document.getElementById("message");
  m.textContent = text;
  m.className = ok ? "ok" : "error";
}

async function send(url, method, body) {
  const r = await fetch(url, {
    method, credentials: "same-origin", body: JSON.stringify(body || {}),
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
  });
  let data = null;
  try { data = await r.json(); } catch (e) { /* an empty answer */ }
  if (!r.ok) throw new Error((data && data.error && data.error.message) || `${r.status} ${r.statusText}`);
  return data;
}

function describe(data) {
  if (data && "ok" in data && "latency_ms" in data) {  // a provider test
    return data.ok ? `ok: ${data.model}, HTTP ${data.status}, ${data.latency_ms} ms`
                   : `failed: ${data.error} (HTTP ${data.status ?? "-"})`;
  }
  return data && data.message ? data.message : "done";
}

document.addEventListener("click", async (ev) => {
  const b = ev.target.closest("button[data-post]");
  if (!b) return;
  ev.preventDefault();
  if (b.dataset.confirm && !confirm(b.dataset.confirm)) return;
  b.disabled = true;
  try {
    const data = await send(b.dataset.post, b.dataset.method || "POST", JSON.parse(b.dataset.body || "{}"));
    if (b.dataset.target) {
      const out = document.getElementById(b.dataset.target);
      out.textContent = describe(data);
      out.className = data && data.ok === false ? "error" : "ok";
    } else if (b.dataset.next) {
      location.href = b.dataset.next;
    } else {
      location.reload();
    }
  } catch (e) {
    say(e.message, false);
  } finally {
    b.disabled = false;
  }
});

function fieldValue(el) {
  switch (el.dataset.type) {
    case "bool": return el.checked;
    case "number": return el.value === "" ? undefined : Number(el.value);
    case "list": return el.value.trim() === "" ? undefined : el.value.split("\n").map((s) => s.trim()).filter(Boolean);
    case "json": return el.value.trim() === "" ? undefined : JSON.parse(el.value);
    default: return el.value === "" ? undefined : el.value;
  }
}

function changed(el) {
  return el.dataset.type === "bool" ? el.checked !== el.defaultChecked : el.value !== el.defaultValue;
}

document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form[data-json]");
  if (!form) return;
  ev.preventDefault();
  const body = {};
  try {
    for (const el of form.querySelectorAll("[name]")) {
      if ("changedOnly" in form.dataset && el.type !== "hidden" && !changed(el)) continue;
      if ("changedOnly" in form.dataset && el.type === "hidden") continue;
      const v = fieldValue(el);
      if (v !== undefined) body[el.name] = v;
    }
    const data = await send(form.dataset.action, form.dataset.method || "POST", body);
    // a login's page, opened while the click still counts as the user's (popup blockers allow that)
    if ("open" in form.dataset && data && data.url) window.open(data.url, "_blank", "noopener");
    location.href = form.dataset.next;
  } catch (e) {
    say(e.message, false);
  }
});

const UPLOAD_MAX = 64 * 1024;  // as the gateway checks it

document.addEventListener("submit", async (ev) => {
  const form = ev.target.closest("form[data-upload]");
  if (!form) return;
  ev.preventDefault();
  try {
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) throw new Error("Choose a credentials file first.");
    if (file.size > UPLOAD_MAX) throw new Error("A credentials file is at most 64 KiB.");
    let credentials;
    try { credentials = JSON.parse(await file.text()); } catch (e) { throw new Error("That file is not JSON."); }
    await send(form.dataset.action, "POST", {credentials});
    location.href = form.dataset.next;
  } catch (e) {
    say(e.message, false);
  }
});

const feed = document.getElementById("feed");
if (feed) {
  const state = document.getElementById("feed-state");
  const source = new EventSource("/ui/feed");
  source.onopen = () => { state.textContent = "live"; };
  source.onerror = () => { state.textContent = "reconnecting…"; };
  source.onmessage = (ev) => {
    const r = JSON.parse(ev.data);
    const body = feed.tBodies[0];
    const empty = body.querySelector("tr.empty");
    if (empty) empty.remove();
    const tokens = r.prompt_tokens == null ? "-" : `${r.prompt_tokens}+${r.completion_tokens}`;
    const cells = [new Date(r.ts * 1000).toISOString().replace("T", " ").slice(0, 19), r.key_id, r.inbound,
      r.endpoint, r.model, r.provider, r.account, r.status, r.latency_ms, tokens, r.error];
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c == null || c === "" ? "-" : String(c);  // text, never markup
      tr.appendChild(td);
    }
    body.prepend(tr);
    while (body.rows.length > 200) body.deleteRow(-1);
  };
}

if (document.querySelector(".login.waiting, .login.starting")) {
  setTimeout(() => location.reload(), 3000);  // until the device login ends
}
