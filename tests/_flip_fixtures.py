"""Small ONNX models built with onnx.helper for the pixel-flipping, augmentation and
reproduction tests (no torch): their relevance is known by construction."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph, path: Path | None, metadata: dict | None) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    if path is not None:
        onnx.save(model, str(path))
    return model


def one_bin_model(path: Path | None = None, shape=(1, 8, 8), hot=(0, 3, 5), weight: float = 4.0,
                  labels=("off", "on"), seed: int = 0) -> onnx.ModelProto:
    """Flatten -> Gemm: class 1's logit is ``weight * x[hot] - 1`` plus tiny contributions
    of the other bins, class 0's is the negative of that; LRP ranks ``hot`` first for
    class 1, and with ``x[hot]`` zeroed the model predicts class 0."""
    d = int(np.prod(shape))
    rng = np.random.default_rng(seed)
    w = np.zeros((d, 2), np.float32)
    w[:, 1] = 0.01 * rng.standard_normal(d)
    w[np.ravel_multi_index(hot, shape), 1] = weight
    w[:, 0] = -w[:, 1]
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("Gemm", ["flat", "W", "b"], ["logits"])]
    graph = helper.make_graph(
        nodes, "one_bin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(np.array([1.0, -1.0], np.float32), "b")])
    return _save(graph, path, {"lrp_onnx.labels": json.dumps(list(labels))})


def tiny_cnn(path: Path | None = None, shape=(1, 16, 16), classes: int = 2, seed: int = 0,
             metadata: dict | None = None, channels: int = 4, stride: int = 1) -> onnx.ModelProto:
    """Conv 3x3 -> ReLU -> MaxPool 2 -> Flatten -> Gemm, random weights."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    conv = (rng.standard_normal((channels, c, 3, 3)) / 3).astype(np.float32)
    oh, ow = (h - 3) // stride + 1, (w - 3) // stride + 1
    ph, pw = oh // 2, ow // 2
    dense = (rng.standard_normal((channels * ph * pw, classes)) / np.sqrt(channels * ph * pw)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "K", "kb"], ["c1"], kernel_shape=[3, 3], strides=[stride, stride]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(conv, "K"), numpy_helper.from_array(np.zeros(channels, np.float32), "kb"),
         numpy_helper.from_array(dense, "W"), numpy_helper.from_array(np.zeros(classes, np.float32), "b")])
    meta = {"lrp_onnx.labels": json.dumps([str(i) for i in range(classes)] if classes != 2 else ["male", "female"])}
    meta.update(metadata or {})
    return _save(graph, path, meta)


def band_model(path: Path | None = None, spec=None, low_rows: int = 12) -> onnx.ModelProto:
    """A gender 'model' on AudioMNIST spectrograms (dB, <= 0): the class scores are how far
    below the maximum rows ``0..low_rows`` (male) and ``low_rows..2*low_rows`` (female)
    lie on average, so every input bin of those rows gets non-negative relevance.

    Conv with an (H, 1) kernel over frequency -> ReLU -> GlobalAveragePool -> Gemm."""
    from lrp_onnx.audio.features import SpectrogramSpec

    spec = spec or SpectrogramSpec()
    _, h, w = spec.shape
    kernel = np.zeros((2, 1, h, 1), np.float32)
    kernel[0, 0, :low_rows, 0] = -1.0 / low_rows
    kernel[1, 0, low_rows:2 * low_rows, 0] = -1.0 / low_rows
    bias = np.zeros(2, np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "K", "kb"], ["c1"], kernel_shape=[h, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["g"]),
        helper.make_node("Flatten", ["g"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "band_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *spec.shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(kernel, "K"), numpy_helper.from_array(bias, "kb"),
         numpy_helper.from_array(np.eye(2, dtype=np.float32) * 0.1, "W"),
         numpy_helper.from_array(np.zeros(2, np.float32), "b")])
    return _save(graph, path, {"lrp_onnx.labels": json.dumps(["male", "female"]), "lrp_onnx.task": "gender",
                               "lrp_onnx.features": spec.model_dump_json(), "lrp_onnx.composite": "epsilon"})
