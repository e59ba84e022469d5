"use strict";
// Quality control on the admin page: reliability columns, gold items (mark, list, remove) and each
// annotator's agreement with gold. Loaded after admin.js, whose load() calls qualityCells / showGold.

function tauText(x) {
  return x === null || x === undefined ? "—" : (x >= 0 ? "+" : "−") + Math.abs(x).toFixed(2);
}

function tauChip(label, x) {
  const kind = x === null || x === undefined ? "tau-none" : x >= 0.6 ? "tau-good" : x >= 0.2 ? "tau-mid" : "tau-bad";
  return el("span", { class: "tau " + kind, title: "Kendall's τ-b against gold" }, label ? label + " " : "", tauText(x));
}

// The two cells the annotator table gets from stats.quality.annotators[name].
function qualityCells(q) {
  if (!q) return ["—", "—"];
  const rel = el("span", {}, tauChip("", q.reliability), el("span", { class: "muted", text: " (" + q.compared + ")" }));
  const gold = q.gold_items
    ? el("span", {}, tauChip("", q.gold_tau), el("span", { class: "muted", text: " (" + q.gold_items + ", " + q.gold_exact + " exact)" }))
    : el("span", { class: "muted", text: "no gold yet" });
  return [rel, gold];
}

// "r2 > r0 = r3 > r1" (or JSON) -> ["r2", ["r0", "r3"], "r1"]
function parseRanking(text) {
  const t = text.trim();
  if (t.startsWith("[")) return JSON.parse(t);
  return t.split(">").map((g) => g.split("=").map((x) => x.trim()).filter(Boolean))
    .filter((g) => g.length > 0).map((g) => (g.length === 1 ? g[0] : g));
}

function rankingText(ranking) {
  return ranking.map((g) => (Array.isArray(g) ? g.join(" = ") : g)).join(" > ");
}

async function showGold(quality) {
  const { data: rows } = await api("GET", "/api/gold");
  const feedback = {};
  for (const g of quality.gold) feedback[g.item_id] = g;
  const body = document.querySelector("#gold tbody");
  body.replaceChildren();
  if (rows.length === 0) {
    body.append(el("tr", {}, el("td", { colspan: "7", class: "muted", text: "no gold items yet: mark one above" })));
  }
  for (const g of rows) {
    const fb = feedback[g.item_id] || { taus: {}, mean_tau: null };
    const chips = el("span", { class: "tau-list" },
      ...Object.entries(fb.taus).sort((a, b) => (a[1] ?? -9) - (b[1] ?? -9)).map(([name, t]) => tauChip(name, t)));
    if (Object.keys(fb.taus).length === 0) chips.append(el("span", { class: "muted", text: "not ranked yet" }));
    const remove = el("button", { type: "button", class: "small", text: "Remove" });
    remove.addEventListener("click", async () => {
      try {
        await api("DELETE", "/api/gold/" + g.item_id);
        showStatus("Item " + g.item_id + " is no longer gold.", "ok");
        window.reloadStats();
      } catch (e) { showStatus("Remove failed: " + e.message, "error"); }
    });
    body.append(el("tr", { dataset: { item: String(g.item_id) } },
      el("td", { text: String(g.item_id) }),
      el("td", {}, el("span", { class: "clip", text: g.prompt })),
      el("td", {}, el("code", { text: rankingText(g.ranking) })),
      el("td", { text: String(g.rankings) }),
      el("td", {}, tauChip("", fb.mean_tau)),
      el("td", {}, chips),
      el("td", {}, remove)));
  }
}

async function previewItem() {
  const id = parseInt(document.getElementById("gold-item").value, 10);
  const box = document.getElementById("gold-preview");
  if (!(id >= 1)) return;
  try {
    const { data } = await api("GET", "/api/items/" + id);
    box.replaceChildren(
      el("div", { class: "muted", text: "Prompt" }), el("pre", { class: "text", text: data.prompt }),
      ...data.responses.map((r) => el("div", { class: "gold-response" },
        el("code", { text: r.id }), el("pre", { class: "text", text: r.text }))));
    box.hidden = false;
    if (data.gold) document.getElementById("gold-ranking").value = rankingText(data.gold);
  } catch (e) {
    box.hidden = true;
    showStatus("Could not load item " + id + ": " + e.message, "error");
  }
}

async function markGold(ev) {
  ev.preventDefault();
  const id = parseInt(document.getElementById("gold-item").value, 10);
  let ranking;
  try { ranking = parseRanking(document.getElementById("gold-ranking").value); }
  catch (e) { showStatus("The ranking is neither 'a > b = c' nor JSON.", "error"); return; }
  try {
    const { data } = await api("PUT", "/api/gold/" + id, { ranking });
    showStatus("Item " + id + " is gold: " + rankingText(data.ranking), "ok");
    window.reloadStats();
  } catch (e) { showStatus("Not saved: " + e.message, "error"); }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("gold-form").addEventListener("submit", markGold);
  document.getElementById("gold-show").addEventListener("click", previewItem);
});
