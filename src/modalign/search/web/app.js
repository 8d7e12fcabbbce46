// modalign search page. The API key travels only in the Authorization header, also for thumbnails
// (fetched, then shown from a blob: URL): never in a URL, so never in logs, history or Referer.
"use strict";
const $ = (id) => document.getElementById(id);
$("key").value = sessionStorage.getItem("modalign-key") || "";
$("key").addEventListener("change", () => sessionStorage.setItem("modalign-key", $("key").value));

let shownUrls = [];  // blob: URLs of the thumbnails on screen, revoked when results change

function status(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function auth() {
  return {"Authorization": "Bearer " + $("key").value};
}

async function thumbnail(img, url) {
  try {
    const r = await fetch(url, {headers: auth()});
    if (!r.ok) { img.alt = "no preview (" + r.status + ")"; return; }
    const blobUrl = URL.createObjectURL(await r.blob());
    shownUrls.push(blobUrl);
    img.src = blobUrl;
  } catch (e) {
    img.alt = "no preview";
  }
}

function show(results) {
  shownUrls.forEach((u) => URL.revokeObjectURL(u));
  shownUrls = [];
  const box = $("results");
  box.replaceChildren();
  results.forEach((hit, rank) => {
    const div = document.createElement("div");
    div.className = "hit";
    if (hit.image_url) {
      const img = document.createElement("img");
      img.alt = hit.key;
      div.appendChild(img);
      thumbnail(img, hit.image_url);
    }
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = "#" + (rank + 1) + "  " + hit.score.toFixed(3);
    div.appendChild(score);
    if (hit.relevance !== undefined) {
      const rel = document.createElement("div");
      rel.className = "relevance";
      rel.textContent = "relevance " + hit.relevance.toFixed(2);
      div.appendChild(rel);
    }
    const cap = document.createElement("div");
    cap.className = "caption";
    cap.textContent = hit.caption || hit.key;
    div.appendChild(cap);
    box.appendChild(div);
  });
  status(results.length + " results");
}

async function call(url, options) {
  options.headers = Object.assign(auth(), options.headers || {});
  status("searching...");
  try {
    const r = await fetch(url, options);
    const body = await r.json();
    if (!r.ok) { status("error " + r.status + ": " + (body.error || JSON.stringify(body)), true); return; }
    show(body.results);
  } catch (e) {
    status("request failed: " + e, true);
  }
}

function k() { return parseInt($("k").value || "8", 10); }

// k, and the relevance cut when asked for: {k, min_relevance?, adaptive_k?, k_max?}
function cutParams() {
  const p = {k: k()};
  const minrel = $("minrel").value.trim();
  if (minrel !== "") p.min_relevance = parseFloat(minrel);
  if ($("adaptive").checked) p.adaptive_k = true;
  if (minrel !== "" || $("adaptive").checked) p.k_max = parseInt($("kmax").value || "50", 10);
  return p;
}

function searchText() {
  const text = $("query").value.trim();
  if (!text) { status("type a query first", true); return; }
  call("/search/text", {method: "POST", headers: {"Content-Type": "application/json"},
                        body: JSON.stringify(Object.assign({text: text}, cutParams()))});
}

function searchImage(file) {
  const form = new FormData();
  form.append("file", file);
  call("/search/image?" + new URLSearchParams(cutParams()).toString(), {method: "POST", body: form});
}

$("go").addEventListener("click", searchText);
$("query").addEventListener("keydown", (e) => { if (e.key === "Enter") searchText(); });
$("file").addEventListener("change", () => { if ($("file").files[0]) searchImage($("file").files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) searchImage(e.dataTransfer.files[0]);
});
