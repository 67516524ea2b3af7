// The search page: queries go to the JSON API; results show as thumbnails with the person's box drawn over them.
// Everything the server sends is put in the page as text (textContent), never as HTML.
"use strict";

const $ = (selector) => document.querySelector(selector);
const form = $("#search"), input = $("#q"), topK = $("#k"), statusLine = $("#status"), grid = $("#results");
const photo = $("#photo"), far = $("#far");
let gallery = null;

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function say(text, kind) {
  statusLine.textContent = text;
  statusLine.className = kind || "";
}

// The JSON body of a request, or an Error carrying the server's own message (it names the cap or the field).
async function api(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (e) {
    throw new Error("the server cannot be reached");
  }
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = null;
  }
  if (response.status === 401) location.assign("/signin");  // the session ended: sign in again
  if (!response.ok) throw new Error(body && body.error ? body.error : `the server answered ${response.status}`);
  return body;
}

async function run(label, request) {
  say(`searching ${label}…`, "busy");
  const started = performance.now();
  try {
    const body = await request();
    show(label, body, performance.now() - started);
  } catch (e) {
    grid.replaceChildren();
    say(e.message, "error");
  }
}

function show(label, body, ms) {
  const result = body.results[0];
  grid.replaceChildren(...result.hits.map((hit) => card(hit, result)));
  if (!result.hits.length) {  // with a FAR, the note says no hit reaches its threshold
    say(`no results for ${label}: ${result.note || "the gallery is empty, or no row matches"}`, "empty");
    return;
  }
  let text = `${result.hits.length} results for ${label} in ${ms.toFixed(0)} ms ` +
             `(search ${(1000 * result.seconds).toFixed(1)} ms on the server, ${body.count} people enrolled)`;
  if (result.far && result.threshold !== null) {
    text += ` · matches at FAR ${result.far} (score ≥ ${result.threshold.toFixed(3)})`;
  }
  if (result.note) text += ` · note: ${result.note}`;
  say(text);
}

// How strong a hit is against the operating points: the strictest FAR whose threshold its score reaches.
function strength(hit, result) {
  if (hit.passes === null) return null;  // the models in use have no measured thresholds
  const points = Object.entries(result.operating_points || {})
    .map(([rate, t]) => `FAR ${rate}: ${t === null ? "none" : `score ≥ ${t.toFixed(3)}`}`).join(" · ");
  const badge = hit.passes.length
    ? element("span", "strength pass", `FAR ≤ ${hit.passes[hit.passes.length - 1]}`)
    : element("span", "strength below", "below every operating point");
  badge.title = points || result.calibration || "";
  return badge;
}

// The FAR selector's value as a query parameter ("" for every result).
function farParam() {
  return far.value ? `&far=${encodeURIComponent(far.value)}` : "";
}

function card(hit, result) {
  const figure = element("figure", "card");
  const frame = element("a", "frame");
  frame.href = hit.image;
  frame.target = "_blank";
  frame.rel = "noopener";
  const img = element("img");
  img.alt = `person #${hit.id}`;  // hits carry ids, never the server's file paths
  frame.append(img);
  thumbnail(hit, img, frame);
  const caption = element("figcaption");
  const head = element("div", "head");
  const score = hit.score === null ? "–" : hit.score.toFixed(3);
  head.append(element("span", "rank", `#${hit.rank}`), element("span", "score", score));
  caption.append(head);
  const badge = strength(hit, result);
  if (badge) caption.append(badge);
  if (hit.identity !== null) caption.append(element("span", "identity", `identity ${hit.identity}`));
  const fields = Object.entries(hit.meta || {})
    .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`);
  if (fields.length) caption.append(element("span", "meta", fields.join(" · ")));
  const similar = element("button", "similar", "search with this person");
  similar.type = "button";
  similar.addEventListener("click", () => {
    run(`person #${hit.id}`, () => api(`/api/search/similar/${hit.id}?k=${topK.value}${farParam()}`));
  });
  caption.append(similar);
  figure.append(frame, caption);
  return figure;
}

// The thumbnail, fetched so its X-Image-Size (the original W x H) places the row's box over it.
async function thumbnail(hit, img, frame) {
  try {
    const response = await fetch(hit.thumb);
    if (!response.ok) throw new Error(String(response.status));
    const size = (response.headers.get("X-Image-Size") || "").split("x").map(Number);
    const url = URL.createObjectURL(await response.blob());
    img.addEventListener("load", () => URL.revokeObjectURL(url), { once: true });
    img.src = url;
    if (hit.bbox && size.length === 2 && size[0] > 0 && size[1] > 0) frame.append(box(hit.bbox, size));
  } catch (e) {
    frame.classList.add("missing");
  }
}

function box([x1, y1, x2, y2], [width, height]) {
  const clamp = (v) => Math.min(100, Math.max(0, v));
  const left = clamp(100 * x1 / width), top = clamp(100 * y1 / height);
  const overlay = element("div", "box");
  overlay.style.left = `${left}%`;
  overlay.style.top = `${top}%`;
  overlay.style.width = `${clamp(100 * x2 / width) - left}%`;
  overlay.style.height = `${clamp(100 * y2 / height) - top}%`;
  return overlay;
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const q = input.value.trim();
  if (!q) {
    say("type a description first, e.g. “a woman in a red coat”", "error");
    return;
  }
  history.replaceState(null, "", `?q=${encodeURIComponent(q)}&k=${topK.value}${farParam()}`);
  run(`“${q}”`, () => api(`/api/search?q=${encodeURIComponent(q)}&k=${topK.value}${farParam()}`));
});

photo.addEventListener("change", () => {
  const file = photo.files[0];
  photo.value = "";
  if (!file) return;
  if (gallery && file.size > gallery.max_upload_bytes) {
    say(`the photo is ${file.size} bytes; the limit is ${gallery.max_upload_bytes} bytes`, "error");
    return;
  }
  const data = new FormData();
  data.append("image", file);
  data.append("k", topK.value);
  if (far.value) data.append("far", far.value);
  run(`the photo ${file.name}`, () => api("/api/search/image", { method: "POST", body: data }));
});

// Who is signed in (and a sign-out button), or why nobody needs to: no accounts, or a server run open on purpose.
async function account() {
  const me = await api("/api/me");
  const banner = $("#banner");
  if (me.user) {
    $("#account").textContent = `signed in as ${me.user} (${me.role})`;
    $("#signout").hidden = false;
  } else if (me.insecure) {
    banner.textContent = "This server runs with --insecure-no-auth: anyone who can reach it can search this " +
                         "gallery. Add an account (search/users.py --gallery GALLERY add NAME) and restart without it.";
    banner.className = "danger";
    banner.hidden = false;
  } else {
    banner.textContent = "No accounts: this page is open to anyone on this machine. search/users.py --gallery " +
                         "GALLERY add NAME adds one; from then on it asks everyone to sign in.";
    banner.hidden = false;
  }
}

async function start() {
  try {
    await account();
  } catch (e) {
    $("#account").textContent = e.message;
  }
  try {
    gallery = await api("/api/gallery");
    $("#gallery").textContent = `${gallery.count} people enrolled · ${gallery.encoder.name || gallery.encoder.kind}`;
    $("#photo-label").hidden = !gallery.image_model;
  } catch (e) {
    $("#gallery").textContent = `the gallery is unavailable: ${e.message}`;
  }
  const params = new URLSearchParams(location.search);
  if (params.get("k") && [...topK.options].some((o) => o.value === params.get("k"))) topK.value = params.get("k");
  if ([...far.options].some((o) => o.value === params.get("far"))) far.value = params.get("far");
  if (params.get("q")) {
    input.value = params.get("q");
    form.requestSubmit();
  }
}

start();
