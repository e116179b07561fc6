"""The AudioMNIST AlexNet (Becker et al. 2018, github soerenab/AudioMNIST, Caffe prototxt).

Input: one 1x227x227 spectrogram. Layers (ReLU after every conv and hidden fc)::

    conv1  96@11x11 s4          -> 96x55x55   -> maxpool 3/2 -> 96x27x27
    conv2 256@5x5  p2 groups 2  -> 256x27x27  -> maxpool 3/2 -> 256x13x13
    conv3 384@3x3  p1           -> 384x13x13
    conv4 384@3x3  p1 groups 2  -> 384x13x13
    conv5 256@3x3  p1 groups 2  -> 256x13x13  -> maxpool 3/2 -> 256x6x6 = 9216
    fc6 1024 -> dropout 0.5 -> fc7 1024 -> dropout 0.5 -> fc8 (2 gender, 10 digit)

The max-pools overlap (3x3 windows, stride 2). 12,800,706 parameters for 2 classes.
"""
from __future__ import annotations

from torch import nn

INPUT_SHAPE = (1, 227, 227)


class AudioAlexNet(nn.Module):
    """AlexNet for AudioMNIST spectrograms; ``forward`` returns logits (N, num_classes)."""

    def __init__(self, num_classes: int = 2, dropout: float = 0.5):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(
            nn.Conv2d(1, 96, kernel_size=11, stride=4),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(96, 256, kernel_size=5, padding=2, groups=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1, groups=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(256 * 6 * 6, 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(1024, 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(1024, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
