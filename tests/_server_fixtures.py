"""Helpers for the server, viewer and Triton tests: tiny models with feature metadata, WAVs,
and a real uvicorn server on a free loopback port in a background thread."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import soundfile
from onnx import TensorProto, helper, numpy_helper

from lrp_onnx.audio.features import SpectrogramSpec

LABELS = ["female", "male"]


def spectrogram_model(seed: int = 0) -> onnx.ModelProto:
    """A tiny CNN on the AudioMNIST spectrogram (N, 1, 227, 227) -> 2 logits, with the
    exporter's metadata (labels, task, feature spec, composite)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array((0.05 * rng.standard_normal((3, 1, 8, 8))).astype(np.float32), "W"),
        numpy_helper.from_array((0.1 * rng.standard_normal(3)).astype(np.float32), "B"),
        numpy_helper.from_array((0.05 * rng.standard_normal((2, 3 * 14 * 14))).astype(np.float32), "G"),
        numpy_helper.from_array(np.array([0.1, -0.1], np.float32), "C"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["c"], name="conv", strides=[8, 8]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "G", "C"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_spectrogram_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 227, 227])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], inits)
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    for key, value in {"labels": '["female", "male"]', "task": "gender",
                       "features": SpectrogramSpec().model_dump_json(), "composite": "epsilon-plus"}.items():
        model.metadata_props.add(key=f"lrp_onnx.{key}", value=value)
    onnx.checker.check_model(model, full_check=True)
    return model


def voice(seconds: float, f0: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: harmonics of ``f0``, a syllable envelope and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.28)) / k for k in range(1, 12))
    envelope = np.clip(np.sin(np.pi * t / max(seconds, 1e-3)) * 1.5, 0, 1)
    wave = wave * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.4 * wave / np.max(np.abs(wave))).astype(np.float32)


def write_wav(path: Path, wave: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> Path:
    soundfile.write(str(path), wave, sample_rate, subtype=subtype, format="WAV")
    return path


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def running_server(app, **server_kwargs):
    """Serve ``app`` with uvicorn (``make_server``) on a free loopback port; yields the base URL."""
    from lrp_onnx.service.app import make_server

    sock = free_socket()
    port = sock.getsockname()[1]
    server = make_server(app, "127.0.0.1", port, **server_kwargs)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
