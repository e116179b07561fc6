"""A model file's ``value_info`` is not trusted: shapes come from the graph. torch 2.13's dynamo exporter
writes entries that pin a symbolic time axis after an LSTM/GRU to the example's length; trusted, they
silently rescaled relevance at every other length (the mean over time split by the wrong count)."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lrp_onnx.lrp_graph import compile_explainer

I, H = 3, 4


def lstm_mean_model(stale_frames: int | None = None) -> onnx.ModelProto:
    """x (N, T, 3) -> LSTM -> mean over time -> MatMul (N, 2); optionally a value_info that says the LSTM's
    output has ``stale_frames`` frames."""
    rng = np.random.default_rng(0)
    consts = {"W": rng.standard_normal((1, 4 * H, I)) * 0.5, "R": rng.standard_normal((1, 4 * H, H)) * 0.5,
              "G": rng.standard_normal((H, 2))}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xt", "W", "R"], ["Y"], hidden_size=H),
             helper.make_node("Squeeze", ["Y", "axis1"], ["Yq"]),
             helper.make_node("Transpose", ["Yq"], ["frames"], perm=[1, 0, 2]),
             helper.make_node("ReduceMean", ["frames", "axis1"], ["mean"], keepdims=0),
             helper.make_node("MatMul", ["mean", "G"], ["out"])]
    graph = helper.make_graph(nodes, "lstm_mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", I])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2])], inits)
    if stale_frames is not None:
        graph.value_info.append(helper.make_tensor_value_info("frames", TensorProto.FLOAT, ["N", stale_frames, H]))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def relevance(model, x):
    session = ort.InferenceSession(compile_explainer(model, "epsilon").model.SerializeToString())
    return session.run(None, {"x": x, "target": np.array([0, 1], np.int64)})[2]


def test_a_stale_time_axis_in_value_info_changes_nothing():
    x = np.random.default_rng(1).standard_normal((2, 9, I)).astype(np.float32)
    clean = relevance(lstm_mean_model(), x)
    assert np.abs(clean).max() > 0
    np.testing.assert_array_equal(relevance(lstm_mean_model(stale_frames=6), x), clean)
