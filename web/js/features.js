// Feature extraction in JavaScript, step for step as lrp_onnx.audio (features.py, io.py,
// resampling.py) computes it in Python, in float64 with the same float32 roundings, so that
// the model sees the same input in the browser as on the command line:
//   mono float32 -> silence check -> resample_poly (Kaiser beta 5) -> float32 -> crop to the
//   loudest window or centre-pad -> spec transform (dB spectrogram or log-mel) -> float32.

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

function loudestStart(wave, length) {
  const energy = new Float64Array(wave.length + 1);
  for (let i = 0; i < wave.length; i++) energy[i + 1] = energy[i] + wave[i] * wave[i];
  let best = 0, bestSum = -Infinity;
  for (let s = 0; s + length <= wave.length; s++) {
    const sum = energy[s + length] - energy[s];
    if (sum > bestSum) [best, bestSum] = [s, sum];
  }
  return best;
}

// The model input of a mono float32 recording (crop policy, as `lrp-onnx explain`):
// {features: Float32Array (rows x cols), rows, cols, startS, endS, cropped, window (the model window's
// samples, Float64Array)}.
export function computeFeatures(spec, wave, sampleRate) {
  if (wave.length === 0) throw new FeatureError("recording is empty");
  for (const v of wave) if (!Number.isFinite(v)) throw new FeatureError("recording contains NaN or infinite samples");
  if (isSilent(wave)) throw new FeatureError(`recording is silent (peak below ${SILENCE_DBFS} dBFS)`);
  const x = resample(wave, sampleRate, spec.sample_rate);
  const length = spec.length, sr = spec.sample_rate;
  const window = new Float64Array(length);
  let startS, cropped = false;
  if (x.length > length) {
    const start = loudestStart(x, length);
    window.set(x.subarray(start, start + length));
    startS = start / sr;
    cropped = true;
  } else {
    const offset = Math.floor((length - x.length) / 2);
    window.set(x, offset);
    startS = -offset / sr;
  }
  const { values, rows, cols } = spec.kind === "log-mel" ? logMel(window, spec) : spectrogramDb(window, spec);
  return { features: Float32Array.from(values), rows, cols, startS, endS: startS + length / sr, cropped, window };
}
