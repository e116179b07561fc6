"""The AudioMNIST AlexNet and the speaker-ID ResNet: layout, sizes, shapes."""
import pytest
import torch
from torch import nn

from lrp_onnx.models.alexnet import AudioAlexNet
from lrp_onnx.models.resnet import BasicBlock, SpeakerResNet, TemporalPooling


def test_alexnet_gender_has_the_studys_parameter_count():
    assert sum(p.numel() for p in AudioAlexNet(num_classes=2).parameters()) == 12_800_706


def test_alexnet_layer_shapes_match_the_caffe_prototxt():
    model = AudioAlexNet(num_classes=10).eval()
    x = torch.zeros(2, 1, 227, 227)
    shapes = []
    for layer in model.features:
        x = layer(x)
        if isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(96, 55, 55), (96, 27, 27), (256, 27, 27), (256, 13, 13), (384, 13, 13),
                      (384, 13, 13), (256, 13, 13), (256, 6, 6)]
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 2 for p in pools)  # overlapping windows
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert model(torch.zeros(3, 1, 227, 227)).shape == (3, 10)


def test_alexnet_dropout_is_active_only_in_training():
    torch.manual_seed(0)
    model = AudioAlexNet().train()
    x = torch.randn(2, 1, 227, 227)
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("pooling, width", [("mean", 4), ("stats", 2)])
def test_resnet_has_resnet34_blocks_and_returns_logits(pooling, width):
    model = SpeakerResNet(num_classes=7, n_mels=64, width=width, embedding_dim=16, pooling=pooling).eval()
    blocks = [[type(b) for b in layer] for layer in (model.layer1, model.layer2, model.layer3, model.layer4)]
    assert [len(b) for b in blocks] == [3, 4, 6, 3]
    assert all(t is BasicBlock for layer in blocks for t in layer)
    assert isinstance(model.embedding[1], nn.BatchNorm1d)
    assert model(torch.randn(2, 1, 64, 200)).shape == (2, 7)
    assert model(torch.randn(2, 1, 64, 120)).shape == (2, 7)  # any number of frames


def test_resnet_pools_statistics_by_default():
    model = SpeakerResNet(num_classes=3, n_mels=64, width=2, embedding_dim=4)
    assert model.pool.mode == "stats"
    assert model.embedding[0].in_features == 2 * 8 * 2 * 8  # [mean, std] x 8w channels x 64 / 8 bands


def test_basic_block_has_torchvision_attributes_and_forward():
    block = BasicBlock(4, 8, stride=2, downsample=nn.Sequential(nn.Conv2d(4, 8, 1, 2, bias=False), nn.BatchNorm2d(8)))
    for name in ("conv1", "bn1", "relu", "conv2", "bn2", "downsample", "stride"):
        assert hasattr(block, name)
    block.eval()
    x = torch.randn(1, 4, 10, 10)
    expected = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))) + block.downsample(x))
    torch.testing.assert_close(block(x), expected)


def test_temporal_pooling_is_mean_and_std_over_time():
    x = torch.randn(2, 3, 4, 9)
    flat = x.flatten(1, 2)
    torch.testing.assert_close(TemporalPooling("mean")(x), flat.mean(2))
    stats = TemporalPooling("stats")(x)
    torch.testing.assert_close(stats, torch.cat([flat.mean(2), torch.sqrt(flat.var(2, unbiased=False) + 1e-5)], 1))
    with pytest.raises(ValueError):
        TemporalPooling("max")
