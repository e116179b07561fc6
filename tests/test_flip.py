"""Pixel-flipping: steps, orders, baselines, batching, resume, DATA sources and bad input,
on small ONNX models built with onnx.helper and run through real onnxruntime sessions."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _data_fixtures import write_audiomnist
from _flip_fixtures import band_model, one_bin_model, tiny_cnn

from lrp_onnx.lrp_graph.errors import InputError
from lrp_onnx.runtime import Explainer
from lrp_onnx.cli.main import main
from lrp_onnx.runtime.inputs import ArrayData, open_data, write_manifest
from lrp_onnx.runtime.flip_curves import auc
from lrp_onnx.runtime.flip import (
    FlipConfig,
    baseline_values,
    flip_arrays,
    flip_order,
    parse_steps,
    partial_path,
    run_flip,
    step_counts,
)

HOT = (0, 3, 5)


@pytest.fixture(scope="module")
def one_bin(tmp_path_factory):
    path = tmp_path_factory.mktemp("one_bin") / "one_bin.onnx"
    one_bin_model(path, hot=HOT)
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn")
    tiny_cnn(folder / "cnn.onnx")
    ex = Explainer(folder / "cnn.onnx")
    x = np.random.default_rng(0).standard_normal((30, 1, 16, 16)).astype(np.float32)
    y = ex.predict(x).argmax(axis=1)
    np.savez(folder / "data.npz", x=x, y=y)
    return folder / "cnn.onnx", folder / "data.npz", ex, x, y


# --------------------------------------------------------------------------- steps


def test_default_steps_are_the_studys_figures_3_and_4():
    steps = parse_steps("0:1:0.1,1:10:1")
    assert np.allclose(steps, list(np.arange(11) / 10) + list(range(2, 11)))
    assert np.allclose(parse_steps("0, 0.5%, 2,10"), [0, 0.5, 2, 10])
    assert np.allclose(parse_steps("0:0.25:0.1"), [0, 0.1, 0.2, 0.25])  # stop always included
    assert step_counts(np.array([0, 0.1, 0.5, 100]), 51529).tolist() == [0, 52, 258, 51529]


@pytest.mark.parametrize("spec, message", [
    ("-1,2", "negative"),
    ("0,101", "above 100"),
    ("0,5,3", "must increase"),
    ("0,1,1", "must increase"),
    ("0:10:0", "positive STEP"),
    ("10:0:1", "backwards"),
    ("a,b", "cannot read"),
    ("", "empty"),
])
def test_bad_steps_are_rejected(spec, message):
    with pytest.raises(InputError, match=message):
        parse_steps(spec)


# --------------------------------------------------------------------------- orders


def test_the_one_bin_the_output_depends_on_is_ranked_first(one_bin):
    ex = Explainer(one_bin, composite="epsilon")
    x = np.random.default_rng(1).uniform(0.5, 1.0, (12, 1, 8, 8)).astype(np.float32)
    y = ex.predict(x).argmax(axis=1)
    assert (y == 1).all()
    relevance = ex.explain(x, target=y).relevance
    hot = np.ravel_multi_index(HOT, (1, 8, 8))
    assert (flip_order("morf", relevance, 3)[:, 0] == hot).all()
    assert (flip_order("lerf", relevance, 64)[:, -1] == hot).all()
    # Flipping that single bin (1 of 64 bins = 1.5625 %) breaks every decision; random orders hardly do.
    result = flip_arrays(ex, x, y, FlipConfig(steps=[0, 1.5625, 50], random_repeats=4))
    assert result["bins_flipped"] == [0, 1, 32]
    assert result["curves"]["morf"]["accuracy"] == [1.0, 0.0, 0.0]
    assert result["curves"]["random"]["accuracy"][1] > 0.9
    assert result["ratio"]["all"] < 0.5


def test_rank_by_another_models_relevance(one_bin, tmp_path, capsys):
    other = tmp_path / "other.onnx"
    one_bin_model(other, hot=(0, 6, 1))
    x = np.random.default_rng(2).uniform(0.5, 1.0, (8, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.ones(8, np.int64))
    args = ["flip", str(other), str(tmp_path / "d.npz"), "--steps", "0,1.5625", "--random-repeats", "0", "--json",
            "--no-progress"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["curves"]["morf"]["accuracy"] == [1.0, 0.0]  # its own hot bin
    assert main(args + ["--rank-by", str(one_bin)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["curves"]["morf"]["accuracy"] == [1.0, 1.0]  # the first model's hot bin does not matter to it
    assert result["ranked_by"] == str(one_bin)


def test_random_orders_are_seeded_per_sample_and_differ_between_seeds():
    rng = lambda seed: (lambda n: np.random.default_rng([seed, n]))  # noqa: E731
    a = flip_order("random", None, 10, rng_for=rng(0), shape=(3, 1, 8, 8))
    b = flip_order("random", None, 10, rng_for=rng(0), shape=(3, 1, 8, 8))
    c = flip_order("random", None, 10, rng_for=rng(1), shape=(3, 1, 8, 8))
    assert (a == b).all() and not (a == c).all()
    assert all(len(set(row)) == 10 for row in a)


def test_baselines():
    x = np.arange(2 * 1 * 3 * 4, dtype=np.float32).reshape(2, 1, 3, 4)
    assert (baseline_values(x, "zero") == 0).all()
    assert np.allclose(baseline_values(x, "mean")[1], x[1].mean())
    moore = baseline_values(x, "moore")
    assert moore[0, 0, 0, 0] == pytest.approx((1 + 4 + 5) / 3)
    noise = baseline_values(x, "noise", lambda n: np.random.default_rng(n))
    assert noise.shape == x.shape and abs(noise[1].mean() - x[1].mean()) < 3 * x[1].std()
    assert (noise == baseline_values(x, "noise", lambda n: np.random.default_rng(n))).all()


def test_auc_is_the_mean_height_over_the_range():
    steps = [0, 1, 2, 10]
    assert auc(steps, [1, 1, 1, 1]) == pytest.approx(1.0)
    assert auc(steps, [1, 0, 0, 0], 0, 1) == pytest.approx(0.5)
    assert auc(steps, [1, 0, 0, 0], 0, 10) == pytest.approx(0.05)


# --------------------------------------------------------------------------- engine


@pytest.mark.parametrize("baseline", ["zero", "moore"])
def test_batching_does_not_change_the_results(cnn, baseline):
    _, _, ex, x, y = cnn
    steps = [0, 1, 5, 20]
    one = flip_arrays(ex, x, y, FlipConfig(steps=steps, baseline=baseline, batch_size=30))
    many = flip_arrays(ex, x, y, FlipConfig(steps=steps, baseline=baseline, batch_size=7))
    for curve in ("morf", "random"):
        assert np.allclose(one["curves"][curve]["accuracy"], many["curves"][curve]["accuracy"])
        assert np.allclose(one["curves"][curve]["target_logit"], many["curves"][curve]["target_logit"], atol=1e-5)
    # the unperturbed point is the model's own accuracy on the labels
    assert one["curves"]["morf"]["accuracy"][0] == pytest.approx((ex.predict(x).argmax(1) == y).mean())


def test_matches_a_direct_per_sample_computation(cnn):
    _, _, ex, x, y = cnn
    result = flip_arrays(ex, x, y, FlipConfig(steps=[0, 2, 10], random_repeats=0))
    relevance = ex.explain(x, target=y).relevance.reshape(len(x), -1)
    for s, k in enumerate(result["bins_flipped"]):
        flipped = x.reshape(len(x), -1).copy()
        for n in range(len(x)):
            flipped[n, np.argsort(-relevance[n], kind="stable")[:k]] = 0.0
        logits = ex.predict(flipped.reshape(x.shape))
        assert result["curves"]["morf"]["accuracy"][s] == pytest.approx((logits.argmax(1) == y).mean())
        assert result["curves"]["morf"]["target_logit"][s] == pytest.approx(logits[np.arange(len(y)), y].mean(),
                                                                           abs=1e-5)


class Interrupting(ArrayData):
    """Data that stops (like Ctrl-C) after ``after`` batches."""

    def __init__(self, x, y, after):
        super().__init__(x, y)
        self.after = after

    def batches(self, batch_size, start=0):
        for i, item in enumerate(super().batches(batch_size, start)):
            if i == self.after:
                raise KeyboardInterrupt
            yield item


def test_resume_after_an_interruption_gives_the_uninterrupted_result(cnn, tmp_path):
    _, _, ex, x, y = cnn
    config = FlipConfig(steps=[0, 1, 5], batch_size=8)
    out = tmp_path / "flip.json"
    with pytest.raises(KeyboardInterrupt):
        run_flip(ex, Interrupting(x, y, after=2), config, results_path=out, progress=False)
    assert not out.exists()
    state = json.loads(partial_path(out).read_text())
    assert state["n"] == 16
    # (the batch size may change: results do not depend on it)
    resumed = run_flip(ex, ArrayData(x, y), FlipConfig(steps=[0, 1, 5], batch_size=5), results_path=out,
                       resume=True, progress=False)
    assert not partial_path(out).exists() and json.loads(out.read_text())["samples"] == 30
    fresh = flip_arrays(ex, x, y, config)
    assert resumed["curves"]["morf"]["accuracy"] == fresh["curves"]["morf"]["accuracy"]
    assert resumed["curves"]["random"]["accuracy"] == fresh["curves"]["random"]["accuracy"]
    # other settings than the interrupted run's are refused
    with pytest.raises(KeyboardInterrupt):
        run_flip(ex, Interrupting(x, y, after=1), config, results_path=out, progress=False)
    with pytest.raises(InputError, match="another model, composite, DATA or settings"):
        run_flip(ex, ArrayData(x, y), FlipConfig(steps=[0, 2], batch_size=8), results_path=out, resume=True,
                 progress=False)


# --------------------------------------------------------------------------- CLI


def test_flip_command_writes_results_and_plot(cnn, tmp_path, capsys):
    model, data, *_ = cnn
    out, plot = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["flip", str(model), str(data), "--steps", "0:2:1", "--baseline", "mean", "--random-repeats", "2",
                 "-o", str(out), "--plot", str(plot), "--no-progress"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["samples"] == 30 and result["config"]["baseline"] == "mean"
    assert len(result["curves"]["random"]["per_seed_accuracy"]) == 2
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "AUC" in capsys.readouterr().out
    # --resume of a finished run does not redo it
    assert main(["flip", str(model), str(data), "--steps", "0:2:1", "--baseline", "mean", "--random-repeats", "2",
                 "-o", str(out), "--resume", "--no-progress"]) == 0


def test_flip_reads_corpus_folders_and_manifests(tmp_path):
    model = tmp_path / "band.onnx"
    band_model(model)
    corpus = write_audiomnist(tmp_path / "corpus", {1: "male", 2: "female"}, digits=range(2), reps=range(2))
    ex = Explainer(model)
    folder = open_data(corpus, ex)
    assert len(folder) == 8 and folder.labels.tolist() == [0] * 4 + [1] * 4
    manifest = tmp_path / "list.csv"
    write_manifest(manifest, folder.paths[::2], ["male", "male", "female", "female"])
    listed = open_data(manifest, ex)
    assert listed.labels.tolist() == [0, 0, 1, 1]
    x = next(listed.batches(4))[1]
    assert x.shape == (4, 1, 227, 227) and np.allclose(x, np.stack([folder.inputs(i, i + 1)[0] for i in (0, 2, 4, 6)]))
    assert main(["flip", str(model), str(manifest), "--steps", "0,1", "--no-progress"]) == 0


# --------------------------------------------------------------------------- bad input


def _bad_inputs(tmp_path, cnn_model):
    model = tmp_path / "band.onnx"
    band_model(model)
    ex = Explainer(cnn_model)
    x = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "unknown.npz", x=x, y=np.array([0, 1, 2, 1]))
    np.savez(tmp_path / "names.npz", x=x, y=np.array([0, 1, 0, 1]), labels=np.array(["cat", "dog"]))
    np.savez(tmp_path / "shape.npz", x=x[:, :, :8], y=np.array([0, 1, 0, 1]))
    np.savez(tmp_path / "empty.npz", x=x[:0], y=np.zeros(0, np.int64))
    (tmp_path / "empty").mkdir()
    corpus = write_audiomnist(tmp_path / "corpus", {1: "male", 2: "female"}, digits=range(1), reps=range(1))
    (tmp_path / "labels.csv").write_text(f"path,label\n{corpus / '01' / '0_01_0.wav'},child\n")
    (tmp_path / "nolines.csv").write_text("path,label\n")
    del ex
    return model


@pytest.mark.parametrize("data, extra, message", [
    ("unknown.npz", [], "label 2 is not a class of the model"),
    ("names.npz", [], "'cat', 'dog' are not classes of the model"),
    ("shape.npz", [], r"inputs have shape \(1, 8, 16\) per sample; the model expects \(1, 16, 16\)"),
    ("empty.npz", [], "holds no samples"),
    ("empty", [], "empty"),
    ("missing.npz", [], "no such DATA"),
    ("unknown.npz", ["--steps", "0,-1"], "negative"),
    ("unknown.npz", ["--steps", "0,200"], "above 100"),
    ("unknown.npz", ["--steps", "5,1"], "must increase"),
    ("unknown.npz", ["--random-repeats", "-1"], "random-repeats"),
    ("unknown.npz", ["--resume"], "--resume needs -o"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(cnn, tmp_path, capsys, data, extra, message):
    _bad_inputs(tmp_path, cnn[0])
    out, plot = tmp_path / "out" / "r.json", tmp_path / "out" / "r.png"
    out.parent.mkdir()
    args = ["flip", str(cnn[0]), str(tmp_path / data), "-o", str(out), "--plot", str(plot), *extra]
    if "--resume" in extra:
        args = ["flip", str(cnn[0]), str(tmp_path / data), *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lrp-onnx: error: ")
    import re

    assert re.search(message, err[0]), err[0]
    assert list(out.parent.iterdir()) == []


def test_recordings_with_labels_the_model_does_not_know(tmp_path, capsys):
    model = _bad_inputs(tmp_path, tiny_cnn(tmp_path / "cnn.onnx") and tmp_path / "cnn.onnx")
    assert main(["flip", str(model), str(tmp_path / "labels.csv"), "-o", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label 'child'" in err[0] and "male, female" in err[0]
    assert main(["flip", str(model), str(tmp_path / "nolines.csv")]) == 2
    assert "no rows" in capsys.readouterr().err
    # recordings need a model that knows its features
    assert main(["flip", str(tmp_path / "cnn.onnx"), str(tmp_path / "corpus")]) == 2
    assert "feature metadata" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
