"""Models this project's PyTorch code did not make: one written by hand with onnx.helper (in three opsets),
and the models that the ``onnx`` wheel ships in ``onnx/backend/test/data``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, version_converter

from lrp_onnx.runtime import Explainer

ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"


def node(op, inputs, outputs, **attrs):
    outputs = [outputs] if isinstance(outputs, str) else outputs
    return helper.make_node(op, inputs, outputs, name=f"n_{outputs[0]}", **attrs)


def foreign_model(build_model, opset: int, zero_bias: bool = False) -> onnx.ModelProto:
    """A small CNN in the forms of ``opset`` (11: axes/split attributes; 13: inputs; 18+: ReduceMean axes input).

    x (2x9x9) -> Conv SAME_UPPER s2 -> Add bias -> LeakyRelu -> Split [a, b];
    a -> PRelu; gate = Sigmoid(Conv1x1(b)); a * gate; b -> Clip; Concat -> Pad ->
    AveragePool 3/2 ceil_mode count_include_pad -> Slice -> Transpose -> HardSwish (opset < 14: x * HardSigmoid(x))
    -> [GlobalMaxPool, ReduceMean] -> Concat -> Squeeze -> Unsqueeze -> MatMul const -> Squeeze
    -> Gemm transB alpha beta -> Softmax.
    """
    rng = np.random.default_rng(5)
    w = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    c = {
        "W1": w(4, 2, 3, 3), "b1": w(4, 1, 1) * (0 if zero_bias else 1), "slope": np.abs(w(2, 1, 1)) * 0.2,
        "lo": np.array(-1.0, np.float32), "hi": np.array(2.0, np.float32), "Wg": w(2, 2, 1, 1),
        "pads": i64(0, 0, 1, 1, 0, 0, 1, 1), "starts": i64(1), "ends": i64(4), "slice_axes": i64(3),
        "M": w(8, 6), "Wf": w(3, 6), "C": w(3) * (0 if zero_bias else 1),
    }
    attr_axes = opset < 13
    nodes = [
        node("Conv", ["x", "W1"], "c1", auto_pad="SAME_UPPER", strides=[2, 2]),
        node("Add", ["c1", "b1"], "c1b"),
        node("LeakyRelu", ["c1b"], "l1", alpha=0.1),
    ]
    if attr_axes:
        nodes.append(node("Split", ["l1"], ["sa", "sb"], axis=1, split=[2, 2]))
    else:
        c["split"] = i64(2, 2)
        nodes.append(node("Split", ["l1", "split"], ["sa", "sb"], axis=1))
    nodes += [
        node("PRelu", ["sa", "slope"], "pa"),
        node("Clip", ["sb", "lo", "hi"], "cb"),
        node("Conv", ["sb", "Wg"], "gz"),
        node("Sigmoid", ["gz"], "gate"),
        node("Mul", ["pa", "gate"], "gated"),
        node("Concat", ["gated", "cb"], "cat", axis=1),
        node("Pad", ["cat", "pads"], "padded", mode="constant"),
        node("AveragePool", ["padded"], "ap", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 0, 1, 1],
             ceil_mode=1, count_include_pad=1),
        node("Slice", ["ap", "starts", "ends", "slice_axes"], "sl"),
        node("Transpose", ["sl"], "tr", perm=[0, 1, 3, 2]),
    ]
    if opset >= 14:
        nodes.append(node("HardSwish", ["tr"], "hs"))
    else:
        nodes += [node("HardSigmoid", ["tr"], "hsig", alpha=1 / 6, beta=0.5), node("Mul", ["tr", "hsig"], "hs")]
    nodes.append(node("GlobalMaxPool", ["hs"], "gmp"))
    if opset >= 18:
        c["mean_axes"] = i64(2, 3)
        nodes.append(node("ReduceMean", ["hs", "mean_axes"], "rm", keepdims=1))
    else:
        nodes.append(node("ReduceMean", ["hs"], "rm", axes=[2, 3], keepdims=1))
    nodes.append(node("Concat", ["gmp", "rm"], "c2", axis=1))
    if attr_axes:
        nodes += [node("Squeeze", ["c2"], "sq", axes=[2, 3]), node("Unsqueeze", ["sq"], "us", axes=[1]),
                  node("MatMul", ["us", "M"], "mm"), node("Squeeze", ["mm"], "m2", axes=[1])]
    else:
        c.update(sq_axes=i64(2, 3), one=i64(1))
        nodes += [node("Squeeze", ["c2", "sq_axes"], "sq"), node("Unsqueeze", ["sq", "one"], "us"),
                  node("MatMul", ["us", "M"], "mm"), node("Squeeze", ["mm", "one"], "m2")]
    nodes += [
        node("Gemm", ["m2", "Wf", "C"], "logits_raw", transB=1, alpha=0.5, beta=2.0),
        node("Softmax", ["logits_raw"], "prob", axis=1),
    ]
    return build_model(nodes, {"x": ["N", 2, 9, 9]}, {"prob": ["N", 3]}, c, opset=opset, name="foreign")


def inputs(n=4, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2, 9, 9)).astype(np.float32)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def foreign_files(tmp_path_factory, build_model):
    folder = tmp_path_factory.mktemp("foreign")
    files = {}
    for opset in (11, 13, 21):
        files[opset] = folder / f"foreign_opset{opset}.onnx"
        onnx.save(foreign_model(build_model, opset), str(files[opset]))
    return files


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_hand_built_model_explains_through_the_cli(cli, tmp_path, foreign_files, opset):
    x = inputs()
    np.save(tmp_path / "x.npy", x)
    res = cli("explain", foreign_files[opset], tmp_path / "x.npy", "-o", tmp_path / "r.npy", "--json",
              "--composite", "epsilon-plus")
    assert res.rc == 0, res.err
    relevance = np.load(tmp_path / "r.npy")
    assert relevance.shape == x.shape and relevance.dtype == np.float32
    assert np.isfinite(relevance).all() and np.abs(relevance).sum() > 0
    rows = [json.loads(line) for line in res.out.splitlines()]
    assert len(rows) == len(x)
    # the explained logits are those before the Softmax: softmax(logits) is the model's own output
    session = ort.InferenceSession(str(foreign_files[opset]), providers=["CPUExecutionProvider"])
    prob = session.run(None, {"x": x})[0]
    assert [r["prediction"] for r in rows] == list(prob.argmax(1))
    logits = Explainer(foreign_files[opset]).predict(x)
    np.testing.assert_allclose(softmax(logits), prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r["target_logit"] for r in rows], logits.max(1), rtol=1e-5)


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_hand_built_model_conserves_relevance(build_model, opset):
    """Zero biases, LRP-0 in the linear layers, pass / norm / winner-takes-all elsewhere:
    the input relevance sums to the explained logit (every operator of the model conserves)."""
    ex = Explainer(foreign_model(build_model, opset, zero_bias=True), composite="lrp0")
    x = inputs(6, seed=opset)
    for target in (None, 1):
        e = ex.explain(x, target=target)
        np.testing.assert_allclose(e.relevance_sums, e.target_logits, rtol=1e-4, atol=1e-6)


def test_opsets_agree(build_model):
    """The version-converted (11, 13) and the native (21) forms give the same relevance."""
    x = inputs(3)
    results = [Explainer(foreign_model(build_model, opset), composite="epsilon").explain(x, target=2)
               for opset in (11, 13, 21)]
    for other in results[1:]:
        np.testing.assert_allclose(other.logits, results[0].logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(other.relevance, results[0].relevance, rtol=1e-4,
                                   atol=1e-5 * np.abs(results[0].relevance).max())


def test_hand_built_model_compiles_to_a_plain_onnxruntime_model(cli, tmp_path, foreign_files):
    out = tmp_path / "explainer.onnx"
    res = cli("compile", foreign_files[13], "-o", out, "--composite", "lrp0")
    assert res.rc == 0, res.err
    onnx.checker.check_model(str(out), full_check=True)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = inputs(3)
    logits, targets, relevance = session.run(["logits", "targets", "relevance"],
                                             {"x": x, "target": np.array([-1, 0, 2], np.int64)})
    e = Explainer(foreign_files[13], composite="lrp0").explain(x, target=[-1, 0, 2])
    np.testing.assert_array_equal(targets, e.targets)
    np.testing.assert_allclose(relevance, e.relevance, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logits, e.logits, rtol=1e-6)


# -- models shipped in the onnx wheel ------------------------------------------------------------
def shipped(relative: str) -> Path:
    path = ONNX_DATA / relative
    if not path.exists():
        pytest.skip(f"this onnx wheel does not ship {relative}")
    return path


def converted(path: Path, tmp_path: Path, opset: int = 13) -> Path:
    """What a user does with an old file: onnx's own version converter, then save."""
    out = tmp_path / f"{path.parent.name}_{path.stem}_opset{opset}.onnx"
    onnx.save(version_converter.convert_version(onnx.load(str(path)), opset), str(out))
    return out


def test_shipped_opset6_model_is_refused_with_its_opset(cli, tmp_path):
    path = shipped("pytorch-converted/test_Linear/model.onnx")
    np.save(tmp_path / "x.npy", np.zeros((4, 10), np.float32))
    res = cli("explain", path, tmp_path / "x.npy")
    assert res.rc == 2 and "Traceback" not in res.err
    assert "opset 6" in res.err and len(res.err.strip().splitlines()) == 1


def test_shipped_linear_model_after_conversion(cli, tmp_path):
    """onnx's ``test_Linear`` (a PyTorch Linear 10 -> 8, fixed batch 4, IR version 3) converted to opset 13."""
    path = converted(shipped("pytorch-converted/test_Linear/model.onnx"), tmp_path)
    x = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    e = Explainer(path, composite="lrp0").explain(x)
    model = onnx.load(str(path))
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    gemm = model.graph.node[0]
    W, b = weights[gemm.input[1]], weights[gemm.input[2]]
    z = x @ W.T + b
    np.testing.assert_allclose(e.logits, z, rtol=1e-5, atol=1e-6)
    t = z.argmax(1)
    np.testing.assert_allclose(e.relevance, x * W[t] * (z[np.arange(4), t] / z[np.arange(4), t])[:, None],
                               rtol=1e-5, atol=1e-6)
    # the compiled explainer of this IR-3 model must pass onnx's checker (IR < 4: initializers are inputs)
    res = cli("compile", path, "-o", tmp_path / "explainer.onnx")
    assert res.rc == 0, res.err[-2000:]
    onnx.checker.check_model(str(tmp_path / "explainer.onnx"))


def test_fixed_batch_model_given_another_batch_size(cli, tmp_path):
    """The shipped model's input is fixed at batch 4; one sample must give a one-line error, not a crash."""
    path = converted(shipped("pytorch-converted/test_Linear/model.onnx"), tmp_path)
    np.save(tmp_path / "x.npy", np.zeros((10,), np.float32))
    res = cli("explain", path, tmp_path / "x.npy", "-o", tmp_path / "r.npy")
    assert res.rc == 2 and "Traceback" not in res.err, res.err[-2000:]
    assert "batch" in res.err and len(res.err.strip().splitlines()) == 1
    assert not (tmp_path / "r.npy").exists()


def test_fixed_batch_of_one_runs_any_batch(build_model):
    """Many exported models fix the batch axis at 1 (onnx's light models do): a batch is explained one
    sample per run, with the results of explaining each sample alone."""
    rng = np.random.default_rng(0)
    nodes = [node("Conv", ["x", "W"], "c", pads=[1, 1, 1, 1]), node("Relu", ["c"], "r"),
             node("Flatten", ["r"], "f"), node("Gemm", ["f", "V"], "y", transB=1)]
    model = build_model(nodes, {"x": [1, 2, 3, 3]}, {"y": [1, 3]},
                        {"W": rng.standard_normal((2, 2, 3, 3)), "V": rng.standard_normal((3, 18))})
    ex = Explainer(model, composite="epsilon")
    x = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    e = ex.explain(x, target=[0, 1, 2])
    for i in range(3):
        np.testing.assert_array_equal(e.relevance[i], ex.explain(x[i], target=i).relevance)
    np.testing.assert_array_equal(ex.predict(x), e.logits)


def test_shipped_inception_v2(tmp_path):
    """onnx's ``light_inception_v2`` (Caffe2 export: BatchNorm, Concat, AveragePool, Softmax; weights made by
    ConstantOfShape nodes), converted from opset 9: explains, and its logits are the model's own scores."""
    path = converted(shipped("light/light_inception_v2.onnx"), tmp_path)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ex = Explainer(path, composite="epsilon-plus")
    e = ex.explain(x)
    assert e.relevance.shape == x.shape and np.isfinite(e.relevance).all()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    prob = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(softmax(e.logits), prob, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(ex.predict(x), e.logits)


def test_variadic_sum_residual(build_model):
    rng = np.random.default_rng(0)
    nodes = [node("Conv", ["x", "Wa"], "a", pads=[1, 1, 1, 1]), node("Conv", ["x", "Wb"], "b"),
             node("Sum", ["a", "b", "x"], "s"), node("Flatten", ["s"], "f"), node("Gemm", ["f", "V"], "y", transB=1)]
    model = build_model(nodes, {"x": ["N", 2, 4, 4]}, {"y": ["N", 3]},
                        {"Wa": rng.standard_normal((2, 2, 3, 3)), "Wb": rng.standard_normal((2, 2, 1, 1)),
                         "V": rng.standard_normal((3, 32))})
    e = Explainer(model, composite="lrp0").explain(inputs(2)[:, :, :4, :4], target=0)
    np.testing.assert_allclose(e.relevance_sums, e.target_logits, rtol=1e-4)


def test_output_with_unit_spatial_axes(build_model):
    rng = np.random.default_rng(0)
    nodes = [node("Conv", ["x", "W"], "c"), node("Relu", ["c"], "r"), node("GlobalAveragePool", ["r"], "g"),
             node("Conv", ["g", "W2"], "y")]
    model = build_model(nodes, {"x": ["N", 2, 4, 4]}, {"y": ["N", 3, 1, 1]},
                        {"W": rng.standard_normal((4, 2, 3, 3)), "W2": rng.standard_normal((3, 4, 1, 1))})
    e = Explainer(model, composite="lrp0").explain(inputs(2)[:, :, :4, :4])
    assert e.logits.shape == (2, 3)
