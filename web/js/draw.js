// The heatmap over the spectrogram, as lrp_onnx.runtime.plots draws it: the features in grey,
// the relevance on top in matplotlib's "bwr" (blue negative, white zero, red positive) with
// limits +-(99.9th percentile of |R|) and opacity |R| / limit * 0.75; Hz and s axes; a colour bar.

const MARGIN = { left: 62, right: 70, top: 12, bottom: 42 };
const OVERLAY_ALPHA = 0.75;

export function symmetricLimit(relevance) {
  const a = Float64Array.from(relevance, Math.abs).sort();
  if (a.length === 0) return 1.0;
  const pos = (99.9 / 100) * (a.length - 1), lo = Math.floor(pos), hi = Math.min(lo + 1, a.length - 1);
  const limit = a[lo] + (a[hi] - a[lo]) * (pos - lo); // numpy's linear percentile
  return limit > 0 ? limit : a[a.length - 1] || 1.0;
}

function bwr(v) { // v in [-1, 1] -> [r, g, b] 0..255
  const t = Math.max(-1, Math.min(1, v));
  return t < 0 ? [255 * (1 + t), 255 * (1 + t), 255] : [255, 255 * (1 - t), 255 * (1 - t)];
}

function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

// canvas: a <canvas>; features, relevance: Float32Array rows x cols (row 0 = lowest frequency);
// freqs (Hz) per row, times (s) per column.
export function drawHeatmap(canvas, { features, relevance, rows, cols, freqs, times }) {
  const width = canvas.width, height = canvas.height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const plotW = width - MARGIN.left - MARGIN.right, plotH = height - MARGIN.top - MARGIN.bottom;
  let fmin = Infinity, fmax = -Infinity;
  for (const v of features) { fmin = Math.min(fmin, v); fmax = Math.max(fmax, v); }
  const limit = symmetricLimit(relevance);
  const image = new ImageData(cols, rows);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c, o = ((rows - 1 - r) * cols + c) * 4; // origin lower
      const g = fmax > fmin ? (255 * (features[i] - fmin)) / (fmax - fmin) : 0;
      const alpha = Math.min(1, Math.abs(relevance[i]) / limit) * OVERLAY_ALPHA;
      const [cr, cg, cb] = bwr(relevance[i] / limit);
      image.data[o] = g * (1 - alpha) + cr * alpha;
      image.data[o + 1] = g * (1 - alpha) + cg * alpha;
      image.data[o + 2] = g * (1 - alpha) + cb * alpha;
      image.data[o + 3] = 255;
    }
  }
  const tile = new OffscreenCanvas(cols, rows);
  tile.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(tile, MARGIN.left, MARGIN.top, plotW, plotH);
  drawAxes(ctx, { plotW, plotH, freqs, times });
  drawColorbar(ctx, { x: MARGIN.left + plotW + 14, plotH, limit });
  return limit;
}

function drawAxes(ctx, { plotW, plotH, freqs, times }) {
  ctx.fillStyle = "#222";
  ctx.strokeStyle = "#222";
  ctx.font = "12px sans-serif";
  ctx.strokeRect(MARGIN.left, MARGIN.top, plotW, plotH);
  const [t0, t1] = [times[0], times[times.length - 1]], [f0, f1] = [freqs[0], freqs[freqs.length - 1]];
  ctx.textAlign = "center";
  for (const t of niceTicks(t0, t1, 6)) {
    const x = MARGIN.left + ((t - t0) / (t1 - t0)) * plotW;
    ctx.fillRect(x, MARGIN.top + plotH, 1, 5);
    ctx.fillText(t.toFixed(2), x, MARGIN.top + plotH + 18);
  }
  ctx.fillText("time (s)", MARGIN.left + plotW / 2, MARGIN.top + plotH + 36);
  ctx.textAlign = "right";
  for (const f of niceTicks(f0, f1, 6)) {
    const y = MARGIN.top + plotH - ((f - f0) / (f1 - f0)) * plotH;
    ctx.fillRect(MARGIN.left - 5, y, 5, 1);
    ctx.fillText(String(Math.round(f)), MARGIN.left - 8, y + 4);
  }
  ctx.save();
  ctx.translate(14, MARGIN.top + plotH / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText("frequency (Hz)", 0, 0);
  ctx.restore();
}

function drawColorbar(ctx, { x, plotH, limit }) {
  for (let i = 0; i < plotH; i++) {
    const [r, g, b] = bwr(1 - (2 * i) / (plotH - 1));
    ctx.fillStyle = `rgb(${r | 0},${g | 0},${b | 0})`;
    ctx.fillRect(x, MARGIN.top + i, 12, 1);
  }
  ctx.fillStyle = "#222";
  ctx.textAlign = "left";
  ctx.font = "11px sans-serif";
  ctx.fillText(`+${limit.toPrecision(2)}`, x + 15, MARGIN.top + 10);
  ctx.fillText("0", x + 15, MARGIN.top + plotH / 2 + 4);
  ctx.fillText(`-${limit.toPrecision(2)}`, x + 15, MARGIN.top + plotH);
}
