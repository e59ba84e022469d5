// Shared helpers. Text from the server is only ever put on the page with textContent:
// model output is untrusted, and the Content-Security-Policy forbids inline script anyway.
"use strict";

const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

async function api(method, path, body) {
  const opts = { method, headers: { "X-CSRF-Token": CSRF }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  if (res.status === 401) {
    window.location.assign("/login");
    throw new Error("not logged in");
  }
  let data = null;
  if (res.status !== 204) {
    const type = res.headers.get("content-type") || "";
    data = type.includes("json") ? await res.json() : await res.text();
  }
  if (!res.ok) {
    let msg = data && data.detail ? data.detail : res.statusText;
    if (Array.isArray(msg)) msg = msg.map((d) => d.msg).join("; ");
    const err = new Error(String(msg));
    err.status = res.status;
    throw err;
  }
  return { status: res.status, data };
}

// el("li", {class: "x", dataset: {id: "r1"}}, "text", child, ...)
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

function showStatus(text, kind) {
  const s = document.getElementById("status");
  if (!s) return;
  s.textContent = text;
  s.className = "status" + (kind ? " " + kind : "");
  if (text) {
    clearTimeout(showStatus.timer);
    showStatus.timer = setTimeout(() => { s.textContent = ""; s.className = "status"; }, 4000);
  }
}

function setProgress(done, total, text) {
  const fill = document.getElementById("progress-fill");
  const label = document.getElementById("progress-text");
  const pct = total > 0 ? Math.round((100 * done) / total) : 100;
  if (fill) fill.style.width = pct + "%";
  if (label) label.textContent = text;
  const track = fill && fill.parentElement;
  if (track) {
    track.setAttribute("role", "progressbar");
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", String(total));
    track.setAttribute("aria-valuenow", String(done));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const out = document.getElementById("logout");
  if (out) out.addEventListener("click", async () => {
    try { await api("POST", "/api/logout"); } finally { window.location.assign("/login"); }
  });
});
