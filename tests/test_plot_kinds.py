"""Heatmaps for every kind of input: images the right way up and in colour, 1-D signals as curves,
spectrograms with low frequencies at the bottom. The drawn figures are read back as pixels."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import onnx
import pytest
from lrp_onnx.lrp_graph.errors import InputError
from lrp_onnx.runtime.plots import (
    _pyplot,
    display_image,
    heatmap_figure,
    plot_kind,
    relevance_map,
    save_heatmap,
    signal_curve,
)
from onnx import helper

matplotlib.use("Agg")


def pixels(fig, ax, margin: int = 3) -> np.ndarray:
    """The RGB pixels (rows top first, in [0, 1]) inside ``ax`` as drawn on ``fig``'s canvas."""
    fig.canvas.draw()
    buffer = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    box = ax.get_window_extent()
    height = buffer.shape[0]
    top, bottom = int(height - box.y1) + margin, int(height - box.y0) - margin
    return buffer[top:bottom, int(box.x0) + margin:int(box.x1) - margin]


def halves(panel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean colour of the top and the bottom half of a panel."""
    mid = panel.shape[0] // 2
    return panel[:mid].reshape(-1, 3).mean(axis=0), panel[mid:].reshape(-1, 3).mean(axis=0)


@pytest.fixture()
def plt():
    return _pyplot()


# ------------------------------------------------------------------------------- choosing the kind


@pytest.mark.parametrize("shape, spectrogram, kind", [
    ((3, 32, 32), False, "image"), ((1, 28, 28), False, "image"), ((28, 28), False, "image"),
    ((32, 32, 3), False, "image"), ((1, 64, 200), True, "spectrogram"), ((3, 32, 32), True, "image"),
    ((16000,), False, "signal"), ((1, 16000), False, "signal"), ((1, 1, 500), True, "signal"),
    ((2, 16000), False, "signal"), ((8, 400), False, "signal"), ((8, 8), False, "image"), ((64, 200), False, "image"),
])
def test_auto_kind(shape, spectrogram, kind):
    assert plot_kind(shape, spectrogram=spectrogram) == kind


def test_requested_kind_overrides_and_is_checked():
    assert plot_kind((1, 64, 200), spectrogram=True, requested="image") == "image"
    assert plot_kind((1, 28, 28), requested="spectrogram") == "spectrogram"
    assert plot_kind((2, 100), requested="signal") == "signal"
    with pytest.raises(InputError, match="cannot be drawn as a signal"):
        plot_kind((3, 32, 32), requested="signal")
    with pytest.raises(InputError, match="unknown plot kind"):
        plot_kind((3, 32, 32), requested="movie")


# ------------------------------------------------------------------------------- preparing the picture


def test_display_image_keeps_orientation_and_channel_order():
    picture = np.zeros((3, 8, 6), np.float32)
    picture[0, :4] = 5.0   # red in the top rows
    picture[2, 4:] = 5.0   # blue in the bottom rows
    shown = display_image(picture)
    assert shown.shape == (8, 6, 3)
    np.testing.assert_array_equal(shown[:4, :, 0], 1.0)
    np.testing.assert_array_equal(shown[:4, :, 2], 0.0)
    np.testing.assert_array_equal(shown[4:, :, 2], 1.0)
    np.testing.assert_array_equal(display_image(np.moveaxis(picture, 0, -1)), shown)  # channels last
    grey = display_image(np.arange(12.0).reshape(1, 3, 4))
    assert grey.shape == (3, 4) and grey[0, 0] == 0.0 and grey[-1, -1] == 1.0
    np.testing.assert_array_equal(relevance_map(picture), picture.sum(axis=0))


@pytest.mark.parametrize("shape", [(3, 100, 3), (3, 2, 100), (16, 9, 3), (224, 224, 3), (3, 224, 224), (2, 5, 7)])
def test_channel_axis_is_the_shorter_end(shape):
    """(C, H, W) or (H, W, C): the channel axis is the shorter of the first and the last."""
    picture = np.random.default_rng(0).standard_normal(shape)
    first = shape[0] <= shape[-1]
    expected = picture.sum(axis=0) if first else picture.sum(axis=-1)
    np.testing.assert_allclose(relevance_map(picture), expected)


def test_signal_curve_sums_channels():
    np.testing.assert_array_equal(signal_curve(np.ones((1, 5))), np.ones(5))
    np.testing.assert_array_equal(signal_curve(np.ones((2, 5))), 2 * np.ones(5))


# ------------------------------------------------------------------------------- drawn figures


def test_image_is_drawn_the_right_way_up(plt):
    picture = np.zeros((1, 16, 16), np.float32)
    picture[0, :8] = 1.0  # bright top rows
    relevance = np.zeros((1, 16, 16), np.float32)
    relevance[0, :8] = 1.0  # evidence for, in the top rows
    relevance[0, 8:] = -1.0
    fig = heatmap_figure(plt, relevance, picture, kind="image")
    try:
        shown, heat, over = fig.axes[:3]
        top, bottom = halves(pixels(fig, shown))
        assert top.mean() > 0.9 and bottom.mean() < 0.1
        top, bottom = halves(pixels(fig, heat))
        assert top[0] > 0.8 and top[2] < 0.3 and bottom[2] > 0.8 and bottom[0] < 0.3  # red on top, blue below
        assert all(image.origin == "upper" for ax in (shown, heat, over) for image in ax.images)
    finally:
        plt.close(fig)


def test_rgb_input_is_drawn_in_colour(plt):
    picture = np.zeros((3, 16, 16), np.float32)
    picture[0, :8] = 1.0  # red on top
    picture[2, 8:] = 1.0  # blue below
    fig = heatmap_figure(plt, np.zeros_like(picture), picture, kind="auto")
    try:
        top, bottom = halves(pixels(fig, fig.axes[0]))
        assert top[0] > 0.9 and top[2] < 0.1 and bottom[2] > 0.9 and bottom[0] < 0.1
        top, bottom = halves(pixels(fig, fig.axes[2]))  # no relevance: the picture shows through
        assert top[0] > 0.9 and bottom[2] > 0.9
    finally:
        plt.close(fig)


def test_signal_is_a_curve(plt, tmp_path):
    t = np.linspace(0, 1, 400)
    signal = np.sin(2 * np.pi * 5 * t)[None].astype(np.float32)
    relevance = np.where(t < 0.5, 1.0, -0.5)[None].astype(np.float32)
    fig = heatmap_figure(plt, relevance, signal, kind="auto")
    try:
        assert all(not ax.images for ax in fig.axes)  # no image: lines only
        from matplotlib.collections import LineCollection

        coloured = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
        assert len(coloured) == 1 and len(coloured[0].get_segments()) == len(t) - 1
        np.testing.assert_allclose(coloured[0].get_array()[:10], 1.0)
        curve = fig.axes[1].lines[0].get_ydata()
        np.testing.assert_allclose(curve, relevance[0])
    finally:
        plt.close(fig)
    save_heatmap(tmp_path / "s.png", relevance, signal, kind="signal")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_spectrogram_has_low_rows_at_the_bottom(plt):
    relevance = np.zeros((1, 16, 20), np.float32)
    relevance[0, :8] = 1.0  # low frequencies (row 0 on) carry evidence for
    relevance[0, 8:] = -1.0
    fig = heatmap_figure(plt, relevance, None, kind="spectrogram")
    try:
        top, bottom = halves(pixels(fig, fig.axes[0]))
        assert bottom[0] > 0.8 and bottom[2] < 0.3 and top[2] > 0.8 and top[0] < 0.3
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------- the command


def rgb_model(build_model):
    """x (N, 3, 8, 8) -> Flatten -> Gemm: class 1 weighs the red channel's top rows +1."""
    W = np.zeros((2, 3, 8, 8), np.float32)
    W[1, 0, :4] = 1.0
    W[0] = 0.01
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W"], ["y"], name="fc", transB=1)]
    return build_model(nodes, {"x": ["N", 3, 8, 8]}, {"y": ["N", 2]}, {"W": W.reshape(2, -1)})


def test_cli_plots_an_rgb_image_right_way_up(cli, tmp_path, build_model):
    import matplotlib.image

    path = tmp_path / "m.onnx"
    onnx.save(rgb_model(build_model), str(path))
    np.save(tmp_path / "x.npy", np.ones((3, 8, 8), np.float32))
    res = cli("explain", path, tmp_path / "x.npy", "--target", "1", "--plot", tmp_path / "h.png", "--json")
    assert res.rc == 0, res.err
    assert json.loads(res.out)["relevance_sum"] == pytest.approx(32.0)
    image = matplotlib.image.imread(str(tmp_path / "h.png"))[..., :3]
    red = (image[..., 0] > 0.8) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)
    rows = np.nonzero(red)[0]
    assert red.sum() > 500
    # the relevance (red) lies in the upper half of the panels, where the top rows of the input are drawn
    panel_rows = np.nonzero((image < 0.99).any(axis=2).any(axis=1))[0]
    assert np.median(rows) < (panel_rows.min() + panel_rows.max()) / 2

    res = cli("explain", path, tmp_path / "x.npy", "--plot", tmp_path / "s.png", "--plot-kind", "signal")
    assert res.rc == 2 and "cannot be drawn as a signal" in res.err and res.err.strip().count("\n") == 0


def save_signal_model(build_model, path, length: int) -> None:
    """x (N, 1, length) -> Flatten -> Gemm (2 classes, random weights), saved at ``path``."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "W"], ["y"], name="fc", transB=1)]
    model = build_model(nodes, {"x": ["N", 1, length]}, {"y": ["N", 2]},
                        {"W": np.random.default_rng(0).standard_normal((2, length))})
    onnx.save(model, str(path))


def test_cli_plots_a_signal(cli, tmp_path, build_model):
    save_signal_model(build_model, tmp_path / "m.onnx", 300)
    np.save(tmp_path / "x.npy", np.sin(np.arange(300) / 10.0)[None].astype(np.float32))
    res = cli("explain", tmp_path / "m.onnx", tmp_path / "x.npy", "--plot", tmp_path / "h.png")
    assert res.rc == 0, res.err
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_kind_without_plot_is_refused(cli, tmp_path, build_model):
    save_signal_model(build_model, tmp_path / "m.onnx", 30)
    np.save(tmp_path / "x.npy", np.ones((1, 30), np.float32))
    res = cli("explain", tmp_path / "m.onnx", tmp_path / "x.npy", "--plot-kind", "signal", "-o", tmp_path / "r.npy")
    assert res.rc == 2 and "--plot-kind needs --plot" in res.err and res.err.strip().count("\n") == 0
    assert not (tmp_path / "r.npy").exists()


def test_cli_offers_the_plot_kinds_of_the_plots_module():
    import argparse

    from lrp_onnx.cli import explain
    from lrp_onnx.runtime.plots import PLOT_KINDS

    parser = argparse.ArgumentParser()
    explain.add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "plot_kind")
    assert tuple(action.choices) == PLOT_KINDS
