"""Real inputs for the foreign models: rendered text for the OCR models, wake-word features computed from
the example LibriSpeech recordings with openwakeword's own feature models, scikit-learn's bundled data sets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

EXAMPLES = Path(__file__).resolve().parents[2] / "models" / "examples"
WORDS = ("Relevance", "propagation", "ONNX model", "explains", "the answer", "layer wise")


def text_image(text: str, height: int, width: int, size: int = 28) -> np.ndarray:
    """Black ``text`` on white, (height, width, 3) uint8, ``size`` pixels high, drawn centred by matplotlib
    (its DejaVu Sans font) on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(figure)
    figure.text(0.5, 0.5, text, ha="center", va="center", color="black", family="DejaVu Sans",
                fontsize=size * 72 / dpi)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def ocr_direction_batch(rotate: bool = False) -> np.ndarray:
    """Text lines as PaddleOCR's direction classifier reads them: 3x48x192, ``(x / 255 - 0.5) / 0.5``."""
    lines = [text_image(w, 48, 192) for w in WORDS[:4]]
    if rotate:
        lines = [line[::-1, ::-1] for line in lines]
    x = np.stack(lines).astype(np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()


def ocr_line_batch() -> np.ndarray:
    """Text lines as PaddleOCR's recogniser reads them: 3x48x320, ``(x / 255 - 0.5) / 0.5``."""
    x = np.stack([text_image(w, 48, 320, size=32) for w in WORDS[:4]]).astype(np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()


def ocr_detection_batch() -> np.ndarray:
    """Two text blocks as PaddleOCR's detector reads them: 3x160x320, ImageNet-normalised."""
    blocks = [np.concatenate([text_image(w, 40, 320, size=26) for w in words])
              for words in (WORDS[:4], WORDS[2:])]
    return _imagenet(np.stack(blocks))


def _imagenet(images: np.ndarray) -> np.ndarray:
    x = images.astype(np.float32) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    return ((x - mean) / std).transpose(0, 3, 1, 2).copy()


def page_batch() -> np.ndarray:
    """Pages of text lines, upright and turned by 90, 180 and 270 degrees: 3x224x224, ImageNet-normalised."""
    page = np.concatenate([text_image(w, 32, 224, size=22) for w in WORDS] + [np.full((32, 224, 3), 255, np.uint8)])
    return _imagenet(np.stack([np.rot90(page, k) for k in range(4)]))


def _audio_16k(path: Path) -> np.ndarray:
    import soundfile as sf
    from lrp_onnx.audio.io import resample

    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    return resample(audio, rate, 16000) if rate != 16000 else audio


def vad_chunks(samples: int = 576, count: int = 24) -> np.ndarray:
    """Consecutive ``samples``-long chunks of the example LibriSpeech recordings (16 kHz), every other one."""
    chunks = [_audio_16k(p) for p in sorted(EXAMPLES.glob("*_librispeech_*.flac"))]
    x = np.concatenate([a[: len(a) // samples * samples].reshape(-1, samples) for a in chunks])
    return x[:: max(1, len(x) // count)][:count].astype(np.float32)


def wakeword_features(melspectrogram: Path, embedding: Path) -> tuple[np.ndarray, np.ndarray]:
    """openwakeword's pipeline on the example recordings: 16 kHz int16-scaled audio -> melspectrogram.onnx
    (``/ 10 + 2``, as openwakeword does) -> 76-frame windows every 8 frames -> embedding_model.onnx.
    Returns the embedding model's inputs (N, 76, 32, 1) and the embedding sequences (recordings, frames, 96)."""
    mel = ort.InferenceSession(str(melspectrogram), providers=["CPUExecutionProvider"])
    emb = ort.InferenceSession(str(embedding), providers=["CPUExecutionProvider"])
    windows, sequences = [], []
    for path in sorted(EXAMPLES.glob("*_librispeech_*.flac")):  # 4 s read speech (the WAVs are < 1 s)
        audio = _audio_16k(path) * 32767.0
        spec = mel.run(None, {mel.get_inputs()[0].name: audio[None]})[0].squeeze() / 10 + 2
        wins = np.stack([spec[i:i + 76] for i in range(0, len(spec) - 76 + 1, 8)])[..., None].astype(np.float32)
        windows.append(wins)
        sequences.append(emb.run(None, {emb.get_inputs()[0].name: wins})[0].reshape(len(wins), 96))
    frames = min(len(s) for s in sequences)
    return np.concatenate(windows), np.stack([s[:frames] for s in sequences])


def sequence_windows(sequences: np.ndarray, frames: int) -> np.ndarray:
    """Every run of ``frames`` consecutive embeddings of every recording: (N, frames, 96)."""
    out = [s[i:i + frames] for s in sequences for i in range(0, s.shape[0] - frames + 1, 4)]
    if not out:  # recordings shorter than the model's window: pad with the first embedding
        pad = lambda s: np.concatenate([np.repeat(s[:1], frames - len(s), 0), s])
        out = [pad(s) for s in sequences]
    return np.stack(out).astype(np.float32)
