"""ECAPA-TDNN (Desplanques et al. 2020, "ECAPA-TDNN: Emphasized Channel Attention, Propagation and
Aggregation in TDNN Based Speaker Verification"), compact, for tests and exports of the field's
speaker-embedding architecture.

Input: (N, n_mels, frames) log-mel filterbanks; output: logits over the training speakers. Layout::

    Conv1d k5 -> ReLU -> BatchNorm1d
    3 SE-Res2Blocks (dilations 2, 3, 4): 1x1 conv -> Res2Net (scale chunks, each a dilated k3 conv fed
        by the previous chunk's output) -> 1x1 conv -> squeeze-excitation (mean over time -> 1x1 -> ReLU
        -> 1x1 -> Sigmoid -> scale) -> + residual
    multi-layer feature aggregation: concat of the blocks' outputs -> 1x1 conv -> ReLU
    attentive statistics pooling: softmax-over-time attention (with global context: mean and std over
        time) -> weighted mean and weighted std sqrt(clamp(sum_t w x^2 - mu^2, 1e-4))
    BatchNorm1d -> Linear (embedding) -> BatchNorm1d -> Linear (logits)
"""
from __future__ import annotations

import torch
from torch import nn


class TDNNLayer(nn.Module):
    """Conv1d -> ReLU -> BatchNorm1d, as the ECAPA reference implementation (SpeechBrain)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return self.bn(self.relu(self.conv(x)))


class Res2Block(nn.Module):
    """Split the channels into ``scale`` chunks; chunk i (i > 0) goes through a dilated TDNN layer after
    adding the previous chunk's output; the first chunk passes unchanged."""

    def __init__(self, channels: int, scale: int, dilation: int):
        super().__init__()
        self.scale = scale
        width = channels // scale
        self.blocks = nn.ModuleList(TDNNLayer(width, width, 3, dilation) for _ in range(scale - 1))

    def forward(self, x):
        chunks = torch.chunk(x, self.scale, dim=1)
        out, previous = [chunks[0]], None
        for i, block in enumerate(self.blocks, start=1):
            previous = block(chunks[i] if previous is None else chunks[i] + previous)
            out.append(previous)
        return torch.cat(out, dim=1)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, bottleneck: int):
        super().__init__()
        self.down = nn.Conv1d(channels, bottleneck, 1)
        self.up = nn.Conv1d(bottleneck, channels, 1)

    def forward(self, x):
        s = torch.sigmoid(self.up(torch.relu(self.down(x.mean(dim=2, keepdim=True)))))
        return x * s


class SERes2Block(nn.Module):
    def __init__(self, channels: int, dilation: int, scale: int = 4, bottleneck: int = 16):
        super().__init__()
        self.pre = TDNNLayer(channels, channels)
        self.res2 = Res2Block(channels, scale, dilation)
        self.post = TDNNLayer(channels, channels)
        self.se = SqueezeExcitation(channels, bottleneck)

    def forward(self, x):
        return self.se(self.post(self.res2(self.pre(x)))) + x


class AttentiveStatsPooling(nn.Module):
    """Weighted mean and std over time; attention from the frames and their global mean and std."""

    def __init__(self, channels: int, attention: int = 16, eps: float = 1e-4):
        super().__init__()
        self.eps = eps
        self.attention = nn.Sequential(nn.Conv1d(3 * channels, attention, 1), nn.Tanh(),
                                       nn.Conv1d(attention, channels, 1))

    def forward(self, x):
        frames = x.shape[2]
        mean = x.mean(dim=2, keepdim=True)
        std = torch.sqrt(((x - mean) ** 2).mean(dim=2, keepdim=True).clamp(min=self.eps))
        context = torch.cat([x, mean.expand(-1, -1, frames), std.expand(-1, -1, frames)], dim=1)
        w = torch.softmax(self.attention(context), dim=2)
        mu = (x * w).sum(dim=2)
        sigma = torch.sqrt(((x * x) * w).sum(dim=2).sub(mu * mu).clamp(min=self.eps))
        return torch.cat([mu, sigma], dim=1)


class ECAPATDNN(nn.Module):
    def __init__(self, num_classes: int, n_mels: int = 80, channels: int = 512, embedding_dim: int = 192,
                 scale: int = 8, attention: int = 128, bottleneck: int = 128):
        super().__init__()
        self.stem = TDNNLayer(n_mels, channels, 5)
        self.blocks = nn.ModuleList(SERes2Block(channels, d, scale, bottleneck) for d in (2, 3, 4))
        self.aggregate = nn.Sequential(nn.Conv1d(3 * channels, 3 * channels, 1), nn.ReLU())
        self.pool = AttentiveStatsPooling(3 * channels, attention)
        self.pool_bn = nn.BatchNorm1d(6 * channels)
        self.embedding = nn.Linear(6 * channels, embedding_dim)
        self.embedding_bn = nn.BatchNorm1d(embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def forward(self, x):
        x = self.stem(x)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        x = self.aggregate(torch.cat(outputs, dim=1))
        x = self.pool_bn(self.pool(x))
        return self.classifier(self.embedding_bn(self.embedding(x)))
