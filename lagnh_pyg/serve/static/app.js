// The search page: plain JS against the JSON API (no build step).
"use strict";
const $ = (id) => document.getElementById(id);
const PAGE = 48;
const RERANK = 1000;
const state = { info: null, offset: 0, total: 0 };

function status(text, isError) {
  const s = $("status");
  s.textContent = text || "";
  s.className = "status" + (isError ? " error" : "");
}

function notes(list) {
  const ul = $("notes");
  ul.replaceChildren();
  for (const n of list || []) {
    const li = document.createElement("li"); li.textContent = n; ul.appendChild(li);
  }
}

async function api(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: r.status + " " + r.statusText }; }
  if (!r.ok) throw new Error(body.error || (r.status + " " + r.statusText));
  return body;
}

// A tile; with `onpick` it is a button: click, Enter or Space searches from it.
function tile(cls, lines, thumb, onpick) {
  const t = document.createElement("div");
  t.className = "tile " + cls;
  if (thumb) {
    const img = document.createElement("img");
    img.src = thumb; img.alt = lines[0] ? lines[0][0] : ""; img.loading = "lazy";
    t.appendChild(img);
  } else {
    const d = document.createElement("div"); d.className = "noimg"; d.textContent = "no picture"; t.appendChild(d);
  }
  for (const [text, c] of lines) {
    const div = document.createElement("div"); div.textContent = text; if (c) div.className = c; t.appendChild(div);
  }
  if (onpick) {
    t.tabIndex = 0;
    t.setAttribute("role", "button");
    t.addEventListener("click", onpick);
    t.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onpick(); }
    });
  }
  return t;
}

function itemLines(x, head) {
  const lines = head ? [[head, "d"]] : [];
  lines.push([x.id, "id"]);
  if (x.labels && x.labels.length) lines.push([x.labels.join(", "), "labels"]);
  if (x.tags && x.tags.length) lines.push(["tags: " + x.tags.join(", "), "tags"]);
  return lines;
}

function show(res) {
  const q = res.query;
  const qbox = $("query"); qbox.replaceChildren();
  const qlines = [["query: " + (q.id || q.kind), "d"]];
  if (q.labels && q.labels.length) qlines.push([q.labels.join(", "), "labels"]);
  if (q.tags && q.tags.length) qlines.push(["tags: " + q.tags.join(", "), "tags"]);
  qbox.appendChild(tile("q", qlines, q.thumbnail || state.localPreview, null));
  const grid = $("results"); grid.replaceChildren();
  for (const r of res.results) {
    const head = "#" + r.rank + " · d=" + r.distance + (r.score !== null && r.score !== undefined ? " · s=" + r.score.toFixed(3) : "");
    const t = tile("r", itemLines(r, head), r.thumbnail, () => searchId(r.id));
    t.dataset.id = r.id; t.dataset.distance = r.distance;
    t.title = "search from " + r.id;
    grid.appendChild(t);
  }
  notes(res.notes);
  const ms = Object.entries(res.timing_ms).map(([k, v]) => k + " " + v.toFixed(1) + " ms").join(", ");
  const how = res.rerank && res.rerank.depth ? "; re-ranked top " + res.rerank.depth + " by " + res.rerank.score : "";
  status(res.results.length + " results of " + res.items + " items (" + ms + how + ")");
  browsing(false);
}

function k() { return Math.max(1, Math.min(1000, parseInt($("k").value || "24", 10))); }
function rerank() { return $("rerank").checked ? RERANK : 0; }

async function searchId(id) {
  state.localPreview = null;
  $("itemid").value = id;
  status("searching " + id + " …");
  try { show(await api("/api/search?id=" + encodeURIComponent(id) + "&k=" + k() + "&rerank=" + rerank())); }
  catch (e) { status(e.message, true); }
}

async function searchFile(file) {
  if (!file) return;
  state.localPreview = URL.createObjectURL(file);
  $("itemid").value = "";  // the query is the picture now, not an item
  status("encoding " + file.name + " …");
  const fd = new FormData();
  fd.append("image", file, file.name);
  fd.append("k", String(k()));
  fd.append("rerank", String(rerank()));
  if ($("tags").value.trim()) fd.append("tags", $("tags").value.trim());
  try { show(await api("/api/search", { method: "POST", body: fd })); }
  catch (e) { status(e.message, true); }
}

// The collection, a page at a time (shown on load and by "back to the collection").
async function loadPage(offset) {
  try {
    const p = await api("/api/items?offset=" + Math.max(0, offset) + "&limit=" + PAGE);
    state.offset = p.offset; state.total = p.total;
    const g = $("gallery"); g.replaceChildren();
    for (const it of p.items) {
      const t = tile("g", itemLines(it), it.thumbnail, () => searchId(it.id));
      t.dataset.id = it.id; t.title = "search from " + it.id;
      g.appendChild(t);
    }
    const last = Math.min(p.total, p.offset + p.items.length);
    $("pageinfo").textContent = p.total ? "items " + (p.offset + 1) + "–" + last + " of " + p.total : "no items";
    $("prev").disabled = p.offset <= 0;
    $("next").disabled = last >= p.total;
  } catch (e) { status(e.message, true); }
}

function browsing(on) {
  $("gallery").hidden = !on;
  $("prev").hidden = $("next").hidden = $("pageinfo").hidden = !on;
  $("showall").hidden = on;
  if (on) { $("query").replaceChildren(); $("results").replaceChildren(); notes([]); }
}

async function addFiles(ev) {
  ev.preventDefault();
  const files = $("addfiles").files;
  if (!files.length) { status("choose pictures to add", true); return; }
  const fd = new FormData();
  for (const f of files) fd.append("images", f, f.name);
  if ($("addtags").value.trim()) fd.append("tags", $("addtags").value.trim());
  // the custom header marks the request as this page's own: the server refuses writes without
  // it (or the token), which is what a cross-site form or no-cors fetch cannot send
  const headers = { "X-Requested-With": "lagnh" };
  if ($("token").value) headers["Authorization"] = "Bearer " + $("token").value;
  try {
    const r = await api("/api/items", { method: "POST", body: fd, headers });
    status("added " + r.added.map((a) => a.id).join(", ") + "; " + r.items + " items");
    notes(r.notes);
    $("addfiles").value = "";
    loadInfo();
  } catch (e) { status(e.message, true); }
}

async function loadInfo() {
  try {
    const i = await api("/api/info");
    state.info = i;
    $("info").textContent = i.method + " · " + i.bits + " bits · " + i.items + " items (" + i.added_items +
      " added) · " + i.index_kind + " index" + (i.upload_search ? "" : " · search by picture unavailable: " +
      "the dataset records no feature-extraction recipe");
  } catch (e) { $("info").textContent = "cannot reach the server: " + e.message; }
}

const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => searchFile(e.dataTransfer.files[0]));
drop.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); }
});
$("file").addEventListener("change", (e) => {
  const f = e.target.files[0];
  e.target.value = "";  // so that choosing the same file again is a change too
  searchFile(f);
});
$("byid").addEventListener("submit", (e) => { e.preventDefault(); const id = $("itemid").value.trim(); if (id) searchId(id); });
$("addform").addEventListener("submit", addFiles);
$("prev").addEventListener("click", () => loadPage(state.offset - PAGE));
$("next").addEventListener("click", () => loadPage(state.offset + PAGE));
$("showall").addEventListener("click", () => { browsing(true); status(""); loadPage(state.offset); });
browsing(true);
loadInfo();
loadPage(0);
