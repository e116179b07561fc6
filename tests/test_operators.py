"""Exact checks of the operator handlers, against oracles that do not use the compiler.

Every case is a small *body* (ONNX nodes from ``x`` to ``h``) explained inside the model
``x -> body -> h -> Flatten -> Gemm(V, no bias) -> y`` with LRP-0 (composite ``lrp0``). The Gemm gives the
body's output the relevance ``R_h = h * V[t]`` exactly, and the body's Jacobian ``J = dh/dx`` is measured
with onnxruntime on the body alone (one-hot inputs for linear bodies; finite steps on integer-valued
inputs for max-pools, whose winners such steps cannot change). Then:

* linear bodies without bias (convolutions, matrix products, average pools, means, residual sums, and
  chains of them): LRP-0 and the Norm rule give ``R_x = x * J^T (R_h / h)``;
  with a bias ``b`` (``h = J x + b``) the same formula holds with that ``h``;
* routing bodies (Concat, Split, Slice, Pad, Transpose, reshapes; max-pools: winner takes all):
  ``R_x = J^T R_h`` (relevance moved, summed where windows overlap);
* activations and gates pass relevance unchanged.
"""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from lrp_onnx.runtime import Explainer

CLASSES = 3


def make(op, inputs, outputs, **attrs):
    outputs = [outputs] if isinstance(outputs, str) else outputs
    return helper.make_node(op, inputs, outputs, name=f"{op.lower()}_{outputs[0]}", **attrs)


class Case:
    """A body ``x -> h`` with its constants, and helpers to explain it and to measure its Jacobian."""

    def __init__(self, build_model, nodes, x_shape, h_shape, inits=None, opset=18, seed=0):
        self.x_shape, self.h_shape = tuple(x_shape), tuple(h_shape)
        self.inits = dict(inits or {})
        rng = np.random.default_rng(seed)
        self.V = rng.standard_normal((CLASSES, math.prod(h_shape))).astype(np.float32)
        head = [make("Flatten", ["h"], "h_flat"), make("Gemm", ["h_flat", "V"], "y", transB=1)]
        self.model = build_model(list(nodes) + head, {"x": ["N", *x_shape]}, {"y": ["N", CLASSES]},
                                 {**self.inits, "V": self.V}, opset)
        body = build_model(nodes, {"x": ["N", *x_shape]}, {"h": ["N", *h_shape]}, self.inits, opset)
        self.body = ort.InferenceSession(body.SerializeToString(), providers=["CPUExecutionProvider"])

    def h(self, x):
        return self.body.run(["h"], {"x": np.asarray(x, np.float32)})[0]

    def jacobian(self, x_sample, step):
        """``(h(x + step e_i) - h(x)) / step`` for every input position i: shape (|h|, |x|)."""
        n = x_sample.size
        batch = x_sample.reshape(1, n).astype(np.float64) + step * np.eye(n)
        out = self.h(batch.reshape((n,) + self.x_shape)).reshape(n, -1).astype(np.float64)
        base = self.h(x_sample[None]).reshape(1, -1).astype(np.float64)
        return ((out - base) / step).T

    def relevance_h(self, x, targets):
        return self.h(x).astype(np.float64) * self.V[targets].reshape((len(x),) + self.h_shape)

    def explain(self, x, targets, composite="lrp0"):
        e = Explainer(self.model, composite=composite).explain(x, target=targets)
        np.testing.assert_array_equal(e.targets, targets)
        return e


def expected_linear(case: Case, x, targets):
    """``R_x = x * J^T (R_h / h)`` for a linear body (bias allowed), with ``R/0 = 0``."""
    J = case.jacobian(np.zeros(case.x_shape, np.float32), 1.0)
    h = case.h(x).reshape(len(x), -1).astype(np.float64)
    R_h = case.relevance_h(x, targets).reshape(len(x), -1)
    s = np.divide(R_h, h, out=np.zeros_like(R_h), where=h != 0)
    return (x.reshape(len(x), -1) * (s @ J)).reshape(x.shape)


def expected_routing(case: Case, x, targets, step=1.0):
    """``R_x = J(x)^T R_h``, J measured at each sample (max-pools: the winners of that sample)."""
    R_h = case.relevance_h(x, targets).reshape(len(x), -1)
    rows = [R_h[i] @ case.jacobian(x[i], step) for i in range(len(x))]
    return np.stack(rows).reshape(x.shape)


def random_input(shape, n=2, seed=1, positive=False):
    x = np.random.default_rng(seed).standard_normal((n,) + tuple(shape)).astype(np.float32)
    return np.abs(x) + 0.1 if positive else x


def distinct_integers(shape, n=2, seed=1):
    """Inputs without ties: a permutation of integers, centred on 0 (so some are negative)."""
    size = n * math.prod(shape)
    return (np.random.default_rng(seed).permutation(size) - size // 2).astype(np.float32).reshape((n,) + tuple(shape))


def assert_relevance(actual, expected, rtol=1e-4):
    scale = np.abs(expected).max() + 1e-12
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def weights(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# -- dense layers: exact closed forms ------------------------------------------------------------
def test_gemm_lrp0_is_input_times_weight_column(build_model):
    """``y = alpha * x W^T`` (transB), LRP-0: ``R_i = x_i * alpha * W[t, i]`` exactly."""
    W = weights(0, CLASSES, 6)
    model = build_model([make("Gemm", ["x", "W"], "y", transB=1, alpha=0.5)], {"x": ["N", 6]},
                        {"y": ["N", CLASSES]}, {"W": W})
    x = random_input((6,), n=4)
    targets = np.array([0, 1, 2, 1])
    e = Explainer(model, composite="lrp0").explain(x, target=targets)
    np.testing.assert_allclose(e.relevance, x * 0.5 * W[targets], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(e.logits, 0.5 * x @ W.T, rtol=1e-5)


def test_gemm_epsilon_with_bias_and_beta(build_model):
    """``y = x B + beta * c`` (no transB), epsilon: ``R_i = x_i B[i, t] * y_t / (y_t + eps sign(y_t))``."""
    B, c = weights(1, 5, CLASSES), weights(2, CLASSES)
    model = build_model([make("Gemm", ["x", "B", "c"], "y", beta=2.0)], {"x": ["N", 5]},
                        {"y": ["N", CLASSES]}, {"B": B, "c": c})
    x = random_input((5,), n=3)
    eps = 0.25
    e = Explainer(model, composite="epsilon", epsilon=eps).explain(x, target=2)
    y = (x @ B + 2.0 * c)[:, 2:3].astype(np.float64)
    expected = x * B[:, 2] * y / (y + eps * np.where(y >= 0, 1, -1))
    np.testing.assert_allclose(e.relevance, expected, rtol=1e-5, atol=1e-7)


def test_softmax_output_explains_the_logits(build_model):
    W = weights(3, CLASSES, 4)
    for normaliser in ("Softmax", "LogSoftmax"):
        nodes = [make("Gemm", ["x", "W"], "z", transB=1), make(normaliser, ["z"], "p", axis=1)]
        model = build_model(nodes, {"x": ["N", 4]}, {"p": ["N", CLASSES]}, {"W": W})
        x = random_input((4,), n=3)
        e = Explainer(model, composite="lrp0").explain(x)
        np.testing.assert_allclose(e.logits, x @ W.T, rtol=1e-5)  # before the softmax
        np.testing.assert_array_equal(e.targets, (x @ W.T).argmax(1))
        np.testing.assert_allclose(e.relevance, x * W[e.targets], rtol=1e-5, atol=1e-7)


# -- linear bodies -------------------------------------------------------------------------------
def linear_cases():
    """name -> (nodes, x_shape, h_shape, constants, opset)."""
    w = weights
    return {
        "conv-same-upper-stride2-bias": (
            [make("Conv", ["x", "W"], "c", auto_pad="SAME_UPPER", strides=[2, 2]),
             make("Add", ["c", "b"], "h")],
            (2, 7, 7), (3, 4, 4), {"W": w(10, 3, 2, 3, 3), "b": w(11, 1, 3, 1, 1)}, 18),
        "conv-same-lower-even-kernel": (
            [make("Conv", ["x", "W"], "h", auto_pad="SAME_LOWER", kernel_shape=[2, 2])],
            (2, 5, 5), (3, 5, 5), {"W": w(12, 3, 2, 2, 2)}, 18),
        "conv-groups-dilation-asymmetric-pads": (
            [make("Conv", ["x", "W", "B"], "h", group=2, dilations=[2, 2], pads=[1, 0, 2, 1])],
            (4, 6, 6), (4, 7, 3), {"W": w(13, 4, 2, 2, 3), "B": w(14, 4)}, 18),
        "conv-depthwise-multiplier": (
            [make("Conv", ["x", "W"], "h", group=3, pads=[1, 1, 1, 1], strides=[2, 1])],
            (3, 5, 5), (6, 3, 5), {"W": w(15, 6, 1, 3, 3)}, 18),
        "conv-stride-leaves-uncovered-inputs": (  # output_padding in the transposed pass
            [make("Conv", ["x", "W"], "h", strides=[3, 3])],
            (1, 8, 8), (2, 2, 2), {"W": w(16, 2, 1, 3, 3)}, 18),
        "conv1d": (
            [make("Conv", ["x", "W", "B"], "h", strides=[2], pads=[1, 2])],
            (3, 11), (4, 6), {"W": w(17, 4, 3, 3), "B": w(18, 4)}, 18),
        "conv-batchnorm-folded": (
            [make("Conv", ["x", "W"], "c", pads=[1, 1, 1, 1]),
             make("BatchNormalization", ["c", "g", "beta", "mu", "var"], "h", epsilon=1e-3)],
            (2, 4, 4), (3, 4, 4),
            {"W": w(19, 3, 2, 3, 3), "g": w(20, 3), "beta": w(21, 3), "mu": w(22, 3),
             "var": np.abs(w(23, 3)) + 0.5}, 18),
        "batchnorm-alone": (
            [make("BatchNormalization", ["x", "g", "beta", "mu", "var"], "h")],
            (3, 2, 2), (3, 2, 2),
            {"g": w(24, 3), "beta": w(25, 3), "mu": w(26, 3), "var": np.abs(w(27, 3)) + 0.5}, 18),
        "matmul-constant-right": (
            [make("MatMul", ["x", "M"], "h")], (4, 5), (4, 3), {"M": w(28, 5, 3)}, 18),
        "matmul-constant-left-then-bias": (
            [make("MatMul", ["M", "x"], "m"), make("Add", ["m", "b"], "h")],
            (4, 5), (6, 5), {"M": w(29, 6, 4), "b": w(30, 6, 1)}, 18),
        "gemm-chain-with-scale-and-sub": (
            [make("Gemm", ["x", "W1"], "a", transB=1), make("Mul", ["a", "k"], "m"),
             make("Div", ["m", "d"], "q"), make("Sub", ["q", "c"], "h")],
            (5,), (4,), {"W1": w(31, 4, 5), "k": w(32, 4), "d": np.abs(w(33, 4)) + 0.5, "c": w(34, 4)}, 18),
        "residual-add-and-sub": (  # h = conv_a(x) + x - conv_b(x): Norm at the sums, LRP-0 in the convs
            [make("Conv", ["x", "Wa"], "a", pads=[1, 1, 1, 1]), make("Add", ["a", "x"], "s"),
             make("Conv", ["x", "Wb"], "b", pads=[0, 0, 0, 0]), make("Sub", ["s", "b"], "h")],
            (2, 4, 4), (2, 4, 4), {"Wa": w(35, 2, 2, 3, 3), "Wb": w(36, 2, 2, 1, 1)}, 18),
        "concat-of-two-convs-then-mean": (
            [make("Conv", ["x", "Wa"], "a"), make("Conv", ["x", "Wb"], "b"),
             make("Concat", ["a", "b"], "c", axis=1),
             make("ReduceMean", ["c", "axes"], "h", keepdims=0)],
            (2, 3, 3), (5,), {"Wa": w(37, 2, 2, 3, 3), "Wb": w(38, 3, 2, 3, 3), "axes": np.array([2, 3])}, 18),
    }


@pytest.mark.parametrize("name", sorted(linear_cases()))
def test_linear_body_lrp0(build_model, name):
    nodes, x_shape, h_shape, inits, opset = linear_cases()[name]
    case = Case(build_model, nodes, x_shape, h_shape, inits, opset)
    x = random_input(x_shape, n=3)
    targets = np.array([0, 2, 1])
    assert_relevance(case.explain(x, targets).relevance, expected_linear(case, x, targets))


def pooling_cases():
    """Average pools and means (Norm rule); positive inputs keep every z away from 0."""
    return {
        "avgpool-ceil-include-pad": (
            [make("AveragePool", ["x"], "h", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                  ceil_mode=1, count_include_pad=1)], (2, 6, 6), (2, 4, 4)),
        "avgpool-ceil-exclude-pad": (
            [make("AveragePool", ["x"], "h", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                  ceil_mode=1, count_include_pad=0)], (2, 6, 6), (2, 4, 4)),
        "avgpool-ceil-partial-window-no-pads": (
            [make("AveragePool", ["x"], "h", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
                  count_include_pad=1)], (1, 5, 5), (1, 3, 3)),
        "avgpool-asymmetric-pads-include": (
            [make("AveragePool", ["x"], "h", kernel_shape=[2, 3], strides=[1, 2], pads=[0, 2, 1, 0],
                  count_include_pad=1)], (2, 4, 5), (2, 4, 3)),
        "avgpool-same-upper": (
            [make("AveragePool", ["x"], "h", kernel_shape=[2, 2], strides=[2, 2], auto_pad="SAME_UPPER")],
            (1, 5, 5), (1, 3, 3)),
        "avgpool-1d": (
            [make("AveragePool", ["x"], "h", kernel_shape=[3], strides=[2], pads=[1, 1], count_include_pad=1)],
            (2, 7), (2, 4)),
        "global-avgpool": ([make("GlobalAveragePool", ["x"], "h")], (3, 4, 5), (3, 1, 1)),
        "reducemean-channels-keepdims": (
            [make("ReduceMean", ["x", "axes"], "h", keepdims=1)], (3, 2, 2), (1, 2, 2)),
    }


@pytest.mark.parametrize("name", sorted(pooling_cases()))
def test_average_pooling_norm_rule(build_model, name):
    nodes, x_shape, h_shape = pooling_cases()[name]
    inits = {"axes": np.array([1])} if "reducemean" in name else {}
    case = Case(build_model, nodes, x_shape, h_shape, inits)
    x = random_input(x_shape, n=2, positive=True)
    targets = np.array([1, 0])
    assert_relevance(case.explain(x, targets).relevance, expected_linear(case, x, targets))


# -- routing bodies and max-pools ----------------------------------------------------------------
def routing_cases():
    """name -> (nodes, x_shape, h_shape, constants, opset)."""
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    return {
        "maxpool-overlap-pads-ceil": (
            [make("MaxPool", ["x"], "h", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)],
            (2, 6, 6), (2, 4, 4), {}, 18),
        "maxpool-overlap-alexnet": (
            [make("MaxPool", ["x"], "h", kernel_shape=[3, 3], strides=[2, 2])], (2, 7, 7), (2, 3, 3), {}, 18),
        "maxpool-stride1-heavy-overlap": (
            [make("MaxPool", ["x"], "h", kernel_shape=[3, 2], strides=[1, 1], pads=[1, 0, 1, 1])],
            (1, 4, 4), (1, 4, 4), {}, 18),
        "maxpool-dilated": (
            [make("MaxPool", ["x"], "h", kernel_shape=[2, 2], dilations=[2, 2])], (1, 5, 5), (1, 3, 3), {}, 18),
        "maxpool-1d-ceil": (
            [make("MaxPool", ["x"], "h", kernel_shape=[3], strides=[2], pads=[1, 0], ceil_mode=1)],
            (2, 8), (2, 4), {}, 18),
        "maxpool-3d-dilated-pads": (
            [make("MaxPool", ["x"], "h", kernel_shape=[2, 3, 2], strides=[1, 2, 1], dilations=[1, 1, 2],
                  pads=[0, 1, 1, 1, 1, 0])], (1, 3, 5, 4), (1, 3, 3, 3), {}, 18),
        "maxpool-with-indices-output": (
            [make("MaxPool", ["x"], ["h", "idx"], kernel_shape=[2, 2], strides=[1, 1])],
            (2, 3, 3), (2, 2, 2), {}, 18),
        "global-maxpool": ([make("GlobalMaxPool", ["x"], "h")], (3, 3, 4), (3, 1, 1), {}, 18),
        "concat-with-constant": (  # the constant part's relevance is absorbed
            [make("Shape", ["x"], "s"), make("Expand", ["k", "s"], "ke"), make("Concat", ["ke", "x"], "h", axis=2)],
            (2, 3), (2, 6), {"k": weights(40, 1, 2, 1)}, 18),
        "split-transpose-concat": (
            [make("Split", ["x", "sizes"], ["a", "b"], axis=1), make("Transpose", ["a"], "at", perm=[0, 2, 1]),
             make("Transpose", ["b"], "bt", perm=[0, 2, 1]), make("Concat", ["bt", "at"], "h", axis=2)],
            (3, 3), (3, 3), {"sizes": i64(2, 1)}, 18),
        "split-unused-output": (
            [make("Split", ["x", "sizes"], ["h", "rest"], axis=2)], (2, 5), (2, 2), {"sizes": i64(2, 3)}, 18),
        "split-opset13-attribute-free": (
            [make("Split", ["x"], ["a", "h"], axis=1)], (4, 3), (2, 3), {}, 13),
        "slice-negative-starts-axes": (
            [make("Slice", ["x", "starts", "ends", "axes"], "h")], (3, 4, 5), (3, 2, 3),
            {"starts": i64(1, -4), "ends": i64(3, 4), "axes": i64(2, -1)}, 18),
        "slice-clamped-ends": (
            [make("Slice", ["x", "starts", "ends", "axes"], "h")], (4, 3), (4, 2),
            {"starts": i64(0, 1), "ends": i64(2**62, 100), "axes": i64(1, 2)}, 18),
        "pad-constant": (
            [make("Pad", ["x", "pads"], "h", mode="constant")], (2, 3, 3), (2, 4, 6),
            {"pads": i64(0, 0, 1, 2, 0, 0, 0, 1)}, 18),
        "pad-axes-opset18": (
            [make("Pad", ["x", "pads", "", "axes"], "h")], (2, 3, 3), (2, 3, 5),
            {"pads": i64(1, 1), "axes": i64(-1)}, 18),
        "transpose-no-perm": ([make("Transpose", ["x"], "t"), make("Transpose", ["t"], "h", perm=[2, 1, 0])],
                              (2, 3), (2, 3), {}, 18),
        "reshape-squeeze-unsqueeze-flatten": (
            [make("Reshape", ["x", "shape"], "r"), make("Unsqueeze", ["r", "ax"], "u"),
             make("Squeeze", ["u", "ax"], "s"), make("Flatten", ["s"], "f", axis=1),
             make("Identity", ["f"], "h")],
            (2, 6), (12,), {"shape": i64(0, 3, 4), "ax": i64(2)}, 13),
    }


@pytest.mark.parametrize("name", sorted(routing_cases()))
def test_routing_body(build_model, name):
    nodes, x_shape, h_shape, inits, opset = routing_cases()[name]
    case = Case(build_model, nodes, x_shape, h_shape, inits, opset)
    x = distinct_integers(x_shape, n=2)
    targets = np.array([2, 0])
    step = 0.25 if "maxpool" in name else 1.0
    expected = expected_routing(case, x, targets, step)
    if "maxpool" in name:  # the oracle's winners are integers 0/1, not approximations
        J = case.jacobian(x[0], step)
        np.testing.assert_array_equal(np.unique(J), [0.0, 1.0])
    assert_relevance(case.explain(x, targets).relevance, expected, rtol=1e-5)


def test_maxpool_routes_with_the_batch(build_model):
    """Winner indices are per sample: explaining a batch equals explaining each sample alone."""
    nodes, x_shape, h_shape, inits, opset = routing_cases()["maxpool-overlap-pads-ceil"]
    case = Case(build_model, nodes, x_shape, h_shape, inits, opset)
    x = distinct_integers(x_shape, n=5, seed=7)
    ex = Explainer(case.model, composite="lrp0")
    batch = ex.explain(x, target=1).relevance
    single = np.concatenate([ex.explain(x[i:i + 1], target=1).relevance for i in range(len(x))])
    np.testing.assert_allclose(batch, single, rtol=1e-6, atol=1e-6)


# -- activations and gates pass relevance --------------------------------------------------------
ACTIVATIONS = {
    "Relu": {}, "LeakyRelu": {"alpha": 0.1}, "Sigmoid": {}, "Tanh": {}, "HardSigmoid": {}, "HardSwish": {},
    "Elu": {}, "Softplus": {}, "Gelu": {}, "Selu": {}, "Clip": None, "PRelu": None, "Max": None, "Min": None,
}


@pytest.mark.parametrize("op", sorted(ACTIVATIONS))
def test_activation_passes_relevance(build_model, op):
    inits, inputs = {}, ["x"]
    if op == "Clip":
        inits, inputs = {"lo": np.array(-0.5, np.float32), "hi": np.array(1.5, np.float32)}, ["x", "lo", "hi"]
    elif op == "PRelu":
        inits, inputs = {"slope": weights(41, 2, 1, 1)}, ["x", "slope"]
    elif op in ("Max", "Min"):
        inits, inputs = {"k": np.array(0.3, np.float32)}, ["x", "k"]
    node = make(op, inputs, "h", **(ACTIVATIONS[op] or {}))
    case = Case(build_model, [node], (2, 3, 3), (2, 3, 3), inits, opset=20)
    x = random_input((2, 3, 3), n=2)
    targets = np.array([0, 1])
    np.testing.assert_allclose(case.explain(x, targets).relevance, case.relevance_h(x, targets),
                               rtol=1e-5, atol=1e-6)


def test_sigmoid_gate_holds_the_gate_constant(build_model):
    """``h = a * sigmoid(b)`` with ``[a, b] = split(x)``: all relevance to ``a``, none through the gate."""
    nodes = [make("Split", ["x", "sizes"], ["a", "b"], axis=1), make("Sigmoid", ["b"], "g"),
             make("Mul", ["g", "a"], "h")]
    case = Case(build_model, nodes, (4, 3), (2, 3), {"sizes": np.array([2, 2], np.int64)})
    x = random_input((4, 3), n=2)
    targets = np.array([1, 2])
    relevance = case.explain(x, targets).relevance
    np.testing.assert_allclose(relevance[:, :2], case.relevance_h(x, targets), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(relevance[:, 2:], 0.0)


def test_squeeze_excitation_gate_broadcast(build_model):
    """SE-style gate: ``h = x * sigmoid(mean_hw(x) W)`` broadcast over space; relevance passes to ``x``."""
    nodes = [make("GlobalAveragePool", ["x"], "m"), make("Conv", ["m", "W"], "z"), make("Sigmoid", ["z"], "g"),
             make("Mul", ["x", "g"], "h")]
    case = Case(build_model, nodes, (3, 2, 2), (3, 2, 2), {"W": weights(42, 3, 3, 1, 1)})
    x = random_input((3, 2, 2), n=2)
    targets = np.array([0, 2])
    np.testing.assert_allclose(case.explain(x, targets).relevance, case.relevance_h(x, targets),
                               rtol=1e-5, atol=1e-6)
