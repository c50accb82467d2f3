"""The objectives: stop-gradient on the target branch, the parts, Jin's symmetric loss."""

import torch
import torch.nn.functional as F

from groupact.build import model_from_config
from groupact.config import load_config
from groupact.data.pairs import TransformPairs
from groupact.data.base import TensorSet
from groupact.losses import LossWeights, paper_loss, symmetric_loss


def _setup(overrides=()):
    cfg = load_config("rotmnist-c4", list(overrides))
    model = model_from_config(cfg, (1, 28, 28))
    x = torch.rand(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    batch = TransformPairs(model.group).pairs(TensorSet(x), torch.arange(6),
                                              torch.Generator().manual_seed(1))
    return model, batch


def _grads(model):
    return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])


def _manual_loss(model, b, stop_gradient: bool):
    z1 = model.encode(b.x1)
    z2 = model.encode(b.x2)
    if stop_gradient:
        z2 = z2.detach()
    m = model.mask_like(z1)
    moved = model.action(z1, b.g)
    return (model.recon_error(model.decode(m * moved + (1 - m) * z1), b.x2)
            + F.mse_loss((1 - m) * z1, (1 - m) * z2) + F.mse_loss(m * moved, m * z2))


def test_paper_loss_stops_gradient_through_the_target_branch():
    model, b = _setup()
    loss, parts = paper_loss(model, b, LossWeights())
    loss.backward()
    ours = _grads(model)
    assert set(parts) == {"recon", "inv", "const"}
    for stop, should_match in ((True, True), (False, False)):
        model.zero_grad()
        manual = _manual_loss(model, b, stop)
        assert torch.isclose(manual, loss)
        manual.backward()
        assert torch.allclose(_grads(model), ours, atol=1e-8) == should_match


def _published_style_loss(model, b):
    """The authors' train step, written as their script does it: images normalised to [−1, 1]
    (Normalize((0.5,), (0.5,))), the raw encoder and Tanh decoder, the MSE on that scale, and the
    whole x2 branch (encoder, mask, split) under no_grad, so sg[z_i(x2)] and sg[z_v(x2)] carry no
    mask gradient."""
    x1, x2 = (b.x1 - 0.5) / 0.5, (b.x2 - 0.5) / 0.5
    z1 = model.encoder(x1)
    m = model.mask_like(z1)
    z_v, z_i = m * z1, (1 - m) * z1
    z_v_rot = model.action(z_v, b.g)
    recon = F.mse_loss(model.decoder(z_i + z_v_rot), x2)
    with torch.no_grad():
        z2 = model.encoder(x2)
        m2 = model.mask_like(z2)
        z_v2, z_i2 = m2 * z2, (1 - m2) * z2
    return recon + F.mse_loss(z_i, z_i2) + F.mse_loss(z_v_rot, z_v2)


def test_paper_loss_mask_gradient_equals_the_published_scripts():
    """sg covers the mask in the target: the logit gradient matches the authors' formulation and
    differs from a loss that lets the mask's gradient through the target (the old deviation)."""
    model, b = _setup(["model.mask.init_std=1.0"])   # a mixed mask: both terms non-empty
    assert 0 < int(model.mask.hard().sum()) < model.mask.channels
    assert model.pixel_range == (-1.0, 1.0)          # the authors' net works on [−1, 1]
    loss, _ = paper_loss(model, b, LossWeights())
    loss.backward()
    ours = model.mask.logits.grad.clone()
    assert ours.abs().sum() > 0
    model.zero_grad()
    published = _published_style_loss(model, b)
    assert torch.isclose(published, loss)
    published.backward()
    assert torch.allclose(model.mask.logits.grad, ours, rtol=1e-5, atol=1e-10)
    model.zero_grad()
    leaky = _manual_loss(model, b, stop_gradient=True)   # mask inside the target keeps its grad
    leaky.backward()
    assert not torch.allclose(model.mask.logits.grad, ours, rtol=1e-3, atol=1e-8)


def test_loss_weights_switch_terms():
    model, b = _setup()
    _, parts = paper_loss(model, b, LossWeights(1, 0, 1))
    assert "inv" not in parts and "const" in parts
    total, parts = paper_loss(model, b, LossWeights(2.0, 0, 0))
    assert torch.isclose(total, torch.tensor(2 * parts["recon"]))


def test_symmetric_loss_is_both_ways():
    model, b = _setup()
    total, parts = symmetric_loss(model, b, LossWeights(1, 0, 0))
    with torch.no_grad():
        fwd = 4 * F.mse_loss(model(b.x1, b.g), b.x2)      # on [−1, 1]: 4× the [0, 1] error
        bwd = 4 * F.mse_loss(model(b.x2, model.group.inverse(b.g)), b.x1)
    assert torch.isclose(total, fwd + bwd)


def test_relative_latent_terms_do_not_reward_shrinking_the_latent():
    from groupact.losses import latent_term
    pred = torch.randn(4, 8, 7, 7, generator=torch.Generator().manual_seed(0))
    target = torch.randn(4, 8, 7, 7, generator=torch.Generator().manual_seed(1))
    for c in (0.01, 10.0):
        assert torch.isclose(latent_term(c * pred, c * target, True), latent_term(pred, target, True))
        assert torch.isclose(latent_term(c * pred, c * target, False),
                             c ** 2 * latent_term(pred, target, False))


def test_autoencoder_loss_reconstructs_x1_and_ignores_the_group():
    from groupact.losses import autoencoder_loss, get_loss
    assert get_loss("autoencoder") is autoencoder_loss
    model, b = _setup(["model.mask.kind=all"])
    loss, parts = autoencoder_loss(model, b, LossWeights(1.0, 5.0, 5.0))  # λ_i, λ_v unused
    assert set(parts) == {"recon"}
    with torch.no_grad():
        assert torch.isclose(loss, 4 * F.mse_loss(model.decode(model.encode(b.x1)), b.x1))
    loss.backward()
    assert _grads(model).abs().sum() > 0                       # gradient reaches the encoder
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    # another g, another x2: the same loss
    other = type(b)(b.x1, torch.rand_like(b.x2), model.group.sample(6), b.labels)
    again, _ = autoencoder_loss(model, other, LossWeights())
    assert torch.equal(again.detach(), loss.detach())


def test_autoencoder_loss_leaves_the_ald_mask_without_gradient():
    from groupact.losses import autoencoder_loss
    model, b = _setup()
    loss, _ = autoencoder_loss(model, b, LossWeights())
    loss.backward()
    assert model.mask.logits.grad is None
