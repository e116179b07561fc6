"""Where relevance goes: the relevance sum entering and leaving every step.

LRP-0 conserves relevance through layers without biases; biases, epsilon and the
stabilisers absorb some, and negative contributions (alpha-beta) can create some. The
report lists, per step (graph order from the input), the mean relevance sum entering
and leaving, and the difference: ``absorbed = entering - leaving`` (negative: created).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .explainer import Explainer


@dataclass
class ConservationRow:
    step: str
    entering: float
    leaving: float

    @property
    def absorbed(self) -> float:
        return self.entering - self.leaving


@dataclass
class ConservationReport:
    target_logit: float  # mean over samples
    input_relevance: float  # mean over samples
    rows: list[ConservationRow]  # graph order from the input

    @property
    def ratio(self) -> float:
        return self.input_relevance / self.target_logit if self.target_logit else float("nan")

    def to_text(self) -> str:
        width = max([len(r.step) for r in self.rows] + [4])
        lines = [f"{'step':<{width}}  {'entering':>12}  {'leaving':>12}  {'absorbed':>12}"]
        for r in self.rows:
            lines.append(f"{r.step:<{width}}  {r.entering:12.6g}  {r.leaving:12.6g}  {r.absorbed:12.6g}")
        lines.append(f"target logit {self.target_logit:.6g} -> input relevance {self.input_relevance:.6g} "
                     f"({100 * self.ratio:.2f}% conserved)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "target_logit": self.target_logit,
            "input_relevance": self.input_relevance,
            "steps": [dict(step=r.step, entering=r.entering, leaving=r.leaving, absorbed=r.absorbed)
                      for r in self.rows],
        }


def conservation_report(explainer: Explainer, x, target=None) -> ConservationReport:
    """Per-step relevance sums, averaged over the samples of ``x``.

    ``explainer`` must be built with ``layer_sums=True``.
    """
    names, entering, leaving, e = explainer.layer_sums(x, target)
    rows = [ConservationRow(n, float(a), float(b))
            for n, a, b in zip(names, entering.mean(axis=0), leaving.mean(axis=0))]
    rows.reverse()  # steps were emitted from the output back; report from the input
    return ConservationReport(float(np.mean(e.target_logits)), float(np.mean(e.relevance_sums)), rows)
