// The search page: plain JS against the JSON API (no build step).
"use strict";
const $ = (id) => document.getElementById(id);
const state = { info: null };

function status(text, isError) {
  const s = $("status");
  s.textContent = text || "";
  s.className = "status" + (isError ? " error" : "");
}

async function api(url, options) {
  const r = await fetch(url, options);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: r.status + " " + r.statusText }; }
  if (!r.ok) throw new Error(body.error || (r.status + " " + r.statusText));
  return body;
}

function tile(cls, lines, thumb, onclick) {
  const t = document.createElement("div");
  t.className = "tile " + cls;
  if (thumb) {
    const img = document.createElement("img");
    img.src = thumb; img.alt = lines[0] || ""; img.loading = "lazy";
    t.appendChild(img);
  } else {
    const d = document.createElement("div"); d.className = "noimg"; d.textContent = "no picture"; t.appendChild(d);
  }
  for (const [text, c] of lines) {
    const div = document.createElement("div"); div.textContent = text; if (c) div.className = c; t.appendChild(div);
  }
  if (onclick) t.addEventListener("click", onclick);
  return t;
}

function show(res) {
  const q = res.query;
  const qbox = $("query"); qbox.replaceChildren();
  const qlines = [["query: " + (q.id || q.kind), "d"]];
  if (q.labels && q.labels.length) qlines.push([q.labels.join(", "), "labels"]);
  if (q.tags && q.tags.length) qlines.push(["tags: " + q.tags.join(", "), "labels"]);
  qbox.appendChild(tile("q", qlines, q.thumbnail || state.localPreview, null));
  const grid = $("results"); grid.replaceChildren();
  for (const r of res.results) {
    const lines = [["#" + r.rank + " · d=" + r.distance, "d"], [r.id, "id"]];
    if (r.labels && r.labels.length) lines.push([r.labels.join(", "), "labels"]);
    if (r.tags && r.tags.length) lines.push(["tags: " + r.tags.join(", "), "labels"]);
    const t = tile("r", lines, r.thumbnail, () => searchId(r.id));
    t.dataset.id = r.id; t.dataset.distance = r.distance;
    t.title = "search from " + r.id;
    grid.appendChild(t);
  }
  const ms = Object.entries(res.timing_ms).map(([k, v]) => k + " " + v.toFixed(1) + " ms").join(", ");
  status(res.results.length + " results of " + res.items + " items (" + ms + ")");
}

function k() { return Math.max(1, Math.min(1000, parseInt($("k").value || "24", 10))); }

async function searchId(id) {
  state.localPreview = null;
  $("itemid").value = id;
  status("searching " + id + " …");
  try { show(await api("/api/search?id=" + encodeURIComponent(id) + "&k=" + k())); }
  catch (e) { status(e.message, true); }
}

async function searchFile(file) {
  if (!file) return;
  state.localPreview = URL.createObjectURL(file);
  status("encoding " + file.name + " …");
  const fd = new FormData();
  fd.append("image", file, file.name);
  fd.append("k", String(k()));
  if ($("tags").value.trim()) fd.append("tags", $("tags").value.trim());
  try { show(await api("/api/search", { method: "POST", body: fd })); }
  catch (e) { status(e.message, true); }
}

async function addFiles(ev) {
  ev.preventDefault();
  const files = $("addfiles").files;
  if (!files.length) { status("choose pictures to add", true); return; }
  const fd = new FormData();
  for (const f of files) fd.append("images", f, f.name);
  if ($("addtags").value.trim()) fd.append("tags", $("addtags").value.trim());
  const headers = {};
  if ($("token").value) headers["Authorization"] = "Bearer " + $("token").value;
  try {
    const r = await api("/api/items", { method: "POST", body: fd, headers });
    status("added " + r.added.map((a) => a.id).join(", ") + "; " + r.items + " items");
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
$("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
$("byid").addEventListener("submit", (e) => { e.preventDefault(); const id = $("itemid").value.trim(); if (id) searchId(id); });
$("addform").addEventListener("submit", addFiles);
loadInfo();
