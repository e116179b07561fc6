"""The model-metadata contract (runtime/metadata.py): one definition, validated; a model may name
a preset or carry an inline composite, never make lrp-onnx open a file (issue 10, item 4)."""
import json

import numpy as np
import onnx
import pytest

from lrp_onnx.lrp_graph.errors import ModelError
from lrp_onnx.runtime import Explainer
from lrp_onnx.runtime.metadata import (
    ModelMetadata,
    default_composite,
    metadata_from_values,
    read_metadata,
    write_metadata,
)


def with_metadata(tiny_cnn, tmp_path, **entries):
    model = onnx.load(str(tiny_cnn))
    for key, value in entries.items():
        model.metadata_props.add(key=f"lrp_onnx.{key}", value=value)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("value", ["/dev/zero", "composite.yaml", "../secret.json", "epsilon-plus.yaml"])
def test_a_model_cannot_name_a_file_as_its_composite(tiny_cnn, tmp_path, cli, value):
    secret = tmp_path / "composite.yaml"
    secret.write_text("name: x\nrules: []\ndefault: {name: epsilon}\nsecret_key_of_someone: 1\n")
    path = with_metadata(tiny_cnn, tmp_path, composite=value)
    with pytest.raises(ModelError, match="not a preset"):
        read_metadata(path)
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 8, 8), np.float32))
    result = cli("explain", path, tmp_path / "x.npy")
    assert result.rc == 2 and result.err.startswith("lrp-onnx: error:") and "\n" not in result.err.strip()
    assert "secret_key_of_someone" not in result.err


def test_a_named_preset_and_an_inline_composite_are_used(tiny_cnn, tmp_path):
    path = with_metadata(tiny_cnn, tmp_path, composite="epsilon-plus")
    assert Explainer(path).composite.name == "epsilon-plus"  # the API and the CLI choose alike
    inline = {"name": "inline-one", "rules": [], "default": {"name": "epsilon", "epsilon": 0.25}}
    path = with_metadata(tiny_cnn, tmp_path, composite=json.dumps(inline))
    assert Explainer(path).composite.name == "inline-one"
    assert default_composite(read_metadata(path)) == inline


def test_without_a_recommendation_the_default_is_epsilon(tiny_cnn):
    assert default_composite(read_metadata(tiny_cnn)) == "epsilon"
    assert Explainer(tiny_cnn).composite.name == "epsilon"


@pytest.mark.parametrize("key,value", [("labels", "not json"), ("labels", '{"a": 1}'), ("features", "[1, 2"),
                                       ("composite", "{broken")])
def test_invalid_entries_are_one_line_errors_naming_the_key(tiny_cnn, tmp_path, key, value):
    path = with_metadata(tiny_cnn, tmp_path, **{key: value})
    with pytest.raises(ModelError, match=f"lrp_onnx.{key}") as info:
        read_metadata(path)
    assert "\n" not in str(info.value)


def test_write_then_read_round_trips(tiny_cnn):
    model = onnx.load(str(tiny_cnn))
    meta = metadata_from_values(labels=["a", "b", "c", "d"], task="toy", composite="lrp0")
    write_metadata(model, meta)
    write_metadata(model, meta)  # writing twice keeps one entry per key
    assert sum(p.key == "lrp_onnx.labels" for p in model.metadata_props) == 1
    assert read_metadata(model) == meta == ModelMetadata(labels=("a", "b", "c", "d"), task="toy", composite="lrp0")
