"""Network structure: depth follows resolution, normalisation rules of Sec. IV-A-1."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from algan.config import ModelConfig
from algan.models.algan_nets import build_networks


@pytest.mark.parametrize("size,layers", [(64, 5), (128, 6), (256, 7)])
def test_image_depth_and_shapes(size, layers):
    g, d = build_networks(ModelConfig(image_size=size, channels=5, g_width=4, d_width=4))
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) == layers
    assert sum(isinstance(m, nn.Conv2d) for m in d.modules()) == layers
    x = g(torch.randn(3, 100))
    assert x.shape == (3, 5, size, size)
    assert x.abs().max() <= 1.0  # tanh output
    assert d(x).shape == (3,)


def test_normalisation_rules():
    g, d = build_networks(ModelConfig(image_size=64, channels=3, g_width=4, d_width=4))
    convs_d = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert all(parametrize.is_parametrized(m, "weight") for m in convs_d)
    assert not any(parametrize.is_parametrized(m) for m in g.modules() if isinstance(m, nn.ConvTranspose2d))
    assert sum(isinstance(m, nn.LeakyReLU) for m in d.modules()) == len(convs_d) - 1
    assert not any(isinstance(m, nn.BatchNorm2d) for m in d.modules())
    layers = list(g.net)
    assert isinstance(layers[-1], nn.Tanh) and isinstance(layers[-2], nn.ConvTranspose2d)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in g.modules())
    assert n_bn == sum(isinstance(m, nn.ConvTranspose2d) for m in g.modules()) - 1  # none on the output layer


def test_feature_networks_three_layers():
    g, d = build_networks(ModelConfig(kind="feature", feature_dim=32, feature_hidden=16))
    assert sum(isinstance(m, nn.Linear) for m in g.modules()) == 3
    assert sum(isinstance(m, nn.Linear) for m in d.modules()) == 3
    assert all(parametrize.is_parametrized(m, "weight") for m in d.modules() if isinstance(m, nn.Linear))
    assert g(torch.randn(4, 100)).shape == (4, 32)
    assert d(torch.randn(4, 32)).shape == (4,)


def test_wrong_input_shape_is_one_clear_error():
    _, d = build_networks(ModelConfig(image_size=64, channels=5, g_width=4, d_width=4))
    with pytest.raises(ValueError, match=r"expected \(B, 5, 64, 64\)"):
        d(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"expected \(B, 5, 64, 64\)"):
        d(torch.randn(2, 5, 128, 128))


@pytest.mark.parametrize("size", [100, 8, 0])
def test_image_size_must_be_power_of_two(size):
    with pytest.raises(ValueError, match="model.image_size"):
        ModelConfig(image_size=size)
