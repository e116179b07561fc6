"""Pictures and sound of an explanation: heatmap PNGs and the recording masked by positive
relevance (WAV), base64-encoded for a JSON answer. Text that comes from a model (its labels)
is drawn literally: never parsed as matplotlib math text or TeX."""
from __future__ import annotations

import base64
import io

import numpy as np

from ..lrp_graph.errors import LRPError
from .decoding import Parsed
from .errors import ApiError
from .served import ServedModel

#: longest label drawn in a heatmap's title
MAX_TITLE_LABEL_CHARS = 60


def literal_title(served: ServedModel, target: int) -> str:
    """The heatmap title for explaining class ``target``: characters a font cannot draw
    (control and format characters, lone surrogates) shown as "?", a long label cut short."""
    label = "".join(c if c.isprintable() else "?" for c in served.label(target))
    if len(label) > MAX_TITLE_LABEL_CHARS:
        label = label[:MAX_TITLE_LABEL_CHARS - 3] + "..."
    return f"{served.name}: explaining {label}"


def render_heatmap_png(relevance: np.ndarray, background: np.ndarray, axes=None, title: str | None = None) -> bytes:
    """Two panels: the input (e.g. the spectrogram) and the relevance over it; PNG bytes.
    ``title`` is drawn as plain text (``$`` and ``\\`` stay what they are)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..runtime.plots import Axes, as_image, draw_heatmap

    axes = axes or Axes()
    fig = Figure(figsize=(9.6, 3.8))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    extent = None
    if axes.rows is not None and axes.cols is not None:
        extent = [axes.cols[0], axes.cols[-1], axes.rows[0], axes.rows[-1]]
    shown = left.imshow(as_image(background), cmap="magma", origin="lower", aspect="auto", extent=extent,
                        interpolation="nearest")
    left.set_xlabel(axes.col_label)
    left.set_ylabel(axes.row_label)
    left.set_title("input")
    fig.colorbar(shown, ax=left, shrink=0.85)
    image = draw_heatmap(right, relevance, background, axes)
    right.set_title("relevance over input")
    fig.colorbar(image, ax=right, shrink=0.85, label="red: for, blue: against")
    if title:
        fig.suptitle(title, fontsize=10, usetex=False, parse_math=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    return buffer.getvalue()


def heatmaps(served: ServedModel, parsed: Parsed, logits: np.ndarray, targets: np.ndarray,
             relevance: np.ndarray) -> list[str]:
    """Base64 PNGs: for a recording decided as a whole (``segments=whole``, ``speech`` or ``crop``, or a
    single window) one picture over the whole recording from 0 s to its end (spectrogram in
    dB, relevance, the windows marked); else one per sample, recordings with time and
    frequency axes."""
    whole = parsed.kind == "audio" and (parsed.options.segments != "split" or len(parsed.segments) == 1)
    if whole and len(set(targets.tolist())) == 1:
        return [base64.b64encode(recording_heatmap_png(served, parsed, logits, targets, relevance)).decode("ascii")]
    from ..runtime.plots import Axes

    images = []
    for i in range(len(relevance)):
        axes = None
        if parsed.segments is not None and parsed.spec is not None:
            spec = parsed.spec
            axes = Axes(rows=spec.frequencies(), cols=parsed.segments[i].start_s + spec.times(),
                        row_label="frequency (Hz)", col_label="time (s)")
        try:
            png = render_heatmap_png(relevance[i], parsed.x[i], axes, literal_title(served, int(targets[i])))
        except ValueError as exc:  # e.g. samples of more than three axes
            raise ApiError(422, f"heatmap=true: {exc}") from None
        images.append(base64.b64encode(png).decode("ascii"))
    return images


def recording_heatmap_png(served: ServedModel, parsed: Parsed, logits, targets, relevance) -> bytes:
    """The whole recording's picture (:func:`lrp_onnx.runtime.recording_plots.recording_png`)."""
    from ..runtime.recording_plots import recording_png
    from ..runtime.recordings import assemble

    decision = assemble(parsed.spec, parsed.wave, parsed.sample_rate, parsed.options.segments,
                        parsed.segments, logits, int(targets[0]), relevance)
    title = f"{literal_title(served, decision.target)} (predicted {served.label(decision.prediction)})"
    return recording_png(decision, served.labels, title=title)


def audible_wav(parsed: Parsed, served: ServedModel, relevance: np.ndarray) -> str | None:
    """The recording masked by positive relevance (:mod:`lrp_onnx.runtime.audible`) as a
    base64 WAV; None for array input."""
    if parsed.kind != "audio":
        return None
    from types import SimpleNamespace

    import soundfile

    from ..runtime.audible import relevant_audio

    recording = SimpleNamespace(wave=parsed.wave, sample_rate=parsed.sample_rate, spec=parsed.spec,
                                segments=parsed.segments)
    try:
        out, sr = relevant_audio(recording, relevance)
        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(out, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")
    except LRPError:
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")
