"""Polyphase resampling in numpy, equal to ``scipy.signal.resample_poly`` (default Kaiser
window, beta 5, zero padding) to float64 rounding.

Why not scipy: importing ``scipy.signal`` costs about a second, more than the rest of an
``lrp-onnx explain`` start-up. The algorithm is the textbook one (and scipy's):

* ``up, down`` reduced by their gcd; the anti-aliasing low-pass is a windowed sinc of
  ``2 * 10 * max(up, down) + 1`` taps with cutoff ``1 / max(up, down)`` (of Nyquist),
  ``h[m] = c sinc(c (m - alpha)) * kaiser(m)``, scaled to unit DC gain and multiplied by ``up``;
* the output is ``y[n] = sum_k h[k] xu[n * down - k]``, ``xu`` being ``x`` with ``up - 1``
  zeros after each sample, computed polyphase (only the non-zero products) and aligned
  so that the filter's delay is removed: ``len(y) = ceil(len(x) * up / down)``.
"""
from __future__ import annotations

from math import gcd

import numpy as np

#: outputs computed per block (bounds the memory of the gathered products)
BLOCK = 16384


def lowpass(up: int, down: int) -> np.ndarray:
    """The anti-aliasing filter, times ``up`` (``scipy.signal.firwin`` with a Kaiser window)."""
    max_rate = max(up, down)
    cutoff, taps = 1.0 / max_rate, 2 * 10 * max_rate + 1
    m = np.arange(taps) - 0.5 * (taps - 1)
    h = cutoff * np.sinc(cutoff * m) * np.kaiser(taps, 5.0)
    return h / h.sum() * up


def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Resample the 1-D signal ``x`` by ``up / down`` (float64 result)."""
    x = np.asarray(x, dtype=np.float64)
    g = gcd(up, down)
    up, down = up // g, down // g
    if up == down == 1:
        return x.copy()
    n_in = len(x)
    n_out = -(-n_in * up // down)
    h = lowpass(up, down)
    half_len = (len(h) - 1) // 2
    pre_pad = down - half_len % down
    skip = (half_len + pre_pad) // down  # outputs that only hold the filter's delay
    h = np.concatenate([np.zeros(pre_pad), h])
    phases = -(-len(h) // up)
    h = np.concatenate([h, np.zeros(phases * up - len(h))])
    taps_by_phase = h.reshape(phases, up).T  # [p, j] = h[p + up * j]
    padded = np.concatenate([np.zeros(phases), x, np.zeros(phases)])
    y = np.empty(n_out)
    for start in range(0, n_out, BLOCK):
        n = np.arange(start, min(start + BLOCK, n_out)) + skip
        position = n * down  # index into the upsampled signal
        phase = position % up
        base = position // up  # x index of the first (j = 0) product
        index = base[:, None] - np.arange(phases)[None, :] + phases
        valid = (index >= phases) & (index < phases + n_in)
        y[start:start + len(n)] = np.sum(np.where(valid, padded[np.clip(index, 0, len(padded) - 1)], 0.0)
                                         * taps_by_phase[phase], axis=1)
    return y
