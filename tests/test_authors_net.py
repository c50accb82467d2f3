"""The paper's MNIST model as the authors published it (rotated_mnist.py, commit b4d0d40).

Pinned layer by layer, so a silent change to the faithful net fails here; and the model's [0, 1]
interface around it gives exactly the published model's [−1, 1] computation.
"""

import torch
from torch import nn

from groupact.build import model_from_config
from groupact.config import load_config

#: the published ConvEncoder / ConvDecoder, in order: (type, constructor arguments)
PUBLISHED_ENCODER = [(nn.Conv2d, (1, 32, 4, 2, 1)), (nn.LeakyReLU, 0.2),
                     (nn.Conv2d, (32, 64, 4, 2, 1)), (nn.LeakyReLU, 0.2)]
PUBLISHED_DECODER = [(nn.ConvTranspose2d, (64, 32, 4, 2, 1)), (nn.LeakyReLU, 0.2),
                     (nn.ConvTranspose2d, (32, 1, 4, 2, 1)), (nn.Tanh, None)]


def _layers(module: nn.Module):
    return [m for m in module.modules() if not list(m.children())]


def _matches(layer: nn.Module, kind, args) -> bool:
    if type(layer) is not kind:
        return False
    if kind in (nn.Conv2d, nn.ConvTranspose2d):
        c_in, c_out, k, s, p = args
        return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, layer.bias is not None) == (c_in, c_out, (k, k), (s, s), (p, p), True)
    if kind is nn.LeakyReLU:
        return layer.negative_slope == args
    return True


def _model():
    return model_from_config(load_config("rotmnist-c4"), (1, 28, 28))


def test_the_authors_net_is_the_published_one_layer_for_layer():
    model = _model()
    for part, published in ((model.encoder, PUBLISHED_ENCODER), (model.decoder, PUBLISHED_DECODER)):
        layers = _layers(part)
        assert len(layers) == len(published), layers
        for layer, (kind, args) in zip(layers, published):
            assert _matches(layer, kind, args), (layer, kind, args)
    assert model.pixel_range == (-1.0, 1.0)
    n = sum(p.numel() for p in list(model.encoder.parameters()) + list(model.decoder.parameters()))
    assert n == 544 + 32_832 + 32_800 + 513                   # the published model's 66,689
    assert model.latent_shape == (64, 7, 7)


def test_the_mask_starts_as_the_authors_does():
    """ChannelMaskSTE: logits = 0.1·N(0, 1), threshold 0.5."""
    logits = _model().mask.logits.detach()
    assert logits.shape == (64,) and abs(float(logits.mean())) < 0.05
    assert 0.06 < float(logits.std()) < 0.14
    assert _model().mask.tau == 0.5


def test_images_in_zero_one_give_the_published_computation_on_minus_one_one():
    """model(x, g) on [0, 1] = (published forward on Normalize((0.5,), (0.5,))(x) + 1) / 2."""
    model = _model().eval()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    g = torch.tensor([0, 1, 2, 3, 1])
    with torch.no_grad():
        z = model.encoder((x - 0.5) / 0.5)
        m = model.mask_like(z)
        z_rot = torch.stack([torch.rot90(zi, int(k), dims=[-2, -1]) for zi, k in zip(m * z, g)])
        published = model.decoder((1 - m) * z + z_rot)
        ours = model(x, g)
    assert torch.allclose(ours, (published + 1) / 2, atol=1e-6)
    assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0
