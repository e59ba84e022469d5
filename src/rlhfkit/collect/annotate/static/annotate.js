"use strict";
// The ranking page. State: `tiers`, the ranking so far, best first; each tier is a list of
// response ids (more than one = a tie). Keys, buttons and drag and drop all edit `tiers`.
(function () {
  let item = null;        // {item_id, prompt, responses: [{id, text}]} as the server ordered them
  let tiers = [];         // [["r2"], ["r0", "r3"]]
  let history = [];       // ids in the order they were placed, for Undo
  let tieNext = false;    // "=" pressed: the next placed response joins the last tier
  let busy = false;
  let sent = null;        // {key, id}: the request id of the last ranking submitted for this item

  const $ = (id) => document.getElementById(id);
  const numberOf = (id) => item.responses.findIndex((r) => r.id === id) + 1;
  const placed = () => tiers.flat();

  // ---- editing the ranking ----------------------------------------------------------------
  function removeId(id) {
    // Mutate tiers in place so that references to them (drop targets) stay valid.
    for (const t of tiers) {
      const j = t.indexOf(id);
      if (j >= 0) t.splice(j, 1);
    }
    tiers = tiers.filter((t) => t.length > 0);
    history = history.filter((x) => x !== id);
  }

  function place(id, tie) {
    removeId(id);
    if (tie && tiers.length > 0) tiers[tiers.length - 1].push(id);
    else tiers.push([id]);
    history.push(id);
    tieNext = false;
    render();
  }

  function moveTo(id, tierIndex, asNewTier) {
    // Drag and drop: into tier `tierIndex` (a tie), or as a new tier at that position.
    const at = tiers[tierIndex];
    removeId(id);
    if (!asNewTier && at && tiers.includes(at)) {
      at.push(id);
    } else {
      let idx = at ? tiers.indexOf(at) : tiers.length;
      if (idx < 0) idx = Math.min(tierIndex, tiers.length); // that tier held only `id`
      tiers.splice(idx, 0, [id]);
    }
    history.push(id);
    tieNext = false;
    render();
  }

  function undo() {
    const last = history.pop();
    if (last !== undefined) removeId(last);
    tieNext = false;
    render();
  }

  function clearRanking() {
    tiers = []; history = []; tieNext = false;
    render();
  }

  const complete = () => item && placed().length === item.responses.length;

  // ---- drawing ------------------------------------------------------------------------------
  function chip(id) {
    const c = el("span", { class: "chip", draggable: "true", dataset: { id }, title: "drag to move" },
      el("span", { class: "chip-num", text: String(numberOf(id)) }));
    const x = el("button", { class: "chip-x", type: "button", "aria-label": "remove " + numberOf(id), text: "×" });
    x.addEventListener("click", () => { removeId(id); render(); });
    c.append(x);
    c.addEventListener("dragstart", onDragStart);
    return c;
  }

  function dropZone(node, index, asNew) {
    node.addEventListener("dragover", (ev) => { ev.preventDefault(); node.classList.add("over"); });
    node.addEventListener("dragleave", () => node.classList.remove("over"));
    node.addEventListener("drop", (ev) => {
      ev.preventDefault();
      node.classList.remove("over");
      const id = ev.dataTransfer.getData("text/plain");
      if (item && item.responses.some((r) => r.id === id)) moveTo(id, index, asNew);
    });
  }

  function onDragStart(ev) {
    ev.dataTransfer.setData("text/plain", ev.currentTarget.dataset.id);
    ev.dataTransfer.effectAllowed = "move";
  }

  function render() {
    if (!item) return;
    const list = $("tiers");
    list.replaceChildren();
    tiers.forEach((tier, i) => {
      const gap = el("li", { class: "gap", "aria-hidden": "true" });
      dropZone(gap, i, true);
      list.append(gap);
      const li = el("li", { class: "tier" + (tier.length > 1 ? " tied" : ""), dataset: { rank: String(i + 1) } },
        el("span", { class: "tier-rank", text: ordinal(i + 1) + (tier.length > 1 ? " (tie)" : "") }));
      tier.forEach((id) => li.append(chip(id)));
      dropZone(li, i, false);
      list.append(li);
    });
    const left = item ? item.responses.length - placed().length : 0;
    const tail = el("li", { class: "tier new-tier", dataset: { rank: "new" } },
      el("span", { class: "tier-rank", text: tiers.length ? "next rank" : "best" }),
      el("span", { class: "muted", text: left ? "drop a response here, or press its number" : "all placed — Enter submits" }));
    dropZone(tail, tiers.length, true);
    list.append(tail);

    // A Map, not an object: response ids are data, and "__proto__" or "constructor" as a key
    // of a plain object reads the prototype's property instead of ours.
    const rankOf = new Map();
    tiers.forEach((t, i) => t.forEach((id) => rankOf.set(id, i + 1)));
    for (const card of document.querySelectorAll("#responses .card")) {
      const r = rankOf.get(card.dataset.id);
      const badge = card.querySelector(".badge");
      badge.textContent = r ? ordinal(r) + (tiers[r - 1].length > 1 ? " (tie)" : "") : "";
      card.classList.toggle("placed", Boolean(r));
    }
    $("submit").disabled = !complete() || busy;
    $("undo").disabled = history.length === 0;
    $("tie-hint").hidden = !tieNext;
  }

  function ordinal(n) {
    const s = ["th", "st", "nd", "rd"], v = n % 100;
    return n + (s[(v - 20) % 10] || s[v] || s[0]);
  }

  function showItem(next) {
    item = next; tiers = []; history = []; tieNext = false; sent = null;
    $("task").hidden = false; $("done").hidden = true;
    $("prompt").textContent = item.prompt;
    setMarkdown($("prompt-md"), item.prompt_html, item.prompt);
    $("item-label").textContent = "item " + item.item_id;
    $("flag").classList.remove("flagged");
    const box = $("responses");
    box.replaceChildren();
    item.responses.forEach((r, i) => {
      const n = i + 1;
      const placeBtn = el("button", { type: "button", class: "place", text: "Place next" });
      const tieBtn = el("button", { type: "button", class: "tie", text: "Tie with last" });
      placeBtn.addEventListener("click", () => place(r.id, false));
      tieBtn.addEventListener("click", () => place(r.id, true));
      const card = el("article", { class: "card", draggable: "true", dataset: { id: r.id } },
        el("header", { class: "card-head" },
          el("span", { class: "num", text: String(n), title: "press " + n + " to place" }),
          el("span", { class: "badge" }),
          el("span", { class: "spacer" }),
          placeBtn, tieBtn),
        el("pre", { class: "text response-text md-alt", text: r.text }),
        markdownBlock(r.html, r.text, "response-md"));
      card.addEventListener("dragstart", onDragStart);
      box.append(card);
    });
    render();
    window.scrollTo(0, 0);
  }

  // ---- talking to the server ------------------------------------------------------------
  let progressAsked = 0;   // refreshes overlap when items go fast: only the newest one shows
  async function refreshProgress() {
    const mine = ++progressAsked;
    const { data } = await api("GET", "/api/me");
    if (mine !== progressAsked) return;
    const p = data.progress;
    const total = p.done + p.remaining;
    setProgress(p.done, total, p.done + " done · " + p.remaining + " left" + (p.skipped ? " · " + p.skipped + " skipped" : ""));
  }

  async function loadNext() {
    const res = await api("GET", "/api/next");
    if (res.status === 204) {
      item = null; tiers = []; history = []; tieNext = false;
      $("task").hidden = true; $("done").hidden = false;
    } else {
      showItem(res.data);
    }
    // Not awaited: the next item is ready as soon as it shows. A ranking submitted while the
    // progress line was still loading used to be dropped (the page was still "busy").
    refreshProgress().catch((e) => showStatus("Could not update progress: " + e.message, "error"));
  }

  function newRequestId() {
    // crypto.getRandomValues works on plain http too (randomUUID needs a secure context)
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function postRanking(body) {
    // A dropped connection may have lost the answer, not the ranking: send the same request id
    // again and the server answers with the ranking it saved, never a second one.
    for (let attempt = 0; ; attempt++) {
      try {
        return await api("POST", "/api/rankings", body);
      } catch (e) {
        if (e.status !== undefined || attempt >= 2) throw e;  // an answer, or retried enough
        await new Promise((done) => setTimeout(done, 500 * (attempt + 1)));
      }
    }
  }

  async function submit() {
    if (!complete() || busy) return;
    busy = true; render();
    const ranking = tiers.map((t) => (t.length === 1 ? t[0] : t.slice()));
    // The same ranking submitted again (Submit pressed after an error) keeps its request id.
    const key = JSON.stringify(ranking);
    if (!sent || sent.key !== key) sent = { key, id: newRequestId() };
    try {
      await postRanking({ item_id: item.item_id, ranking, request_id: sent.id });
      showStatus("Saved.", "ok");
      await loadNext();
    } catch (e) {
      showStatus("Not saved: " + e.message, "error");
      if (e.status === 404 || e.status === 409) await loadNext();
    } finally {
      busy = false; render();
    }
  }

  function chosen(name) {
    const r = document.querySelector('input[name="' + name + '"]:checked');
    return r ? r.value : "";
  }

  async function confirmSkip() {
    const note = $("skip-note").value.trim();
    const reason = chosen("skip-reason") + (note ? ": " + note : "");
    $("skip-dialog").close();
    try {
      await api("POST", "/api/skips", { item_id: item.item_id, reason });
      showStatus("Skipped.", "ok");
      await loadNext();
    } catch (e) {
      showStatus("Skip failed: " + e.message, "error");
    }
  }

  async function confirmFlag() {
    const note = $("flag-note").value.trim();
    const reason = chosen("flag-reason");
    $("flag-dialog").close();
    try {
      await api("POST", "/api/flags", { item_id: item.item_id, reason, note: note || null });
      showStatus("Flagged as " + reason + ". You can still rank or skip this item.", "ok");
      $("flag").classList.add("flagged");
    } catch (e) {
      showStatus("Flag failed: " + e.message, "error");
    }
  }

  function openDialog(id) {
    if (!item) return;
    const d = $(id);
    d.querySelector("input[type=text]").value = "";
    d.showModal();
    d.querySelector("input[type=radio]:checked").focus();
  }

  // ---- keyboard ---------------------------------------------------------------------------
  function onDialogKey(ev, dialog, confirm) {
    if (ev.key === "Enter") { ev.preventDefault(); confirm(); return; }
    const inText = ev.target.matches("input[type=text]");
    if (!inText && /^[1-9]$/.test(ev.key)) {
      const radios = dialog.querySelectorAll("input[type=radio]");
      const r = radios[Number(ev.key) - 1];
      if (r) { r.checked = true; r.focus(); ev.preventDefault(); }
    }
  }

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (document.querySelector("dialog[open]")) return; // dialogs handle their own keys
    if (ev.target.matches("input, textarea, select")) return;
    if (!item) return;
    const k = ev.key;
    if (/^[1-9]$/.test(k)) {
      const r = item.responses[Number(k) - 1];
      if (r) { place(r.id, tieNext); ev.preventDefault(); }
    } else if (k === "=") {
      if (tiers.length > 0) { tieNext = !tieNext; render(); }
      ev.preventDefault();
    } else if (k === "Enter") {
      if (ev.target.matches("button") && ev.target.id !== "submit") return; // let buttons work
      ev.preventDefault();
      if (busy) showStatus("Still saving the last ranking…", "ok");
      else if (complete()) submit();
      else showStatus("Place every response first (" + placed().length + " of " + item.responses.length + ").", "error");
    } else if (k === "Backspace") {
      ev.preventDefault(); undo();
    } else if (k === "s" || k === "S") {
      ev.preventDefault(); openDialog("skip-dialog");
    } else if (k === "f" || k === "F") {
      ev.preventDefault(); openDialog("flag-dialog");
    } else if (k === "t" || k === "T") {
      ev.preventDefault(); toggleView();
    } else if (k === "Escape") {
      tieNext = false; render();
    }
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("submit").addEventListener("click", submit);
    $("undo").addEventListener("click", undo);
    $("clear").addEventListener("click", clearRanking);
    $("skip").addEventListener("click", () => openDialog("skip-dialog"));
    $("flag").addEventListener("click", () => openDialog("flag-dialog"));
    $("skip-confirm").addEventListener("click", confirmSkip);
    $("flag-confirm").addEventListener("click", confirmFlag);
    $("check-again").addEventListener("click", () => loadNext().catch((e) => showStatus(e.message, "error")));
    $("skip-dialog").addEventListener("keydown", (ev) => onDialogKey(ev, $("skip-dialog"), confirmSkip));
    $("flag-dialog").addEventListener("keydown", (ev) => onDialogKey(ev, $("flag-dialog"), confirmFlag));
    for (const b of document.querySelectorAll("dialog [data-close]")) {
      b.addEventListener("click", () => b.closest("dialog").close());
    }
    loadNext().catch((e) => showStatus("Could not load: " + e.message, "error"));
  });
})();
