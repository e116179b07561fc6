// The audible heatmap, as lrp_onnx.runtime.audible makes it: positive relevance becomes a soft
// mask M = clip(R+ / q99(R+), 0, 1) over the model's time-frequency grid, carried over to the
// bins of an STFT of the model window with the feature spec's own parameters (scipy.signal.stft:
// Hann window, zero boundary), applied with the original phase, and inverted by weighted
// overlap-add (scipy.signal.istft). The result is scaled to the window's peak level (for a whole
// recording, timeline.js scales it to the recording's peak, as relevant_audio does).

function percentile(sorted, q) {
  const pos = (q / 100) * (sorted.length - 1), lo = Math.floor(pos), hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function relevanceMask(relevance) {
  const positive = Float64Array.from(relevance, (v) => Math.max(v, 0));
  const values = positive.filter((v) => v > 0).sort();
  if (values.length === 0) return positive;
  const scale = percentile(values, 99) || values[values.length - 1];
  return positive.map((v) => Math.min(1, v / scale));
}

function stftParameters(spec) {
  if (spec.kind === "log-mel") return { nperseg: spec.win_length, hop: spec.hop_length, nfft: spec.n_fft };
  return { nperseg: spec.nperseg, hop: spec.nperseg - spec.noverlap, nfft: spec.nperseg };
}

// mask on the STFT grid (bins x frames) from the feature-grid mask (rows x cols)
function stftMask(spec, mask, rows, cols, bins, frames) {
  const full = new Float64Array(bins * frames);
  if (spec.kind === "log-mel") {
    const { melWeights } = spec._audible;
    for (let k = 0; k < bins; k++) {
      const w = melWeights[k];
      for (let t = 0; t < frames; t++) {
        const c = Math.min(t, cols - 1);
        let v = 0;
        for (const [m, weight] of w) v += weight * mask[m * cols + c];
        full[k * frames + t] = v;
      }
    }
    return full;
  }
  for (let k = 0; k < bins; k++) {
    const r = Math.min(k, rows - 1);
    for (let t = 0; t < frames; t++) full[k * frames + t] = mask[r * cols + Math.min(Math.max(t - 2, 0), cols - 1)];
  }
  return full;
}

// linear-frequency bin k <- filterbank-weighted mean of the mel bands covering it (nearest covered bin elsewhere)
function melWeights(spec, bins, filterbank) {
  const weights = [];
  const covered = [];
  for (let k = 0; k < bins; k++) {
    let total = 0;
    for (let m = 0; m < spec.n_mels; m++) total += filterbank[m * bins + k];
    const w = [];
    if (total > 0) for (let m = 0; m < spec.n_mels; m++) if (filterbank[m * bins + k] > 0) w.push([m, filterbank[m * bins + k] / total]);
    weights.push(w);
    if (total > 0) covered.push(k);
  }
  for (let k = 0; k < bins; k++) {
    if (weights[k].length || covered.length === 0) continue;
    const nearest = covered.reduce((a, b) => (Math.abs(b - k) < Math.abs(a - k) ? b : a));
    weights[k] = weights[nearest];
  }
  return weights;
}

// window: Float64Array (spec.length samples); mask: Float64Array rows x cols; filterbank (log-mel only);
// rescale: scale the result to the window's peak (false: as lrp_onnx.runtime.audible.masked_window leaves it)
export function maskedWindow(spec, window, mask, rows, cols, filterbank = null, rescale = true) {
  const { nperseg, hop, nfft } = stftParameters(spec);
  const half = Math.floor(nperseg / 2);
  const paddedLen = window.length + 2 * half;
  const extra = (((-(paddedLen - nperseg)) % hop) + hop) % hop;
  const padded = new Float64Array(paddedLen + extra);
  padded.set(window, half);
  const frames = (padded.length - nperseg) / hop + 1, bins = Math.floor(nfft / 2) + 1;
  const hann = Float64Array.from({ length: nperseg }, (_, k) => 0.5 - 0.5 * Math.cos((2 * Math.PI * k) / nperseg));
  if (spec.kind === "log-mel") spec = { ...spec, _audible: { melWeights: melWeights(spec, bins, filterbank) } };
  const full = stftMask(spec, mask, rows, cols, bins, frames);
  const cos = Float64Array.from({ length: nfft }, (_, k) => Math.cos((2 * Math.PI * k) / nfft));
  const sin = Float64Array.from({ length: nfft }, (_, k) => Math.sin((2 * Math.PI * k) / nfft));
  const out = new Float64Array(padded.length), norm = new Float64Array(padded.length);
  const re = new Float64Array(bins), im = new Float64Array(bins);
  for (let j = 0; j < frames; j++) {
    const start = j * hop;
    for (let k = 0; k < bins; k++) { // forward DFT of the windowed frame, masked
      let a = 0, b = 0;
      for (let t = 0, idx = 0; t < nperseg; t++, idx = (idx + k) % nfft) {
        const v = padded[start + t] * hann[t];
        a += v * cos[idx];
        b -= v * sin[idx];
      }
      const m = full[k * frames + j];
      re[k] = a * m;
      im[k] = b * m;
    }
    for (let t = 0; t < nperseg; t++) { // inverse real DFT, first nperseg samples, windowed
      let v = re[0];
      for (let k = 1; k < bins; k++) {
        const idx = (k * t) % nfft, weight = k === nfft / 2 ? 1 : 2;
        v += weight * (re[k] * cos[idx] - im[k] * sin[idx]);
      }
      out[start + t] += (v / nfft) * hann[t];
      norm[start + t] += hann[t] * hann[t];
    }
  }
  const result = new Float64Array(window.length);
  let peak = 0, originalPeak = 0;
  for (let i = 0; i < window.length; i++) {
    const n = norm[half + i];
    result[i] = n > 1e-10 ? out[half + i] / n : 0;
    peak = Math.max(peak, Math.abs(result[i]));
    originalPeak = Math.max(originalPeak, Math.abs(window[i]));
  }
  if (rescale && peak > 0) for (let i = 0; i < result.length; i++) result[i] *= originalPeak / peak;
  return Float32Array.from(result);
}

// a mono float32 signal as a 16-bit PCM WAV blob (for an <audio> element)
export function wavBlob(samples, sampleRate) {
  const buffer = new ArrayBuffer(44 + 2 * samples.length), v = new DataView(buffer);
  const text = (o, s) => [...s].forEach((c, i) => v.setUint8(o + i, c.charCodeAt(0)));
  text(0, "RIFF"); v.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVE"); text(12, "fmt ");
  v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true); v.setUint32(24, sampleRate, true);
  v.setUint32(28, 2 * sampleRate, true); v.setUint16(32, 2, true); v.setUint16(34, 16, true); text(36, "data");
  v.setUint32(40, 2 * samples.length, true);
  samples.forEach((s, i) => v.setInt16(44 + 2 * i, Math.max(-32768, Math.min(32767, Math.round(s * 32767))), true));
  return new Blob([buffer], { type: "audio/wav" });
}
