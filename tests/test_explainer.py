"""The Explainer: results, batching, threads, the compile cache, predict, and the compiled model on its own."""
from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

import lrp_onnx.runtime.explainer as explainer_module
from lrp_onnx.lrp_graph import InputError
from lrp_onnx.runtime import Explainer


def small_cnn(build_model, seed=0):
    """x (2x12x12) -> Conv 6@3x3 p1 +b -> Relu -> MaxPool 3/2 -> Conv 8@3x3 s2 -> Relu -> GlobalAveragePool
    -> Flatten -> Gemm -> 4 classes (a different ``seed`` gives a different model: a cold cache)."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[3, 3], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "W2"], ["c2"], name="conv2", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "W3", "b3"], ["y"], name="fc", transB=1),
    ]
    inits = {"W1": rng.standard_normal((6, 2, 3, 3)), "b1": 0.1 * rng.standard_normal(6),
             "W2": rng.standard_normal((8, 6, 3, 3)) * 0.3, "W3": rng.standard_normal((4, 8)),
             "b3": 0.1 * rng.standard_normal(4)}
    return build_model(nodes, {"x": ["N", 2, 12, 12]}, {"y": ["N", 4]}, inits, name=f"small_cnn_{seed}")


@pytest.fixture(scope="module")
def model(build_model):
    return small_cnn(build_model)


@pytest.fixture(scope="module")
def explainer(model):
    return Explainer(model, composite="epsilon-plus")


def batch(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2, 12, 12)).astype(np.float32)


def test_explanation_fields(explainer):
    x = batch(5)
    e = explainer.explain(x)
    assert e.logits.shape == (5, 4) and e.logits.dtype == np.float32
    assert e.targets.shape == (5,) and e.targets.dtype == np.int64
    assert e.relevance.shape == x.shape and e.relevance.dtype == np.float32
    np.testing.assert_array_equal(e.targets, e.logits.argmax(1))
    assert explainer.input_shape == (2, 12, 12) and explainer.num_classes == 4 and explainer.input_name == "x"
    assert explainer.labels is None


def test_targets_int_array_and_single_sample(explainer):
    x = batch(4, seed=1)
    e = explainer.explain(x, target=[3, 0, -1, 2])
    np.testing.assert_array_equal(e.targets, [3, 0, e.logits[2].argmax(), 2])
    e3 = explainer.explain(x, target=3)
    np.testing.assert_array_equal(e3.targets, [3] * 4)
    np.testing.assert_allclose(e3.relevance[0], e.relevance[0], rtol=1e-6, atol=1e-7)
    one = explainer.explain(x[0])  # one sample without the batch axis: relevance shaped like it
    assert one.relevance.shape == x[0].shape == (2, 12, 12)
    assert one.logits.shape == (1, explainer.num_classes) and one.targets.shape == (1,)
    np.testing.assert_allclose(one.relevance, explainer.explain(x[:1]).relevance[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(one.relevance_sums, one.relevance.sum(), rtol=1e-6)
    with pytest.raises(InputError, match="one class per sample"):
        explainer.explain(x, target=[0, 1])


def test_input_as_float64_list(explainer):
    x = batch(2, seed=2)
    np.testing.assert_allclose(explainer.explain(x.astype(np.float64).tolist()).relevance,
                               explainer.explain(x).relevance, rtol=1e-6, atol=1e-7)


def test_predict_equals_explain_logits(explainer):
    x = batch(9, seed=3)
    np.testing.assert_allclose(explainer.predict(x), explainer.explain(x).logits, rtol=1e-6, atol=1e-6)
    session = ort.InferenceSession(explainer.source.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(explainer.predict(x), session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 7, 100])
def test_any_batch_size_with_chunking(model, n):
    """batch_size=16 splits 100 samples into 7 runs; results equal explaining each sample alone."""
    x = batch(n, seed=n)
    targets = np.arange(n) % 4
    chunked = Explainer(model, composite="epsilon-plus", batch_size=16).explain(x, target=targets)
    ex = Explainer(model, composite="epsilon-plus", batch_size=1)
    alone = [ex.explain(x[i], target=int(targets[i])) for i in range(0, n, max(1, n // 10))]
    for k, i in enumerate(range(0, n, max(1, n // 10))):
        np.testing.assert_allclose(chunked.relevance[i], alone[k].relevance, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(chunked.logits[i], alone[k].logits[0], rtol=1e-5, atol=1e-6)
    assert chunked.relevance.shape == x.shape
    np.testing.assert_array_equal(chunked.targets, targets)


def test_thread_safety(explainer):
    """16 threads x 6 calls, each with its own inputs and targets, give the sequential results."""
    jobs = [(batch(1 + (k % 5), seed=100 + k), k % 4) for k in range(96)]
    sequential = [explainer.explain(x, target=t) for x, t in jobs]
    results: dict[int, object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(16)

    def work(worker):
        start.wait()
        try:
            for k in range(worker, len(jobs), 16):
                x, t = jobs[k]
                results[k] = explainer.explain(x, target=t)
                if k % 3 == 0:
                    results[-1 - k] = explainer.predict(x)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    for k, (seq, (x, _)) in enumerate(zip(sequential, jobs)):
        np.testing.assert_allclose(results[k].relevance, seq.relevance, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(results[k].targets, seq.targets)
        if k % 3 == 0:
            np.testing.assert_allclose(results[-1 - k], seq.logits, rtol=1e-5, atol=1e-6)


def test_compile_cache(build_model, tmp_path, monkeypatch):
    """A second Explainer for the same model and composite does not compile again (path or proto alike)."""
    calls = []
    real = explainer_module.compile_explainer

    def counting(*args, **kwargs):
        calls.append(kwargs.get("layer_sums"))
        return real(*args, **kwargs)

    monkeypatch.setattr(explainer_module, "compile_explainer", counting)
    proto = small_cnn(build_model, seed=12345)  # not compiled by any other test
    path = tmp_path / "m.onnx"
    onnx.save(proto, str(path))
    x = batch(3)
    first = Explainer(path, composite="epsilon-plus")
    assert len(calls) == 1
    second = Explainer(proto, composite="epsilon-plus", threads=1)
    third = Explainer(str(path), composite="epsilon-plus", batch_size=2)
    assert len(calls) == 1
    for other in (second, third):
        np.testing.assert_allclose(other.explain(x).relevance, first.explain(x).relevance, rtol=1e-6, atol=1e-7)
    Explainer(path, composite="epsilon")
    Explainer(path, composite="epsilon-plus", epsilon=0.5)
    assert len(calls) == 3
    Explainer(path, composite="epsilon-plus", epsilon=0.5)
    assert len(calls) == 3


@pytest.mark.parametrize("composite, kwargs", [
    ("epsilon-plus", {}), ("gamma", {}), ("epsilon-gamma-box", {"bounds": (-4.0, 4.0)}),
    ("epsilon-alpha2-beta1-flat", {}), ("lrp0", {}),
])
def test_compiled_model_runs_alone(cli, model, tmp_path, composite, kwargs):
    """``lrp-onnx compile`` writes a model that passes onnx's checker and gives, in a plain onnxruntime
    session, the relevance ``explain`` gives."""
    src, out = tmp_path / "m.onnx", tmp_path / "explainer.onnx"
    onnx.save(model, str(src))
    extra = ["--bounds", *map(str, kwargs["bounds"])] if "bounds" in kwargs else []
    res = cli("compile", src, "-o", out, "--composite", composite, *extra)
    assert res.rc == 0, res.err
    onnx.checker.check_model(str(out), full_check=True)
    compiled = onnx.load(str(out))
    assert [i.name for i in compiled.graph.input] == ["x", "target"]
    assert [o.name for o in compiled.graph.output][:3] == ["logits", "targets", "relevance"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = batch(4, seed=8)
    target = np.array([-1, 0, 3, -1], np.int64)
    logits, targets, relevance = session.run(["logits", "targets", "relevance"], {"x": x, "target": target})
    e = Explainer(model, composite=composite, **kwargs).explain(x, target=target)
    np.testing.assert_array_equal(targets, e.targets)
    np.testing.assert_allclose(logits, e.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(relevance, e.relevance, rtol=1e-5, atol=1e-6)
    assert sorted(tmp_path.iterdir()) == sorted([src, out])  # no temporary file left


def test_metadata_and_labels(build_model):
    proto = small_cnn(build_model, seed=3)
    for key, value in (("lrp_onnx.labels", '["a", "b", "c", "d"]'), ("lrp_onnx.task", "toy")):
        proto.metadata_props.add(key=key, value=value)
    ex = Explainer(proto)
    assert ex.labels == ["a", "b", "c", "d"]
    assert ex.metadata.task == "toy"
    proto.metadata_props[0].value = '["only", "three", "labels"]'
    assert Explainer(proto).labels is None  # does not match the 4 classes
