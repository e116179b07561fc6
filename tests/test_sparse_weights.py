"""Sparse initializers (an ONNX way to store mostly-zero weights) are explained as the dense weights they stand
for; a sparse tensor too large to make dense, or with indices outside its shape, is a one-line error."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from lrp_onnx.lrp_graph import ModelError, load_model
from lrp_onnx.runtime import Explainer


def gemm(weights=None, sparse=None) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], name="fc", transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              initializer=[] if weights is None else [numpy_helper.from_array(weights, "W")],
                              sparse_initializer=[] if sparse is None else [sparse])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model


def sparse_weights(values, indices, dims=(3, 8)) -> onnx.SparseTensorProto:
    return helper.make_sparse_tensor(numpy_helper.from_array(np.asarray(values, np.float32), "W"),
                                     numpy_helper.from_array(np.asarray(indices, np.int64), "W_indices"), list(dims))


@pytest.mark.parametrize("layout", ["linear", "per axis"])
def test_sparse_weights_are_explained_as_their_dense_twin(layout):
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((3, 8)) < 0.3, rng.standard_normal((3, 8)), 0).astype(np.float32)
    flat = np.flatnonzero(dense)
    indices = flat if layout == "linear" else np.stack(np.unravel_index(flat, dense.shape), axis=1)
    x = rng.standard_normal((4, 8)).astype(np.float32)
    want = Explainer(gemm(weights=dense), cache=False).explain(x)
    got = Explainer(gemm(sparse=sparse_weights(dense.reshape(-1)[flat], indices)), cache=False).explain(x)
    np.testing.assert_array_equal(got.logits, want.logits)
    np.testing.assert_array_equal(got.relevance, want.relevance)


@pytest.mark.parametrize("sparse,message", [
    (sparse_weights([1.0], [0], dims=(1 << 20, 1 << 20)), "too large"),
    (sparse_weights([1.0, 2.0], [3, 24]), "out of range"),  # 24 is outside 3 x 8 (the checker says so)
])
def test_a_bad_sparse_initializer_is_a_one_line_error(sparse, message):
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              sparse_initializer=[sparse])
    with pytest.raises(ModelError, match=message) as error:
        load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    assert "\n" not in str(error.value)
