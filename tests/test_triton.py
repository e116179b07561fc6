"""The Triton model repository: config.pbtxt parsed with tritonclient's ModelConfig protobuf
(no Triton server runs here), model.onnx loaded with onnxruntime and fed the way Triton
feeds it; its relevance equals ``Explainer.explain``'s."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _server_fixtures import LABELS, spectrogram_model
from conftest import tiny_cnn_model
from lrp_onnx.lrp_graph.errors import InputError, ModelError
from lrp_onnx.runtime import Explainer
from lrp_onnx.service.triton import triton_config, write_triton_repository

NP_TYPES = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64}


def model_config_pb2():
    """tritonclient's generated ``model_config_pb2``, loaded from its file: the package's
    ``tritonclient.grpc`` refuses to import without grpcio, which the protobuf module needs not."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tritonclient is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.exists():
        pytest.skip("tritonclient has no model_config_pb2")
    module_spec = importlib.util.spec_from_file_location("lrp_test_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # e.g. a protobuf runtime older than the generated code
        pytest.skip(f"tritonclient's model_config_pb2 does not load here: {exc}")
    return module


def parse_config(path: Path):
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    return text_format.Parse(path.read_text(), pb2.ModelConfig()), pb2


def triton_run(session: ort.InferenceSession, config, pb2, requests: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """What Triton's onnxruntime backend does with a batch: apply each input's ``reshape``
    (request dims -> model dims), run, and reshape the outputs back to the declared dims."""
    feeds = {}
    for spec in config.input:
        value = requests[spec.name]
        assert value.dtype == NP_TYPES[pb2.DataType.Name(spec.data_type)]
        assert list(value.shape[1:]) == list(spec.dims)  # the request as the config declares it
        shape = list(spec.reshape.shape) if spec.HasField("reshape") else list(spec.dims)
        feeds[spec.name] = value.reshape([len(value)] + shape)
    names = [o.name for o in config.output]
    results = session.run(names, feeds)
    out = {}
    for spec, value in zip(config.output, results):
        out[spec.name] = value.reshape([len(value)] + list(spec.dims))
    return out


@pytest.fixture(scope="module")
def explainer():
    return Explainer(spectrogram_model(), composite="epsilon-plus")


def test_repository_layout_and_config(explainer, tmp_path):
    folder = write_triton_repository(explainer.compiled_model_bytes, tmp_path / "repo", "gender", max_batch=8)
    assert folder == tmp_path / "repo" / "gender"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "1", "1/model.onnx", "config.pbtxt", "labels.txt"]
    assert (folder / "labels.txt").read_text().splitlines() == LABELS
    config, pb2 = parse_config(folder / "config.pbtxt")
    assert config.name == "gender" and config.backend == "onnxruntime" and config.max_batch_size == 8
    assert config.default_model_filename == "model.onnx"
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 1000
    dtype = pb2.DataType.Name
    inputs = {i.name: (dtype(i.data_type), list(i.dims), list(i.reshape.shape) if i.HasField("reshape") else None)
              for i in config.input}
    outputs = {o.name: (dtype(o.data_type), list(o.dims), list(o.reshape.shape) if o.HasField("reshape") else None)
               for o in config.output}
    assert inputs == {"input": ("TYPE_FP32", [1, 227, 227], None), "target": ("TYPE_INT64", [1], [])}
    assert outputs == {"logits": ("TYPE_FP32", [2], None), "targets": ("TYPE_INT64", [1], []),
                       "relevance": ("TYPE_FP32", [1, 227, 227], None)}
    assert [o.label_filename for o in config.output] == ["labels.txt", "", ""]
    # how a client reads the logits (runtime/scores.py): class names, nothing stripped: softmax
    assert config.parameters["lrp_onnx.probabilities"].string_value == "softmax"

    # the config matches the model file as onnxruntime sees it (names, types, per-sample dims)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    ort_types = {"tensor(float)": "TYPE_FP32", "tensor(int64)": "TYPE_INT64"}
    for declared, actual in ((inputs, session.get_inputs()), (outputs, session.get_outputs())):
        assert set(declared) == {a.name for a in actual}
        for a in actual:
            kind, dims, reshape = declared[a.name]
            assert ort_types[a.type] == kind and isinstance(a.shape[0], str)  # dynamic batch axis
            assert [d for d in a.shape[1:]] == (reshape if reshape is not None else dims)


def test_triton_model_gives_the_same_relevance_as_explain(explainer, tmp_path):
    folder = write_triton_repository(explainer.compiled_model_bytes, tmp_path, "gender", max_batch=8)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-80, 0, (3, 1, 227, 227)).astype(np.float32)
    logits, targets, relevance = session.run(["logits", "targets", "relevance"],
                                             {"input": x, "target": np.array([-1, 0, 1], np.int64)})
    e = explainer.explain(x, target=[-1, 0, 1])
    assert targets.tolist() == e.targets.tolist() and targets[0] == e.predictions[0]
    np.testing.assert_allclose(logits, e.logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(relevance, e.relevance, rtol=1e-5, atol=1e-8)
    assert np.abs(e.relevance).sum() > 0


def test_requests_shaped_as_the_config_declares(explainer, tmp_path):
    """Feed the model the way Triton does from requests shaped by config.pbtxt ([N, 1] targets)."""
    folder = write_triton_repository(explainer.compiled_model_bytes, tmp_path, "gender", max_batch=8)
    config, pb2 = parse_config(folder / "config.pbtxt")
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(-80, 0, (2, 1, 227, 227)).astype(np.float32)
    out = triton_run(session, config, pb2, {"input": x, "target": np.array([[1], [-1]], np.int64)})
    e = explainer.explain(x, target=[1, -1])
    assert out["targets"].shape == (2, 1) and out["targets"][:, 0].tolist() == e.targets.tolist()
    assert out["logits"].shape == (2, 2) and out["relevance"].shape == (2, 1, 227, 227)
    np.testing.assert_allclose(out["relevance"], e.relevance, rtol=1e-5, atol=1e-8)


def test_unbatched_repository_and_model_without_labels(tmp_path):
    ex = Explainer(tiny_cnn_model(), composite="epsilon")
    folder = write_triton_repository(ex.compiled_model_bytes, tmp_path, "tiny.v2", max_batch=0)
    text = (folder / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in text and "dynamic_batching" not in text
    assert not (folder / "labels.txt").exists()
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((2, 1, 7, 7)).astype(np.float32)
    (relevance,) = session.run(["relevance"], {"x": x, "target": np.array([2, -1], np.int64)})
    np.testing.assert_allclose(relevance, ex.explain(x, target=[2, -1]).relevance, rtol=1e-5, atol=1e-8)
    config, _ = parse_config(folder / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert {i.name: list(i.dims) for i in config.input} == {"x": [-1, 1, 7, 7], "target": [-1]}


def test_rewriting_replaces_and_bad_arguments_are_refused(explainer, tmp_path):
    write_triton_repository(explainer.compiled_model_bytes, tmp_path, "m", max_batch=4)
    write_triton_repository(explainer.compiled_model_bytes, tmp_path, "m", max_batch=2)
    assert "max_batch_size: 2" in (tmp_path / "m" / "config.pbtxt").read_text()
    assert sorted(p.name for p in (tmp_path / "m").rglob("*")) == ["1", "config.pbtxt", "labels.txt", "model.onnx"]
    with pytest.raises(InputError, match="Triton model name"):
        write_triton_repository(explainer.compiled_model_bytes, tmp_path, "../escape", 4)
    with pytest.raises(ModelError, match="not a serialized ONNX model"):
        write_triton_repository(b"\xff\xfe not onnx", tmp_path, "broken", 4)
    assert not (tmp_path / "broken" / "config.pbtxt").exists()


def test_fixed_batch_axis_needs_max_batch_zero(build_model):
    from onnx import helper

    model = build_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 3]}, {"y": [1, 3]})
    with pytest.raises(ModelError, match="dynamic first"):
        triton_config(model, "fixed", max_batch=8)
    assert "max_batch_size: 0" in triton_config(model, "fixed", max_batch=0)


def test_compile_command_writes_the_repository(cli, tmp_path):
    """``lrp-onnx compile MODEL --triton REPO_DIR``."""
    import onnx

    model = tmp_path / "gender.onnx"
    onnx.save(spectrogram_model(), str(model))
    r = cli("compile", model, "-o", tmp_path / "explainer.onnx", "--triton", tmp_path / "repo")
    assert r.rc == 0, r.err
    config, _ = parse_config(tmp_path / "repo" / "gender" / "config.pbtxt")
    assert config.name == "gender" and config.max_batch_size == 16
    assert (tmp_path / "repo" / "gender" / "1" / "model.onnx").read_bytes() == (tmp_path / "explainer.onnx").read_bytes()


# -- names and labels from an untrusted model (issue 10, item 6) -----------------------------------
def named_model(input_name: str, output_name: str = "logits", labels=None):
    """Identity-like model with the given tensor names (as any model file may carry)."""
    import json

    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", [input_name], [output_name])], "g",
                              [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if labels is not None:
        model.metadata_props.add(key="lrp_onnx.labels", value=json.dumps(labels))
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize("name", ['x" } ] output [ { name: "evil" data_type: TYPE_STRING dims: [ 1 ] } ] input [ { name: "y',
                                  'back\\slash"quote', "ünïcode·name", "input.1", "onnx::Gemm_0"])
def test_tensor_names_are_quoted_so_the_config_says_what_the_model_has(name):
    config_text = triton_config(named_model(name), "m", max_batch=4)
    from google.protobuf import text_format

    pb2 = model_config_pb2()
    config = text_format.Parse(config_text, pb2.ModelConfig())
    assert [i.name for i in config.input] == [name]  # one input, exactly the model's name
    assert [o.name for o in config.output] == ["logits"]


@pytest.mark.parametrize("name", ["x\n  data_type: TYPE_STRING", "x\x1b[2J", "x\u2028y"])
def test_tensor_names_that_cannot_be_one_quoted_line_are_refused(name):
    with pytest.raises(ModelError, match="printable"):
        triton_config(named_model(name), "m", max_batch=4)


@pytest.mark.parametrize("label", ["fe\nmale", "a\rb", "x\x00y", "tab\there"])
def test_labels_that_would_shift_labels_txt_are_refused_and_nothing_is_written(tmp_path, label):
    model = named_model("x", labels=["male", label, "third", "fourth"])
    with pytest.raises(ModelError, match="label"):
        write_triton_repository(model.SerializeToString(), tmp_path / "repo", "m", max_batch=4)
    assert not (tmp_path / "repo").exists()


def test_compile_refuses_a_bad_label_before_writing_anything(cli, tmp_path):
    import json

    import onnx

    model = spectrogram_model()
    for prop in model.metadata_props:
        if prop.key == "lrp_onnx.labels":
            prop.value = json.dumps([f"line\n{i}" for i in range(len(LABELS))])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    res = cli("compile", path, "-o", tmp_path / "explainer.onnx", "--triton", tmp_path / "repo")
    assert res.rc == 2 and res.err.startswith("lrp-onnx: error: ") and len(res.err.strip().splitlines()) == 1
    assert "label" in res.err
    assert not (tmp_path / "explainer.onnx").exists() and not (tmp_path / "repo").exists()
