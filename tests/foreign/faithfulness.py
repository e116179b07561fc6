"""Pixel-flipping at one point: zero the 2 % most relevant input elements of each sample, or 2 % at random,
and see how much the explained score falls."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Faithfulness:
    score: float  # mean explained score of the untouched inputs
    lrp_drop: float  # mean fall of the score when the most relevant elements are zeroed
    random_drop: float  # the same for random elements, averaged over the draws

    @property
    def faithful(self) -> bool:
        return self.lrp_drop > self.random_drop


def zero(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``x`` (N, ...) with the flat per-sample ``positions`` (N, k) set to 0 (the baseline)."""
    flat = x.reshape(len(x), -1).copy()
    np.put_along_axis(flat, positions, 0.0, axis=1)
    return flat.reshape(x.shape)


def faithfulness(explainer, x: np.ndarray, fraction: float = 0.02, draws: int = 8, seed: int = 0) -> Faithfulness:
    """Explain each sample's predicted score, then compare the falls of that score."""
    e = explainer.explain(x)
    n, size = len(x), x[0].size
    k = max(1, round(fraction * size))
    rows = np.arange(n)

    def score(batch):
        return explainer.predict(batch)[rows, e.targets]

    top = np.argsort(-e.relevance.reshape(n, -1), axis=1, kind="stable")[:, :k]
    lrp_drop = float(np.mean(e.target_logits - score(zero(x, top))))
    rng = np.random.default_rng(seed)
    random_drops = [np.mean(e.target_logits - score(zero(x, np.stack([rng.choice(size, k, replace=False)
                                                                       for _ in rows]))))
                    for _ in range(draws)]
    return Faithfulness(float(np.mean(e.target_logits)), lrp_drop, float(np.mean(random_drops)))
