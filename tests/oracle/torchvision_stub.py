"""A test-only stand-in for ``torchvision.models.resnet``.

Zennit 0.5.1 imports ``torchvision.models.resnet`` at import time (for its ResNet canonizer), and the
torchvision wheel matching torch 2.13 cannot be imported beside the CPU torch used here. :func:`install` puts a
module providing :class:`BasicBlock` and :class:`Bottleneck` into ``sys.modules`` as ``torchvision``,
``torchvision.models`` and ``torchvision.models.resnet``; call it before ``import zennit``. The two blocks have
torchvision's attribute names and forward, so Zennit's ``ResNetBasicBlockCanonizer`` and
``ResNetBottleneckCanonizer`` recognise and canonize them (the residual ``+`` becomes a ``Sum`` module).
"""
import importlib.machinery
import sys
import types

import torch
from torch import nn


def conv3x3(in_planes, out_planes, stride=1, groups=1, dilation=1):
    """3x3 convolution with padding, no bias (as torchvision)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation,
                     groups=groups, bias=False, dilation=dilation)


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution, no bias (as torchvision)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock: conv3x3-BN-ReLU-conv3x3-BN, plus the (downsampled) identity, then ReLU."""
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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


class Bottleneck(nn.Module):
    """torchvision's Bottleneck: conv1x1-BN-ReLU-conv3x3-BN-ReLU-conv1x1-BN, plus the identity, then ReLU."""
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64, dilation=1,
                 norm_layer=None):
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


def install():
    """Register the stand-in as ``torchvision.models.resnet`` (idempotent) and return that module."""
    if "torchvision.models.resnet" in sys.modules:
        return sys.modules["torchvision.models.resnet"]
    package = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")
    resnet = types.ModuleType("torchvision.models.resnet")
    for module in (package, models, resnet):
        # a spec, so importlib.util.find_spec (used by torch's dynamo ONNX exporter) answers instead of raising
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None, is_package=module is not resnet)
    package.__path__ = []  # packages: submodule imports resolve through sys.modules
    models.__path__ = []
    resnet.BasicBlock = BasicBlock
    resnet.Bottleneck = Bottleneck
    resnet.conv1x1 = conv1x1
    resnet.conv3x3 = conv3x3
    models.resnet = resnet
    package.models = models
    sys.modules.update({"torchvision": package, "torchvision.models": models, "torchvision.models.resnet": resnet})
    return resnet
