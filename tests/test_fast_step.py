"""train.fast_step: one D call per D step, torch's fused Adam and ALGAN-feature's fused spectral-norm layers
(benchmarks/bench_feature_step.py times them). The same algorithm in other floating-point arithmetic: these
tests check the arithmetic against torch's own spectral norm in float64, the number of D calls, and that a
fast run is reproducible for its seed."""
import copy

import pytest
import torch

from algan.config import profile
from algan.models.algan_nets import build_networks
from algan.train import train_algan


def _feature_nets(dim=21, hidden=32):
    cfg = profile("smoke", kind="feature", **{"model.feature_dim": dim, "model.feature_hidden": hidden})
    torch.manual_seed(0)
    return cfg, *build_networks(cfg.model)


@pytest.mark.parametrize("frozen", [False, True])
def test_fused_layers_match_torchs_spectral_norm_in_float64(frozen):
    _, _, D = _feature_nets()
    D = D.double().train()
    fused = copy.deepcopy(D)
    if frozen:  # the G step: D's weights need no gradient, its input does
        for p in list(D.parameters()) + list(fused.parameters()):
            p.requires_grad_(False)
    x = torch.randn(16, 21, dtype=torch.double)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    a, b = D(xa), fused.forward_fused(xb)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    (a * torch.arange(16.0, dtype=torch.double)).sum().backward()
    (b * torch.arange(16.0, dtype=torch.double)).sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=1e-12)
    for (name, p), (_, q) in zip(D.named_parameters(), fused.named_parameters()):
        assert (p.grad is None) == (q.grad is None) == frozen, name
        if not frozen:
            torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=1e-12, msg=name)
    for (name, u), (_, w) in zip(D.named_buffers(), fused.named_buffers()):  # the power iteration's u, v
        torch.testing.assert_close(w, u, rtol=0, atol=1e-12, msg=name)
    D.eval()
    assert fused.eval().forward_fused(x).equal(D(x))  # eval mode: the plain forward, no iteration


def _count_d_calls(cfg, G, D, x, **train):
    calls = []
    D.register_forward_hook(lambda *_: calls.append(1))
    cfg = cfg.override(**{"train.epochs": 2, "train.select": "last", **train})
    train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=0, progress=False)
    return len(calls), cfg.train


@pytest.mark.parametrize("fast", [False, True])
def test_a_d_step_calls_d_once_when_fast(fast):
    cfg, G, D = _feature_nets()
    x = torch.randn(48, 21)  # 3 batches an epoch; epoch 1 without the buffer, epoch 2 with it
    n, train = _count_d_calls(cfg, G, D, x, **{"train.fast_step": fast})
    per_d_step = (1, 1) if fast else (2, 3)  # (epoch 1, epoch 2): real, fake[, buffered]
    assert n == sum(3 * (train.n_dis * k + 1) for k in per_d_step)  # + the G step's call


def test_the_batched_call_gives_the_separate_calls_logits():
    _, _, D = _feature_nets()
    D.eval()
    parts = [torch.randn(n, 21) for n in (16, 16, 32)]
    together = D(torch.cat(parts)).split([16, 16, 32])
    for part, logits in zip(parts, together):
        torch.testing.assert_close(logits, D(part), rtol=1e-6, atol=1e-6)


def _fit(kind, seed, **train):
    cfg = profile("smoke", kind=kind, **({"model.feature_dim": 21} if kind == "feature" else {}))
    cfg = cfg.override(**{"train.epochs": 3, "train.select": "last", "train.fast_step": True, **train})
    torch.manual_seed(seed)
    G, D = build_networks(cfg.model)
    shape = (40, 21) if kind == "feature" else (20, cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    return train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=seed, progress=False)


@pytest.mark.parametrize("kind, train", [("feature", {}), ("feature", {"train.amp": "bf16"}), ("image", {})])
def test_a_fast_run_is_reproducible_for_its_seed(kind, train, one_torch_thread):
    """ALGAN-image has no fused layers (one call per D step and fused Adam only); under bf16 autocast the
    feature D keeps its plain forward."""
    a, b, other = _fit(kind, 0, **train), _fit(kind, 0, **train), _fit(kind, 1, **train)
    assert a.history["loss_d"].notna().all()
    assert a.history.drop(columns="seconds").equals(b.history.drop(columns="seconds"))
    for key, value in a.best_state["discriminator"].items():
        assert value.equal(b.best_state["discriminator"][key]), key
    assert not a.history["loss_d"].equals(other.history["loss_d"])
