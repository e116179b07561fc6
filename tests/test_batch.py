"""``lrp-onnx batch`` on this machine: shards, items.csv, the summary, resume and bad input,
with small ONNX models run through real onnxruntime sessions and real WAV corpora.
(The same pipeline on a Ray cluster: test_batch_ray.py.)"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile
from _data_fixtures import harmonic, write_audiomnist
from _flip_fixtures import band_model, tiny_cnn
from lrp_onnx.runtime import Explainer
from lrp_onnx.runtime.batch import shard_path

ITEMS = 45
SHARD = 8  # 6 shards, the last one short


@pytest.fixture(scope="module")
def npz_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    tiny_cnn(folder / "cnn.onnx", classes=3)
    x = np.random.default_rng(0).standard_normal((ITEMS, 1, 16, 16)).astype(np.float32)
    y = np.arange(ITEMS) % 3
    np.savez(folder / "data.npz", x=x, y=y)
    return folder, x, y


def read_items(out) -> list[dict]:
    with open(out / "items.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_relevance(out) -> tuple[np.ndarray, np.ndarray]:
    """(index, relevance) of every shard, concatenated in file order."""
    index, relevance = [], []
    for path in sorted((out / "shards").glob("shard-*.npz")):
        with np.load(path) as shard:
            index.append(shard["index"])
            relevance.append(shard["relevance"])
    return np.concatenate(index), np.concatenate(relevance)


def test_every_item_is_explained_once_as_the_explainer_explains_it(cli, npz_case, tmp_path):
    folder, x, _ = npz_case
    out = tmp_path / "out"
    r = cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", SHARD, "--no-progress")
    assert r.rc == 0, r.err
    assert sorted(p.name for p in (out / "shards").iterdir()) == [f"shard-{k:06d}.npz" for k in range(6)]
    reference = Explainer(folder / "cnn.onnx").explain(x)
    index, relevance = read_relevance(out)
    assert index.tolist() == list(range(ITEMS))
    np.testing.assert_allclose(relevance, reference.relevance, rtol=1e-5, atol=1e-6)
    rows = read_items(out)
    assert list(rows[0]) == ["id", "prediction", "target", "score", "relevance_sum"]
    assert [row["id"] for row in rows] == [str(i) for i in range(ITEMS)]
    assert [int(row["prediction"]) for row in rows] == reference.predictions.tolist()
    assert [int(row["target"]) for row in rows] == reference.predictions.tolist()  # default: the prediction
    np.testing.assert_allclose([float(row["score"]) for row in rows], reference.target_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([float(row["relevance_sum"]) for row in rows], reference.relevance_sums,
                               rtol=1e-5, atol=1e-5)


def test_summary_holds_each_class_mean_relevance_map(cli, npz_case, tmp_path):
    folder, x, y = npz_case
    out = tmp_path / "out"
    r = cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", SHARD,
            "--target", "label", "--no-progress")
    assert r.rc == 0, r.err
    reference = Explainer(folder / "cnn.onnx").explain(x, y)
    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "summary.npz") as arrays:
        assert arrays["classes"].tolist() == [0, 1, 2]
        assert arrays["count"].tolist() == [15, 15, 15]
        for c in range(3):
            np.testing.assert_allclose(arrays["mean_relevance"][c], reference.relevance[y == c].mean(axis=0),
                                       rtol=1e-5, atol=1e-6)
        assert "frequency_relevance" not in arrays.files  # not an audio model
    assert summary["items"] == ITEMS
    assert [int(row["target"]) for row in read_items(out)] == y.tolist()
    for c, name in enumerate(["0", "1", "2"]):
        assert summary["classes"][name]["items"] == 15
        assert summary["classes"][name]["mean_relevance_sum"] == pytest.approx(
            reference.relevance_sums[y == c].mean(), rel=1e-5, abs=1e-6)


def test_two_workers_write_what_one_writes(cli, npz_case, tmp_path):
    folder, _, _ = npz_case
    for name, workers in (("one", 1), ("two", 2)):
        r = cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", tmp_path / name, "--shard-size", SHARD,
                "--workers", workers, "--threads", 1, "--no-progress")
        assert r.rc == 0, r.err
        assert f"{workers} worker(s) x 1 thread(s)" in r.out
    assert (tmp_path / "one" / "items.csv").read_text() == (tmp_path / "two" / "items.csv").read_text()
    np.testing.assert_array_equal(read_relevance(tmp_path / "one")[1], read_relevance(tmp_path / "two")[1])


def test_an_audio_corpus_gets_paths_as_ids_and_relevance_by_frequency_band(cli, tmp_path):
    band_model(tmp_path / "band.onnx")  # relies on the 12 lowest rows (male) and the 12 above (female)
    corpus = write_audiomnist(tmp_path / "corpus", {1: "male", 2: "female"}, digits=range(2), reps=range(2))
    out = tmp_path / "out"
    r = cli("batch", tmp_path / "band.onnx", corpus, "-o", out, "--shard-size", 3, "--target", "label",
            "--no-progress")
    assert r.rc == 0, r.err
    rows = read_items(out)
    assert [row["id"] for row in rows] == [f"{s:02d}/{d}_{s:02d}_{k}.wav" for s in (1, 2) for d in range(2)
                                           for k in range(2)]
    assert [row["target"] for row in rows] == ["0"] * 4 + ["1"] * 4  # the speakers' genders
    summary = json.loads((out / "summary.json").read_text())
    lowest_band = summary["bands_hz"][0]
    assert lowest_band[0] == 0 and len(summary["bands_hz"]) == 8
    with np.load(out / "summary.npz") as arrays:
        rows_relevance = arrays["frequency_relevance"]  # (classes, frequency rows)
        np.testing.assert_allclose(rows_relevance, arrays["mean_relevance"].sum(axis=(1, 3)), rtol=1e-5)
        assert np.abs(rows_relevance[0, 24:]).max() < 1e-6 * np.abs(rows_relevance[0]).max()
        assert len(arrays["frequencies_hz"]) == rows_relevance.shape[1]
    for name in ("male", "female"):  # rows 0..23 lie in the lowest band: all relevance is there
        bands = summary["classes"][name]["band_relevance"]
        assert bands[0] == pytest.approx(sum(bands)) and bands[0] != 0

    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\ncorpus/02/1_02_1.wav,female\ncorpus/01/0_01_0.wav,male\n")
    r = cli("batch", tmp_path / "band.onnx", manifest, "-o", tmp_path / "from_manifest", "--no-progress")
    assert r.rc == 0, r.err
    assert [row["id"] for row in read_items(tmp_path / "from_manifest")] == ["corpus/02/1_02_1.wav",
                                                                             "corpus/01/0_01_0.wav"]


def test_any_tree_of_audio_files_and_npy_inputs_are_unlabelled_items(cli, tmp_path):
    band_model(tmp_path / "band.onnx")
    for rel in ("a/one.wav", "a/b/two.flac", "three.wav"):
        (tmp_path / "tree" / rel).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(str(tmp_path / "tree" / rel), harmonic(150.0, 0.5, 8000), 8000)
    r = cli("batch", tmp_path / "band.onnx", tmp_path / "tree", "-o", tmp_path / "out", "--no-progress")
    assert r.rc == 0, r.err
    assert sorted(row["id"] for row in read_items(tmp_path / "out")) == ["a/b/two.flac", "a/one.wav", "three.wav"]
    r = cli("batch", tmp_path / "band.onnx", tmp_path / "tree", "-o", tmp_path / "out2", "--target", "label")
    assert r.rc == 2 and "has no labels" in r.err

    tiny_cnn(tmp_path / "cnn.onnx")
    x = np.random.default_rng(3).standard_normal((5, 1, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = cli("batch", tmp_path / "cnn.onnx", tmp_path / "x.npy", "-o", tmp_path / "out3", "--target", "female",
            "--no-progress")
    assert r.rc == 0, r.err
    assert [row["target"] for row in read_items(tmp_path / "out3")] == ["1"] * 5
    np.testing.assert_allclose(read_relevance(tmp_path / "out3")[1],
                               Explainer(tmp_path / "cnn.onnx").explain(x, 1).relevance, rtol=1e-5, atol=1e-6)


def test_resume_writes_only_the_missing_shards(cli, npz_case, tmp_path):
    folder, _, _ = npz_case
    out = tmp_path / "out"
    args = ("batch", folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", SHARD, "--no-progress")
    assert cli(*args).rc == 0
    complete = (out / "items.csv").read_text()
    # what an interrupted run leaves: some shards, a writer's temporary file, no items.csv
    for k in (2, 5):
        shard_path(out, k).unlink()
    (out / "shards" / ".shard-000002.npz.x1y2z3.npz").write_bytes(b"half a shard")
    (out / "items.csv").unlink()
    kept = {k: shard_path(out, k).stat().st_mtime_ns for k in (0, 1, 3, 4)}
    os.utime(shard_path(out, 0), ns=(1, 1))  # a marker: a rewritten shard would get a new time
    kept[0] = 1

    r = cli(*args)
    assert r.rc == 2 and "pass --resume" in r.err
    r = cli(*args, "--resume")
    assert r.rc == 0, r.err
    assert "resuming: 4 of 6 shards already written" in r.err
    assert {k: shard_path(out, k).stat().st_mtime_ns for k in kept} == kept
    assert (out / "items.csv").read_text() == complete
    assert not list((out / "shards").glob(".shard-*"))


def test_resume_refuses_a_run_made_with_other_settings(cli, npz_case, tmp_path):
    folder, _, _ = npz_case
    out = tmp_path / "out"
    assert cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", SHARD,
               "--no-progress").rc == 0
    r = cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", 4, "--resume")
    assert r.rc == 2 and "shard_size" in r.err
    r = cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", out, "--shard-size", SHARD,
            "--composite", "epsilon-plus", "--resume")
    assert r.rc == 2 and "composite" in r.err


@pytest.mark.parametrize("extra, message", [
    (("--workers", "0"), "--workers must be >= 1"),
    (("--shard-size", "0"), "--shard-size"),
    (("--target", "seven"), "--target 'seven'"),
])
def test_bad_options_fail_with_one_line_before_writing(cli, npz_case, tmp_path, extra, message):
    folder, _, _ = npz_case
    r = cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", tmp_path / "out", *extra)
    assert r.rc == 2 and message in r.err
    assert r.err.startswith("lrp-onnx: error: ") and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_inputs_of_the_wrong_shape_or_kind_fail_with_one_line(cli, npz_case, tmp_path):
    folder, _, _ = npz_case
    np.save(tmp_path / "small.npy", np.zeros((3, 1, 8, 8), np.float32))
    r = cli("batch", folder / "cnn.onnx", tmp_path / "small.npy", "-o", tmp_path / "out")
    assert r.rc == 2 and "(1, 8, 8) per item" in r.err
    (tmp_path / "empty").mkdir()
    r = cli("batch", folder / "cnn.onnx", tmp_path / "empty", "-o", tmp_path / "out")
    assert r.rc == 2 and "holds no audio files" in r.err
    r = cli("batch", folder / "cnn.onnx", tmp_path / "missing.npz", "-o", tmp_path / "out")
    assert r.rc == 2 and "no such INPUTS" in r.err
    assert not (tmp_path / "out").exists()


def test_help_names_the_ray_option():
    proc = subprocess.run([sys.executable, "-m", "lrp_onnx.cli", "batch", "--help"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0
    assert "--ray [ADDRESS]" in proc.stdout and "examples:" in proc.stdout


def test_ray_without_ray_installed_says_how_to_install_it(cli, npz_case, tmp_path, monkeypatch):
    folder, _, _ = npz_case
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    r = cli("batch", folder / "cnn.onnx", folder / "data.npz", "-o", tmp_path / "out", "--ray")
    assert r.rc == 2 and "pip install 'lrp-onnx[ray]'" in r.err
    assert not (tmp_path / "out").exists()
