// Feature extraction in JavaScript, step for step as lrp_onnx.audio (features.py, io.py,
// resampling.py) computes it in Python, in float64 with the same float32 roundings, so that
// the model sees the same input in the browser as on the command line:
//   mono float32 -> silence check -> resample_poly (Kaiser beta 5) -> float32 -> the recording's
//   speech windows (a longer recording, as lrp_onnx.audio.speech and runtime.recordings pick them)
//   or centre-pad (a shorter one) -> spec transform (dB spectrogram or log-mel) -> float32.

const SILENCE_DBFS = -90.0;

export class FeatureError extends Error {}

// ------------------------------------------------------------------ resampling (resample_poly)

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

function besselI0(x) {
  // power series of the modified Bessel function of order 0 (converges for the |x| <= 5 used here)
  let sum = 1.0, term = 1.0;
  const q = (x * x) / 4.0;
  for (let k = 1; k < 200; k++) {
    term *= q / (k * k);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return sum;
}

function kaiser(taps, beta) {
  const w = new Float64Array(taps);
  const alpha = (taps - 1) / 2.0;
  for (let n = 0; n < taps; n++) {
    const r = (n - alpha) / alpha;
    w[n] = besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / besselI0(beta);
  }
  return w;
}

function sinc(x) {
  if (x === 0) return 1.0;
  const y = Math.PI * x;
  return Math.sin(y) / y;
}

export function lowpass(up, down) {
  const maxRate = Math.max(up, down);
  const cutoff = 1.0 / maxRate, taps = 2 * 10 * maxRate + 1;
  const window = kaiser(taps, 5.0);
  const h = new Float64Array(taps);
  let total = 0;
  for (let i = 0; i < taps; i++) {
    const m = i - 0.5 * (taps - 1);
    h[i] = cutoff * sinc(cutoff * m) * window[i];
    total += h[i];
  }
  for (let i = 0; i < taps; i++) h[i] = (h[i] / total) * up;
  return h;
}

export function resamplePoly(x, up, down) {
  const g = gcd(up, down);
  up /= g;
  down /= g;
  if (up === 1 && down === 1) return Float64Array.from(x);
  const nIn = x.length;
  const nOut = Math.ceil((nIn * up) / down);
  const h0 = lowpass(up, down);
  const halfLen = (h0.length - 1) / 2;
  const prePad = down - (halfLen % down);
  const skip = Math.floor((halfLen + prePad) / down);
  const phases = Math.ceil((h0.length + prePad) / up);
  const h = new Float64Array(phases * up);
  h.set(h0, prePad);
  const y = new Float64Array(nOut);
  for (let i = 0; i < nOut; i++) {
    const position = (i + skip) * down;
    const phase = position % up;
    const base = Math.floor(position / up);
    let acc = 0.0;
    for (let j = 0; j < phases; j++) {
      const k = base - j;
      if (k >= 0 && k < nIn) acc += x[k] * h[phase + up * j];
    }
    y[i] = acc;
  }
  return y;
}

export function resample(wave, rateFrom, rateTo) {
  if (rateFrom === rateTo) return Float32Array.from(wave);
  const g = gcd(rateFrom, rateTo);
  return Float32Array.from(resamplePoly(wave, rateTo / g, rateFrom / g));
}

// ------------------------------------------------------------------ spectra

function periodicHann(n) {
  const w = new Float64Array(n);
  for (let k = 0; k < n; k++) w[k] = 0.5 - 0.5 * Math.cos((2.0 * Math.PI * k) / n);
  return w;
}

// |DFT| of frames by direct summation with exact twiddle tables (any length, any bin subset).
class Dft {
  constructor(n) {
    this.n = n;
    this.cos = new Float64Array(n);
    this.sin = new Float64Array(n);
    for (let k = 0; k < n; k++) {
      this.cos[k] = Math.cos((2 * Math.PI * k) / n);
      this.sin[k] = Math.sin((2 * Math.PI * k) / n);
    }
  }

  // |sum_t frame[t] exp(-2 pi i k t / n)|^2 for k < bins; frame may be shorter than n (zero-padded)
  power(frame, bins, out) {
    const n = this.n;
    for (let k = 0; k < bins; k++) {
      let re = 0, im = 0, idx = 0;
      for (let t = 0; t < frame.length; t++) {
        re += frame[t] * this.cos[idx];
        im -= frame[t] * this.sin[idx];
        idx += k;
        if (idx >= n) idx -= n;
      }
      out[k] = re * re + im * im;
    }
  }
}

function spectrogramDb(window, spec) {
  const { nperseg, noverlap, freq_bins: bins, amplitude_scale: scale, amin, top_db: topDb } = spec;
  const hop = nperseg - noverlap, half = Math.floor(nperseg / 2);
  const paddedLen = window.length + 2 * half;
  const extra = (((-(paddedLen - nperseg)) % hop) + hop) % hop;
  const padded = new Float64Array(paddedLen + extra);
  for (let i = 0; i < window.length; i++) padded[half + i] = window[i] * scale;
  const nFrames = (padded.length - nperseg) / hop + 1;
  const hann = periodicHann(nperseg);
  let wsum = 0;
  for (const v of hann) wsum += v;
  const dft = new Dft(nperseg);
  const cols = nFrames - 3; // frames 2 .. nFrames - 2
  const mag = new Float64Array(bins * cols);
  const frame = new Float64Array(nperseg), power = new Float64Array(bins);
  for (let c = 0; c < cols; c++) {
    const start = (c + 2) * hop;
    for (let t = 0; t < nperseg; t++) frame[t] = padded[start + t] * hann[t];
    dft.power(frame, bins, power);
    for (let f = 0; f < bins; f++) mag[f * cols + c] = Math.sqrt(power[f]) / wsum;
  }
  let peak = -Infinity;
  for (const v of mag) if (v > peak) peak = v;
  const ref = 20.0 * Math.log10(Math.max(amin, peak));
  const db = new Float64Array(mag.length);
  let top = -Infinity;
  for (let i = 0; i < mag.length; i++) {
    db[i] = 20.0 * Math.log10(Math.max(amin, mag[i])) - ref;
    if (db[i] > top) top = db[i];
  }
  for (let i = 0; i < db.length; i++) db[i] = Math.max(db[i], top - topDb);
  return { values: db, rows: bins, cols };
}

const hzToMel = (f) => 2595.0 * Math.log10(1.0 + f / 700.0);
const melToHz = (m) => 700.0 * (10.0 ** (m / 2595.0) - 1.0);

function melEdges(spec) {
  const lo = hzToMel(spec.f_min), hi = hzToMel(spec.f_max), n = spec.n_mels + 2;
  // np.linspace: lo + i * step, the last one exactly hi
  const step = (hi - lo) / (n - 1);
  return Array.from({ length: n }, (_, i) => melToHz(i === n - 1 ? hi : lo + i * step));
}

// triangular HTK mel filters (n_mels x (n_fft / 2 + 1)), peak height 1, as audio.features.mel_filterbank
export function melFilterbank(spec) {
  const { n_fft: nfft, n_mels: nMels, sample_rate: sr } = spec;
  const bins = Math.floor(nfft / 2) + 1, edges = melEdges(spec);
  const fb = new Float64Array(nMels * bins);
  for (let m = 0; m < nMels; m++) {
    for (let k = 0; k < bins; k++) {
      const f = (k * sr) / nfft;
      const rising = (f - edges[m]) / (edges[m + 1] - edges[m]);
      const falling = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
      fb[m * bins + k] = Math.max(0.0, Math.min(rising, falling));
    }
  }
  return fb;
}

function logMel(window, spec) {
  const { win_length: win, hop_length: hop, n_fft: nfft, frames, n_mels: nMels } = spec;
  const half = Math.floor(win / 2);
  const needed = (frames - 1) * hop + win;
  const padded = new Float64Array(Math.max(needed, window.length + half));
  padded.set(window, half);
  const bins = Math.floor(nfft / 2) + 1;
  const fb = melFilterbank(spec);
  const hann = periodicHann(win), dft = new Dft(nfft);
  const frame = new Float64Array(win), power = new Float64Array(bins);
  const out = new Float64Array(nMels * frames);
  for (let j = 0; j < frames; j++) {
    for (let t = 0; t < win; t++) frame[t] = padded[j * hop + t] * hann[t];
    dft.power(frame, bins, power);
    for (let m = 0; m < nMels; m++) {
      let e = 0;
      for (let k = 0; k < bins; k++) e += fb[m * bins + k] * power[k];
      out[m * frames + j] = Math.log(e + spec.floor);
    }
  }
  if (spec.normalize === "mean") {
    for (let m = 0; m < nMels; m++) {
      let mean = 0;
      for (let j = 0; j < frames; j++) mean += out[m * frames + j];
      mean /= frames;
      for (let j = 0; j < frames; j++) out[m * frames + j] -= mean;
    }
  }
  return { values: out, rows: nMels, cols: frames };
}

// ------------------------------------------------------------------ the spec

export function frequencies(spec) {
  if (spec.kind === "log-mel") return melEdges(spec).slice(1, -1);
  return Array.from({ length: spec.freq_bins }, (_, i) => (i * spec.sample_rate) / spec.nperseg);
}

export function times(spec, cols) {
  const hop = spec.kind === "log-mel" ? spec.hop_length : spec.nperseg - spec.noverlap;
  const first = spec.kind === "log-mel" ? 0 : 2;
  return Array.from({ length: cols }, (_, i) => ((i + first) * hop) / spec.sample_rate);
}

function isSilent(wave) {
  let peak = 0;
  for (const v of wave) peak = Math.max(peak, Math.abs(v));
  return wave.length === 0 || peak < 10.0 ** (SILENCE_DBFS / 20.0);
}

function checkRecording(wave) {
  if (wave.length === 0) throw new FeatureError("recording is empty");
  for (const v of wave) if (!Number.isFinite(v)) throw new FeatureError("recording contains NaN or infinite samples");
  if (isSilent(wave)) throw new FeatureError(`recording is silent (peak below ${SILENCE_DBFS} dBFS)`);
}

function spectrum(window, spec) {
  return spec.kind === "log-mel" ? logMel(window, spec) : spectrogramDb(window, spec);
}

// ------------------------------------------------------------------ speech windows (lrp_onnx.audio.speech)

const FRAME_SECONDS = 0.025, HOP_SECONDS = 0.010;

function pyRound(x) { // Python's round(): halves to even
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

function pairwiseSum(a, lo, n) { // numpy's pairwise summation of float64 (blocks of 128, 8 accumulators)
  if (n < 8) {
    let s = 0;
    for (let i = 0; i < n; i++) s += a[lo + i];
    return s;
  }
  if (n <= 128) {
    const r = new Float64Array(8);
    for (let j = 0; j < 8; j++) r[j] = a[lo + j];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[lo + i + j];
    let s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) s += a[lo + i];
    return s;
  }
  let half = Math.floor(n / 2);
  half -= half % 8;
  return pairwiseSum(a, lo, half) + pairwiseSum(a, lo + half, n - half);
}

function percentile(values, q) { // numpy's default (linear) percentile
  const a = Float64Array.from(values).sort();
  const pos = (q / 100) * (a.length - 1), lo = Math.floor(pos), hi = Math.min(lo + 1, a.length - 1), t = pos - lo;
  const diff = a[hi] - a[lo];
  return t >= 0.5 ? a[hi] - diff * (1 - t) : a[lo] + diff * t;
}

// 25 ms frames, 10 ms apart: speech when within 35 dB of the loudest frame and 6 dB above the floor
function speechFrames(x, sr) {
  const frame = Math.max(1, pyRound(FRAME_SECONDS * sr)), hop = Math.max(1, pyRound(HOP_SECONDS * sr));
  let wave = Float64Array.from(x);
  if (wave.length < frame) {
    const padded = new Float64Array(frame);
    padded.set(wave);
    wave = padded;
  }
  const n = 1 + Math.floor((wave.length - frame) / hop), mean = pairwiseSum(wave, 0, wave.length) / wave.length;
  const squares = new Float64Array(wave.length + 1);
  for (let i = 0; i < wave.length; i++) squares[i + 1] = squares[i] + (wave[i] - mean) ** 2;
  const db = new Float64Array(n);
  let loudest = -Infinity;
  for (let k = 0; k < n; k++) {
    db[k] = 10.0 * Math.log10(Math.max((squares[k * hop + frame] - squares[k * hop]) / frame, 1e-12));
    loudest = Math.max(loudest, db[k]);
  }
  const floor = percentile(db, 10);
  return Array.from(db, (v) => v > loudest - 35.0 && v > floor + 6.0);
}

function speechWindowStarts(x, sr, window, hop = window, minFraction = 0.5) {
  const flags = speechFrames(x, sr), frameHop = Math.max(1, pyRound(HOP_SECONDS * sr));
  if (x.length <= window) return flags.some(Boolean) ? [0] : [];
  const cumulative = new Float64Array(flags.length + 1);
  flags.forEach((f, i) => { cumulative[i + 1] = cumulative[i] + (f ? 1 : 0); });
  const starts = [];
  for (let start = 0; start <= x.length - window; start += hop) {
    const first = Math.min(Math.floor(start / frameHop), flags.length);
    const last = Math.min(Math.floor((start + window) / frameHop), flags.length);
    if ((cumulative[last] - cumulative[first]) / Math.max(last - first, 1) >= minFraction) starts.push(start);
  }
  return starts;
}

// The windows of a whole-recording decision: consecutive speech windows; when none is mostly speech,
// the single most speech-filled one (as lrp_onnx.audio.speech.decision_window_starts).
export function decisionWindowStarts(x, sr, window) {
  if (x.length <= window) return [0];
  const starts = speechWindowStarts(x, sr, window);
  if (starts.length) return starts;
  const grid = Math.max(1, pyRound(HOP_SECONDS * sr));
  for (const fraction of [0.3, 0.1, 0.0]) {
    const dense = speechWindowStarts(x, sr, window, grid, fraction);
    if (dense.length) return [dense[Math.floor(dense.length / 2)]];
  }
  return [0];
}

// Features of one window of samples at the spec's rate (zero-padded at its end), or null when it is silent.
export function windowFeatures(spec, samples) {
  if (isSilent(samples)) return null;
  const window = new Float64Array(spec.length);
  window.set(samples.subarray(0, spec.length));
  const { values, rows, cols } = spectrum(window, spec);
  return { features: Float32Array.from(values), rows, cols, window };
}

// The windows a decision on a mono float32 recording rests on, as lrp_onnx.runtime.recordings picks them:
// {x: the recording at the spec's rate, speech: true for the speech windows of a longer recording,
// windows: [{features (rows x cols), rows, cols, startS, endS, window (samples, Float64Array)}]}.
// A recording no longer than the window gives one window, zero-padded around it.
export function recordingWindows(spec, wave, sampleRate) {
  checkRecording(wave);
  const x = resample(wave, sampleRate, spec.sample_rate);
  const length = spec.length, sr = spec.sample_rate;
  if (x.length <= length) {
    const window = new Float64Array(length), offset = Math.floor((length - x.length) / 2);
    window.set(x, offset);
    const { values, rows, cols } = spectrum(window, spec);
    const startS = -offset / sr;
    return { x, speech: false,
             windows: [{ features: Float32Array.from(values), rows, cols, startS, endS: startS + length / sr, window }] };
  }
  const windows = decisionWindowStarts(x, sr, length).map((start) => {
    const w = windowFeatures(spec, x.subarray(start, start + length));
    if (w === null) throw new FeatureError(`recording is silent (peak below ${SILENCE_DBFS} dBFS)`);
    return { ...w, startS: start / sr, endS: (start + length) / sr };
  });
  return { x, speech: true, windows };
}
