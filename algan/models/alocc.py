"""ALOCC (Sabokrou, Khalooei, Fathy & Adeli, CVPR 2018), a comparison method of Tables 1, 3, 4.

A reconstructor R (encoder-decoder) and a discriminator D are trained adversarially on normal
images: R sees the noisy input x~ = x + eta, eta ~ N(0, sigma^2 I), and is trained to fool D and
to reconstruct x (ALOCC's L = L_{R+D} + lambda L_R); D is trained by BCE to tell x from R(x~).
The score is the published "D(R(x))" variant on the clean image, negated so that higher = more
anomalous: -logit D(R(x)). Networks follow ALGAN-image's DCGAN-like layout (see `baseline_common`).

What D(R(x)) measures depends on what tells R's outputs from real images. Early on that is
contrast (R's reconstructions are blurrier), so an anomaly that adds contrast (a white square)
can score as *more* normal, and one that removes it (a washed-out image) as anomalous; the
validation-selected checkpoint is what decides the direction in practice.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..device import to_device
from .algan_nets import ImageGenerator
from .baseline_common import AdversarialBaseline, BaselineHParams, Discriminator, ImageEncoder, discriminator_loss


@dataclass(frozen=True)
class ALOCCHParams(BaselineHParams):
    latent_dim: int = 100      # R's bottleneck. ALOCC's R is fully convolutional and the ALGAN paper gives
                               # no size for it, so it takes ALGAN-image's / GANomaly's 100
    noise_std: float = 0.31    # ALOCC's sigma = 0.155 for images in [0, 1] (the value public ALOCC code
                               # uses); our images are in [-1, 1], so twice that
    w_rec: float = 0.2         # lambda of L_R = ||x - R(x~)||^2: r_alpha = 0.2 in the authors' released code
    r_steps: int = 1           # R updates per D update, as the paper's alternating training; the
                               # authors' code makes 2 ("to make sure that d_loss does not go to zero")


class Reconstructor(nn.Module):
    """R: x (B, C, S, S) -> R(x) (B, C, S, S): a DCGAN encoder to (B, latent) and ALGAN's generator as decoder."""

    def __init__(self, model: ModelConfig, latent_dim: int):
        super().__init__()
        self.encoder = ImageEncoder(model.channels, model.image_size, model.g_width, latent_dim,
                                    model.max_width_mult, model.leaky_slope)
        self.decoder = ImageGenerator(replace(model, latent_dim=latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def reconstructor_loss(x, x_rec, fake_logits, hp: ALOCCHParams) -> dict[str, torch.Tensor]:
    """L_{R+D} for R (non-saturating: -log D(R(x~))) + lambda L_R, with its terms."""
    adv = F.softplus(-fake_logits).mean()
    rec = F.mse_loss(x_rec, x)
    return {"loss_r": adv + hp.w_rec * rec, "loss_adv": adv, "loss_rec": rec}


class ALOCC(AdversarialBaseline):
    """ALOCC: anomaly score = -logit D(R(x)), the discriminator judging the reconstruction."""

    name = "alocc"
    HParams = ALOCCHParams

    def build_networks(self) -> dict[str, nn.Module]:
        m = self.config.model
        return {"reconstructor": Reconstructor(m, self.hparams.latent_dim),
                "discriminator": Discriminator(m)}

    def make_step(self):
        R, D, hp = self.nets["reconstructor"], self.nets["discriminator"], self.hparams
        opt_r, opt_d = hp.adam(R.parameters()), hp.adam(D.parameters())

        def step(x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
            # Noise from the CPU generator, so a seed gives the same run on any device.
            noise = to_device(torch.randn(x.shape, generator=gen), x.device) * hp.noise_std
            x_rec = R(x + noise)                                                # R(x~), (B, C, S, S)
            # ---- D step: BCE, x -> real, R(x~).detach() -> fake ----
            loss_d = discriminator_loss(D(x), D(x_rec.detach()))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            # ---- R steps: fool D and reconstruct x ----
            for i in range(hp.r_steps):
                x_rec = x_rec if i == 0 else R(x + noise)
                losses = reconstructor_loss(x, x_rec, D(x_rec), hp)
                opt_r.zero_grad(set_to_none=True)
                losses["loss_r"].backward()
                opt_r.step()
            return {"loss_d": loss_d.detach(), **{k: v.detach() for k, v in losses.items()}}

        step.optimizers = (opt_r, opt_d)  # their state goes into a training checkpoint
        return step

    def score_batch(self, x: torch.Tensor) -> torch.Tensor:
        return -self.nets["discriminator"](self.nets["reconstructor"](x))
