"""The figures of ``lrp-onnx reproduce`` (numbered as in the study), written as PNGs into
OUT_DIR/figures. Each function returns ``{figure key: path relative to OUT_DIR, ...}``
plus what it showed (sample files, predictions)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime.augment import top_bins, top_count
from ..runtime.flip_curves import plot_curves
from ..runtime.io import atomic_write
from ..runtime.plots import Axes, _pyplot, save_heatmap


def _load(npz: Path, limit: int = 64):
    with np.load(npz, allow_pickle=False) as archive:
        n = min(limit, len(archive["y"]))
        return (archive["x"][:n].astype(np.float32), archive["y"][:n],
                [str(p) for p in archive["paths"][:n]] if "paths" in archive.files else [""] * n)


def _axes(explainer) -> Axes | None:
    spec = explainer.metadata.feature_spec()
    if spec is None:
        return None
    rows = "frequency (Hz)" if spec.kind == "audiomnist-spectrogram" else "mel band centre (Hz)"
    return Axes(rows=spec.frequencies(), cols=spec.times(), row_label=rows, col_label="time (s)")


def _first_correct(explanation, y, cls=None) -> int | None:
    for i in range(len(y)):
        if explanation.predictions[i] == y[i] and (cls is None or y[i] == cls):
            return i
    return None


def _figure(pipe, name: str) -> Path:
    return pipe.out / "figures" / name


def gender_heatmaps(pipe, model: Path, test_npz: Path, composite) -> dict:
    """Figures 1-2: LRP heatmaps of a correctly classified female and male recording,
    alone and over the spectrogram."""
    ex = pipe.explainer(model, composite)
    x, y, paths = _load(test_npz)
    e = ex.explain(x)  # the predicted class: for these samples the true one
    result = {"relevance_by_class": _band_profile(ex, e, y)}
    for label, key in (("female", "figure_1_2_female"), ("male", "figure_1_2_male")):
        i = _first_correct(e, y, ex.labels.index(label))
        if i is None:
            result[key] = None
            continue
        path = _figure(pipe, f"fig1-2-{label}.png")
        save_heatmap(path, e.relevance[i], background=x[i], axes=_axes(ex),
                     title=f"{label} ({Path(paths[i]).name}), LRP-0: red = for {label}, blue = against")
        result[key] = pipe.rel(path)
        result[f"{key}_sample"] = Path(paths[i]).name
        result[f"{key}_low_frequency_share"] = _low_share(e.relevance[i])
    return result


def _band_profile(ex, e, y, band_hz: float = 500.0) -> dict:
    """Per class, over the correctly classified inputs: the share of positive relevance
    below 1 kHz, and the ``band_hz`` wide band holding the largest share."""
    axes = _axes(ex)
    if axes is None or axes.rows is None:
        return {}
    freqs = axes.rows
    profile = {}
    for c, name in enumerate(ex.labels):
        keep = (e.predictions == y) & (y == c)
        if not keep.any():
            continue
        r = np.maximum(e.relevance[keep].sum(axis=1), 0).sum(axis=(0, 2))  # per frequency row
        total = r.sum() or 1.0
        bands = np.floor(freqs / band_hz).astype(int)
        shares = np.bincount(bands, weights=r) / total
        top = int(np.argmax(shares))
        profile[name] = {"inputs": int(keep.sum()), "below_1khz": float(r[freqs < 1000].sum() / total),
                         "top_band_hz": [top * band_hz, (top + 1) * band_hz], "top_band_share": float(shares[top])}
    return profile


def _low_share(relevance: np.ndarray, rows: int = 57) -> float:
    """Share of the positive relevance in the lowest ``rows`` rows (57 rows = 0-1 kHz)."""
    r = np.maximum(np.asarray(relevance).sum(axis=0), 0)
    total = r.sum()
    return float(r[:rows].sum() / total) if total > 0 else float("nan")


def flip_figures(pipe, flip: dict, tag: str) -> dict:
    """Figures 3 and 4: accuracy vs % of bins zeroed, LRP order vs random, 0-10 % and 0-1 %."""
    out = {}
    for key, limit in (("figure_3", 10.0), ("figure_4", 1.0)):
        path = _figure(pipe, f"fig{key[-1]}-{tag}-flip-0-{limit:g}.png")
        plot_curves(flip, path, panels=[limit], title=f"{tag}: accuracy vs bins set to 0 (0-{limit:g} %), "
                                                      f"{flip['samples']} test inputs")
        out[key] = pipe.rel(path)
    return out


def flipped_spectrogram(pipe, model: Path, test_npz: Path, composite, fraction: float) -> dict:
    """Figure 5: a spectrogram with its ``fraction`` most relevant bins set to zero."""
    ex = pipe.explainer(model, composite)
    x, y, paths = _load(test_npz, 16)
    e = ex.explain(x, target=y)
    i = _first_correct(e, y) or 0
    k = top_count(fraction, x[i].size)
    flipped = x[i].reshape(-1).copy()
    idx = top_bins(e.relevance[i:i + 1], k)[0]
    flipped[idx] = 0.0
    flipped = flipped.reshape(x[i].shape)
    after = ex.predict(flipped[None])[0]
    plt = _pyplot()
    axes = _axes(ex) or Axes()
    extent = [axes.cols[0], axes.cols[-1], axes.rows[0], axes.rows[-1]] if axes.rows is not None else None
    fig, axs = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, image, title in ((axs[0], x[i][0], f"original: predicted {ex.labels[int(e.predictions[i])]}"),
                             (axs[1], flipped[0], f"{fraction * 100:g} % most relevant bins ({k}) set to 0: "
                                                  f"predicted {ex.labels[int(np.argmax(after))]}")):
        shown = ax.imshow(image, origin="lower", aspect="auto", cmap="magma", extent=extent, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(axes.col_label)
        ax.set_ylabel(axes.row_label)
    fig.colorbar(shown, ax=list(axs), shrink=0.85, label="dB (0 = the spectrogram's maximum)")
    fig.suptitle(f"{Path(paths[i]).name}: true class {ex.labels[int(y[i])]}")
    path = _figure(pipe, "fig5-flipped-spectrogram.png")
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    rows = np.unravel_index(idx, x[i].shape)[-2]
    return {"figure_5": pipe.rel(path), "figure_5_sample": Path(paths[i]).name, "figure_5_bins": int(k),
            "figure_5_prediction_before": ex.labels[int(e.predictions[i])],
            "figure_5_prediction_after": ex.labels[int(np.argmax(after))],
            "figure_5_median_row_hz": float(np.median(rows) * (axes.rows[1] - axes.rows[0])) if axes.rows is not None
            else None}


def augmented_figure(pipe, flip: dict, flip_aug: dict, flip_control: dict, transfer_aug: dict,
                     transfer_control: dict) -> dict:
    """Figure 6: the model, the model trained further on LRP-augmented data and the control
    (trained as long on the same inputs unchanged), each flipped in the order of its own
    relevance; and 6b: the two further-trained models flipped at the original model's bins."""
    path = _figure(pipe, "fig6-augmented-flip.png")
    plot_curves([("AlexNet", flip), ("AlexNet augmented", flip_aug), ("AlexNet control", flip_control)], path,
                panels=[10.0, 1.0], title="accuracy vs bins set to 0, each model in the order of its own relevance")
    path_b = _figure(pipe, "fig6b-original-bins.png")
    plot_curves([("AlexNet", flip), ("augmented, AlexNet's bins", transfer_aug),
                 ("control, AlexNet's bins", transfer_control)], path_b, panels=[10.0, 1.0],
                title="accuracy vs bins set to 0, in the order of the original AlexNet's relevance")
    return {"figure_6": pipe.rel(path), "figure_6b": pipe.rel(path_b)}


def speaker_heatmaps(pipe, model: Path, test_npz: Path, composites: dict) -> dict:
    """Figures 7 (features), 8 (LRP-0), 9 (LRP-0 + epsilon), 11 (+ gamma) of one test input."""
    x, y, paths = _load(test_npz, 32)
    result = {}
    explanations = {key: pipe.explainer(model, c).explain(x) for key, c in composites.items()}
    first = explanations[next(iter(explanations))]
    i = _first_correct(first, y)
    i = 0 if i is None else i
    ex = pipe.explainer(model, "lrp0")
    axes = _axes(ex) or Axes()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    extent = [axes.cols[0], axes.cols[-1], axes.rows[0], axes.rows[-1]] if axes.rows is not None else None
    image = ax.imshow(x[i][0], origin="lower", aspect="auto", cmap="magma", extent=extent, interpolation="nearest")
    ax.set_xlabel(axes.col_label)
    ax.set_ylabel(axes.row_label)
    ax.set_title(f"log-mel features of {Path(paths[i]).name} (speaker {ex.labels[int(y[i])]})", fontsize=9)
    fig.colorbar(image, ax=ax, label="log energy (band mean removed)")
    path = _figure(pipe, "fig7-speaker-features.png")
    with atomic_write(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    result["figure_7"] = pipe.rel(path)
    result["figure_7_sample"] = Path(paths[i]).name
    numbers = {"lrp0": "8", "epsilon": "9", "epsilon-gamma": "11"}
    names = {"lrp0": "LRP-0", "epsilon": "LRP-0 + epsilon (0.5)", "epsilon-gamma": "LRP-0 + epsilon + gamma (5)"}
    for key, e in explanations.items():
        path = _figure(pipe, f"fig{numbers[key]}-speaker-{key}.png")
        save_heatmap(path, e.relevance[i], background=x[i], axes=axes,
                     title=f"{names[key]}: speaker {ex.labels[int(e.targets[i])]}")
        result[f"figure_{numbers[key]}"] = pipe.rel(path)
        r = e.relevance[i].sum(axis=0)
        result[f"figure_{numbers[key]}_positive_share"] = float(np.maximum(r, 0).sum() / (np.abs(r).sum() or 1))
        result[f"figure_{numbers[key]}_sign_changes"] = _sign_changes(r)
    return result


def _sign_changes(r: np.ndarray) -> float:
    """Fraction of neighbouring bins (along both axes) with opposite signs: a noise measure."""
    s = np.sign(r)
    pairs = np.concatenate([(s[1:, :] * s[:-1, :]).ravel(), (s[:, 1:] * s[:, :-1]).ravel()])
    return float((pairs < 0).mean())


def speaker_flip_figures(pipe, flips: dict) -> dict:
    """Figures 10 and 12: pixel-flipping of the ResNet with epsilon and with epsilon + gamma,
    each against random; plus all three composites in one plot."""
    result = {}
    for key, number in (("epsilon", "10"), ("epsilon-gamma", "12")):
        path = _figure(pipe, f"fig{number}-speaker-flip-{key}.png")
        plot_curves(flips[key], path, title=f"ResNet speaker ID, {flips[key]['composite']}: accuracy vs bins set to 0")
        result[f"figure_{number}"] = pipe.rel(path)
    path = _figure(pipe, "fig10-12-speaker-flip-all.png")
    plot_curves([(key, r) for key, r in flips.items()], path, title="ResNet speaker ID: the three composites")
    result["figure_10_12_all"] = pipe.rel(path)
    return result

