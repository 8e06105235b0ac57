"""GANomaly (Akcay, Atapour-Abarghouei & Breckon, ACCV 2018), a comparison method of Tables 1, 3, 4.

The generator is encoder -> decoder -> encoder: z = G_E(x), x_hat = G_D(z), z_hat = E(x_hat).
It is trained on normal images with the paper's three losses:
    adversarial  L_adv = ||f(x) - f(x_hat)||_2^2  (feature matching on D's 4x4 features)
    contextual   L_con = ||x - x_hat||_1
    encoder      L_enc = ||z - z_hat||_2^2
and D, ALGAN-image's discriminator (see `baseline_common`), is trained by BCE to tell x from
x_hat. The anomaly score is the latent error ||z - z_hat||^2 (mean over the latent dimensions,
as the authors' code).
Networks follow ALGAN-image's DCGAN-like layout (see `baseline_common`), latent size 100.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .algan_nets import ImageGenerator
from .baseline_common import (AdversarialBaseline, BaselineHParams, Discriminator, ImageEncoder, discriminator_loss,
                             reinit_below)


@dataclass(frozen=True)
class GANomalyHParams(BaselineHParams):
    latent_dim: int = 100          # ALGAN paper Sec. IV-A-1: latent size 100 for GANomaly (GANomaly's nz)
    w_adv: float = 1.0             # GANomaly's published loss weights: w_adv = 1
    w_con: float = 50.0            # w_con = 50
    w_enc: float = 1.0             # w_enc = 1
    reinit_d_below: float = 1e-5   # GANomaly's released code re-initialises D when its loss falls below this


class GANomalyGenerator(nn.Module):
    """x (B, C, S, S) -> (x_hat (B, C, S, S), z (B, latent), z_hat (B, latent))."""

    def __init__(self, model: ModelConfig, latent_dim: int):
        super().__init__()
        encoder = dict(channels=model.channels, image_size=model.image_size, width=model.g_width,
                       out_dim=latent_dim, max_mult=model.max_width_mult, slope=model.leaky_slope)
        self.encoder = ImageEncoder(**encoder)                                    # G_E
        self.decoder = ImageGenerator(replace(model, latent_dim=latent_dim))      # G_D: ALGAN's generator
        self.encoder2 = ImageEncoder(**encoder)                                   # E

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)


def generator_loss(x, x_hat, z, z_hat, feat_real, feat_fake, hp: GANomalyHParams) -> dict[str, torch.Tensor]:
    """GANomaly's generator objective w_adv L_adv + w_con L_con + w_enc L_enc, with its three terms."""
    adv = F.mse_loss(feat_fake, feat_real)
    con = F.l1_loss(x_hat, x)
    enc = F.mse_loss(z_hat, z)
    return {"loss_g": hp.w_adv * adv + hp.w_con * con + hp.w_enc * enc,
            "loss_adv": adv, "loss_con": con, "loss_enc": enc}


def latent_error(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """The anomaly score ||z - z_hat||^2 / latent_dim per image, (B,)."""
    return (z - z_hat).pow(2).mean(1)


class GANomaly(AdversarialBaseline):
    """GANomaly: anomaly score = latent reconstruction error of the encoder-decoder-encoder generator."""

    name = "ganomaly"
    HParams = GANomalyHParams

    def build_networks(self) -> dict[str, nn.Module]:
        m = self.config.model
        return {"generator": GANomalyGenerator(m, self.hparams.latent_dim),
                "discriminator": Discriminator(m)}

    def make_step(self):
        G, D, hp = self.nets["generator"], self.nets["discriminator"], self.hparams
        opt_g, opt_d = hp.adam(G.parameters()), hp.adam(D.parameters())

        def step(x: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
            # ---- G step: minimise w_adv L_adv + w_con L_con + w_enc L_enc ----
            x_hat, z, z_hat = G(x)                                              # (B, C, S, S), (B, latent) x 2
            real_logits, feat_real = D.logit_and_features(x)
            losses = generator_loss(x, x_hat, z, z_hat, feat_real.detach(), D.features(x_hat), hp)
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
        _, z, z_hat = self.nets["generator"](x)
        return latent_error(z, z_hat)
