"""A model whose time axis is dynamic explains a whole recording in one pass, not a window of it.

The model is built with onnx.helper: log-mel input (N, 1, 64, T) with T symbolic -> Conv -> Relu ->
GlobalAveragePool -> Gemm, with the feature metadata of a 2 s window (200 frames). The recording
(models/examples, 4 s at 16 kHz) is longer than that window.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
from lrp_onnx.audio.features import LogMelSpec
from lrp_onnx.lrp_graph.errors import InputError
from lrp_onnx.runtime.explainer import Explainer
from lrp_onnx.runtime.metadata import metadata_from_values, write_metadata
from lrp_onnx.runtime.recordings import (
    MAX_WHOLE_SECONDS,
    decide,
    resolve_policy,
    time_is_dynamic,
    whole_recording_spec,
)
from onnx import helper

EXAMPLES = Path(__file__).resolve().parents[1] / "models" / "examples"
RECORDING = EXAMPLES / "female_librispeech_198.flac"
SPEC = LogMelSpec()  # 2 s at 16 kHz, 160-sample hop, 200 frames


def log_mel_model(build_model, time="T"):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "G"], ["y"], name="fc", transB=1)]
    model = build_model(nodes, {"x": ["N", 1, 64, time]}, {"y": ["N", 2]},
                        {"W": rng.standard_normal((4, 1, 3, 3)), "B": 0.1 * rng.standard_normal(4),
                         "G": rng.standard_normal((2, 4))})
    write_metadata(model, metadata_from_values(labels=["a", "b"], task="gender", features=SPEC))
    return model


@pytest.fixture(scope="module")
def recording():
    wave, sr = sf.read(str(RECORDING), dtype="float32")
    assert sr == SPEC.sample_rate and len(wave) / sr > SPEC.window_seconds  # longer than the window
    return wave, sr


def whole_frames(wave) -> int:
    """The frame count of the whole recording: one frame every hop, as the 2 s window has 200."""
    return int(np.ceil(len(wave) / SPEC.hop_length))


def test_dynamic_time_is_detected(build_model):
    assert time_is_dynamic((1, 64, None), SPEC)
    assert not time_is_dynamic((1, 64, 200), SPEC)
    assert not time_is_dynamic((1, 40, None), SPEC)  # other bands: not this spec's features
    assert Explainer(log_mel_model(build_model), cache=False).input_shape == (1, 64, None)


def test_cli_explains_the_whole_recording_in_one_pass(cli, tmp_path, build_model, recording):
    wave, sr = recording
    path = tmp_path / "dyn.onnx"
    onnx.save(log_mel_model(build_model), str(path))
    res = cli("explain", path, RECORDING, "-o", tmp_path / "r.npy", "--plot", tmp_path / "h.png", "--json")
    assert res.rc == 0, res.err
    relevance = np.load(tmp_path / "r.npy")
    frames = whole_frames(wave)
    assert frames == 400 > SPEC.frames
    assert relevance.shape == (1, 1, 64, frames)  # one pass over the whole recording
    rows = [json.loads(line) for line in res.out.splitlines()]
    assert len(rows) == 1 and (rows[0]["start_s"], rows[0]["end_s"]) == (0.0, pytest.approx(len(wave) / sr))
    # the score is the model's on the whole recording's features (computed here independently)
    whole = LogMelSpec(length=len(wave), frames=frames).compute(wave, sr)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = session.run(["y"], {"x": whole[None]})[0][0]
    assert rows[0]["target_logit"] == pytest.approx(float(y.max()), rel=1e-4)
    assert rows[0]["relevance_sum"] == pytest.approx(float(relevance.sum()), rel=1e-4)
    assert (tmp_path / "h.png").stat().st_size > 0


def test_decide_uses_the_whole_recording(build_model, recording):
    wave, sr = recording
    decision = decide(Explainer(log_mel_model(build_model), cache=False), wave, sr)
    assert decision.policy == "whole" and len(decision.segments) == 1
    timeline = decision.timeline()
    assert timeline.relevance.shape == (64, whole_frames(wave))
    assert timeline.times[0] == 0.0 and timeline.times[-1] == pytest.approx(len(wave) / sr, abs=0.011)


def test_windows_stay_available_and_fixed_models_refuse_whole(cli, tmp_path, build_model):
    path = tmp_path / "dyn.onnx"
    onnx.save(log_mel_model(build_model), str(path))
    res = cli("explain", path, RECORDING, "--segments", "speech", "--json")
    assert res.rc == 0, res.err
    assert len(res.out.splitlines()) == 3  # two 2 s speech windows and the recording's decision

    fixed = tmp_path / "fixed.onnx"
    onnx.save(log_mel_model(build_model, time=200), str(fixed))
    res = cli("explain", fixed, RECORDING, "--segments", "whole")
    assert res.rc == 2 and "dynamic" in res.err and res.err.strip().count("\n") == 0
    res = cli("explain", fixed, RECORDING, "-o", tmp_path / "r.npy")  # a fixed window: speech windows, as before
    assert res.rc == 0, res.err
    assert np.load(tmp_path / "r.npy").shape[-1] == SPEC.frames


def test_short_recording_keeps_the_window(recording):
    wave, sr = recording
    short = wave[: sr // 2]
    assert whole_recording_spec(SPEC, short, sr) is SPEC  # padded into the nominal window, as training saw it


def test_resolve_policy_is_the_one_place_the_policy_is_chosen():
    dynamic, fixed = (1, 64, None), (1, 64, 200)
    assert MAX_WHOLE_SECONDS == 60.0
    assert resolve_policy(dynamic, SPEC, None, 30.0) == ("whole", None)
    assert resolve_policy(fixed, SPEC, None, 30.0) == ("speech", None)
    policy, note = resolve_policy(dynamic, SPEC, None, 61.0)  # too long for one pass: its speech windows
    assert policy == "speech" and "longer than the 60 s" in note
    assert resolve_policy(dynamic, SPEC, None, 5.0, max_whole_s=2.0)[0] == "speech"
    assert resolve_policy(fixed, SPEC, "crop", 5.0) == ("crop", None)
    with pytest.raises(InputError, match="longer than the 60 s"):
        resolve_policy(dynamic, SPEC, "whole", 61.0)
    with pytest.raises(InputError, match=r"time axis is dynamic; this model's input is \(N, 1, 64, 200\)"):
        resolve_policy(fixed, SPEC, "whole", 5.0)


def test_decide_falls_back_to_speech_windows_above_the_limit(build_model, recording):
    wave, sr = recording
    decision = decide(Explainer(log_mel_model(build_model), cache=False), wave, sr, max_whole_s=2.0)
    assert decision.policy == "speech" and len(decision.segments) == 2
    assert all(s.features.shape[-1] == SPEC.frames for s in decision.segments)
    with pytest.raises(InputError, match="longer than the 2 s"):
        decide(Explainer(log_mel_model(build_model), cache=False), wave, sr, policy="whole", max_whole_s=2.0)


def test_time_axis_that_is_not_really_dynamic_is_a_one_line_error(cli, tmp_path, build_model):
    """T declared symbolic but reshaped to a constant 64 x 200: the whole recording (400 frames) gives two
    rows for one sample. A one-line error, and nothing written (-o)."""
    g = np.random.default_rng(0)
    nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("Gemm", ["f", "G"], ["y"], transB=1)]
    model = build_model(nodes, {"x": ["N", 1, 64, "T"]}, {"y": ["N", 2]},
                        {"s": np.array([-1, 64 * 200]), "G": 0.01 * g.standard_normal((2, 64 * 200))})
    write_metadata(model, metadata_from_values(labels=["a", "b"], task="gender", features=SPEC))
    path = tmp_path / "fake.onnx"
    onnx.save(model, str(path))
    res = cli("explain", path, RECORDING, "-o", tmp_path / "r.npy", "--json")
    assert res.rc == 2 and "first axis is not the batch axis" in res.err and "Traceback" not in res.err
    assert not (tmp_path / "r.npy").exists()
    res = cli("explain", path, RECORDING, "--segments", "speech", "-o", tmp_path / "r.npy")
    assert res.rc == 0, res.err


def test_service_explains_the_whole_recording_by_default(build_model, recording):
    """Over real HTTP: with ``segments`` omitted the service resolves the policy as the CLI does (whole for a
    dynamic time axis): one window from 0 s to the recording's end, relevance over all of its frames."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    from _server_fixtures import running_server
    from lrp_onnx.service.app import create_app

    wave, sr = recording
    model = log_mel_model(build_model)
    fixed = Explainer(log_mel_model(build_model, time=200), composite="epsilon", cache=False)
    app = create_app({"dyn": Explainer(model, composite="epsilon", cache=False), "fixed": fixed}, threads=1)
    with running_server(app) as url:
        def post(name, **params):
            return httpx.post(f"{url}/v1/models/{name}/explain", params=params, content=RECORDING.read_bytes(),
                              headers={"content-type": "audio/flac"}, timeout=120)

        r = post("dyn", heatmap="true", audible="true")
        assert r.status_code == 200, r.text
        body, frames = r.json(), whole_frames(wave)
        rec = body["recording"]
        assert rec["segments"] == "whole" and "whole recording in one pass" in rec["method"]
        assert [(w["start_s"], w["end_s"]) for w in rec["windows"]] == [(0.0, pytest.approx(len(wave) / sr))]
        assert body["relevance_shape"] == [1, 1, 64, frames] and frames == 400
        relevance = np.array(body["relevance"])[0, 0]
        assert np.count_nonzero(np.abs(relevance).sum(axis=0)) == frames  # relevance over every frame
        whole = LogMelSpec(length=len(wave), frames=frames).compute(wave, sr)  # independently, as above
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        y = session.run(["y"], {"x": whole[None]})[0][0]
        np.testing.assert_allclose(rec["logits"], y, rtol=1e-4, atol=1e-5)
        assert body["samples"][0]["relevance_sum"] == pytest.approx(float(relevance.sum()), rel=1e-4)
        assert len(body["heatmaps_png"]) == 1 and body["audible_wav"]
        assert "explained whole in one pass (400 frames)" in body["note"]

        r = post("dyn", segments="speech", relevance="none")  # the windows stay available
        assert r.status_code == 200 and len(r.json()["recording"]["windows"]) == 2
        r = post("fixed", relevance="none")  # a fixed window: speech windows, as before
        assert r.status_code == 200 and r.json()["recording"]["segments"] == "speech"
        r = post("fixed", segments="whole")
        assert r.status_code == 422 and "dynamic" in r.json()["error"] and "segments=speech" in r.json()["error"]


def test_split_windows_plot_ends_at_the_recording(cli, tmp_path, build_model, recording, monkeypatch):
    """--segments split: the last window reaches past the recording's end (padding); its heatmap is cut
    at the recording's duration (the plotted x-range, read back from the figure drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    from lrp_onnx.runtime import plots

    wave, sr = recording
    short = tmp_path / "short.wav"
    sf.write(str(short), wave[: int(3.3 * sr)], sr)
    path = tmp_path / "fixed.onnx"
    onnx.save(log_mel_model(build_model, time=200), str(path))
    drawn = []
    real = plots.heatmap_figure

    def spy(plt, relevance, background=None, axes=None, *args, **kwargs):
        fig = real(plt, relevance, background, axes, *args, **kwargs)
        drawn.append((relevance.shape, axes, [ax.get_xlim() for ax in fig.axes if ax.get_xlabel() == "time (s)"]))
        return fig

    monkeypatch.setattr(plots, "heatmap_figure", spy)
    res = cli("explain", path, short, "--segments", "split", "--plot", tmp_path / "h.png", "--plot-index", "1",
              "--json")
    assert res.rc == 0, res.err
    rows = [json.loads(line) for line in res.out.splitlines()]
    assert [(r["start_s"], r["end_s"]) for r in rows] == [(0.0, 2.0), (2.0, pytest.approx(3.3))]
    ((shape, axes, xlims),) = drawn
    hop = SPEC.hop_length / SPEC.sample_rate
    assert axes.cols[0] == pytest.approx(2.0) and 3.3 - hop <= axes.cols[-1] <= 3.3
    assert shape[-1] == len(axes.cols) < SPEC.frames  # the padding's columns cut off
    assert xlims and all(hi == pytest.approx(axes.cols[-1]) and hi <= 3.3 for _, hi in xlims)
