"""LRP-guided augmentation: the Moore mean (corners, edges, inside), which bins change, the
`augment` command's .npz (read back by the training data loader) and its bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
from _flip_fixtures import one_bin_model, tiny_cnn

from lrp_onnx.lrp_graph.errors import InputError
from lrp_onnx.runtime import Explainer
from lrp_onnx.runtime.augment import augment_batch, check_fraction, moore_mean, top_bins
from lrp_onnx.cli.main import main
from lrp_onnx.runtime.inputs import NpzData, NpzWriter


def moore_by_hand(a: np.ndarray, i: int, j: int) -> float:
    h, w = a.shape
    values = [a[p, q] for p in range(i - 1, i + 2) for q in range(j - 1, j + 2)
              if (p, q) != (i, j) and 0 <= p < h and 0 <= q < w]
    return sum(values) / len(values)


def test_moore_mean_at_corners_edges_and_inside():
    a = np.arange(20, dtype=np.float32).reshape(4, 5) ** 1.5
    m = moore_mean(a)
    # corner (0, 0): neighbours (0,1), (1,0), (1,1)
    assert m[0, 0] == pytest.approx((a[0, 1] + a[1, 0] + a[1, 1]) / 3)
    # corner (3, 4): neighbours (2,3), (2,4), (3,3)
    assert m[3, 4] == pytest.approx((a[2, 3] + a[2, 4] + a[3, 3]) / 3)
    # edge (0, 2): 5 neighbours
    assert m[0, 2] == pytest.approx((a[0, 1] + a[0, 3] + a[1, 1] + a[1, 2] + a[1, 3]) / 5)
    # edge (2, 0): 5 neighbours
    assert m[2, 0] == pytest.approx((a[1, 0] + a[3, 0] + a[1, 1] + a[2, 1] + a[3, 1]) / 5)
    # inside (1, 2): 8 neighbours, the centre left out
    assert m[1, 2] == pytest.approx((a[0:3, 1:4].sum() - a[1, 2]) / 8)
    for i in range(4):
        for j in range(5):
            assert m[i, j] == pytest.approx(moore_by_hand(a, i, j), rel=1e-6)


def test_moore_mean_works_per_channel_and_on_thin_maps():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7)).astype(np.float32)
    m = moore_mean(x)
    assert m.shape == x.shape
    assert m[1, 2, 5, 0] == pytest.approx(moore_by_hand(x[1, 2], 5, 0), rel=1e-5)
    row = np.array([[1.0, 2.0, 4.0]])  # a 1x3 map: neighbours only left and right
    assert moore_mean(row).tolist() == [[2.0, 2.5, 2.0]]
    with pytest.raises(InputError):
        moore_mean(np.ones((1, 1)))


def test_augment_replaces_exactly_the_top_bins_with_their_moore_mean():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 1, 10, 10)).astype(np.float32)
    relevance = rng.standard_normal(x.shape).astype(np.float32)
    out = augment_batch(x, relevance, 0.05)  # 5 of 100 bins
    changed = (out != x).reshape(3, -1)
    top = top_bins(relevance, 5)
    for n in range(3):
        assert set(np.flatnonzero(changed[n])) <= set(top[n]) and changed[n].sum() >= 4
        for flat in top[n]:
            i, j = divmod(int(flat), 10)
            assert out[n, 0, i, j] == pytest.approx(moore_by_hand(x[n, 0], i, j), rel=1e-5)
    # most relevant first, ties broken by position
    r = np.array([[[[0.0, 3.0, 3.0, 1.0]]]], dtype=np.float32)
    assert top_bins(r, 3).tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        check_fraction(fraction)


def test_augment_command_writes_what_train_reads(tmp_path, capsys):
    model = tmp_path / "cnn.onnx"
    tiny_cnn(model)
    ex = Explainer(model)
    x = np.random.default_rng(2).standard_normal((20, 1, 16, 16)).astype(np.float32)
    y = np.arange(20) % 2
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "val.npz", x=x[:6], y=y[:6])
    out = tmp_path / "aug.npz"
    assert main(["augment", str(model), str(tmp_path / "train.npz"), "-o", str(out), "--fraction", "0.02",
                 "--val", str(tmp_path / "val.npz"), "--no-progress"]) == 0
    assert "5 bins each" in capsys.readouterr().out  # round(0.02 * 256)
    with np.load(out) as archive:
        assert sorted(archive.files) == ["labels", "x", "x_val", "y", "y_val"]
        assert archive["labels"].tolist() == ["male", "female"]
        assert (archive["y"] == y).all() and (archive["x_val"] == x[:6]).all()
        expected = augment_batch(x, ex.explain(x, target=y).relevance, 0.02)
        assert np.allclose(archive["x"], expected)
        assert ((archive["x"] != x).reshape(20, -1).sum(axis=1) <= 5).all()
    dataset = pytest.importorskip("lrp_onnx.models.training_data")
    sets = dataset.build_sets(out, "gender", "alexnet", spec=None)
    assert len(sets.train) == 20 and len(sets.val) == 6 and sets.labels == ["male", "female"]


@pytest.mark.parametrize("extra, message", [
    (["--fraction", "0"], "strictly between 0 and 1"),
    (["--fraction", "1"], "strictly between 0 and 1"),
    (["--fraction", "2.5"], "strictly between 0 and 1"),
    (["--fraction", "-0.01"], "strictly between 0 and 1"),
])
def test_augment_bad_fraction_exits_2_and_writes_nothing(tmp_path, capsys, extra, message):
    model = tmp_path / "m.onnx"
    one_bin_model(model)
    np.savez(tmp_path / "d.npz", x=np.ones((2, 1, 8, 8), np.float32), y=np.array([0, 1]))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["augment", str(model), str(tmp_path / "d.npz"), "-o", str(out / "aug.npz"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert list(out.iterdir()) == []


def test_augment_bad_data_writes_nothing(tmp_path, capsys):
    model = tmp_path / "m.onnx"
    one_bin_model(model)
    np.savez(tmp_path / "d.npz", x=np.ones((2, 1, 8, 8), np.float32), y=np.array([0, 3]))
    assert main(["augment", str(model), str(tmp_path / "d.npz"), "-o", str(tmp_path / "aug.npz")]) == 2
    assert "label 3 is not a class" in capsys.readouterr().err
    assert main(["augment", str(model), str(tmp_path / "d.npz"), "-o", str(tmp_path / "aug.txt")]) == 2
    assert not (tmp_path / "aug.npz").exists() and not (tmp_path / "aug.txt").exists()


def test_npz_writer_is_atomic_and_npz_data_streams_rows(tmp_path):
    path = tmp_path / "a.npz"
    x = np.random.default_rng(3).standard_normal((9, 2, 3, 4)).astype(np.float32)
    with pytest.raises(InputError, match="missing 4 rows"):
        with NpzWriter(path) as w:
            w.begin("x", x.shape, np.float32)
            w.write(x[:5])
            w.array("y", np.zeros(9, np.int64))
    assert list(tmp_path.iterdir()) == []
    with NpzWriter(path) as w:
        w.begin("x", x.shape, np.float32)
        w.write(x[:5])
        w.write(x[5:])
        w.array("y", np.arange(9))
    with np.load(path) as archive:
        assert (archive["x"] == x).all() and archive["y"].tolist() == list(range(9))
    data = NpzData(path)
    assert [(i, xb.shape[0]) for i, xb, _ in data.batches(4)] == [(0, 4), (4, 4), (8, 1)]
    assert (np.concatenate([xb for _, xb, _ in data.batches(4)]) == x).all()
    sub = data.subset(np.array([1, 7, 8]))
    assert (sub.inputs(0, 3) == x[[1, 7, 8]]).all() and sub.labels.tolist() == [1, 7, 8]
    np.savez_compressed(tmp_path / "c.npz", x=x, y=np.arange(9))  # deflated members stream too
    assert (NpzData(tmp_path / "c.npz").inputs(2, 6) == x[2:6]).all()
    json.dumps(data.describe())


def test_write_augmented_control_archive_holds_the_same_inputs_unchanged(tmp_path):
    from lrp_onnx.runtime.augment import write_augmented
    from lrp_onnx.runtime.inputs import ArrayData

    model = tmp_path / "cnn.onnx"
    tiny_cnn(model)
    ex = Explainer(model)
    x = np.random.default_rng(4).standard_normal((10, 1, 16, 16)).astype(np.float32)
    y = np.arange(10) % 2
    info = write_augmented(tmp_path / "aug.npz", ex, ArrayData(x, y), 0.05, extra={"val": ArrayData(x[:3], y[:3])},
                           control=tmp_path / "control.npz", progress=False)
    with np.load(tmp_path / "aug.npz") as aug, np.load(tmp_path / "control.npz") as control:
        assert sorted(aug.files) == sorted(control.files)
        assert (control["x"] == x).all() and (control["y"] == aug["y"]).all()
        assert (aug["x_val"] == control["x_val"]).all()
        assert info["bins_changed"] == int((aug["x"] != x).sum()) > 0
