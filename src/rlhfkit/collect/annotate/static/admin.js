"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const fmt = (x) => (x === null || x === undefined ? "—" : (typeof x === "number" ? x.toFixed(3) : String(x)));

  function card(label, value, note) {
    return el("div", { class: "card stat" },
      el("div", { class: "stat-label", text: label }),
      el("div", { class: "stat-value", text: value }),
      note ? el("div", { class: "muted", text: note }) : null);
  }

  function bar(fraction) {
    const pct = Math.max(0, Math.min(100, Math.round(100 * fraction)));
    const fill = el("div", { class: "progress-fill" });
    fill.style.width = pct + "%";
    return el("div", { class: "mini-progress" }, el("div", { class: "progress-track" }, fill), el("span", { text: pct + "%" }));
  }

  function fillTable(id, rows) {
    const body = document.querySelector("#" + id + " tbody");
    body.replaceChildren();
    if (rows.length === 0) {
      const cols = document.querySelectorAll("#" + id + " thead th").length;
      body.append(el("tr", {}, el("td", { colspan: String(cols), class: "muted", text: "nothing yet" })));
    }
    for (const cells of rows) {
      body.append(el("tr", {}, ...cells.map((c) => (c instanceof Node ? el("td", {}, c) : el("td", { text: String(c) })))));
    }
  }

  async function load() {
    const { data } = await api("GET", "/api/stats");
    const ag = data.agreement;
    setProgress(data.rankings, data.rankings_needed,
      data.rankings + " of " + data.rankings_needed + " rankings · " + data.items_complete + "/" + data.items + " items complete");
    $("summary").replaceChildren(
      card("Items", String(data.items), "each ranked by " + data.overlap + " annotator" + (data.overlap > 1 ? "s" : "")),
      card("Rankings", data.rankings + " / " + data.rankings_needed, data.items_complete + " items complete"),
      card("Krippendorff's α (ordinal)", fmt(ag.krippendorff_alpha_ordinal), ag.alpha_reading),
      card("Pairwise agreement", ag.pairwise_agreement === null ? "—" : Math.round(100 * ag.pairwise_agreement) + "%",
        ag.items_with_overlap + " items with 2+ annotators"),
      card("Kendall's W", fmt(data.quality.kendall_w_mean), "mean over " + data.quality.kendall_w_items + " items"),
      card("Gold items", String(data.quality.gold_items), data.quality.gold_rankings + " rankings of them"),
    );
    const perItem = Math.max(1, data.items);
    fillTable("annotators", data.annotators.map((a) => [
      a.name + (a.is_admin ? " (admin)" : ""), a.done, a.skipped, a.open, bar(a.done / perItem),
      // names are data: "__proto__" or "constructor" must not read Object.prototype
      fmt(Object.hasOwn(ag.pairwise_agreement_by_annotator, a.name) ? ag.pairwise_agreement_by_annotator[a.name] : null),
      ...qualityCells(Object.hasOwn(data.quality.annotators, a.name) ? data.quality.annotators[a.name] : null),
    ]));
    showGold(data.quality);
    fillTable("disagreed", ag.most_disagreed.map((d) => [
      d.item_id, el("span", { class: "clip", text: d.prompt }), d.annotators, Math.round(100 * d.agreement) + "%",
    ]));
    fillTable("flags", data.flags.map((f) => [f.item_id, f.reason, f.count]));
  }

  function updateExportLink() {
    const q = new URLSearchParams({
      format: $("ex-format").value,
      consensus: $("ex-consensus").value,
      min_annotators: String(Math.max(1, parseInt($("ex-min").value, 10) || 1)),
    });
    const minRel = parseFloat($("ex-minrel").value);
    if (Number.isFinite(minRel)) q.set("min_reliability", String(Math.max(-1, Math.min(1, minRel))));
    if ($("ex-weight").checked) q.set("weight_by_reliability", "true");
    $("ex-link").href = "/api/export?" + q.toString();
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["ex-format", "ex-consensus", "ex-min", "ex-minrel", "ex-weight"]) $(id).addEventListener("change", updateExportLink);
    window.reloadStats = () => load().catch((e) => showStatus("Could not load stats: " + e.message, "error"));
    updateExportLink();
    load().catch((e) => showStatus("Could not load stats: " + e.message, "error"));
    setInterval(() => load().catch(() => {}), 15000);
  });
})();
