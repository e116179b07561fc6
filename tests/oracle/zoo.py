"""Small PyTorch architectures for the Zennit oracle tests, with seeded random weights.

Every model registers its modules in forward (graph) order, so Zennit's registration-order notions ("the first
layer", Sequential BatchNorm merging) agree with the ONNX graph order the compiler counts in. BatchNorm layers get
random running statistics and affine parameters, so folding them is not a no-op.

Zoo entries (:data:`ZOO`): name -> :class:`Spec` (builder, per-sample input shape, whether the model max-pools).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import torchvision_stub

BasicBlock = torchvision_stub.install().BasicBlock


class AudioMNISTAlexNet(nn.Module):
    """The AudioMNIST AlexNet (Becker et al. 2018): 1x227x227 -> 2 logits.

    conv1 96@11x11 s4 -> maxpool 3/2 -> conv2 256@5x5 p2 g2 -> maxpool 3/2 -> conv3 384@3x3 p1 -> conv4 384@3x3 p1 g2
    -> conv5 256@3x3 p1 g2 -> maxpool 3/2 -> fc6 1024 -> fc7 1024 -> fc8; ReLU after each conv and hidden fc.
    """

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 96, kernel_size=11, stride=4), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(1024, 1024), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class VGGNet(nn.Module):
    """VGG-style: (Conv+BN2d+ReLU) x2, maxpool, Conv+BN2d+ReLU, maxpool, Linear+BN1d+ReLU, Linear. 3x16x16 -> 10."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(32, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class ResNet(nn.Module):
    """A small ResNet of torchvision BasicBlocks (1x16x16 -> 5): stem Conv+BN+ReLU, blocks 8->8, 8->16 (stride 2,
    1x1 conv + BN shortcut), 16->16; global average pooling; Linear. No max-pool.
    """

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        downsample = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16))
        self.layer1 = BasicBlock(8, 8)
        self.layer2 = BasicBlock(8, 16, stride=2, downsample=downsample)
        self.layer3 = BasicBlock(16, 16)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


class Conv1dNet(nn.Module):
    """1-D: Conv1d+BN+ReLU, MaxPool1d(3/2, pad 1), strided Conv1d+BN+ReLU, dilated Conv1d+BN+ReLU, AvgPool1d(2),
    Linear. 4x64 -> 4.
    """

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(4, 8, 5, padding=2), nn.BatchNorm1d(8), nn.ReLU(),
            nn.MaxPool1d(3, stride=2, padding=1),
            nn.Conv1d(8, 16, 3, stride=2, padding=1), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Conv1d(16, 16, 3, padding=2, dilation=2), nn.BatchNorm1d(16), nn.ReLU(),
            nn.AvgPool1d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x))


class SqueezeExcitation(nn.Module):
    """SE gating: ``x * sigmoid(fc2(relu(fc1(avgpool(x)))))`` with 1x1 convolutions as fc layers.

    The product is ``self.gate_mul(x, gate)`` (``torch.mul``), so the Zennit reference can swap in a version whose
    backward treats the gate as a constant (see ``reference.ConstantGateMul``).
    """

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.sigmoid = nn.Sigmoid()
        self.gate_mul = torch.mul

    def forward(self, x):
        gate = self.sigmoid(self.fc2(self.relu(self.fc1(self.avgpool(x)))))
        return self.gate_mul(x, gate)


class DepthwiseSENet(nn.Module):
    """Depthwise separable convolutions with SE gating (3x16x16 -> 6): stem Conv+BN+ReLU, depthwise 3x3 + BN + ReLU,
    pointwise 1x1 + BN + ReLU, SE, strided depthwise 3x3 + BN + ReLU, global average pooling, Linear.
    """

    def __init__(self, num_classes: int = 6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU())
        self.pointwise = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.se = SqueezeExcitation(16, 4)
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = self.se(self.pointwise(self.depthwise(self.stem(x))))
        return self.fc(self.flatten(self.avgpool(self.down(x))))


class DecoderNet(nn.Module):
    """Transposed convolutions, as in an upsampling path (3x8x8 -> 5): Conv 3x3 s2 + BN + ReLU (8x4x4),
    ConvTranspose 3x3 s2 p1 output_padding 1 + BN + ReLU (6x8x8), grouped ConvTranspose 4x4 s2 p1 g2 + BN + ReLU
    (4x16x16), Conv 3x3 p1 + ReLU, global average pooling, Linear. (TorchScript keeps the BatchNorms after the
    ConvTranspose nodes, the dynamo exporter folds them: both must give the same relevance.)"""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.up1 = nn.Sequential(nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1),
                                 nn.BatchNorm2d(6), nn.ReLU())
        self.up2 = nn.Sequential(nn.ConvTranspose2d(6, 4, 4, stride=2, padding=1, groups=2), nn.BatchNorm2d(4),
                                 nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        x = self.head(self.up2(self.up1(self.stem(x))))
        return self.fc(self.flatten(self.avgpool(x)))


@dataclass(frozen=True)
class Spec:
    """A zoo entry: how to build the model, its per-sample input shape, class count, and whether it max-pools."""

    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    num_classes: int
    max_pool: bool


ZOO: dict[str, Spec] = {
    "alexnet": Spec(AudioMNISTAlexNet, (1, 227, 227), 2, max_pool=True),
    "vgg": Spec(VGGNet, (3, 16, 16), 10, max_pool=True),
    "resnet": Spec(ResNet, (1, 16, 16), 5, max_pool=False),
    "conv1d": Spec(Conv1dNet, (4, 64), 4, max_pool=True),
    "se": Spec(DepthwiseSENet, (3, 16, 16), 6, max_pool=False),
    "decoder": Spec(DecoderNet, (3, 8, 8), 5, max_pool=False),
}


def he_init(model: nn.Module, generator: torch.Generator) -> None:
    """He-normal weights (fan-in, ReLU gain) and small random biases for every Conv and Linear layer.

    PyTorch's default init shrinks activations by ~0.4 per layer, so deep zoo models would end in logits ~1e-3,
    where epsilon = 1e-6 is no longer negligible; He init keeps activations O(1), as in trained networks.
    """
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            fan_in = module.weight[0].numel()
            with torch.no_grad():
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))


def randomize_batchnorms(model: nn.Module, generator: torch.Generator, zero_shift: bool = False) -> None:
    """Give every BatchNorm random statistics and affine parameters.

    With ``zero_shift`` the running mean and bias are zero, so a BatchNorm folded into a bias-free linear layer adds
    no bias (only a per-channel scale remains).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            with torch.no_grad():
                module.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=generator))
                module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                if zero_shift:
                    module.running_mean.zero_()
                    module.bias.zero_()
                else:
                    module.running_mean.copy_(0.3 * torch.randn(n, generator=generator))
                    module.bias.copy_(0.2 * torch.randn(n, generator=generator))


def zero_biases(model: nn.Module) -> None:
    """Set the bias of every Conv and Linear layer to zero."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and module.bias is not None:
            with torch.no_grad():
                module.bias.zero_()


def build(name: str, seed: int = 0, bias_free: bool = False) -> nn.Module:
    """The zoo model ``name`` in eval mode with seeded weights; ``bias_free``: no biases, no BatchNorm shifts."""
    torch.manual_seed(seed)
    model = ZOO[name].build()
    generator = torch.Generator().manual_seed(seed + 1)
    he_init(model, generator)
    randomize_batchnorms(model, generator, zero_shift=bias_free)
    if bias_free:
        zero_biases(model)
    return model.eval()


def inputs(name: str, n: int, seed: int = 0, bound: float = 3.0, silence: bool = False) -> torch.Tensor:
    """``n`` float32 samples for model ``name``: standard normal, clipped to [-bound, bound] (within z-box bounds).

    ``silence``: the last third of the last axis is the constant floor ``-bound``, as the -80 dB floor of a quiet
    stretch in a spectrogram. Constant regions make max-pool windows with exactly or nearly equal values (ties).
    """
    generator = torch.Generator().manual_seed(1000 + seed)
    x = torch.randn((n, *ZOO[name].input_shape), generator=generator).clamp(-bound, bound)
    if silence:
        x[..., -(x.shape[-1] // 3):] = -bound
    return x


EXPORTS = ("torchscript", "dynamo")


def export(model: nn.Module, path, exporter: str, example: torch.Tensor) -> None:
    """Export ``model`` to ONNX at ``path`` with a dynamic batch axis; ``exporter``: "torchscript" (``dynamo=False``)
    or "dynamo" (``dynamo=True``). Input ``input``, output ``logits``.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(model, (example,), str(path), dynamo=True, input_names=["input"],
                              output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              verbose=False)
        elif exporter == "torchscript":
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        else:
            raise ValueError(f"unknown exporter {exporter!r}")


class ExportCache:
    """Zoo models and their ONNX exports, built once per test session under ``directory``."""

    def __init__(self, directory):
        from pathlib import Path

        self.directory = Path(directory)
        self._models: dict[tuple, nn.Module] = {}
        self._paths: dict[tuple, str] = {}

    def model(self, name: str, bias_free: bool = False) -> nn.Module:
        key = (name, bias_free)
        if key not in self._models:
            self._models[key] = build(name, bias_free=bias_free)
        return self._models[key]

    def path(self, name: str, exporter: str, bias_free: bool = False) -> str:
        key = (name, exporter, bias_free)
        if key not in self._paths:
            folder = self.directory / f"{name}-{exporter}{'-bias-free' if bias_free else ''}"
            folder.mkdir(parents=True, exist_ok=True)  # one folder each: dynamo may write external data beside it
            path = folder / "model.onnx"
            export(self.model(name, bias_free), path, exporter, inputs(name, 2, seed=99))
            self._paths[key] = str(path)
        return self._paths[key]
