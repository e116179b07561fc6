"""Hostile models for the loader (issue 10, items 1 and 7): every external-data location, dense or
sparse, in initializers, ``Constant`` nodes and subgraphs, is resolved against the model's folder and
checked before onnx or onnxruntime see the model; bad locations, offsets and lengths are one-line
errors (CLI: exit 2)."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from lrp_onnx.lrp_graph import ModelError, load_model
from onnx import TensorProto, external_data_helper, helper, numpy_helper

SECRET = np.arange(4, dtype=np.float32)


def external(name: str, location: str, offset=None, length=None, values=SECRET) -> TensorProto:
    """A float tensor whose bytes live in ``location`` (entries written as given, even if invalid)."""
    tensor = numpy_helper.from_array(values, name)
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length)):
        if value is not None:
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    return tensor


def sparse(values: TensorProto) -> onnx.SparseTensorProto:
    indices = numpy_helper.from_array(np.arange(4, dtype=np.int64), "idx")
    return helper.make_sparse_tensor(values, indices, [8])


def model_with(nodes=(), initializers=(), sparse_initializers=()) -> onnx.ModelProto:
    body = [helper.make_node("Relu", ["x"], ["y"], name="relu"), *nodes]
    graph = helper.make_graph(body, "hostile", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
                              initializer=list(initializers), sparse_initializer=list(sparse_initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def if_with_constant(tensor: TensorProto) -> list[onnx.NodeProto]:
    """``If(true)`` whose then-branch is a ``Constant`` holding ``tensor``."""
    def branch(value):
        node = helper.make_node("Constant", [], ["out"], value=value)
        return helper.make_graph([node], "b", [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])])

    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True), "c"))
    return [cond, helper.make_node("If", ["cond"], ["branch"], then_branch=branch(tensor),
                                   else_branch=branch(numpy_helper.from_array(SECRET, "e")))]


HOSTILE = {
    "sparse initializer": lambda loc: model_with(sparse_initializers=[sparse(external("S", loc))]),
    "Constant sparse_value": lambda loc: model_with(
        [helper.make_node("Constant", [], ["c"], sparse_value=sparse(external("S", loc)))]),
    "Constant value": lambda loc: model_with([helper.make_node("Constant", [], ["c"], value=external("C", loc))]),
    "subgraph Constant": lambda loc: model_with(if_with_constant(external("C", loc))),
    "initializer": lambda loc: model_with(initializers=[external("W", loc)]),
}


@pytest.fixture
def layout(tmp_path, monkeypatch):
    """``tmp/model/`` holds the model; ``tmp/secret.bin`` lies outside it; the working directory is
    ``tmp/`` and holds ``cwd.bin`` (a location relative to the working directory must not be found)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET.tobytes())
    (tmp_path / "cwd.bin").write_bytes(SECRET.tobytes())
    (folder / "inside.bin").write_bytes(SECRET.tobytes())
    monkeypatch.chdir(tmp_path)
    return folder


def save(model: onnx.ModelProto, folder) -> str:
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


@pytest.mark.parametrize("kind", sorted(HOSTILE))
@pytest.mark.parametrize("location,message", [("../secret.bin", "outside the model's folder"),
                                              ("cwd.bin", "missing"),
                                              (None, "outside the model's folder")])
def test_external_data_outside_the_folder_is_refused(layout, kind, location, message):
    location = location or str(layout.parent / "secret.bin")  # None: an absolute path
    with pytest.raises(ModelError, match=message):
        load_model(save(HOSTILE[kind](location), layout))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_external_data_inside_the_folder_is_read(layout, kind):
    proto = load_model(save(HOSTILE[kind]("inside.bin"), layout))
    assert not list(external_data_helper._get_all_tensors(proto)) or all(
        t.data_location != TensorProto.EXTERNAL for t in external_data_helper._get_all_tensors(proto))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_model_in_memory_with_external_data_is_refused(layout, kind):
    model = HOSTILE[kind]("inside.bin")
    for given in (model, model.SerializeToString()):
        with pytest.raises(ModelError, match="external file"):
            load_model(given)


def test_the_read_data_is_the_files(layout):
    """A dense initializer beside the model is read with its offset and length."""
    (layout / "w.bin").write_bytes(b"\0" * 8 + SECRET.tobytes())
    model = model_with(initializers=[external("W", "w.bin", offset=8, length=16)])
    proto = load_model(save(model, layout))
    np.testing.assert_array_equal(numpy_helper.to_array(proto.graph.initializer[0]), SECRET)


@pytest.mark.parametrize("entries,message", [
    ({"offset": -4}, "invalid offset"),
    ({"offset": "abc"}, "invalid offset"),
    ({"length": "-1"}, "invalid length"),
    ({"length": "1e3"}, "invalid length"),
    ({"offset": 8, "length": 16}, "beyond the end"),
    ({"offset": 99}, "beyond the end"),
])
def test_bad_offsets_and_lengths_are_one_line_errors(layout, entries, message):
    model = model_with(sparse_initializers=[sparse(external("S", "inside.bin", **entries))])
    with pytest.raises(ModelError, match=message):
        load_model(save(model, layout))


def test_a_location_with_a_nul_byte(layout):
    model = model_with(initializers=[external("W", "inside.bin\0../../etc/passwd")])
    with pytest.raises(ModelError, match="NUL"):
        load_model(save(model, layout))


def test_a_location_that_is_not_a_regular_file(layout):
    (layout / "sub").mkdir()
    with pytest.raises(ModelError, match="not a regular file"):
        load_model(save(model_with(initializers=[external("W", "sub")]), layout))
    if hasattr(os, "mkfifo"):
        os.mkfifo(layout / "fifo")
        with pytest.raises(ModelError, match="not a regular file"):
            load_model(save(model_with(initializers=[external("W", "fifo")]), layout))


def test_a_link_leaving_the_folder_is_refused(layout):
    (layout / "link.bin").symlink_to(layout.parent / "secret.bin")
    with pytest.raises(ModelError, match="outside the model's folder"):
        load_model(save(model_with(sparse_initializers=[sparse(external("S", "link.bin"))]), layout))


@pytest.mark.parametrize("kind", ["sparse initializer", "Constant sparse_value", "subgraph Constant"])
def test_the_cli_reports_one_line_and_exit_2(layout, cli, kind):
    res = cli("check", save(HOSTILE[kind]("../secret.bin"), layout))
    assert res.rc == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lrp-onnx: error:") and "outside the model's folder" in lines[0]
