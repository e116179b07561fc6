"""How logits read as probabilities (runtime/scores.py), in the service over real HTTP, in the CLI and
in the Triton config: a final Sigmoid (stripped) gives sigmoid(z) per score, a final Softmax the
softmax, nothing stripped gives none (null) unless the model names its classes (logits of a
classifier: the shipped gender model, unchanged), and a direction's score w . y gives none.
Expected values are computed here with float64 numpy from the model's own output."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import lrp_onnx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from lrp_onnx.runtime import Explainer
from lrp_onnx.runtime.scores import (
    explainer_reading,
    metadata_reading,
    probabilities,
    reading,
)
from lrp_onnx.service.triton import triton_config
from onnx import helper

MODEL = Path(lrp_onnx.__file__).resolve().parent / "models" / "gender_alexnet.onnx"
X = np.random.default_rng(1).standard_normal((3, 6)).astype(np.float32)


def head(build_model, last: str | None, classes: int, labels: list[str] | None = None):
    """x (N, 6) -> Gemm -> ``last`` (Sigmoid, Softmax, Relu or None) -> y (N, classes)."""
    w = np.random.default_rng(0).standard_normal((classes, 6))
    nodes = [helper.make_node("Gemm", ["x", "W"], ["z" if last else "y"], name="fc", transB=1)]
    if last:
        nodes.append(helper.make_node(last, ["z"], ["y"], name="last"))
    model = build_model(nodes, {"x": ["N", 6]}, {"y": ["N", classes]}, {"W": w})
    if labels:
        model.metadata_props.add(key="lrp_onnx.labels", value=json.dumps(labels))
    return model


def model_output(model, x) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].astype(np.float64)


def test_readings():
    z = np.array([[2.0, -1.0], [0.0, np.nan]])
    assert probabilities(z, None) is None
    p = probabilities(z, "softmax")
    np.testing.assert_allclose(p[0], np.exp([2, -1]) / np.exp([2, -1]).sum())
    assert np.isnan(p[1]).all()  # a row with NaN: no probabilities, sent as null
    detector = np.array([[3.0], [-40.0], [800.0]])
    np.testing.assert_allclose(probabilities(detector, "sigmoid")[:, 0], 1 / (1 + np.exp(-detector[:, 0])))
    assert reading("Softmax") == reading("LogSoftmax") == "softmax" and reading("Sigmoid") == "sigmoid"
    assert reading(None) is None and reading(None, named_classes=True) == "softmax"
    assert reading("Softmax", direction=True) is None and reading(None, named_classes=True, direction=True) is None
    assert metadata_reading({"lrp_onnx.explainer": '{"stripped": "Sigmoid"}'}) == "sigmoid"
    assert metadata_reading({"lrp_onnx.explainer": "not json", "lrp_onnx.labels": '["a", "b"]'}) == "softmax"


def test_explainers_say_how_they_read(build_model):
    sig = Explainer(head(build_model, "Sigmoid", 1), cache=False)
    assert sig.stripped == "Sigmoid" and explainer_reading(sig) == "sigmoid"
    assert explainer_reading(Explainer(head(build_model, "Softmax", 3), cache=False)) == "softmax"
    assert explainer_reading(Explainer(head(build_model, "Relu", 3), cache=False)) is None
    assert explainer_reading(Explainer(head(build_model, None, 2, ["a", "b"]), cache=False)) == "softmax"
    direction = Explainer(head(build_model, "Softmax", 3), cache=False, direction=np.ones(3, np.float32))
    assert explainer_reading(direction) is None


def test_triton_config_names_the_reading(build_model):
    for last, classes, want in (("Sigmoid", 1, "sigmoid"), ("Softmax", 3, "softmax"), ("Relu", 3, "none")):
        compiled = onnx.load_from_string(Explainer(head(build_model, last, classes), cache=False).compiled_model_bytes)
        text = triton_config(compiled, "m", max_batch=4)
        assert f'key: "lrp_onnx.probabilities"\n  value: {{ string_value: "{want}" }}' in text


def test_cli_json_probability(cli, tmp_path, build_model):
    path = tmp_path / "det.onnx"
    model = head(build_model, "Sigmoid", 1)
    onnx.save(model, str(path))
    np.save(tmp_path / "x.npy", X)
    res = cli("explain", path, tmp_path / "x.npy", "--json")
    assert res.rc == 0, res.err
    rows = [json.loads(line) for line in res.out.splitlines()]
    np.testing.assert_allclose([r["probability"] for r in rows], model_output(model, X)[:, 0], rtol=1e-5)
    onnx.save(head(build_model, "Relu", 3), str(path))
    res = cli("explain", path, tmp_path / "x.npy", "--json")
    assert res.rc == 0 and all(json.loads(line)["probability"] is None for line in res.out.splitlines())


# -- the service, over real HTTP ----------------------------------------------------------------------
def _server_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("fastapi", "uvicorn", "httpx"))


@pytest.fixture(scope="module")
def served(build_model):
    if not _server_available():
        pytest.skip("the serve extra (fastapi, uvicorn, httpx) is not installed")
    from _server_fixtures import running_server
    from lrp_onnx.service.app import create_app

    models = {"detector": head(build_model, "Sigmoid", 1), "softmax": head(build_model, "Softmax", 3),
              "relu": head(build_model, "Relu", 3)}
    explainers = {name: Explainer(m, composite="epsilon", cache=False) for name, m in models.items()}
    explainers["direction"] = Explainer(models["softmax"], composite="epsilon", cache=False,
                                        direction=np.array([1.0, -1.0, 0.5], np.float32))
    if MODEL.is_file():
        explainers["gender"] = str(MODEL)
    with running_server(create_app(explainers, threads=1)) as url:
        yield url, models


def post(url: str, model: str, endpoint: str, body: dict) -> dict:
    import httpx

    r = httpx.post(f"{url}/v1/models/{model}/{endpoint}", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def test_service_sigmoid_detector_shows_sigmoid(served):
    url, models = served
    z = model_output(head_logits(models["detector"]), X)
    for endpoint in ("predict", "explain"):
        rows = post(url, "detector", endpoint, {"input": X.tolist(), "relevance": "none"})["samples"]
        np.testing.assert_allclose([r["logits"][0] for r in rows], z[:, 0], rtol=1e-5, atol=1e-6)
        # sigmoid(z) per sample, not a softmax over one score (which would be 100 %)
        np.testing.assert_allclose([r["probabilities"][0] for r in rows], 1 / (1 + np.exp(-z[:, 0])), rtol=1e-5)
    assert max(r["probabilities"][0] for r in rows) < 1.0
    import httpx

    info = httpx.get(f"{url}/v1/models/detector").json()
    assert info["probabilities"] == "sigmoid"


def test_service_softmax_and_raw_scores(served):
    url, models = served
    rows = post(url, "softmax", "predict", {"input": X.tolist()})["samples"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], model_output(models["softmax"], X), rtol=1e-5)
    rows = post(url, "relu", "predict", {"input": X.tolist()})["samples"]
    assert all(r["probabilities"] is None for r in rows)  # nothing stripped, no class names: raw scores
    rows = post(url, "direction", "explain", {"input": X.tolist(), "relevance": "none"})["samples"]
    assert all(r["probabilities"] is None and len(r["logits"]) == 1 for r in rows)


@pytest.mark.skipif(not MODEL.is_file(), reason="shipped model missing")
def test_service_shipped_model_unchanged(served):
    """The shipped gender model ends in a Gemm and names its classes: softmax of its logits, as before."""
    url, _ = served
    x = np.random.default_rng(2).standard_normal((1, 1, 227, 227)).astype(np.float32)
    row = post(url, "gender", "predict", {"input": x.tolist()})["samples"][0]
    z = np.asarray(Explainer(MODEL, threads=1).predict(x)[0], np.float64)
    np.testing.assert_allclose(row["probabilities"], np.exp(z - z.max()) / np.exp(z - z.max()).sum(), rtol=1e-5)


def head_logits(model):
    """The model cut before its final Sigmoid: its output is the logits z."""
    cut = onnx.ModelProto()
    cut.CopyFrom(model)
    last = cut.graph.node[-1]
    cut.graph.node.remove(last)
    cut.graph.output[0].name = last.input[0]
    return cut
