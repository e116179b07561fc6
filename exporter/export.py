"""Export a PyTorch model to ONNX, verified against onnxruntime, with lrp-onnx metadata.

:func:`export_module` works for any ``torch.nn.Module``; :func:`export_run` exports the
best checkpoint of a training run (``lrp-onnx train``) with its labels, task, feature
spec and recommended composite. The model is exported in eval mode with a dynamic
batch axis; the file is written only if onnxruntime reproduces torch's logits:
``max|ort - torch| <= rtol * max(max|torch|, 1e-3)`` with ``rtol = 1e-4`` on the example
input and on a batch of two, otherwise :class:`ModelError` is raised and nothing is
written. Metadata (ONNX ``metadata_props``) follows :mod:`lrp_onnx.runtime.metadata`:
labels, task, feature spec and the recommended composite. The default opset (18) is the
compiler's own, so explaining the file needs no opset conversion.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx

from ..lrp_graph.errors import InputError, ModelError
from ..runtime.metadata import metadata_from_values, write_metadata

DEFAULT_RTOL = 1e-4


def export_module(
    module,
    example_input,
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    task: str | None = None,
    features: str | dict | object | None = None,
    composite: str | None = None,
    dynamo: bool = False,
    opset: int = 18,
    input_name: str = "input",
    output_name: str = "logits",
    rtol: float = DEFAULT_RTOL,
) -> Path:
    """Export ``module`` (eval mode) to ``path``; returns the path written.

    ``example_input``: a tensor (N, ...) or array; its batch axis becomes dynamic.
    ``features``: a feature spec (pydantic model), its JSON string, or a dict.
    ``dynamo=False`` (TorchScript exporter) writes a single self-contained file.
    Raises :class:`ModelError` when onnxruntime disagrees with torch beyond ``rtol``.
    """
    import torch

    path = Path(path)
    if opset < 17:
        raise InputError(f"opset {opset} < 17 is not supported")
    x = example_input if isinstance(example_input, torch.Tensor) else torch.as_tensor(np.asarray(example_input))
    x = x.detach().float().cpu()
    module = module.eval().cpu()
    with torch.no_grad():
        expected = module(x)
    if not isinstance(expected, torch.Tensor) or expected.ndim < 1:
        raise ModelError("the module must return one tensor (the logits)")
    if labels is not None and expected.ndim == 2 and len(labels) != expected.shape[1]:
        raise InputError(f"{len(labels)} labels given for {expected.shape[1]} outputs")

    proto = _to_onnx(module, x, opset, dynamo, input_name, output_name)
    proto.producer_name = "lrp-onnx"
    _set_metadata(proto, labels=labels, task=task, features=features, composite=composite)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()

    batch2 = torch.cat([x[:1], torch.flip(x[:1], dims=[-1])], dim=0) if x.shape[0] == 1 else x
    for probe in (x, batch2):
        with torch.no_grad():
            reference = module(probe).numpy()
        verify_onnx(data, probe.numpy(), reference, rtol=rtol)

    from ..runtime.io import atomic_write

    with atomic_write(path, suffix=".tmp", make_parents=True) as tmp:
        tmp.write_bytes(data)
        os.chmod(tmp, 0o666 & ~_umask())  # temp files are private (0600); a model file is not
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _to_onnx(module, x, opset: int, dynamo: bool, input_name: str, output_name: str) -> onnx.ModelProto:
    import torch

    if dynamo:
        import tempfile

        batch = torch.export.Dim("batch")
        with tempfile.TemporaryDirectory() as tmpdir:
            target = os.path.join(tmpdir, "model.onnx")
            program = torch.onnx.export(module, (x,), dynamo=True, opset_version=max(opset, 18),
                                        input_names=[input_name], output_names=[output_name],
                                        dynamic_shapes=({0: batch},), external_data=False)
            program.save(target)
            return onnx.load(target)
    buffer = io.BytesIO()
    torch.onnx.export(module, (x,), buffer, dynamo=False, opset_version=opset,
                      input_names=[input_name], output_names=[output_name],
                      dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                      do_constant_folding=True)
    return onnx.load_from_string(buffer.getvalue())


def _set_metadata(proto: onnx.ModelProto, **values) -> None:
    write_metadata(proto, metadata_from_values(**values))


def verify_onnx(model: bytes | str | os.PathLike, x: np.ndarray, expected: np.ndarray,
                rtol: float = DEFAULT_RTOL) -> float:
    """Run ``model`` in onnxruntime on ``x``; return the relative error, or raise :class:`ModelError`.

    Relative error = ``max|ort - expected| / max(max|expected|, 1e-3)``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]
    if got.shape != expected.shape:
        raise ModelError(f"onnxruntime output shape {got.shape} differs from torch's {expected.shape}")
    error = float(np.max(np.abs(got - expected))) / max(float(np.max(np.abs(expected))), 1e-3)
    if not error <= rtol:
        raise ModelError(f"onnxruntime's logits differ from torch's by {error:.2e} (relative) > {rtol:g}; "
                         "nothing written")
    return error


def export_run(run: str | os.PathLike, path: str | os.PathLike, *, which: str = "best",
               dynamo: bool = False, opset: int = 18, composite: str | None = None,
               example: np.ndarray | None = None) -> Path:
    """Export a training run's ``best.pt`` (or ``last.pt``) with its metadata."""
    from ..models.train import load_checkpoint, model_from_checkpoint, run_checkpoint

    ckpt_path = run_checkpoint(run, which)
    ckpt = load_checkpoint(ckpt_path)
    model = model_from_checkpoint(ckpt, ckpt_path)
    shape = _input_shape(ckpt)
    if example is None:
        example = np.random.default_rng(0).uniform(-80.0, 0.0, size=(1, *shape)).astype(np.float32)
        if ckpt["arch"] == "resnet":
            example = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    return export_module(model, example, path, labels=list(ckpt["labels"]), task=ckpt["task"],
                         features=ckpt.get("features"), composite=composite or ckpt.get("composite"),
                         dynamo=dynamo, opset=opset)


def _input_shape(ckpt: dict) -> tuple[int, ...]:
    if ckpt.get("features"):
        from ..audio.features import feature_spec_from_json

        return tuple(feature_spec_from_json(ckpt["features"]).shape)
    if ckpt["arch"] == "alexnet":
        return (1, 227, 227)
    return (1, int(ckpt["model_config"].get("n_mels", 64)), 200)
