// Decoding a recording (Web Audio) and running the compiled explainer (onnxruntime-web:
// WebGPU where the browser has an adapter, else WebAssembly), all inside the page.
import * as ort from "./ort/ort.webgpu.min.mjs";
import { recordingWindows } from "./features.js";

// PCM and float WAV files are read here, sample for sample as libsndfile (soundfile) reads them
// (integers scaled by 1 / 2^(bits-1), 8-bit offset by 128): browsers' decoders scale positive
// 16-bit samples by 1 / 32767, which moves quiet bins of the dB spectrogram by up to ~2 dB.
// Returns {channels: [Float32Array], sampleRate}, or null for other files.
export function readWav(buffer) {
  const v = new DataView(buffer);
  const tag = (o) => (v.byteLength >= o + 4 ? String.fromCharCode(...new Uint8Array(buffer, o, 4)) : "");
  if (tag(0) !== "RIFF" || tag(8) !== "WAVE") return null;
  let fmt = null;
  for (let o = 12; o + 8 <= v.byteLength;) {
    const id = tag(o), size = v.getUint32(o + 4, true), body = o + 8;
    if (id === "fmt " && body + 16 <= v.byteLength) {
      let format = v.getUint16(body, true);
      if (format === 0xfffe && size >= 26 && body + 26 <= v.byteLength) format = v.getUint16(body + 24, true);
      fmt = { format, channels: v.getUint16(body + 2, true), rate: v.getUint32(body + 4, true),
              bits: v.getUint16(body + 14, true) };
    } else if (id === "data" && fmt) {
      return decodePcm(v, body, Math.min(size, v.byteLength - body), fmt);
    }
    o = body + size + (size & 1);
  }
  return null;
}

function decodePcm(v, start, bytes, { format, channels, rate, bits }) {
  const width = bits / 8;
  const known = (format === 1 && [8, 16, 24, 32].includes(bits)) || (format === 3 && [32, 64].includes(bits));
  if (!known || channels < 1 || rate < 1) return null;
  const frames = Math.floor(bytes / (width * channels));
  const out = Array.from({ length: channels }, () => new Float32Array(frames));
  const read = {
    "1/8": (o) => (v.getUint8(o) - 128) / 128,
    "1/16": (o) => v.getInt16(o, true) / 32768,
    "1/24": (o) => ((v.getUint8(o) | (v.getUint8(o + 1) << 8) | (v.getInt8(o + 2) << 16))) / 8388608,
    "1/32": (o) => v.getInt32(o, true) / 2147483648,
    "3/32": (o) => v.getFloat32(o, true),
    "3/64": (o) => v.getFloat64(o, true),
  }[`${format}/${bits}`];
  for (let i = 0, o = start; i < frames; i++) {
    for (let c = 0; c < channels; c++, o += width) out[c][i] = read(o);
  }
  return { channels: out, sampleRate: rate };
}

function mono(channels) {
  if (channels.length === 1) return Float32Array.from(channels[0]);
  const wave = new Float32Array(channels[0].length);
  for (let i = 0; i < wave.length; i++) {
    let sum = 0;
    for (const ch of channels) sum += ch[i];
    wave[i] = sum / channels.length;
  }
  return wave;
}

// Sample rate and bits per sample from a FLAC header (STREAMINFO), else null.
function flacStreamInfo(buffer) {
  const b = new Uint8Array(buffer);
  if (b.length < 22 || String.fromCharCode(...b.subarray(0, 4)) !== "fLaC") return null;
  const word = new DataView(buffer).getUint32(18);
  return { rate: word >>> 12, bits: ((word >>> 4) & 31) + 1 };
}

// Chrome's decoders scale positive 16-bit samples by 1 / 32767 (negative ones by 1 / 32768);
// libsndfile scales both by 1 / 32768. Undo the difference (samples already k / 32768 stay).
function as16BitLikeLibsndfile(channel) {
  for (let i = 0; i < channel.length; i++) {
    const v = channel[i];
    if (v > 0 && !Number.isInteger(v * 32768)) channel[i] = Math.round(v * 32767) / 32768;
  }
  return channel;
}

// An encoded recording -> mono float32 samples as soundfile gives them (channels averaged) and the rate:
// PCM/float WAV read directly, anything else decoded by Web Audio at the file's own rate where the
// header tells it (FLAC; else 48 kHz), so that the only resampling is lrp_onnx's (features.js).
export async function decodeRecording(buffer) {
  const wav = readWav(buffer);
  if (wav) return { wave: mono(wav.channels), sampleRate: wav.sampleRate };
  const flac = flacStreamInfo(buffer);
  const rate = flac && flac.rate >= 3000 && flac.rate <= 768000 ? flac.rate : 48000;
  let audio;
  try {
    audio = await new OfflineAudioContext(1, 1, rate).decodeAudioData(buffer.slice(0));
  } catch (err) {
    throw new Error(`not a readable recording (${err.message || err.name || err})`);
  }
  let channels = Array.from({ length: audio.numberOfChannels }, (_, c) => audio.getChannelData(c));
  if (flac && flac.bits === 16) channels = channels.map(as16BitLikeLibsndfile);
  return { wave: mono(channels), sampleRate: audio.sampleRate };
}

async function webgpuAvailable() {
  try {
    return Boolean(navigator.gpu && (await navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

export class BrowserExplainer {
  // config: site.json; backend: "webgpu", "wasm" or "auto"
  static async load(config, backend = "auto") {
    ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
    ort.env.wasm.numThreads = globalThis.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    ort.env.wasm.proxy = false;
    const chosen = backend === "auto" ? ((await webgpuAvailable()) ? "webgpu" : "wasm") : backend;
    const session = await ort.InferenceSession.create(new URL(config.model, location.href).href, {
      executionProviders: [chosen],
      graphOptimizationLevel: "all",
    });
    return new BrowserExplainer(config, session, chosen);
  }

  constructor(config, session, backend) {
    this.config = config;
    this.session = session;
    this.backend = backend;
  }

  // features (Float32Array of the model's per-sample shape) -> logits, targets, relevance
  async run(features, target = -1) {
    const shape = [1, ...this.config.shape];
    const feeds = {
      [this.config.input]: new ort.Tensor("float32", features, shape),
      [this.config.target]: new ort.Tensor("int64", BigInt64Array.from([BigInt(target)]), [1]),
    };
    const out = await this.session.run(feeds, ["logits", "targets", "relevance"]);
    return { logits: out.logits.data, targets: out.targets.data, relevance: out.relevance.data };
  }

  // An encoded recording (ArrayBuffer) -> the recording's decision, as lrp_onnx.runtime.recordings.decide
  // makes it: every speech window of a longer recording (one window for a shorter one) explained, the
  // recording's logits the mean of the window logits, every window explained for the recording's class.
  // {label, logits, targets, relevance, shape, features} (typed arrays; relevance and features of all
  // windows, shape [windows, ...]) plus windowLogits, windows [{startS, endS, label}], speech, x, ...
  async explain(buffer) {
    const { wave, sampleRate } = await decodeRecording(buffer);
    const t0 = performance.now();
    const rec = recordingWindows(this.config.features, wave, sampleRate);
    const t1 = performance.now();
    const runs = [];
    for (const w of rec.windows) runs.push(await this.run(w.features));
    const classes = runs[0].logits.length, mean = new Float32Array(classes);
    for (let k = 0; k < classes; k++) mean[k] = runs.reduce((sum, r) => sum + r.logits[k], 0) / runs.length;
    const chosen = argmax(mean);
    for (let i = 0; i < runs.length; i++) {
      if (Number(runs[i].targets[0]) !== chosen) runs[i] = await this.run(rec.windows[i].features, chosen);
    }
    const t2 = performance.now();
    const concat = (parts) => {
      const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
      parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
      return out;
    };
    const labels = this.config.labels;
    const name = (k) => (labels && labels.length === classes ? labels[k] : String(k));
    return {
      label: name(chosen),
      logits: mean,
      targets: BigInt64Array.from(runs, () => BigInt(chosen)),
      relevance: concat(runs.map((r) => r.relevance)),
      shape: [runs.length, ...this.config.shape],
      features: concat(rec.windows.map((w) => w.features)),
      windowLogits: concat(runs.map((r) => r.logits)),
      windows: rec.windows.map((w, i) => ({ startS: w.startS, endS: w.endS, label: name(argmax(runs[i].logits)) })),
      speech: rec.speech,
      rows: rec.windows[0].rows,
      cols: rec.windows[0].cols,
      x: rec.x,
      parts: rec.windows.map((w, i) => ({ ...w, relevance: runs[i].relevance })),
      wave,
      sampleRate,
      backend: this.backend,
      timing: { featuresMs: t1 - t0, explainMs: t2 - t1 },
    };
  }
}

function argmax(values) {
  let best = 0;
  for (let k = 1; k < values.length; k++) if (values[k] > values[best]) best = k;
  return best;
}
