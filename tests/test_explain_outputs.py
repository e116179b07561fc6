"""Any output: ``--model-output`` picks the explained output (a rank-3 one flattened to (N, K) in
row-major order), ``--direction w`` explains the score ``w . y``.

The reference is an independent float64 numpy LRP of the two-layer network below (epsilon rule with
Zennit's stabiliser ``z + eps * sign(z)``, sign(0) = +1, the bias in the denominator only), seeded
with the relevance the option should start from; the compiler's ONNX graph runs in onnxruntime.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from lrp_onnx.lrp_graph import compile_explainer
from lrp_onnx.lrp_graph.errors import InputError, LRPError, ModelError
from lrp_onnx.runtime.explainer import Explainer
from onnx import helper

EPS = 0.1
rng = np.random.default_rng(7)
W1, B1 = rng.standard_normal((5, 4)), 0.1 * rng.standard_normal(5)   # hidden = relu(x W1^T + b1)
W2, B2 = rng.standard_normal((6, 5)), 0.1 * rng.standard_normal(6)   # y = hidden W2^T + b2, (N, 6)
WA = rng.standard_normal((3, 4))                                      # a = x WA^T, (N, 3)


def two_outputs(build_model, *, biases: bool = True, name: str = "b"):
    """x (N, 4) -> outputs 'a' (N, 3) and NAME (N, 2, 3): the (N, 6) scores of a two-layer ReLU
    network reshaped (score k = [k // 3, k % 3])."""
    nodes = [helper.make_node("Gemm", ["x", "WA"], ["a"], name="head_a", transB=1),
             helper.make_node("Gemm", ["x", "W1", "B1"], ["z1"], name="fc1", transB=1),
             helper.make_node("Relu", ["z1"], ["h"], name="relu"),
             helper.make_node("Gemm", ["h", "W2", "B2"], ["y"], name="fc2", transB=1),
             helper.make_node("Reshape", ["y", "shape"], [name], name="to_rank3")]
    scale = 1.0 if biases else 0.0
    inits = {"WA": WA, "W1": W1, "B1": scale * B1, "W2": W2, "B2": scale * B2,
             "shape": np.array([-1, 2, 3], np.int64)}
    return build_model(nodes, {"x": ["N", 4]}, {"a": ["N", 3], name: ["N", 2, 3]}, inits)


def reference(x: np.ndarray, seed, eps: float = EPS, biases: bool = True) -> np.ndarray:
    """float64 epsilon-LRP of the (N, 6) scores back to x; ``seed(y)`` is the relevance at y."""
    x = x.astype(np.float64)
    b1, b2 = (B1, B2) if biases else (0 * B1, 0 * B2)

    def stab(z):
        return z + eps * np.where(z >= 0, 1.0, -1.0) if eps else np.where(z == 0, np.inf, z)

    z1 = x @ W1.T + b1
    h = np.maximum(z1, 0)
    y = h @ W2.T + b2
    r_h = h * ((seed(y) / stab(y)) @ W2)
    return x * ((r_h / stab(z1)) @ W1)


def forward(model, x, name):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([name], {"x": x})[0]


@pytest.fixture()
def x():
    return np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)


# ------------------------------------------------------------------------------- --model-output


def test_rank3_output_is_flattened_in_row_major_order(build_model, x):
    model = two_outputs(build_model)
    ex = Explainer(model, "epsilon", epsilon=EPS, output="b", cache=False)
    assert ex.num_classes == 6
    e = ex.explain(x, target=np.array([0, 1, 2, 4, 5]))
    np.testing.assert_allclose(e.logits, forward(model, x, "b").reshape(len(x), -1), rtol=1e-6)
    for i, k in enumerate([0, 1, 2, 4, 5]):
        def seed(y, k=k):
            return y * (np.arange(6) == k)
        np.testing.assert_allclose(e.relevance[i], reference(x[i:i + 1], seed)[0], rtol=1e-5, atol=1e-6)


def test_first_output_stays_the_default(build_model, x):
    model = two_outputs(build_model)
    default, chosen = Explainer(model, cache=False), Explainer(model, output="a", cache=False)
    assert default.num_classes == chosen.num_classes == 3
    np.testing.assert_allclose(default.explain(x).relevance, chosen.explain(x).relevance)


def test_bad_output_name_lists_the_outputs(build_model):
    model = two_outputs(build_model)
    with pytest.raises(ModelError, match=r"no output named 'nope'; its outputs: 'a', 'b'"):
        Explainer(model, output="nope", cache=False)


def test_cli_model_output(cli, tmp_path, build_model, x):
    path = tmp_path / "m.onnx"
    onnx.save(two_outputs(build_model), str(path))
    np.save(tmp_path / "x.npy", x[0])
    res = cli("explain", path, tmp_path / "x.npy", "--model-output", "b", "--target", "4", "--json",
              "-o", tmp_path / "r.npy")
    assert res.rc == 0, res.err
    row = json.loads(res.out)
    assert row["target"] == 4
    assert row["target_logit"] == pytest.approx(float(forward(two_outputs(build_model), x[:1], "b")[0, 1, 1]),
                                                rel=1e-5)
    assert np.load(tmp_path / "r.npy").shape == (4,)

    bad = cli("explain", path, tmp_path / "x.npy", "--model-output", "nope")
    assert bad.rc == 2
    assert bad.err.strip().count("\n") == 0 and "its outputs: 'a', 'b'" in bad.err and "Traceback" not in bad.err

    checked = cli("check", path, "--model-output", "b", "--json")
    assert checked.rc == 0, checked.err
    assert json.loads(checked.out)["explained_output"] == "b"
    assert cli("check", path, "--model-output", "nope").rc == 2

    out = tmp_path / "explainer.onnx"
    assert cli("compile", path, "-o", out, "--model-output", "b").rc == 0
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"x": x, "target": np.full(len(x), -1, np.int64)})[0]
    np.testing.assert_allclose(logits, forward(two_outputs(build_model), x, "b").reshape(len(x), 6), rtol=1e-6)


# ------------------------------------------------------------------------------- --direction


def test_direction_is_the_weighted_sum_of_class_relevances(build_model, x):
    """LRP with epsilon rules is linear in the relevance it starts from: R(w) = sum_k w_k R(k)."""
    model = two_outputs(build_model)
    w = np.random.default_rng(5).standard_normal(6).astype(np.float32)
    by_class = Explainer(model, "epsilon", epsilon=EPS, output="b", cache=False)
    along = Explainer(model, "epsilon", epsilon=EPS, output="b", direction=w, cache=False)
    e = along.explain(x)
    y = forward(model, x, "b").reshape(len(x), 6).astype(np.float64)
    assert e.logits.shape == (len(x), 1) and (e.targets == 0).all()
    np.testing.assert_allclose(e.logits[:, 0], y @ w, rtol=1e-5)
    combined = sum(float(w[k]) * by_class.explain(x, target=k).relevance.astype(np.float64) for k in range(6))
    np.testing.assert_allclose(e.relevance, combined, rtol=1e-5, atol=1e-5 * np.abs(combined).max())
    np.testing.assert_allclose(e.relevance, reference(x, lambda y: y * w), rtol=1e-5,
                               atol=1e-6 * np.abs(combined).max())


def test_direction_conserves_the_score(build_model, x):
    """Zero biases, epsilon 0: the input relevance sums to w . y."""
    model = two_outputs(build_model, biases=False)
    w = np.random.default_rng(6).standard_normal(6)
    e = Explainer(model, "epsilon", epsilon=0.0, output="b", direction=w, cache=False).explain(x)
    y = forward(model, x, "b").reshape(len(x), 6).astype(np.float64)
    np.testing.assert_allclose(e.relevance_sums, y @ w, rtol=1e-4)
    np.testing.assert_allclose(e.relevance, reference(x, lambda y: y * w, eps=0.0, biases=False),
                               rtol=1e-4, atol=1e-6)


def test_direction_on_an_output_named_logits(build_model, x):
    """The explainer's own 'logits' output is the score; the model's value of that name is renamed."""
    model = two_outputs(build_model, name="logits")
    w = np.linspace(-1, 1, 6)
    e = Explainer(model, output="logits", direction=w, cache=False).explain(x)
    np.testing.assert_allclose(e.logits[:, 0], forward(model, x, "logits").reshape(len(x), 6) @ w, rtol=1e-5)
    assert compile_explainer(model, output="logits", direction=w).model.graph.output[0].name == "logits"


@pytest.mark.parametrize("w, message", [
    (np.ones(5), "length 5; output 'b' has 6 scores"),
    (np.ones((2, 3)), "1-D"),
    (np.array([1, 2, 3, np.nan, 5, 6.0]), "NaN or infinite"),
    (np.array([1, 2, 3, np.inf, 5, 6.0]), "NaN or infinite"),
])
def test_bad_direction(build_model, w, message):
    with pytest.raises(InputError, match=message):
        compile_explainer(two_outputs(build_model), output="b", direction=w)
    with pytest.raises(InputError, match=message.split(";")[0]):
        Explainer(two_outputs(build_model), output="b", direction=w, cache=False)


def test_cli_direction(cli, tmp_path, build_model, x):
    path = tmp_path / "m.onnx"
    onnx.save(two_outputs(build_model), str(path))
    np.save(tmp_path / "x.npy", x)
    w = np.arange(6, dtype=np.float32) - 2.5
    np.save(tmp_path / "w.npy", w)
    res = cli("explain", path, tmp_path / "x.npy", "--model-output", "b", "--direction", tmp_path / "w.npy",
              "--json", "-o", tmp_path / "r.npy", "--composite", "epsilon", "--epsilon", "0.1")
    assert res.rc == 0, res.err
    rows = [json.loads(line) for line in res.out.splitlines()]
    y = forward(two_outputs(build_model), x, "b").reshape(len(x), 6).astype(np.float64)
    np.testing.assert_allclose([r["score"] for r in rows], y @ w, rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "r.npy"), reference(x, lambda y: y * w), rtol=1e-4, atol=1e-5)

    for bad, message in ((np.ones(4, np.float32), "has length 4"), (np.ones((6, 1)), "1-D"),
                         (np.array([np.nan] * 6), "NaN")):
        np.save(tmp_path / "bad.npy", bad)
        res = cli("explain", path, tmp_path / "x.npy", "--model-output", "b", "--direction", tmp_path / "bad.npy")
        assert res.rc == 2 and message in res.err and res.err.strip().count("\n") == 0, res.err
    res = cli("explain", path, tmp_path / "x.npy", "--direction", tmp_path / "w.npy", "--target", "2")
    assert res.rc == 2 and "--direction" in res.err

    out = tmp_path / "explainer.onnx"
    assert cli("compile", path, "-o", out, "--model-output", "b", "--direction", tmp_path / "w.npy").rc == 0
    compiled = onnx.load(str(out))
    about = json.loads({p.key: p.value for p in compiled.metadata_props}["lrp_onnx.explainer"])
    assert about["output"] == "b" and about["direction"]["length"] == 6
    logits = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["logits"], {"x": x, "target": np.full(len(x), -1, np.int64)})[0]
    np.testing.assert_allclose(logits[:, 0], y @ w, rtol=1e-5)


# ------------------------------------------------------------------------------- review fixes


def _about(model) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}["lrp_onnx.explainer"])


def test_reshape_that_folds_time_into_the_batch_is_not_crossed(build_model):
    """MatMul -> Reshape(-1, C) -> Softmax -> Reshape(-1, T, C) (a CTC head): the Softmax works on
    frame rows, not samples, so it is not stripped; the explained value keeps one row per sample."""
    g = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["z"]), helper.make_node("Reshape", ["z", "s1"], ["z2"]),
             helper.make_node("Softmax", ["z2"], ["p"], axis=1), helper.make_node("Reshape", ["p", "s2"], ["y"])]
    model = build_model(nodes, {"x": ["N", 4, 3]}, {"y": ["N", 4, 5]},
                        {"W": g.standard_normal((3, 5)), "s1": np.array([-1, 5]), "s2": np.array([-1, 4, 5])})
    compiled = compile_explainer(model)
    assert compiled.plan.logits == "y" and compiled.plan.stripped is None and _about(compiled.model)["stripped"] is None
    for n in (1, 2):
        xs = g.standard_normal((n, 4, 3)).astype(np.float32)
        try:
            e = Explainer(model, cache=False).explain(xs)
        except LRPError:  # refusing the Softmax inside the model is right too; mixing samples is not
            continue
        assert e.logits.shape == (n, 20)
        np.testing.assert_allclose(e.logits, forward(model, xs, "y").reshape(n, 20), rtol=1e-5)


def test_flatten_softmax_reshape_is_still_stripped(build_model, x):
    """Flatten -> Softmax -> Reshape(-1, 2, 3) keeps the batch axis: the scores before it are explained."""
    nodes = [helper.make_node("Gemm", ["x", "W2"], ["z"], transB=1), helper.make_node("Flatten", ["z"], ["f"]),
             helper.make_node("Softmax", ["f"], ["p"], axis=1), helper.make_node("Reshape", ["p", "s"], ["y"])]
    model = build_model(nodes, {"x": ["N", 5]}, {"y": ["N", 2, 3]}, {"W2": W2, "s": np.array([-1, 2, 3])})
    compiled = compile_explainer(model)
    assert compiled.plan.logits == "f" and _about(compiled.model)["stripped"] == "Softmax"


def test_model_output_beside_a_value_named_logits(build_model, x):
    nodes = [helper.make_node("Gemm", ["x", "A"], ["logits"], transB=1),
             helper.make_node("Gemm", ["x", "B"], ["emb"], transB=1)]
    model = build_model(nodes, {"x": ["N", 4]}, {"logits": ["N", 3], "emb": ["N", 5]}, {"A": WA, "B": W1})
    e = Explainer(model, output="emb", cache=False).explain(x)
    np.testing.assert_allclose(e.logits, forward(model, x, "emb"), rtol=1e-6)
    assert compile_explainer(model, output="emb").model.graph.output[0].name == "logits"


def test_rank3_output_named_logits(build_model, x):
    model = two_outputs(build_model, name="logits")
    e = Explainer(model, "epsilon", epsilon=EPS, output="logits", cache=False).explain(x, target=4)
    np.testing.assert_allclose(e.logits, forward(model, x, "logits").reshape(len(x), 6), rtol=1e-6)
    np.testing.assert_allclose(e.relevance, reference(x, lambda y: y * (np.arange(6) == 4)), rtol=1e-5, atol=1e-6)


def _final(build_model, op: str, classes: int = 3):
    nodes = [helper.make_node("Gemm", ["x", "A"], ["onnx::Gemm_17"], transB=1),
             helper.make_node(op, ["onnx::Gemm_17"], ["y"], **({"axis": 1} if op == "Softmax" else {}))]
    return build_model(nodes, {"x": ["N", 4]}, {"y": ["N", classes]}, {"A": WA[:classes]})


def test_direction_explains_the_scores_before_a_final_softmax(build_model, x):
    """y in w . y is the output before a final Softmax (the logits), as the help and the docs say."""
    w = np.array([1.0, -2.0, 0.5])
    e = Explainer(_final(build_model, "Softmax"), "epsilon", epsilon=0.0, direction=w, cache=False).explain(x)
    np.testing.assert_allclose(e.logits[:, 0], (x.astype(np.float64) @ WA.T) @ w, rtol=1e-5)
    np.testing.assert_allclose(e.relevance, x * (WA.T @ w), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("op, classes", [("Softmax", 3), ("Sigmoid", 1), ("Relu", 3)])
def test_metadata_records_the_stripped_normaliser(cli, tmp_path, build_model, op, classes):
    model = _final(build_model, op, classes)
    about = _about(compile_explainer(model).model)
    assert about["stripped"] == (None if op == "Relu" else op) and about["output"] == "y"
    onnx.save(model, str(tmp_path / "m.onnx"))
    res = cli("check", tmp_path / "m.onnx", "--json")
    assert res.rc == 0 and json.loads(res.out)["stripped"] == about["stripped"]
    assert Explainer(model, cache=False).stripped == about["stripped"]


def test_direction_length_error_names_the_model_output(build_model):
    with pytest.raises(InputError, match="length 5; output 'y' has 3 scores"):
        compile_explainer(_final(build_model, "Softmax"), direction=np.ones(5))


def test_labels_are_dropped_where_they_do_not_name_the_logits(cli, tmp_path, build_model):
    from lrp_onnx.runtime.metadata import metadata_from_values, write_metadata

    model = two_outputs(build_model)
    write_metadata(model, metadata_from_values(labels=["p", "q", "r"]))
    labels = "lrp_onnx.labels"
    assert labels in {p.key for p in compile_explainer(model).model.metadata_props}
    assert labels not in {p.key for p in compile_explainer(model, output="b").model.metadata_props}
    assert labels not in {p.key for p in compile_explainer(model, direction=np.ones(3)).model.metadata_props}
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    np.save(tmp_path / "w.npy", np.ones(3, np.float32))
    res = cli("compile", path, "-o", tmp_path / "e.onnx", "--direction", tmp_path / "w.npy",
              "--triton", tmp_path / "repo", "--triton-name", "sim")
    assert res.rc == 0, res.err
    assert not (tmp_path / "repo" / "sim" / "labels.txt").exists()
    assert "label_filename" not in (tmp_path / "repo" / "sim" / "config.pbtxt").read_text()


def test_rows_that_are_not_samples_are_refused(build_model):
    """A time axis declared symbolic but reshaped to a constant row length: 1 sample of twice the
    length gives 2 rows; a one-line ModelError, not a wrong or misaligned result."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("Gemm", ["f", "G"], ["y"], transB=1)]
    model = build_model(nodes, {"x": ["N", "T"]}, {"y": ["N", 2]}, {"s": np.array([-1, 8]), "G": np.ones((2, 8))})
    ex = Explainer(model, cache=False)
    assert ex.explain(np.ones((3, 8), np.float32)).logits.shape == (3, 2)
    with pytest.raises(ModelError, match="first axis is not the batch axis: 1 sample.s. gave 2 row"):
        ex.explain(np.ones((1, 16), np.float32))
    with pytest.raises(ModelError, match="onnxruntime failed to run"):
        ex.explain(np.ones((1, 12), np.float32))
