// The synthmatch page: upload a sound, follow the match, listen, adjust, download.
// Talks to synthmatch/app/server.py; every error the server sends is {"error": "..."}.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  options: null,
  file: null,
  job: null,        // id of the job whose result is shown
  matched: [],      // the match's normalised parameters
  params: [],       // the parameters as the sliders set them
  poll: null,
  edit: null,
  picture: null,
  result: null,     // the job's result (metrics, parameter table)
};

async function api(path, init) {
  const response = await fetch(path, init);
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const message = body && (body.error || body.detail);
    throw new Error(message || `the server answered ${response.status} ${response.statusText}`);
  }
  return body;
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function option(value, text) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = text || value;
  return element;
}

function fillMethods() {
  const methods = state.options.methods[$("synth").value] || ["auto"];
  const current = $("method").value;
  $("method").replaceChildren(...methods.map((m) => option(m, m === "auto"
    ? "auto (the leaderboard's best)" : m)));
  if (methods.includes(current)) $("method").value = current;
}

function chooseFile(file) {
  if (!file) return;
  showError("");
  if (file.size > state.options.max_upload_bytes) {
    showError(`${file.name} is larger than ${state.options.max_upload_bytes / 2 ** 20} MB`);
    return;
  }
  state.file = file;
  $("file-name").textContent = file.name;
  $("drop").classList.add("chosen");
  $("start").disabled = false;
}

function running(isRunning) {
  $("start").disabled = isRunning || !state.file;
  $("cancel").hidden = !isRunning;
}

async function start() {
  showError("");
  const form = new FormData();
  form.append("file", state.file, state.file.name);
  form.append("synth", $("synth").value);
  form.append("method", $("method").value);
  form.append("budget", $("budget").value);
  form.append("note", $("note").value);
  running(true);
  try {
    const job = await api("/api/jobs", { method: "POST", body: form });
    $("result").hidden = true;
    follow(job);
  } catch (error) {
    running(false);
    showError(error.message);
  }
}

function follow(job) {
  $("progress").hidden = false;
  $("bar").max = Math.max(job.total, 1);
  $("bar").value = job.done;
  $("messages").replaceChildren(...job.messages.map((m) => {
    const item = document.createElement("li");
    item.textContent = m;
    return item;
  }));
  const renders = `${job.done.toLocaleString()} / ${job.total.toLocaleString()} renders`;
  clearTimeout(state.poll);
  if (job.status === "running") {
    running(true);
    $("status").textContent = `matching: ${renders}`;
    state.poll = setTimeout(poll, 300);
    return;
  }
  running(false);
  if (job.status === "done") {
    $("status").textContent = `done: ${job.result.renders.toLocaleString()} renders in ` +
      `${job.result.seconds.toFixed(1)} s`;
    if (state.job !== job.id) showResult(job.id, job.result);
  } else if (job.status === "cancelled") {
    $("status").textContent = `cancelled after ${renders}`;
  } else {
    $("status").textContent = "failed";
    showError(job.error);
  }
}

async function poll() {
  try {
    const { job } = await api("/api/job");
    if (job) follow(job);
  } catch (error) {
    showError(error.message);
    state.poll = setTimeout(poll, 2000);
  }
}

async function cancel() {
  try {
    await api("/api/job/cancel", { method: "POST" });
  } catch (error) {
    showError(error.message);
  }
}

function format(value) {
  const abs = Math.abs(value);
  if (Number.isInteger(value) || abs >= 1000) return Math.round(value).toLocaleString();
  if (abs !== 0 && abs < 0.001) return value.toExponential(1);
  return value.toPrecision(3);
}

function showMetrics(evaluation, result) {
  const items = [
    ["perceptual distance", evaluation.distance.toFixed(3), "below 0.2 counts as a match"],
    ["spectral distance (MSS)", `${evaluation.mss.toFixed(2)} dB`, "the leaderboard's metric"],
    ["method", result.method],
    ["renders", result.renders.toLocaleString()],
    ["time", `${result.seconds.toFixed(1)} s`],
    ["synth", `${result.synth}, MIDI ${result.note}`],
  ];
  $("metrics").replaceChildren(...items.map(([term, value, title]) => {
    const box = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = term;
    dd.textContent = value;
    if (title) box.title = title;
    box.append(dt, dd);
    return box;
  }));
}

function showValues(rows) {
  rows.forEach((row, i) => {
    const text = `${format(row.value)}${row.unit ? " " + row.unit : ""}`;
    $(`value-${i}`).textContent = text;
  });
}

function showResult(id, result) {
  state.job = id;
  state.result = result;
  state.matched = result.params.slice();
  state.params = result.params.slice();
  $("name").textContent = result.name;
  $("target").src = `/api/jobs/${id}/target.wav`;
  $("params").replaceChildren(...result.parameters.map((row, i) => {
    const box = document.createElement("div");
    box.className = "param";
    box.title = row.description;
    const label = document.createElement("label");
    label.htmlFor = `param-${i}`;
    label.textContent = row.name;
    const slider = document.createElement("input");
    Object.assign(slider, { type: "range", id: `param-${i}`, min: 0, max: 1,
      step: row.choices ? 1 / Math.max(row.choices - 1, 1) : 0.001 });
    slider.value = state.params[i];
    slider.addEventListener("input", () => {
      state.params[i] = slider.valueAsNumber;
      clearTimeout(state.edit);
      state.edit = setTimeout(() => applyEdit(true), 120);
    });
    const value = document.createElement("output");
    value.id = `value-${i}`;
    value.htmlFor = slider.id;
    box.append(label, slider, value);
    return box;
  }));
  showValues(result.parameters);
  showMetrics(result, result);
  showSound("", false);
  $("result").hidden = false;
}

function query() {
  const edited = state.params.some((v, i) => v !== state.matched[i]);
  return edited ? "?" + new URLSearchParams({ params: state.params.join(",") }) : "";
}

function showSound(q, play) {
  const base = `/api/jobs/${state.job}`;
  $("match").src = `${base}/match.wav${q}`;
  if (play && $("autoplay").checked) $("match").play().catch(() => {});
  $("preset").href = `${base}/preset.json${q}`;
  $("report").href = `${base}/report.html${q}`;
  $("edited").hidden = !q;
  // The picture takes longer to draw: only once the sliders rest.
  clearTimeout(state.picture);
  state.picture = setTimeout(() => { $("spectrograms").src = `${base}/spectrogram.png${q}`; },
    q ? 400 : 0);
}

async function applyEdit(play) {
  const q = query();
  showSound(q, play);
  try {
    const evaluation = await api(`/api/jobs/${state.job}/evaluate${q}`);
    showValues(evaluation.parameters);
    showMetrics(evaluation, state.result);
  } catch (error) {
    showError(error.message);
  }
}

function reset() {
  state.params = state.matched.slice();
  state.params.forEach((v, i) => { $(`param-${i}`).value = v; });
  applyEdit(false);
}

async function init() {
  try {
    state.options = await api("/api/options");
  } catch (error) {
    showError(`cannot reach the synthmatch server: ${error.message}`);
    return;
  }
  const { options } = state;
  $("synth").replaceChildren(...options.synths.map((s) => option(s)));
  fillMethods();
  $("budget").value = options.default_budget;
  $("budget").max = options.max_budget;
  $("file-hint").textContent = `${options.formats}, up to ` +
    `${options.max_upload_bytes / 2 ** 20} MB; mono or stereo, any rate. The synth plays one ` +
    "probe note: the sound is trimmed or padded to its length.";
  const missing = Object.entries(options.unavailable).map(([s, why]) => `${s} ${why}`);
  $("unavailable").textContent = missing.length ? `Not offered here: ${missing.join("; ")}.` : "";

  $("synth").addEventListener("change", fillMethods);
  $("file").addEventListener("change", () => chooseFile($("file").files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    chooseFile(event.dataTransfer.files[0]);
  });
  $("start").addEventListener("click", start);
  $("cancel").addEventListener("click", cancel);
  $("reset").addEventListener("click", reset);

  // A reload shows this session's match again.
  const { job } = await api("/api/job").catch(() => ({ job: null }));
  if (job) follow(job);
}

init();
