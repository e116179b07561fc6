// A decision's features and relevance on the recording's own time axis, from 0 s to its end, as
// lrp_onnx.runtime.recordings.RecordingDecision.timeline lays them out: the windows side by side for a
// longer recording (windows without speech show their spectrogram and no relevance), and only the
// recorded columns of a single window (a shorter recording, or the most speech-filled window of one).
// Plus the audible heatmap over the same span: the explained windows masked by their positive relevance.
import { maskedWindow, relevanceMask } from "./audible.js";
import { melFilterbank, times, windowFeatures } from "./features.js";

// relevance of one window summed over its channels: rows x cols
function channelSum(relevance, rows, cols) {
  const cells = rows * cols, out = new Float32Array(cells);
  for (let i = 0; i < relevance.length; i++) out[i % cells] += relevance[i];
  return out;
}

function columns(values, rows, cols, keep) {
  const kept = keep.filter(Boolean).length, out = new Float32Array(rows * kept);
  for (let r = 0; r < rows; r++) {
    let c2 = 0;
    for (let c = 0; c < cols; c++) if (keep[c]) out[r * kept + c2++] = values[r * cols + c];
  }
  return out;
}

function joinColumns(parts, rows) {
  const total = parts.reduce((n, p) => n + p.cols, 0), out = new Float32Array(rows * total);
  let at = 0;
  for (const p of parts) {
    for (let r = 0; r < rows; r++) out.set(p.values.subarray(r * p.cols, (r + 1) * p.cols), r * total + at);
    at += p.cols;
  }
  return { values: out, cols: total };
}

// result: BrowserExplainer.explain's; -> {features, relevance (rows x cols), rows, cols, times (s)}
export function timeline(spec, result) {
  const { rows, cols, parts, x } = result, sr = spec.sample_rate, length = spec.length;
  const duration = x.length / sr, t0 = times(spec, cols);
  const starts = parts.map((p) => Math.round(p.startS * sr));
  if (x.length <= length || starts.some((s) => s % length !== 0)) {
    const p = parts[0], t = t0.map((v) => v + p.startS);
    let keep = t.map((v) => v >= 0 && v <= duration);
    if (!keep.some(Boolean)) {
      const middle = t.reduce((best, v, i) => (Math.abs(v - duration / 2) < Math.abs(t[best] - duration / 2) ? i : best), 0);
      keep = t.map((_, i) => i === middle);
    }
    const kept = keep.filter(Boolean).length;
    return { features: columns(p.features, rows, cols, keep), relevance: columns(channelSum(p.relevance, rows, cols), rows, cols, keep),
             rows, cols: kept, times: t.filter((_, i) => keep[i]) };
  }
  const byStart = new Map(starts.map((s, i) => [s, parts[i]]));
  const feats = [], rels = [], ts = [];
  for (let start = 0; start < x.length; start += length) {
    const p = byStart.get(start);
    let features, relevance;
    if (p) {
      features = p.features;
      relevance = channelSum(p.relevance, rows, cols);
    } else {
      const w = windowFeatures(spec, x.subarray(start, start + length));
      features = w ? w.features : new Float32Array(rows * cols).fill(-(spec.top_db ?? 80));
      relevance = new Float32Array(rows * cols);
    }
    const keep = t0.map((v) => start / sr + v <= duration);
    feats.push({ values: columns(features, rows, cols, keep), cols: keep.filter(Boolean).length });
    rels.push({ values: columns(relevance, rows, cols, keep), cols: keep.filter(Boolean).length });
    ts.push(...t0.filter((_, i) => keep[i]).map((v) => start / sr + v));
  }
  const f = joinColumns(feats, rows), r = joinColumns(rels, rows);
  return { features: f.values, relevance: r.values, rows, cols: f.cols, times: ts };
}

// the audible heatmap over the recording (samples at the spec's rate), as lrp_onnx.runtime.audible.relevant_audio
// makes it: each explained window masked by its own positive relevance, the windows' parts inside the recording
// put in place (silence elsewhere), the whole scaled to the recording's peak
export function audibleTimeline(spec, result) {
  const { rows, cols, parts, x } = result, sr = spec.sample_rate, length = spec.length;
  const filterbank = spec.kind === "log-mel" ? melFilterbank(spec) : null;
  const out = new Float64Array(x.length);
  for (const p of parts) {
    const start = Math.round(p.startS * sr), lo = Math.max(start, 0), hi = Math.min(start + length, x.length);
    if (hi <= lo) continue;
    const mask = relevanceMask(channelSum(p.relevance, rows, cols));
    const masked = maskedWindow(spec, p.window, mask, rows, cols, filterbank, false);
    out.set(masked.subarray(lo - start, hi - start), lo);
  }
  let peak = 0, originalPeak = 0;
  for (let i = 0; i < x.length; i++) {
    peak = Math.max(peak, Math.abs(out[i]));
    originalPeak = Math.max(originalPeak, Math.abs(x[i]));
  }
  if (peak > 0) for (let i = 0; i < out.length; i++) out[i] *= originalPeak / peak;
  return Float32Array.from(out);
}
