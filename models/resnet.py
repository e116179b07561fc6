"""A ResNet34-style speaker-identification network for log-mel filterbanks.

Input: 1 x n_mels x frames (64 x 200 for 2 s). Layout::

    stem: conv 3x3 (w, stride 1 or 2) -> BatchNorm2d -> ReLU
    layer1..4: BasicBlocks [3, 4, 6, 3] with widths w, 2w, 4w, 8w; strides 1, 2, 2, 2
    pooling over time: "stats" (default: mean_t and std_t = sqrt(var_t + 1e-5)) or "mean" (mean_t)
    embedding: Linear -> BatchNorm1d (the speaker embedding)
    classifier: ReLU -> Linear over the training speakers (logits)

The paper's model (ResNet34 on VoxCeleb) uses w = 32 and a stride-1 stem; a smaller
``width`` and ``stem_stride=2`` (4x fewer operations) train on a CPU.
"Mean" pooling exports as ReduceMean only, which every LRP rule set handles; "stats"
pooling adds Sub/Mul/Sqrt. The blocks use torchvision's attribute names (conv1, bn1,
relu, conv2, bn2, downsample, stride) and forward, so Zennit's ResNet canonizer applies.
"""
from __future__ import annotations

import torch
from torch import nn

LAYERS = (3, 4, 6, 3)
POOLINGS = ("mean", "stats")


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), as torchvision's BasicBlock."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class TemporalPooling(nn.Module):
    """(N, C, F, T) -> (N, C*F) mean over time, or (N, 2*C*F) [mean, std] over time."""

    def __init__(self, mode: str = "mean", eps: float = 1e-5):
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {mode!r}")
        self.mode = mode
        self.eps = eps

    def forward(self, x):
        x = torch.flatten(x, 1, 2)  # (N, C*F, T)
        mean = x.mean(dim=2)
        if self.mode == "mean":
            return mean
        var = ((x - mean.unsqueeze(2)) ** 2).mean(dim=2)
        return torch.cat([mean, torch.sqrt(var + self.eps)], dim=1)


class SpeakerResNet(nn.Module):
    """ResNet34-style speaker classifier; ``forward`` returns logits (N, num_classes)."""

    def __init__(
        self,
        num_classes: int,
        n_mels: int = 64,
        width: int = 32,
        embedding_dim: int = 256,
        pooling: str = "stats",
        layers: tuple[int, ...] = LAYERS,
        stem_stride: int = 1,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.inplanes = width
        self.conv1 = conv3x3(1, width, stride=stem_stride)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(width, layers[0], stride=1)
        self.layer2 = self._make_layer(2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(8 * width, layers[3], stride=2)
        self.pool = TemporalPooling(pooling)
        freq_out = n_mels
        for stride in (stem_stride, 2, 2, 2):  # each 3x3, padding 1 conv: ceil(n / stride)
            freq_out = -(-freq_out // stride)
        pooled = 8 * width * freq_out * (2 if pooling == "stats" else 1)
        self.embedding = nn.Sequential(nn.Linear(pooled, embedding_dim), nn.BatchNorm1d(embedding_dim))
        self.classifier = nn.Sequential(nn.ReLU(inplace=True), nn.Linear(embedding_dim, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.classifier(self.embedding(self.pool(x)))
