"""`lrp-onnx export` and `export_module`: verified ONNX files with lrp-onnx metadata."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lrp_onnx.exporter.export import export_module, export_run
from lrp_onnx.lrp_graph.errors import ModelError
from lrp_onnx.models.alexnet import AudioAlexNet
from lrp_onnx.models.resnet import SpeakerResNet
from lrp_onnx.models.train import COMPOSITES, CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from lrp_onnx.cli.main import main
from lrp_onnx.audio.features import LogMelSpec, SpectrogramSpec, feature_spec_from_json


def metadata(path):
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def ort_logits(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def write_run(run, model, arch, task, labels, spec, model_config):
    """A run directory as `lrp-onnx train` leaves it (only best.pt matters to export)."""
    run.mkdir()
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": arch,
                "model_config": model_config, "task": task, "labels": labels,
                "features": spec.model_dump_json(), "composite": COMPOSITES[arch],
                "model": model.state_dict(), "epoch": 1, "best": {"val_acc": 0.5, "epoch": 1}}, run / "best.pt")
    return run


def test_exported_alexnet_matches_torch_and_carries_metadata(tmp_path):
    torch.manual_seed(0)
    model = AudioAlexNet(num_classes=2)
    run = write_run(tmp_path / "run", model, "alexnet", "gender", ["male", "female"], SpectrogramSpec(),
                    {"num_classes": 2})
    out = tmp_path / "gender.onnx"
    assert main(["export", str(run), "-o", str(out)]) == 0
    proto = onnx.load(str(out))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
    meta = metadata(out)
    assert json.loads(meta["lrp_onnx.labels"]) == ["male", "female"]
    assert meta["lrp_onnx.task"] == "gender" and meta["lrp_onnx.composite"] == "paper-alexnet"
    assert feature_spec_from_json(meta["lrp_onnx.features"]) == SpectrogramSpec()
    assert not any(n.op_type == "Dropout" for n in proto.graph.node)  # eval mode
    x = np.random.default_rng(1).uniform(-80, 0, (3, 1, 227, 227)).astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    got = ort_logits(out, x)
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()


def test_exported_resnet_matches_torch(tmp_path):
    torch.manual_seed(0)
    config = {"num_classes": 5, "n_mels": 64, "width": 2, "embedding_dim": 8, "pooling": "mean"}
    model = SpeakerResNet(**config)
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    run = write_run(tmp_path / "run", model, "resnet", "speaker", [f"{i:02d}" for i in range(1, 6)], LogMelSpec(),
                    config)
    out = export_run(run, tmp_path / "spk.onnx")
    assert metadata(out)["lrp_onnx.composite"] == "paper-resnet"
    x = np.random.default_rng(2).normal(size=(4, 1, 64, 200)).astype(np.float32)
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(x)).numpy()
    assert np.abs(ort_logits(out, x) - expected).max() <= 1e-4 * np.abs(expected).max()


def test_export_module_takes_any_module(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(1, 3, 5), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 12, 4))
    out = export_module(net, torch.randn(1, 1, 16), tmp_path / "net.onnx", labels=list("abcd"), task="toy",
                        features={"kind": "custom"}, composite="epsilon")
    meta = metadata(out)
    assert json.loads(meta["lrp_onnx.labels"]) == list("abcd") and json.loads(meta["lrp_onnx.features"]) == {"kind": "custom"}
    x = torch.randn(5, 1, 16)
    np.testing.assert_allclose(ort_logits(out, x.numpy()), net(x).detach().numpy(), rtol=1e-4, atol=1e-5)


class BatchDependent(nn.Module):
    """Traces to a graph that differs from eager torch for other batch sizes."""

    def forward(self, x):
        return x.flatten(1) * (2.0 if x.shape[0] == 1 else 3.0)


def test_export_refuses_to_write_when_onnxruntime_disagrees(tmp_path):
    target = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match="differ"):
        export_module(BatchDependent(), torch.randn(1, 4), target)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_missing_run_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert capsys.readouterr().err.startswith("lrp-onnx: error:")
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "best.pt" in capsys.readouterr().err
