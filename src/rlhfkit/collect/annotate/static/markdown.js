"use strict";
// Markdown view of prompts and responses, with a plain-text toggle.
//
// The HTML comes from the server (annotate/markdown.py): markdown-it with raw HTML escaped, links
// limited to http(s)/mailto, no images. It is the only HTML this app inserts; everything else goes
// in with textContent. The Content-Security-Policy (script-src 'self', no inline handlers) stands
// behind it as well. Both views are in the page; a class on <body> shows one of them.
const VIEW_KEY = "rlhfkit.view";

function setMarkdown(node, html, text) {
  if (typeof html === "string") {
    node.innerHTML = html; // server-rendered and escaped: see the comment at the top
  } else {
    node.replaceChildren(el("pre", { class: "text", text: text })); // a server without rendering
  }
}

function markdownBlock(html, text, cls) {
  const node = el("div", { class: "md " + (cls || "") });
  setMarkdown(node, html, text);
  return node;
}

function applyView(plain) {
  document.body.classList.toggle("view-plain", plain);
  const b = document.getElementById("view-toggle");
  if (b) {
    b.setAttribute("aria-pressed", String(plain));
    b.firstChild.textContent = plain ? "Formatted " : "Plain text ";
  }
}

function toggleView() {
  const plain = !document.body.classList.contains("view-plain");
  try { localStorage.setItem(VIEW_KEY, plain ? "plain" : "markdown"); } catch (e) { /* private mode */ }
  applyView(plain);
}

document.addEventListener("DOMContentLoaded", () => {
  let saved = null;
  try { saved = localStorage.getItem(VIEW_KEY); } catch (e) { /* private mode */ }
  applyView(saved === "plain");
  const b = document.getElementById("view-toggle");
  // blur after a click, so that Enter goes on submitting rather than pressing this button again
  if (b) b.addEventListener("click", () => { toggleView(); b.blur(); });
  // The guidelines panel opens by itself the first time, then remembers what the annotator chose.
  const g = document.getElementById("guidelines");
  if (g) {
    let state = null;
    try { state = localStorage.getItem("rlhfkit.guidelines"); } catch (e) { /* private mode */ }
    g.open = state !== "closed";
    g.addEventListener("toggle", () => {
      try { localStorage.setItem("rlhfkit.guidelines", g.open ? "open" : "closed"); } catch (e) { /* private mode */ }
    });
  }
});
