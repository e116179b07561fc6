"""Whole-recording decisions over HTTP, with the shipped gender model on its real example
recordings (LibriSpeech excerpts, models/examples): a recording longer than the model's window
is decided from all of its speech windows (the mean of their logits; checked against the
Explainer on windows cut here), ``segments=crop`` keeps one window, a recording shorter than
the window is reported and drawn on its own time axis from 0 s, with the spectrogram in dB."""
from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
if importlib.util.find_spec("python_multipart") is None and importlib.util.find_spec("multipart") is None:
    pytest.skip("python-multipart is not installed", allow_module_level=True)
httpx = pytest.importorskip("httpx")

from _server_fixtures import running_server, spectrogram_model  # noqa: E402

import lrp_onnx  # noqa: E402
from lrp_onnx.audio.features import LogMelSpec  # noqa: E402
from lrp_onnx.audio.io import load_audio, resample  # noqa: E402
from lrp_onnx.audio.speech import decision_window_starts  # noqa: E402
from lrp_onnx.runtime import Explainer  # noqa: E402
from lrp_onnx.runtime.recording_plots import recording_figure  # noqa: E402
from lrp_onnx.runtime.recordings import RecordingDecision, decision_segments  # noqa: E402
from lrp_onnx.service.app import create_app  # noqa: E402

REPO = Path(lrp_onnx.__file__).resolve().parent
MODEL = REPO / "models" / "gender_alexnet.onnx"
EXAMPLES = REPO / "models" / "examples"
LONG = EXAMPLES / "male_librispeech_332.flac"   # 4 s of real read speech
SHORT = EXAMPLES / "female_slt_three.wav"        # 0.58 s

pytestmark = pytest.mark.skipif(not MODEL.is_file() or not LONG.is_file(), reason="shipped model or examples missing")


@pytest.fixture(scope="module")
def url():
    # max_batch=2: a 4 s recording's 4 windows run as two jobs of the micro-batcher
    app = create_app({"gender": str(MODEL), "tiny": Explainer(spectrogram_model(), composite="epsilon-plus")},
                     max_batch=2, threads=1, timeout_s=120)
    with running_server(app) as base:
        yield base


def post(url: str, path: Path, endpoint: str = "explain", model: str = "gender", **params) -> dict:
    kind = "audio/flac" if path.suffix == ".flac" else "audio/wav"
    r = httpx.post(f"{url}/v1/models/{model}/{endpoint}", params=params, content=path.read_bytes(),
                   headers={"content-type": kind}, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def test_long_real_recording_is_decided_from_all_speech_windows(url):
    body = post(url, LONG, relevance="json", heatmap="true")
    rec = body["recording"]
    assert rec["segments"] == "speech" and rec["duration_s"] == pytest.approx(4.0, abs=1e-3)
    assert len(rec["windows"]) > 1 and "mean of the logits" in rec["method"]

    # independently: the speech windows of the recording at the model's rate, explained by the Explainer
    ex = Explainer(MODEL, composite=body["composite"], threads=1)
    spec = ex.metadata.feature_spec()
    wave, sr = load_audio(LONG)
    at_rate = resample(wave, sr, spec.sample_rate)
    starts = decision_window_starts(at_rate, spec.sample_rate, spec.length)
    assert [w["start_s"] for w in rec["windows"]] == pytest.approx(starts / spec.sample_rate)
    assert [w["end_s"] for w in rec["windows"]] == pytest.approx((starts + spec.length) / spec.sample_rate)
    x = np.stack([spec.compute(at_rate[s : s + spec.length], spec.sample_rate, offset=0) for s in starts])
    logits = ex.predict(x)
    np.testing.assert_allclose([w["logits"] for w in rec["windows"]], logits, rtol=1e-4, atol=1e-4)
    decision = int(np.argmax(logits.mean(axis=0)))
    assert rec["prediction"] == decision and rec["label"] == ex.labels[decision]
    np.testing.assert_allclose(rec["logits"], logits.mean(axis=0), rtol=1e-4, atol=1e-4)
    assert rec["windows_agreeing"] == int((logits.argmax(axis=1) == decision).sum())
    assert [w["label"] for w in rec["windows"]] == [ex.labels[k] for k in logits.argmax(axis=1)]
    # every window explains the recording's decision, as the CLI does
    assert {s["target"] for s in body["samples"]} == {decision}
    expected = ex.explain(x, target=np.full(len(x), decision, dtype=np.int64)).relevance
    np.testing.assert_allclose(np.array(body["relevance"], np.float32), expected, rtol=1e-3, atol=1e-6)
    # one picture of the whole recording
    assert len(body["heatmaps_png"]) == 1 and base64.b64decode(body["heatmaps_png"][0])[:4] == b"\x89PNG"

    # predict gives the same decision without a relevance pass
    predicted = post(url, LONG, endpoint="predict")["recording"]
    assert predicted["prediction"] == decision and len(predicted["windows"]) == len(starts)


def test_crop_gives_one_window_and_split_every_window(url):
    rec = post(url, LONG, relevance="none", segments="crop")["recording"]
    assert len(rec["windows"]) == 1 and rec["segments"] == "crop" and "loudest" in rec["method"]
    w = rec["windows"][0]
    assert w["end_s"] - w["start_s"] == pytest.approx(1.0) and rec["prediction"] == w["prediction"]
    split = post(url, LONG, relevance="none", segments="split")
    assert len(split["recording"]["windows"]) == 4 and split["recording"]["prediction"] is None
    assert [s["start_s"] for s in split["samples"]] == [0.0, 1.0, 2.0, 3.0]


def test_short_recording_is_on_its_own_time_axis_from_zero(url):
    duration = load_audio(SHORT)[0].size / 16000
    assert 0.57 < duration < 0.59
    body = post(url, SHORT, relevance="none", heatmap="true", audible="true")
    sample, rec = body["samples"][0], body["recording"]
    # not the padded window's span (-0.21..0.79 s): the recording's own
    assert sample["start_s"] == 0.0 and sample["end_s"] == pytest.approx(duration, abs=1e-4)
    assert rec["duration_s"] == pytest.approx(duration, abs=1e-4) and body["note"] is None
    assert [(w["start_s"], w["end_s"]) for w in rec["windows"]] == [(0.0, sample["end_s"])]
    assert "zero-padded" in rec["method"] and len(body["heatmaps_png"]) == 1
    # the same on the tiny model (its own decision, the same windows)
    tiny = post(url, SHORT, model="tiny", relevance="none")
    assert tiny["samples"][0]["start_s"] == 0.0 and tiny["recording"]["windows"][0]["end_s"] == sample["end_s"]


def test_recording_figure_spans_zero_to_duration_with_a_db_scale():
    ex = Explainer(spectrogram_model(), composite="epsilon-plus", threads=1)
    wave, sr = load_audio(SHORT)
    from lrp_onnx.runtime.recordings import decide

    decision = decide(ex, wave, sr)
    fig = recording_figure(decision, ex.labels)
    spectrogram, relevance = fig.axes[0], fig.axes[1]
    assert relevance.get_xlim() == pytest.approx((0.0, decision.duration_s))
    left, right = spectrogram.images[0].get_extent()[:2]
    assert 0.0 <= left < 0.01 and decision.duration_s - 0.01 < right <= decision.duration_s
    labels = [ax.get_ylabel() for ax in fig.axes[2:]]
    assert any("dB" in label for label in labels)

    # log-mel energies (natural log) are drawn in dB: 10 log10(E) = ln(E) * 10 / ln(10)
    spec = LogMelSpec()
    long_wave = np.concatenate([wave, wave, wave, wave, wave, wave])
    at_rate, segments = decision_segments(long_wave, sr, spec, "speech")
    rng = np.random.default_rng(0)
    mel = RecordingDecision(spec, at_rate, "speech", segments, rng.standard_normal((len(segments), 2)), 0,
                            rng.standard_normal((len(segments), *spec.shape)).astype(np.float32))
    fig = recording_figure(mel, ["a", "b"])
    shown = np.asarray(fig.axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, mel.timeline().features * 10 / np.log(10), rtol=1e-6)
    assert any("dB" in ax.get_ylabel() for ax in fig.axes[2:])
    assert fig.axes[1].get_xlim() == pytest.approx((0.0, at_rate.size / spec.sample_rate))
