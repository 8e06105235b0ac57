"""Skip-GANomaly (Akcay, Atapour-Abarghouei & Breckon, IJCNN 2019), a comparison method of Tables 1, 3, 4.

The generator is a U-Net: an encoder down to a 1x1 bottleneck of 512 channels (the latent size
the ALGAN paper gives, Sec. IV-A-1) and a decoder that concatenates each encoder level's output
(skip connections). It is trained on normal images with the paper's three losses:
    adversarial  L_adv = -log D(x_hat)              (non-saturating BCE)
    contextual   L_con = ||x - x_hat||_1
    latent       L_lat = ||f(x) - f(x_hat)||_2^2     (f: D's last 4x4 features)
and D, ALGAN-image's discriminator (see `baseline_common`), is trained by BCE to tell x from
x_hat. The anomaly score is
    A(x) = lambda R(x) + (1 - lambda) L(x),  R = mean |x - x_hat|,  L = mean (f(x) - f(x_hat))^2,
lambda = 0.9, as the paper writes it (the authors' code uses squared error for R; the paper's L1
is kept).
The published min-max scaling of A over the test set is not done: scores stay raw.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .algan_nets import _widths, n_conv_layers
from .baseline_common import AdversarialBaseline, BaselineHParams, Discriminator, discriminator_loss, reinit_below


@dataclass(frozen=True)
class SkipGANomalyHParams(BaselineHParams):
    latent_dim: int = 512          # ALGAN paper Sec. IV-A-1: latent size 512 for Skip-GANomaly (U-Net bottleneck)
    w_adv: float = 1.0             # Skip-GANomaly's published weights: lambda_adv = 1
    w_con: float = 40.0            # lambda_con = 40
    w_lat: float = 1.0             # lambda_lat = 1
    score_lambda: float = 0.9      # Skip-GANomaly's score A = lambda R + (1 - lambda) L, lambda = 0.9
    reinit_d_below: float = 1e-5   # the authors' code re-initialises D when its loss falls below this

    def __post_init__(self):
        super().__post_init__()
        if self.score_lambda > 1:
            raise ValueError(f"SkipGANomalyHParams.score_lambda={self.score_lambda}: "
                             "expected a weight in [0, 1]")


class UNetGenerator(nn.Module):
    """x (B, C, S, S) -> x_hat (B, C, S, S): DCGAN-like encoder / decoder with skip connections.

    Down: conv 4-2-1 (+ batch norm but on the first) + LeakyReLU per halving to 4x4, then a 4x4
    conv to the (B, latent, 1, 1) bottleneck. Up: the mirror image with transposed convs, batch
    norm + ReLU, each output concatenated with the encoder output of the same resolution; tanh out.
    """

    def __init__(self, model: ModelConfig, latent_dim: int):
        super().__init__()
        widths = _widths(model.g_width, n_conv_layers(model.image_size), model.max_width_mult)  # S/2 ... 4
        slope, w_in = model.leaky_slope, model.channels
        self.down = nn.ModuleList()
        for i, w in enumerate(widths):
            norm = [nn.BatchNorm2d(w)] if i > 0 else []
            self.down.append(nn.Sequential(nn.Conv2d(w_in, w, 4, 2, 1, bias=False), *norm,
                                           nn.LeakyReLU(slope, True)))
            w_in = w
        self.bottleneck = nn.Sequential(nn.Conv2d(widths[-1], latent_dim, 4, 1, 0, bias=False), nn.ReLU(True))
        self.up = nn.ModuleList([nn.Sequential(  # 1x1 -> 4x4
            nn.ConvTranspose2d(latent_dim, widths[-1], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[-1]),
            nn.ReLU(True))])
        for w_skip, w_out in zip(widths[:0:-1], widths[-2::-1]):  # concatenated input is 2 x the skip width
            self.up.append(nn.Sequential(nn.ConvTranspose2d(2 * w_skip, w_out, 4, 2, 1, bias=False),
                                         nn.BatchNorm2d(w_out), nn.ReLU(True)))
        self.out = nn.Sequential(nn.ConvTranspose2d(2 * widths[0], model.channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)                                   # (B, w_i, S / 2^(i+1), same)
        h = self.bottleneck(x)                                # (B, latent, 1, 1)
        for block, skip in zip(self.up, reversed(skips)):
            h = torch.cat([block(h), skip], 1)                # (B, 2 w_i, ., .)
        return self.out(h)


def generator_loss(x, x_hat, fake_logits, feat_real, feat_fake, hp: SkipGANomalyHParams) -> dict[str, torch.Tensor]:
    """Skip-GANomaly's generator objective w_adv L_adv + w_con L_con + w_lat L_lat, with its terms."""
    adv = F.softplus(-fake_logits).mean()  # BCE(D(x_hat), real)
    con = F.l1_loss(x_hat, x)
    lat = F.mse_loss(feat_fake, feat_real)
    return {"loss_g": hp.w_adv * adv + hp.w_con * con + hp.w_lat * lat,
            "loss_adv": adv, "loss_con": con, "loss_lat": lat}


def anomaly_score(x, x_hat, feat_real, feat_fake, score_lambda: float) -> torch.Tensor:
    """A(x) = lambda * mean |x - x_hat| + (1 - lambda) * mean (f(x) - f(x_hat))^2 per image, (B,)."""
    rec = (x - x_hat).abs().flatten(1).mean(1)
    lat = (feat_real - feat_fake).pow(2).flatten(1).mean(1)
    return score_lambda * rec + (1 - score_lambda) * lat


class SkipGANomaly(AdversarialBaseline):
    """Skip-GANomaly: U-Net generator; score mixes reconstruction and discriminator-feature errors."""

    name = "skip_ganomaly"
    HParams = SkipGANomalyHParams

    def build_networks(self) -> dict[str, nn.Module]:
        m = self.config.model
        return {"generator": UNetGenerator(m, self.hparams.latent_dim),
                "discriminator": Discriminator(m)}

    def make_step(self):
        G, D, hp = self.nets["generator"], self.nets["discriminator"], self.hparams
        opt_g, opt_d = hp.adam(G.parameters()), hp.adam(D.parameters())

        def step(x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
            # ---- G step: minimise w_adv L_adv + w_con L_con + w_lat L_lat ----
            x_hat = G(x)                                                        # (B, C, S, S)
            real_logits, feat_real = D.logit_and_features(x)
            fake_logits, feat_fake = D.logit_and_features(x_hat)
            losses = generator_loss(x, x_hat, fake_logits, feat_real.detach(), feat_fake, hp)
            opt_g.zero_grad(set_to_none=True)
            losses["loss_g"].backward()
            opt_g.step()
            # ---- D step: BCE, x -> real, x_hat.detach() -> fake ----
            loss_d = discriminator_loss(real_logits, D(x_hat.detach()))
            opt_d.zero_grad(set_to_none=True)  # drops the gradients the G step left in D
            loss_d.backward()
            opt_d.step()
            reinit_below(D, loss_d, hp.reinit_d_below)
            return {"loss_d": loss_d.detach(), **{k: v.detach() for k, v in losses.items()}}

        step.optimizers = (opt_g, opt_d)  # their state goes into a training checkpoint
        return step

    def score_batch(self, x: torch.Tensor) -> torch.Tensor:
        G, D = self.nets["generator"], self.nets["discriminator"]
        x_hat = G(x)
        return anomaly_score(x, x_hat, D.features(x), D.features(x_hat), self.hparams.score_lambda)
