// framecast studio: the result (source and output side by side, verdict, figures, download), the
// adapters and the jobs. It runs after studio.js, whose helpers ($, el, api, state...) it uses.
"use strict";

function showResult(result, jobId) {
  $("result").hidden = false;
  const source = $("result-source"), output = $("result-output");
  source.src = mediaUrl(state.source);
  output.src = mediaUrl(result.video);
  const stem = (state.source.filename || "clip").replace(/\.[^.]*$/, "");
  const suffix = (result.video.filename.match(/\.[^.]*$/) || [".mp4"])[0];
  $("download-link").href = `${mediaUrl(result.video, `${stem}-edited${suffix}`)}?download`;
  $("download-link").download = `${stem}-edited${suffix}`;
  $("verdict").textContent = `edit ${result.verdict_line}`;
  $("verdict").className = `verdict ${result.verdict}`;
  $("metrics").textContent = result.metrics_text;
  $("fidelity-plot").hidden = !(result.fidelity && result.fidelity.curve && result.fidelity.curve.length);
  if (!$("fidelity-plot").hidden) $("fidelity-plot").src = `/api/jobs/${jobId}/fidelity.png`;
  $("run-status").textContent = `done: the edit ${result.verdict_line}`;
}

// The source and the output side by side, as one player: each follows the other's play, pause and seek.
function synchronise(a, b) {
  const offset = () => +(state.shot && state.shot.start_s) || 0;
  let following = false;
  const mirror = (from, to, shift) => {
    from.addEventListener("play", () => { if (to.paused) to.play(); });
    from.addEventListener("pause", () => { if (!to.paused) to.pause(); });
    from.addEventListener("seeked", () => {
      if (following) { following = false; return; }
      const target = from.currentTime + shift();
      if (Math.abs(to.currentTime - target) > 0.05) { following = true; to.currentTime = target; }
    });
  };
  mirror(b, a, offset);
  mirror(a, b, () => -offset());
  b.addEventListener("timeupdate", () => {
    if (!b.paused && Math.abs(a.currentTime - b.currentTime - offset()) > 0.15) a.currentTime = b.currentTime + offset();
  });
  for (const video of [a, b]) video.controls = true;
}
synchronise($("result-source"), $("result-output"));
$("pair-play").addEventListener("click", () => {
  const output = $("result-output");
  if (output.paused) output.play(); else output.pause();
});

// ---- adapters and jobs -----------------------------------------------------------------------------

async function refreshAdapters() {
  clearErrors("adapters");
  const answer = await api("/api/adapters", {}, "adapters");
  if (!answer) return;
  $("adapters").tBodies[0].replaceChildren(...answer.adapters.map((adapter) => {
    const layout = el("select", {}, el("option", { value: "diffusers", textContent: "diffusers" }),
      el("option", { value: "comfyui", textContent: "ComfyUI" }));
    const exportLink = el("a", { className: "button", textContent: "Export", href: "#" });
    const point = () => { exportLink.href = `/api/adapters/${adapter.name}/export?format=${layout.value}`; };
    layout.addEventListener("change", point);
    point();
    const remove = el("button", { className: "quiet", textContent: "Delete" });
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete adapter ${adapter.name}?`)) return;
      const done = await api(`/api/adapters/${adapter.name}`, { method: "DELETE" }, "adapters");
      if (done) refreshAdapters();
    });
    const row = el("tr", {}, el("td", { textContent: adapter.name }), el("td", { textContent: adapter.state }),
      el("td", { textContent: adapter.rank }), el("td", { textContent: (+adapter.final_loss).toFixed(5) }),
      el("td", {}, layout, " ", exportLink, " ", remove));
    row.dataset.adapter = adapter.name;
    return row;
  }));
}
async function refreshJobs() {
  const answer = await api("/api/jobs");
  if (!answer) return;
  $("jobs").tBodies[0].replaceChildren(...answer.jobs.map((job) => {
    const watch = el("button", { className: "quiet", textContent: "Watch" });
    watch.addEventListener("click", () => follow(job.kind, job.job_id));
    const where = job.error && job.error.code ? `${job.error.code}: ${job.error.message}`
      : job.progress && job.progress.total ? `${job.progress.phase} ${job.progress.step}/${job.progress.total}` : "";
    return el("tr", {}, el("td", { textContent: job.job_id }), el("td", { textContent: job.kind }),
      el("td", { textContent: job.state }), el("td", { textContent: job.adapter || "-" }),
      el("td", { textContent: where }), el("td", {}, watch));
  }));
}
$("adapters-refresh").addEventListener("click", refreshAdapters);
$("jobs-refresh").addEventListener("click", refreshJobs);
