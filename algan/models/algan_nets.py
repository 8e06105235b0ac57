"""ALGAN's networks (Sec. IV-A-1).

ALGAN-image is DCGAN-like: the generator has batch norm + ReLU on every layer but the output
(tanh), the discriminator has spectral norm + LeakyReLU and returns a logit. The depth follows
the resolution: log2(size) - 1 layers each, i.e. 7 at 256x256 as in the paper, 5 at 64x64.
ALGAN-feature uses three fully connected layers each, with the same normalisation rules.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.parametrizations import _SpectralNorm, spectral_norm

from ..config import ModelConfig


def n_conv_layers(image_size: int) -> int:
    """Layers per network: one 4x4 <-> 1x1 layer plus one stride-2 layer per doubling from 4."""
    return int(math.log2(image_size)) - 1


def _widths(base: int, n_layers: int, max_mult: int) -> list[int]:
    """Channel widths from the high-resolution end: base, 2 base, 4 base, ... capped at max_mult."""
    return [base * min(2**i, max_mult) for i in range(n_layers - 1)]


def generated_channels(cfg: ModelConfig) -> int:
    """G's output channels: every model channel ("free"), or the image channels only when the max/mean
    channels are derived from its output as for real images (model.fake_channels="derived")."""
    if cfg.fake_channels == "derived" and cfg.extra_channels:
        return cfg.channels - 2
    return cfg.channels


class ImageGenerator(nn.Module):
    """G: z (B, latent) -> image (B, C, S, S) in [-1, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n = n_conv_layers(cfg.image_size)
        widths = _widths(cfg.g_width, n, cfg.max_width_mult)[::-1]  # low-res (wide) first
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(cfg.latent_dim, widths[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
            nn.BatchNorm2d(widths[0]), nn.ReLU(True),
        ]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], generated_channels(cfg), 4, 2, 1), nn.Tanh()]  # no BN on output
        self.net = nn.Sequential(*layers)
        self.latent_dim = cfg.latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.latent_dim, 1, 1))


class ImageDiscriminator(nn.Module):
    """D: image (B, C, S, S) -> logit (B,). The anomaly score is -D(x)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n = n_conv_layers(cfg.image_size)
        widths = _widths(cfg.d_width, n, cfg.max_width_mult)
        layers: list[nn.Module] = []
        w_in = cfg.channels
        for w_out in widths:
            layers += [spectral_norm(nn.Conv2d(w_in, w_out, 4, 2, 1)), nn.LeakyReLU(cfg.leaky_slope, True)]
            w_in = w_out
        layers.append(spectral_norm(nn.Conv2d(w_in, 1, 4, 1, 0)))  # 4x4 -> 1x1 logit
        self.net = nn.Sequential(*layers)
        self.channels, self.image_size = cfg.channels, cfg.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"input shape {tuple(x.shape)}: expected (B, {self.channels}, {self.image_size}, {self.image_size}) "
                "(model.channels / model.image_size)")
        return self.net(x).flatten()


class FeatureGenerator(nn.Module):
    """G: z (B, latent) -> feature (B, D); linear output because features are standardised, not bounded."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h = cfg.feature_hidden
        self.net = nn.Sequential(
            nn.Linear(cfg.latent_dim, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(True),
            nn.Linear(h, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(True),
            nn.Linear(h, cfg.feature_dim),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class _DivideBySigma(torch.autograd.Function):
    """weight / sigma with torch's own gradients, bit for bit, in 4 passes over the weight instead of 6.

    torch's division backward computes grad / sigma and, for sigma, sum(-grad * ((weight / sigma) / sigma)):
    -grad, weight / sigma, / sigma, the product and the sum each read the whole weight. Here weight / sigma is
    the forward's output, kept, and the minus sign moves out of the sum (IEEE rounding is symmetric in sign,
    so sum(-x) == -sum(x) exactly, in the same order of additions); the sum is `sum_to_size`, the reduction
    autograd itself applies. tests/test_feature_identity.py holds the old runs' values."""

    @staticmethod
    def forward(ctx, weight, sigma):
        out = weight / sigma
        ctx.save_for_backward(out, sigma)
        return out

    @staticmethod
    def backward(ctx, grad):
        out, sigma = ctx.saved_tensors
        grad_weight = grad / sigma if ctx.needs_input_grad[0] else None
        grad_sigma = -(grad * (out / sigma)).sum_to_size(sigma.shape) if ctx.needs_input_grad[1] else None
        return grad_weight, grad_sigma


class _LeanSpectralNorm(_SpectralNorm):
    """torch's spectral norm (the same power iteration, buffers and state dict) with `_DivideBySigma`."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return super().forward(weight)
        weight_mat = self._reshape_weight_to_matrix(weight)
        if self.training:
            self._power_method(weight_mat, self.n_power_iterations)
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        sigma = torch.vdot(u, torch.mv(weight_mat, v))
        return _DivideBySigma.apply(weight, sigma)


class _SpectralLinear(torch.autograd.Function):
    """y = x W^T / sigma + b with sigma = u^T W v for fixed u, v (spectral norm's gradient): `train.fast_step`.

    The same function and gradients as `_LeanSpectralNorm` + `nn.Linear`, without materialising W / sigma:
    the division acts on the (B, out) output, and d sigma / dW = u v^T makes the weight's gradient
    (g^T x) / sigma - c u v^T with c = sum(g * x W^T) / sigma^2, a sum over the small output, not the weight.
    Three passes over W in all (the product, x's gradient, the rank-1 term) instead of six; the floating-point
    results differ from the two-step form in the last bits."""

    @staticmethod
    def forward(ctx, x, weight, bias, u, v, sigma):
        raw = x @ weight.t()
        ctx.save_for_backward(x, weight, raw, u, v, sigma)
        return torch.addcdiv(bias, raw, sigma)

    @staticmethod
    def backward(ctx, grad):
        x, weight, raw, u, v, sigma = ctx.saved_tensors
        scaled = grad / sigma
        grad_x = scaled @ weight if ctx.needs_input_grad[0] else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = scaled.t() @ x
            grad_w.addr_(u, v, alpha=-((grad * raw).sum() / sigma ** 2))
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None


def spectral_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """A spectral-normed linear layer's training-mode forward by `_SpectralLinear`: one power iteration (as
    torch's, updating u and v in place) with sigma = ||W^T u|| (= u^T W v for the new v, without a third
    pass over W), then the fused product."""
    sn = layer.parametrizations.weight[0]
    weight = layer.parametrizations.weight.original
    with torch.no_grad():
        torch.nn.functional.normalize(torch.mv(weight, sn._v), dim=0, eps=sn.eps, out=sn._u)
        wtu = torch.mv(weight.t(), sn._u)
        sigma = torch.linalg.vector_norm(wtu)
        torch.div(wtu, sigma.clamp_min(sn.eps), out=sn._v)
    return _SpectralLinear.apply(x, weight, layer.bias, sn._u.clone(), sn._v.clone(), sigma)


def lean_spectral_norm(module: nn.Module) -> nn.Module:
    """`spectral_norm(module)` whose parametrization is `_LeanSpectralNorm` (same values, cheaper backward)."""
    module = spectral_norm(module)
    module.parametrizations.weight[0].__class__ = _LeanSpectralNorm
    return module


class FeatureDiscriminator(nn.Module):
    """D: feature (B, D) -> logit (B,)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        h, slope = cfg.feature_hidden, cfg.leaky_slope
        self.net = nn.Sequential(
            lean_spectral_norm(nn.Linear(cfg.feature_dim, h)), nn.LeakyReLU(slope, True),
            lean_spectral_norm(nn.Linear(h, h)), nn.LeakyReLU(slope, True),
            lean_spectral_norm(nn.Linear(h, 1)),
        )
        self.feature_dim = cfg.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.feature_dim:
            raise ValueError(f"input shape {tuple(x.shape)}: expected (B, {self.feature_dim}) (model.feature_dim)")
        return self.net(x).flatten()

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        """The training-mode forward with `spectral_linear` layers (`train.fast_step`); eval mode, where the
        spectral norms do not iterate, is `forward`."""
        if not self.training:  # the class's forward: train.fast_step installs this method as the instance's
            return FeatureDiscriminator.forward(self, x)
        for layer in self.net:
            x = spectral_linear(layer, x) if isinstance(layer, nn.Linear) else layer(x)
        return x.flatten()


def build_networks(cfg: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) for the configured kind, DCGAN-initialised."""
    if cfg.kind == "image":
        g, d = ImageGenerator(cfg), ImageDiscriminator(cfg)
    else:
        g, d = FeatureGenerator(cfg), FeatureDiscriminator(cfg)
    g.apply(_dcgan_init)
    d.apply(_dcgan_init)
    return g, d


def _dcgan_init(module: nn.Module) -> None:
    # DCGAN's N(0, 0.02) init; spectral norm wraps the weight, so initialise the original.
    weight = getattr(getattr(module, "parametrizations", None), "weight", None)
    weight = weight.original if weight is not None else getattr(module, "weight", None)
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
