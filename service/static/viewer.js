// lrp-onnx viewer: plain JavaScript, no build step. Talks to the same server's /v1 API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], blob: null, name: null, recordingUrl: null, audibleUrl: null };

function token() {
  return $("token").value.trim();
}

function headers() {
  const t = token();
  return t ? { Authorization: "Bearer " + t } : {};
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

async function api(path, options) {
  const response = await fetch(path, { ...(options || {}), headers: { ...headers(), ...((options || {}).headers || {}) } });
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error + " (" + response.status + ")";
    } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

function currentModel() {
  return state.models.find((m) => m.name === $("model").value);
}

function fillModel() {
  const model = currentModel();
  if (!model) return;
  const composite = $("composite");
  composite.replaceChildren(...model.composites.map((c) => option(c, c === model.composite ? c + " (default)" : c)));
  composite.value = model.composite;
  const site = (state.browserSites || {})[model.name];
  $("browser-row").hidden = !site;
  if (site) $("browser-link").href = site;
  const target = $("target");
  const labels = model.labels || Array.from({ length: model.num_classes }, (_, k) => String(k));
  target.replaceChildren(option("pred", "the predicted class"), ...labels.map((l, k) => option(String(k), l)));
}

async function loadModels() {
  const health = await (await fetch("/healthz")).json();
  state.browserSites = (await (await fetch("/browser/")).json()).sites;
  $("token-row").hidden = !health.auth_required;
  if (health.auth_required && !token()) {
    setStatus("This server needs a token: enter it above.");
    return false;
  }
  const data = await (await api("/v1/models")).json();
  state.models = data.models;
  $("model").replaceChildren(...state.models.map((m) => option(m.name, m.task ? m.name + " (" + m.task + ")" : m.name)));
  fillModel();
  const examples = await (await api("/v1/examples")).json();
  $("example").replaceChildren(option("", "-"), ...examples.examples.map((e) => option(e.name, e.name)));
  setStatus("Ready: upload a recording or pick an example.");
  return true;
}

function setAudio(element, blob, key) {
  if (state[key]) URL.revokeObjectURL(state[key]);
  state[key] = blob ? URL.createObjectURL(blob) : null;
  element.src = state[key] || "";
}

function base64Blob(b64, type) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type });
}

function fmt(x, digits) {
  return x === null || x === undefined ? "-" : Number(x).toFixed(digits);
}

function show(result) {
  const model = currentModel();
  // a recording's decision (the mean of its window logits) when there is one, else the first sample's
  const rec = result.recording;
  const first = rec && rec.prediction !== null && rec.prediction !== undefined ? rec : result.samples[0];
  $("prediction").textContent = first.label;
  // probabilities are null where the model's scores are raw (no softmax or sigmoid to read them through)
  const p = first.probabilities ? first.probabilities[first.prediction] : null;
  $("confidence").textContent = p !== null && p !== undefined ? "(" + (100 * p).toFixed(1) + " %)" : "";
  const how = rec ? "Decided from " + rec.method + " (" + fmt(rec.duration_s, 2) + " s recording)." : "";
  $("note").textContent = [how, result.note || ""].filter(Boolean).join(" ");
  const rows = result.samples.map((s) => {
    const tr = document.createElement("tr");
    const values = s.probabilities || s.logits;  // raw scores where they are not probabilities
    const probs = values.map((v, k) => ((model.labels || [])[k] || k) + " " + fmt(v, 3)).join(", ");
    const span = s.start_s !== null && s.start_s !== undefined ? fmt(s.start_s, 2) + " - " + fmt(s.end_s, 2) : "-";
    for (const text of [span, s.label, probs, s.target_label, fmt(s.relevance_sum, 4)]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  });
  $("samples").tBodies[0].replaceChildren(...rows);
  const images = (result.heatmaps_png || []).map((png, i) => {
    const img = document.createElement("img");
    img.className = "heatmap";
    img.alt = rec && result.heatmaps_png.length === 1 ? "spectrogram and relevance heatmap of the whole recording"
      : "spectrogram and relevance heatmap, window " + (i + 1);
    img.src = "data:image/png;base64," + png;
    return img;
  });
  $("heatmaps").replaceChildren(...images);
  if (result.audible_wav) {
    setAudio($("audible"), base64Blob(result.audible_wav, "audio/wav"), "audibleUrl");
    $("audible-row").hidden = false;
  } else {
    setAudio($("audible"), null, "audibleUrl");
    $("audible-row").hidden = true;
  }
  $("result").hidden = false;
}

async function explain() {
  if (!state.blob) {
    setStatus("Upload a recording or pick an example first.", true);
    return;
  }
  const model = currentModel();
  if (!model) {
    setStatus("No model loaded.", true);
    return;
  }
  const params = new URLSearchParams({ relevance: "none", heatmap: "true", audible: "true" });
  params.set("composite", $("composite").value);
  params.set("target", $("target").value);
  const form = new FormData();
  form.append("file", state.blob, state.name);
  $("explain").disabled = true;
  setStatus("Explaining " + state.name + " with " + model.name + " ...");
  try {
    const response = await api("/v1/models/" + encodeURIComponent(model.name) + "/explain?" + params, {
      method: "POST", body: form,
    });
    show(await response.json());
    setStatus("Explained " + state.name + ".");
  } catch (error) {
    setStatus(error.message, true);
  } finally {
    $("explain").disabled = false;
  }
}

function useBlob(blob, name) {
  state.blob = blob;
  state.name = name;
  if (!name.toLowerCase().endsWith(".npy")) setAudio($("recording"), blob, "recordingUrl");
  return explain();
}

async function pickExample() {
  const name = $("example").value;
  if (!name) return;
  $("file").value = "";
  try {
    const response = await api("/v1/examples/" + encodeURIComponent(name));
    await useBlob(await response.blob(), name);
  } catch (error) {
    setStatus(error.message, true);
  }
}

function pickFile() {
  const file = $("file").files[0];
  if (!file) return;
  $("example").value = "";
  useBlob(file, file.name);
}

async function start() {
  $("model").addEventListener("change", fillModel);
  $("file").addEventListener("change", pickFile);
  $("example").addEventListener("change", pickExample);
  $("explain").addEventListener("click", explain);
  $("token").addEventListener("change", () => loadModels().catch((e) => setStatus(e.message, true)));
  try {
    await loadModels();
  } catch (error) {
    setStatus(error.message, true);
  }
}

start();
