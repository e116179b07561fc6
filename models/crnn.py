"""A small convolutional recurrent keyword spotter (after Arik et al. 2017, "Convolutional Recurrent Neural
Networks for Small-Footprint Keyword Spotting"), for tests and exports of the recurrent rules.

Input: (N, 1, n_mels, frames) log-mel spectrogram, any number of frames; output: (N, classes) logits.
Layout::

    Conv2d 3x3, stride (2, 1) -> ReLU -> Conv2d 3x3, stride (2, 1) -> ReLU   (frequency / 4, time kept)
    (N, C, F', T) -> (N, T, C * F')
    bidirectional GRU (batch first) -> mean over time -> Linear (logits)
"""
from __future__ import annotations

import onnx
import torch
from torch import nn


class CRNN(nn.Module):
    def __init__(self, n_mels: int = 40, classes: int = 12, channels: int = 8, hidden: int = 16,
                 layers: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, stride=(2, 1), padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1)
        self.relu = nn.ReLU()
        freq = (((n_mels - 1) // 2 + 1) - 1) // 2 + 1
        self.gru = nn.GRU(channels * freq, hidden, num_layers=layers, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The convolutional front end, laid out for the GRU: (N, T, C * F')."""
        y = self.relu(self.conv2(self.relu(self.conv1(x))))
        n, c, f, t = y.shape
        return y.permute(0, 3, 1, 2).reshape(n, t, c * f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.features(x))
        return self.head(out.mean(dim=1))


def export(model: CRNN, path, n_mels: int = 40, frames: int = 50, opset: int = 18, dynamo: bool = False) -> None:
    """ONNX export with symbolic batch and time axes (input ``x``, output ``logits``).

    With ``dynamo=True`` use a fresh process per export: torch 2.13's dynamo exporter pins the time axis of an
    nn.GRU to the example's length on later exports of the same module class in one process."""
    model = model.eval()
    x = torch.randn(2, 1, n_mels, frames)
    if dynamo:
        dims = {"x": {0: torch.export.Dim("N"), 3: torch.export.Dim("T")}}
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"], opset_version=opset,
                          dynamo=True, dynamic_shapes=dims)
        # torch 2.13's dynamo exporter writes value_info that pins the time axis after the GRU to the
        # example's length (the graph itself is dynamic): drop it, shape inference recomputes it
        proto = onnx.load(str(path))
        del proto.graph.value_info[:]
        onnx.save(proto, str(path))
    else:
        torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["logits"], opset_version=opset,
                          dynamo=False, dynamic_axes={"x": {0: "N", 3: "T"}})
