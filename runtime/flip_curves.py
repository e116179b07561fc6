"""Pixel-flipping results: areas under the curves, the summary of a run, and the plot.

A run's summary (:func:`lrp_onnx.runtime.flip.summarize`) holds, per order (``morf``,
``lerf``, ``random``), the accuracy and mean target logit at each step, their areas under
the curve over fixed ranges of the removed percentage (:func:`auc`, trapezoids, normalised
by the range) and the LRP/random ratio of those areas (lower: the explanation found what
the model needs).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..lrp_graph.errors import InputError

def auc(steps, values, lo: float | None = None, hi: float | None = None) -> float:
    """Mean height of a curve over ``[lo, hi]`` percent: trapezoid area / (hi - lo)."""
    steps, values = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    lo = steps[0] if lo is None else lo
    hi = steps[-1] if hi is None else hi
    keep = (steps >= lo - 1e-9) & (steps <= hi + 1e-9)
    s, v = steps[keep], values[keep]
    if len(s) < 2 or s[-1] <= s[0]:
        return float(v[0]) if len(v) else float("nan")
    return float(np.sum((s[1:] - s[:-1]) * (v[1:] + v[:-1]) / 2.0) / (s[-1] - s[0]))


def auc_ranges(steps) -> dict[str, tuple[float, float]]:
    """The whole range plus the study's 0-1 % and 0-10 % where the steps cover them."""
    steps = np.asarray(steps)
    ranges = {"all": (float(steps[0]), float(steps[-1]))}
    present = set(np.round(steps, 9).tolist())
    for lo, hi in ((0.0, 1.0), (0.0, 10.0)):
        if lo in present and hi in present:
            ranges[f"{lo:g}-{hi:g}"] = (lo, hi)
    return ranges


def accuracy_at(result: dict, percent: float, curve: str | None = None) -> float:
    """The accuracy a results dict records at ``percent`` (one of its steps)."""
    curve = curve or result["config"]["order"]
    steps = np.asarray(result["steps_percent"])
    hit = np.flatnonzero(np.isclose(steps, percent))
    if not len(hit):
        raise InputError(f"the run has no step at {percent:g} %")
    return float(result["curves"][curve]["accuracy"][hit[0]])


# --------------------------------------------------------------------------- plots


def plot_curves(results: dict | list[tuple[str, dict]], path: str | Path, *, xmax: float | None = None,
                title: str | None = None, panels: list[float] | None = None) -> None:
    """Accuracy vs percent of bins flipped: the explanation's order and random (mean +- std).

    ``results``: one summary, or ``[(name, summary), ...]`` to compare several models or
    composites (each with its random reference). ``panels``: upper x limits, one panel
    each (default: 10 and 1 where the steps reach them, as the study's Figures 3 and 4).
    """
    from .io import atomic_write
    from .plots import _pyplot, literal_text

    series = [("", results)] if isinstance(results, dict) else list(results)
    last = max(max(r["steps_percent"]) for _, r in series)
    if panels is None:
        panels = [xmax] if xmax is not None else [p for p in (10.0, 1.0) if last >= p] or [last]
    plt = _pyplot()
    fig, axs = plt.subplots(1, len(panels), figsize=(5.6 * len(panels), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, limit in zip(axs[0], panels):
        drawn_random: list[np.ndarray] = []  # identical random references (same model) are drawn once
        for i, (name, r) in enumerate(series):
            steps = np.asarray(r["steps_percent"])
            keep = steps <= limit + 1e-9
            order = r["config"]["order"]
            # names come from users and models: drawn literally (a legend would read $...$ as math)
            tag = literal_text(name).replace("$", r"\$") + ": " if name else ""
            if order in r["curves"]:
                ratio = (r.get("ratio") or {}).get(_range_key(r, limit))
                label = f"{tag}LRP ({order})" + (f", AUC ratio {ratio:.2f}" if ratio is not None else "")
                ax.plot(steps[keep], np.asarray(r["curves"][order]["accuracy"])[keep], "o-", ms=3,
                        color=colors[(2 * i) % len(colors)], label=label)
            if "random" in r["curves"] and not any(
                    len(d) == len(r["curves"]["random"]["accuracy"]) and np.allclose(d, r["curves"]["random"]["accuracy"])
                    for d in drawn_random):
                rnd = r["curves"]["random"]
                drawn_random.append(np.asarray(rnd["accuracy"]))
                mean, std = np.asarray(rnd["accuracy"])[keep], np.asarray(rnd["accuracy_std"])[keep]
                color = colors[(2 * i + 1) % len(colors)]
                ax.plot(steps[keep], mean, "s--", ms=3, color=color,
                        label=f"{tag}random (mean of {rnd['repeats']})")
                ax.fill_between(steps[keep], mean - std, mean + std, color=color, alpha=0.2)
        ax.set_xlim(0, limit)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"bins set to the baseline ({series[0][1]['config']['baseline']}), % of each input")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(f"0-{limit:g} %")
    if title:
        fig.suptitle(literal_text(title), parse_math=False)
    fig.tight_layout()
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _range_key(result: dict, limit: float) -> str:
    for key, (lo, hi) in result.get("auc_ranges", {}).items():
        if lo == 0 and abs(hi - limit) < 1e-9:
            return key
    return "all"
