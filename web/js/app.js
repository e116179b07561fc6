// The page: load the site's model, then explain recordings picked from a file or the microphone.
// Automation: window.lrpOnnx = {ready, explain(arrayBuffer), backend, config}.
import { wavBlob } from "./audible.js";
import { drawHeatmap } from "./draw.js";
import { BrowserExplainer } from "./explainer.js";
import { frequencies } from "./features.js";
import { audibleTimeline, timeline } from "./timeline.js";

const $ = (id) => document.getElementById(id);

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
}

function softmax(logits) {
  const m = Math.max(...logits), e = Array.from(logits, (v) => Math.exp(v - m)), s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

// how the logits read as probabilities, as the Python runtime decides it (site.json "probabilities")
function probabilities(logits, reading) {
  if (reading === "softmax") return softmax(logits);
  if (reading === "sigmoid") return Array.from(logits, (v) => 1 / (1 + Math.exp(-v)));
  return null;
}

function show(result, name, config) {
  $("result").hidden = false;
  $("prediction").textContent = result.label;
  const p = probabilities(result.logits, config.probabilities);
  const labels = config.labels || Array.from(result.logits, (_, i) => String(i));
  $("scores").textContent = "(" + labels.map((l, i) => p ? `${l} ${(100 * p[i]).toFixed(1)} %`
                                                         : `${l} ${result.logits[i].toFixed(3)}`).join(", ") + ")";
  const spec = config.features, seconds = spec.length / spec.sample_rate;
  const windows = result.windows;
  $("note").textContent = result.speech
    ? `The recording is longer than the model's ${seconds} s window: decided from ${windows.length} speech ` +
      `window${windows.length > 1 ? "s" : ""} (the mean of their logits): ` +
      windows.map((w) => `${w.startS.toFixed(2)}-${w.endS.toFixed(2)} s ${w.label}`).join(", ") + "."
    : "";
  const line = timeline(spec, result);
  drawHeatmap($("heatmap"), { ...line, freqs: frequencies(spec) });
  const audio = $("audible");
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(wavBlob(audibleTimeline(spec, result), spec.sample_rate));
  setStatus(`Explained ${name} (${result.backend}: features ${result.timing.featuresMs.toFixed(0)} ms, ` +
            `explanation ${result.timing.explainMs.toFixed(0)} ms).`);
}

async function explainFile(explainer, blob, name) {
  setStatus(`Explaining ${name}...`);
  try {
    const result = await explainer.explain(await blob.arrayBuffer());
    if ($("recording").src) URL.revokeObjectURL($("recording").src);
    $("recording").src = URL.createObjectURL(blob);
    show(result, name, explainer.config);
  } catch (err) {
    setStatus(`${name}: ${err.message || err}`, true);
  }
}

function setUpMicrophone(explainer) {
  if (!navigator.mediaDevices || !window.MediaRecorder) return;
  const button = $("record");
  button.hidden = false;
  button.disabled = false;
  let recorder = null;
  button.addEventListener("click", async () => {
    if (recorder) {
      recorder.stop();
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = (e) => chunks.push(e.data);
      recorder.onstop = () => {
        stream.getTracks().forEach((t) => t.stop());
        recorder = null;
        button.textContent = "Record";
        button.classList.remove("recording");
        explainFile(explainer, new Blob(chunks, { type: chunks[0]?.type || "audio/webm" }), "your recording");
      };
      recorder.start();
      button.textContent = "Stop";
      button.classList.add("recording");
      setStatus("Recording... press Stop when done.");
    } catch (err) {
      setStatus(`microphone: ${err.message || err}`, true);
    }
  });
}

async function start() {
  const config = await (await fetch("site.json")).json();
  const backend = new URLSearchParams(location.search).get("backend") || "auto";
  document.title = `lrp-onnx: ${config.task || "explain"} in the browser`;
  $("title").textContent = `${config.task || "model"} (${(config.labels || []).join(" / ")})`;
  $("about").textContent = `Model ${config.model_name}, composite ${config.composite}, ` +
    `onnxruntime-web ${config.onnxruntime_web}. Built by lrp-onnx ${config.lrp_onnx}.`;
  const explainer = await BrowserExplainer.load(config, backend);
  $("backend").textContent = `runs on ${explainer.backend === "webgpu" ? "WebGPU" : "WebAssembly"}`;
  $("file").disabled = false;
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) explainFile(explainer, file, file.name);
  });
  setUpMicrophone(explainer);
  setStatus("Ready: pick a recording" + (window.MediaRecorder ? " or record one." : "."));
  window.lrpOnnx.backend = explainer.backend;
  window.lrpOnnx.config = config;
  return explainer;
}

const loaded = start();
loaded.catch((err) => setStatus(`Could not load the model: ${err.message || err}`, true));
window.lrpOnnx = {
  ready: loaded.then(() => true),
  explain: async (buffer) => (await loaded).explain(buffer),
};

if ("serviceWorker" in navigator && window.isSecureContext) {
  navigator.serviceWorker.register("sw.js").catch(() => {});
}
