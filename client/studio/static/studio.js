// framecast studio: the page (with results.js: the result, the adapters, the jobs). It calls the studio's JSON API (client/studio/app.py), which calls the
// framecast server. What the page holds (the clip, the region, the jobs) is kept in localStorage, so a
// reload shows it again and re-attaches to the jobs (their events are the server's WatchJob).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "framecast-studio";
const PHASES = { decode: "reading the clip", mask: "reading the mask", motion: "training · motion",
  appearance: "training · appearance", preview: "training · preview", denoise: "generating",
  encode: "writing the output", measure: "measuring" };
let state = load();
let server = {};
const streams = {};  // role -> EventSource

function load() {
  try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch (e) { return {}; }
}
function save() { localStorage.setItem(KEY, JSON.stringify(state)); }
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

// ---- errors, next to the field they concern ------------------------------------------------------

function clearErrors(...fields) {
  document.querySelectorAll(".error").forEach((node) => {
    if (!fields.length || fields.includes(node.dataset.for)) node.textContent = "";
  });
}
function showError(field, error) {
  const node = document.querySelector(`.error[data-for="${field}"]`) || document.querySelector('.error[data-for="run"]');
  const text = error.code ? `${error.code}: ${error.message}` : error.message;
  node.textContent = node.textContent ? `${node.textContent}\n${text}` : text;
}
async function api(path, options = {}, field = "run") {
  const response = await fetch(path, options);
  const body = await response.json();
  if (!response.ok && body.error) {
    showError(body.error.field || field, body.error);
    return null;
  }
  Object.defineProperty(body, "ok", { value: response.ok });  // not one of the body's own fields
  return body;
}
function post(path, body, field) {
  return api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }, field);
}

// ---- the server ----------------------------------------------------------------------------------

async function loadServer() {
  server = await (await fetch("/api/server")).json();
  const words = [`server ${server.address}`];
  if (server.ready) words.push(server.model, server.device, "ready");
  else words.push(server.error || server.load_error || "model loading");
  $("server-status").textContent = words.filter(Boolean).join(" · ");
  for (const [select, values] of [[$("tracker"), server.trackers || []], [$("preset"), server.presets || []]]) {
    const known = new Set([...select.options].map((o) => o.value));
    for (const value of values) if (!known.has(value)) select.append(el("option", { value, textContent: value }));
  }
  $("ffr-label").hidden = !server.first_frame_reference;
  if (state.preset) $("preset").value = state.preset;
  if (state.tracker) $("tracker").value = state.tracker;
}

// ---- uploads -------------------------------------------------------------------------------------

async function upload(file, role) {
  clearErrors(role === "reference" ? "references" : role === "mask0" ? "region" : role);
  const answer = await api(`/api/upload?role=${role}&name=${encodeURIComponent(file.name)}`,
    { method: "POST", body: file }, role === "mask0" ? "region" : role === "reference" ? "references" : role);
  return answer && answer.media;
}
const mediaUrl = (media, name) => `/api/media/${media.id}/${encodeURIComponent(name || media.filename || "media")}`;

// ---- 1 · the clip: scrubber, information, the tracked overlay --------------------------------------

function showClip() {
  const source = state.source;
  $("viewer").hidden = !source;
  if (!source) return;
  $("source-name").textContent = source.filename;
  const video = $("source-video");
  const url = mediaUrl(source);
  if (!video.src.endsWith(url)) video.src = url;
  $("stage").style.aspectRatio = `${source.width} / ${source.height}`;
  $("draw").width = source.width;
  $("draw").height = source.height;
  $("scrubber").max = Math.max(0, source.num_frames - 1);
  const rate = source.fps ? `${+source.fps.toFixed(2)} fps` : "a sequence of frames";
  const audio = source.has_audio ? "with sound" : "no sound";
  $("clip-info").textContent = `${source.width}×${source.height}, ${rate}, ${source.num_frames} frames, ` +
    `${(+source.duration_s).toFixed(2)} s, ${audio}${source.codec ? `, ${source.codec}` : ""}`;
  showFrame();
  drawRegion();
  showTracked();
}

function frameOf(time) { return Math.round(time * (state.source.fps || 16)); }
function showFrame() {
  const frame = +$("scrubber").value, total = state.source.num_frames;
  $("frame-label").textContent = `frame ${frame} / ${total - 1}` + (frame === 0 ? " · mark the region here" : "");
  $("draw").style.visibility = frame === 0 ? "visible" : "hidden";
  showOverlay();
}
function seek(frame) {
  $("scrubber").value = frame;
  $("source-video").currentTime = (frame + 0.5) / (state.source.fps || 16);
  showFrame();
}

function showOverlay() {
  const tracked = state.tracked, overlay = $("overlay");
  if (!tracked) { overlay.hidden = true; return; }
  const start = +(state.shot && state.shot.start_s) || 0;
  const time = $("source-video").paused ? (+$("scrubber").value + 0.5) / (state.source.fps || 16) : $("source-video").currentTime;
  const index = Math.min(tracked.mask.num_frames - 1, Math.max(0, Math.floor((time - start) * (tracked.mask.fps || 16))));
  overlay.src = `/api/overlay/${tracked.mask.id}/${index}.png`;
  overlay.hidden = false;
}

function showTracked() {
  const bar = $("lost-bar");
  bar.replaceChildren();
  const tracked = state.tracked;
  if (!tracked || !state.source) return;
  const frames = tracked.mask.num_frames || 1;
  for (const lost of tracked.lost_frames) {
    bar.append(el("span", { className: "lost", style: `left:${(100 * lost) / frames}%;width:${100 / frames}%`,
      title: `working frame ${lost}: region lost` }));
  }
  const lostWords = tracked.lost_frames.length ? `, lost in ${tracked.lost_frames.length} of ${frames} frames (marked red)` : ", never lost";
  $("region-text").textContent = `tracked by ${tracked.tracker} through ${frames} working frames${lostWords}`;
  showOverlay();
}

// ---- 2 · the region on frame 0 -------------------------------------------------------------------

const mode = () => document.querySelector('input[name="mode"]:checked').value;

function setRegion(region) {
  state.region = region;
  state.tracked = null;
  $("overlay").hidden = true;
  $("lost-bar").replaceChildren();
  $("region-text").textContent = describeRegion();
  save();
  drawRegion();
}
function describeRegion() {
  const region = state.region || {};
  if (region.box) return `box x ${region.box.map(Math.round).join(", ").replace(/, /, ", y ")} (x, y, width, height)`;
  if (region.points) return `${region.points.length} points (${region.points.filter((p) => p[2]).length} off the region)`;
  if (region.mask_frame0) return "a frame-0 mask";
  return "";
}
function drawRegion() {
  const canvas = $("draw"), g = canvas.getContext("2d"), region = state.region || {};
  g.clearRect(0, 0, canvas.width, canvas.height);
  const line = Math.max(2, canvas.width / 240);
  if (region.box) {
    g.lineWidth = line;
    g.strokeStyle = "#ffd400";
    g.strokeRect(...region.box);
  }
  for (const [x, y, negative] of region.points || []) {
    g.beginPath();
    g.arc(x, y, line * 2.5, 0, 2 * Math.PI);
    g.fillStyle = negative ? "#e53935" : "#43a047";
    g.fill();
    g.lineWidth = line / 2;
    g.strokeStyle = "#fff";
    g.stroke();
  }
}
function sourcePoint(event) {
  const canvas = $("draw"), box = canvas.getBoundingClientRect();
  return [((event.clientX - box.left) / box.width) * canvas.width, ((event.clientY - box.top) / box.height) * canvas.height];
}
let dragFrom = null;
$("draw").addEventListener("mousedown", (event) => {
  if (mode() === "box" && event.button === 0) dragFrom = sourcePoint(event);
});
$("draw").addEventListener("mousemove", (event) => {
  if (!dragFrom) return;
  const [x, y] = sourcePoint(event);
  state.region = { box: [Math.min(x, dragFrom[0]), Math.min(y, dragFrom[1]), Math.abs(x - dragFrom[0]), Math.abs(y - dragFrom[1])] };
  drawRegion();
});
window.addEventListener("mouseup", (event) => {
  if (!dragFrom) return;
  dragFrom = null;
  const box = (state.region || {}).box;
  setRegion(box && box[2] >= 2 && box[3] >= 2 ? { box: box.map((v) => Math.round(v)) } : null);
});
function addPoint(event, negative) {
  if (mode() !== "points") return;
  event.preventDefault();
  const points = ((state.region || {}).points || []).concat([[...sourcePoint(event).map(Math.round), negative]]);
  setRegion({ points });
}
$("draw").addEventListener("click", (event) => addPoint(event, event.shiftKey));
$("draw").addEventListener("contextmenu", (event) => addPoint(event, true));

document.querySelectorAll('input[name="mode"]').forEach((radio) => radio.addEventListener("change", () => {
  const hints = { box: "Drag a box around what you edited, on frame 0.",
    points: "Click on what you edited; shift-click or right-click on what is not it.",
    mask: "Upload a mask image of frame 0: white marks the region, any size of the clip's shape." };
  $("region-hint").textContent = hints[mode()];
  $("mask-label").hidden = mode() !== "mask";
  if (state.source) seek(0);
}));
$("mask-file").addEventListener("change", async (event) => {
  const media = event.target.files[0] && await upload(event.target.files[0], "mask0");
  if (media) setRegion({ mask_frame0: media.id });
});
$("clear-region").addEventListener("click", () => setRegion(null));

function shot() {
  const value = (id) => ($(id).value === "" ? null : +$(id).value);
  state.shot = { start_s: value("start-s"), end_s: value("end-s") };
  return state.shot;
}
function regionRequest() {
  state.tracker = $("tracker").value;
  save();
  return { source: state.source && state.source.id, region: state.region, tracker: state.tracker || null, shot: shot() };
}
$("track-btn").addEventListener("click", () => busy($("track-btn"), async () => {
  clearErrors("region", "source");
  $("track-notices").replaceChildren();
  const answer = await post("/api/track", regionRequest(), "region");
  if (!answer) return;
  state.jobs = Object.assign(state.jobs || {}, { track: answer.job_id });
  save();
  follow("track", answer.job_id);
}));

// ---- jobs as they run ----------------------------------------------------------------------------

const ROLES = { track: ["track-progress", "track-notices"], train: ["run-progress", "run-notices"],
  propagate: ["run-progress", "run-notices"] };

// A training's phases count the job's steps (motion, then appearance): one bar, named by the phase.
const TRAINING = new Set(["motion", "appearance", "preview"]);
function progressRow(role, phase) {
  const box = $(ROLES[role][0]), bar = TRAINING.has(phase) ? "training" : phase, key = `${role}-${bar}`;
  let row = box.querySelector(`[data-key="${key}"]`);
  if (!row) {
    row = el("div", { className: "phase" }, el("span", { className: "name" }), el("progress", { max: 1, value: 0 }),
      el("span", { className: "muted eta" }));
    row.dataset.key = key;
    row.dataset.phase = bar;
    box.append(row);
  }
  const reading = phase === "decode" || phase === "mask", job = role === "train" ? "training" : "generation";
  row.querySelector(".name").textContent = (PHASES[phase] || phase) + (reading && role !== "track" ? ` for ${job}` : "");
  return row;
}
function onEvent(role, data) {
  const notices = $(ROLES[role][1]);
  switch (data.type) {
    case "accepted":
      if (role !== "track") $("run-status").textContent = `${role} job ${data.job_id}: ${data.job.state}`;
      break;
    case "queued":
      if (data.position) $("run-status").textContent = `${role}: ${data.position} job(s) ahead`;
      break;
    case "progress": {
      const row = progressRow(role, data.phase);
      row.querySelector("progress").max = data.total || 1;
      row.querySelector("progress").value = data.step;
      const loss = data.loss ? `, loss ${(+data.loss).toFixed(4)}` : "";
      const eta = data.step < data.total && data.eta_s ? `, ${Math.ceil(data.eta_s)} s left` : "";
      row.querySelector(".eta").textContent = `${data.step} / ${data.total}${loss}${eta}`;
      break;
    }
    case "notice":
      notices.append(el("li", { textContent: `${data.code}: ${data.message}` }));
      break;
    case "tracked":
      state.tracked = { mask: data.mask, lost_frames: data.lost_frames, tracker: data.tracker };
      save();
      showTracked();
      break;
    case "frame":
      $("preview-frame").src = data.png;
      $("preview-frame").hidden = false;
      break;
    case "adapter":
      $("run-status").textContent = `adapter ${data.adapter.name} trained (final loss ${(+data.adapter.final_loss).toFixed(5)})`;
      refreshAdapters();
      break;
    case "result":
      showResult(data.result, data.job_id);
      break;
    case "error":
      showError(role === "track" ? "region" : "run", data);
      break;
  }
}
function follow(role, jobId) {
  if (streams[role]) streams[role].close();
  if (role !== "track") $("cancel-btn").disabled = false;
  else $("track-progress").replaceChildren();
  const events = new EventSource(`/api/jobs/${jobId}/events`);
  streams[role] = events;
  events.onmessage = (message) => onEvent(role, JSON.parse(message.data));
  events.addEventListener("end", () => {
    events.close();
    delete streams[role];
    if (!streams.train && !streams.propagate) $("cancel-btn").disabled = true;
    refreshJobs();
  });
}

// ---- 3 · the edit: edited frames, prompts, the plan -----------------------------------------------

function showEdit() {
  $("edited-preview").hidden = !state.edited;
  if (state.edited) $("edited-preview").src = mediaUrl(state.edited);
  const list = $("ref-list");
  list.replaceChildren();
  (state.references || []).forEach((reference, number) => {
    const frame = el("input", { type: "number", min: 0, value: reference.frame, className: "short" });
    frame.addEventListener("change", () => { reference.frame = +frame.value; save(); });
    const drop = el("button", { className: "quiet", textContent: "remove" });
    drop.addEventListener("click", () => { state.references.splice(number, 1); save(); showEdit(); });
    list.append(el("li", {}, el("img", { src: mediaUrl(reference.media) }), "at frame ", frame, drop));
  });
}
$("edited-file").addEventListener("change", async (event) => {
  const media = event.target.files[0] && await upload(event.target.files[0], "edited");
  if (media) { state.edited = media; save(); showEdit(); }
});
$("ref-files").addEventListener("change", async (event) => {
  for (const file of event.target.files) {
    const media = await upload(file, "reference");
    if (media) (state.references = state.references || []).push({ media, frame: 0 });
  }
  save();
  showEdit();
});
for (const id of ["prompt", "source-prompt", "adapter", "preset"]) {
  $(id).addEventListener("change", () => { state[id.replace("-", "_")] = $(id).value; save(); });
}

function editRequest() {
  return Object.assign(regionRequest(), {
    edited: state.edited && state.edited.id, prompt: $("prompt").value, source_prompt: $("source-prompt").value,
    preset: $("preset").value, adapter: $("adapter").value, first_frame_reference: $("first-frame-reference").checked,
    references: (state.references || []).map((r) => ({ id: r.media.id, frame: r.frame })),
  });
}
function showPlans(plans) {
  $("plan-out").replaceChildren(...Object.values(plans).map((plan) => el("pre", { textContent: plan.text })));
  for (const plan of Object.values(plans)) {
    for (const problem of plan.problems) showError(problem.page_field, { message: problem.message });
  }
}
async function busy(button, work) {
  button.disabled = true;
  try { return await work(); } finally { button.disabled = false; }
}
$("plan-btn").addEventListener("click", () => busy($("plan-btn"), async () => {
  clearErrors();
  $("plan-out").replaceChildren(el("span", { className: "muted", textContent: "planning…" }));
  const plans = await post("/api/plan", editRequest());
  $("plan-out").replaceChildren();
  if (plans) showPlans(plans);
}));

// ---- 4 · run: progress, cancel, the result ---------------------------------------------------------

$("run-btn").addEventListener("click", () => busy($("run-btn"), async () => {
  clearErrors();
  $("run-status").textContent = "planning and submitting…";
  $("run-progress").replaceChildren();
  $("run-notices").replaceChildren();
  $("result").hidden = true;
  $("preview-frame").hidden = true;
  const answer = await post("/api/run", editRequest());
  $("run-status").textContent = "";
  if (!answer) return;
  showPlans(answer.plans);
  if (!answer.ok) return;
  $("adapter").value = answer.adapter;
  state.adapter = answer.adapter;
  state.jobs = Object.assign(state.jobs || {}, { train: answer.train_job, propagate: answer.propagate_job });
  save();
  follow("train", answer.train_job);
  follow("propagate", answer.propagate_job);
}));
$("cancel-btn").addEventListener("click", async () => {
  for (const role of ["train", "propagate"]) {
    if (streams[role] && state.jobs[role]) await post(`/api/jobs/${state.jobs[role]}/cancel`, {});
  }
});

// ---- the clip's upload and player --------------------------------------------------------------------

$("source-file").addEventListener("change", async (event) => {
  const media = event.target.files[0] && await upload(event.target.files[0], "source");
  if (!media) return;
  state = { source: media, prompt: $("prompt").value, preset: $("preset").value };
  save();
  $("scrubber").value = 0;
  showClip();
  showEdit();
});
$("scrubber").addEventListener("input", () => seek(+$("scrubber").value));
$("play").addEventListener("click", () => {
  const video = $("source-video");
  if (video.paused) video.play(); else video.pause();
});
$("source-video").addEventListener("play", () => { $("play").textContent = "❚❚"; });
$("source-video").addEventListener("pause", () => { $("play").textContent = "▶"; });
$("source-video").addEventListener("timeupdate", () => {
  const video = $("source-video");
  if (video.paused) return;
  $("scrubber").value = Math.min(frameOf(video.currentTime), state.source.num_frames - 1);
  showFrame();
});
$("new-edit").addEventListener("click", () => {
  for (const role of Object.keys(streams)) streams[role].close();
  localStorage.removeItem(KEY);
  location.reload();
});

// ---- on load: the page as it was, its jobs followed again ---------------------------------------------

document.addEventListener("DOMContentLoaded", async function start() {
  await loadServer();
  for (const [id, key] of [["prompt", "prompt"], ["source-prompt", "source_prompt"], ["adapter", "adapter"]]) {
    if (state[key]) $(id).value = state[key];
  }
  if (state.shot) {
    $("start-s").value = state.shot.start_s ?? "";
    $("end-s").value = state.shot.end_s ?? "";
  }
  if (state.region && state.region.points) document.querySelector('input[value="points"]').checked = true;
  $("region-text").textContent = describeRegion();
  showClip();
  showEdit();
  for (const role of ["track", "train", "propagate"]) {
    if (state.jobs && state.jobs[role]) follow(role, state.jobs[role]);
  }
  refreshAdapters();
  refreshJobs();
  document.body.dataset.ready = "1";
});
