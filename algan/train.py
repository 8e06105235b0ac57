"""Algorithm 1 of the paper, readable line by line beside it.

    1: for i = 1..e                              -> `for epoch in range(1, epochs + 1)`
    2-5: if i mod n_z = 0: sample z_d, z_g       -> `LatentSchedule.maybe_resample`
    6-7: for j = 1..m: sample x ~ p_data         -> `for j, x in enumerate(batches)`
    8: for k = 1..n_dis                          -> discriminator loop
    9: x' <- G(z_d)
    10-15: Loss_D with / without buffered x^     -> `discriminator_loss` (Eq. 6)
    16: phi <- Adam(Loss_D)
    18: Buffer <- x'                             -> `Buffer.push`
    19-20: Loss_G <- D(G(z_g)); theta <- Adam    -> `generator_loss` (Eq. 5)

The trainer knows nothing of the networks' insides: G maps latents to samples, D samples to logits.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .config import TrainConfig
from .score import auroc, discriminator_scores

Transform = Callable[[torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


# --------------------------------------------------------------------------------------------
# Pseudo-anomalous data: the latent mixture (line 3) and the buffer (lines 13, 18)
# --------------------------------------------------------------------------------------------
def sample_latents(n: int, latent_dim: int, alpha: float, sigma: float, gen: torch.Generator):
    """z_d: round(alpha n) rows z_n ~ N(0, I), the rest z_a ~ N(0, sigma^2 I). Returns (z, is_anomalous)."""
    n_normal = int(round(alpha * n))
    z = torch.randn(n, latent_dim, generator=gen)
    is_anomalous = torch.arange(n) >= n_normal
    z[is_anomalous] *= sigma
    return z, is_anomalous


class LatentSchedule:
    """Alg. 1 lines 2-5: z_d and z_g are drawn when epoch mod n_z = 0 (and before the first epoch).

    `literal` holds one latent batch for n_z epochs, as the printed algorithm reads; `per_batch`
    holds one latent batch per data-batch index j, so each batch of an epoch sees other latents.
    """

    def __init__(self, cfg: TrainConfig, latent_dim: int, n_batches: int, gen: torch.Generator):
        self.cfg, self.latent_dim, self.gen = cfg, latent_dim, gen
        self.n_sets = 1 if cfg.latent_schedule == "literal" else n_batches
        self.z_d: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.z_g: list[torch.Tensor] = []

    def maybe_resample(self, epoch: int) -> bool:
        if self.z_d and epoch % self.cfg.n_z != 0:
            return False
        alpha = self.cfg.alpha if self.cfg.use_anomalous_latent else 1.0
        b = self.cfg.batch_size
        self.z_d = [sample_latents(b, self.latent_dim, alpha, self.cfg.sigma, self.gen) for _ in range(self.n_sets)]
        self.z_g = [torch.randn(b, self.latent_dim, generator=self.gen) for _ in range(self.n_sets)]
        return True

    def for_batch(self, j: int):
        k = j % self.n_sets
        return self.z_d[k], self.z_g[k]


class Buffer:
    """Fakes from earlier steps (x^). Capacity 2x batch; each push replaces half of it at random."""

    def __init__(self, capacity: int, replace_fraction: float, gen: torch.Generator):
        self.capacity, self.replace_fraction, self.gen = capacity, replace_fraction, gen
        self.x: Optional[torch.Tensor] = None
        self.is_anomalous: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return 0 if self.x is None else len(self.x)

    def push(self, x: torch.Tensor, is_anomalous: torch.Tensor) -> None:
        x, is_anomalous = x.detach(), is_anomalous.to(x.device)
        if self.x is None or len(self.x) < self.capacity:  # fill up first
            self.x = x if self.x is None else torch.cat([self.x, x])[: self.capacity]
            self.is_anomalous = (is_anomalous if self.is_anomalous is None
                                 else torch.cat([self.is_anomalous, is_anomalous])[: self.capacity])
            return
        n_new = min(len(x), int(round(self.replace_fraction * self.capacity)))
        slots = torch.randperm(self.capacity, generator=self.gen)[:n_new].to(x.device)
        pick = torch.randperm(len(x), generator=self.gen)[:n_new].to(x.device)
        self.x[slots] = x[pick]
        self.is_anomalous[slots] = is_anomalous[pick]

    def sample(self, n: int):
        idx = torch.randint(len(self), (n,), generator=self.gen).to(self.x.device)
        return self.x[idx], self.is_anomalous[idx]


# --------------------------------------------------------------------------------------------
# Losses: Eq. (6) for D, Eq. (5) for G, both as quantities to minimise, on logits
# --------------------------------------------------------------------------------------------
def _fake_term(logits: torch.Tensor) -> torch.Tensor:
    """-E[log(1 - D(x))] = E[softplus(logit)]; an empty group contributes nothing."""
    return F.softplus(logits).mean() if logits.numel() else logits.new_zeros(())


def discriminator_loss(real, fake_n, fake_a, buf_n=None, buf_a=None, *, alpha: float, xi: float) -> torch.Tensor:
    """Negative of Eq. (6). Without buffered data (epoch 1, or the ablation) xi is taken as 1."""
    if buf_n is None:
        xi = 1.0
        buf_n = buf_a = real.new_zeros(0)
    normal = xi * _fake_term(fake_n) + (1 - xi) * _fake_term(buf_n)
    anomalous = xi * _fake_term(fake_a) + (1 - xi) * _fake_term(buf_a)
    return F.softplus(-real).mean() + alpha * normal + (1 - alpha) * anomalous


def generator_loss(fake_logits: torch.Tensor, form: str) -> torch.Tensor:
    """Eq. (5): min log(1 - D(G(z_n))) ("saturating"), or the non-saturating -log D(G(z_n))."""
    if form == "saturating":
        return -F.softplus(fake_logits).mean()
    return F.softplus(-fake_logits).mean()


# --------------------------------------------------------------------------------------------
# Algorithm 1
# --------------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    history: pd.DataFrame         # one row per epoch: losses, val AUROC (NaN between evaluations), seconds
    best_epoch: int               # epoch whose D had the best validation AUROC (last epoch without val)
    best_val_auroc: float
    best_state: dict              # {"generator": state_dict, "discriminator": state_dict} at best_epoch


def train_algan(
    generator: nn.Module,
    discriminator: nn.Module,
    x_train: torch.Tensor,
    cfg: TrainConfig,
    *,
    latent_dim: int,
    seed: int = 0,
    augment: Optional[Augment] = None,
    prepare: Optional[Transform] = None,
    x_val: Optional[torch.Tensor] = None,
    y_val: Optional[np.ndarray] = None,
    val_views: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train G and D on normal data `x_train` (N, ...) by Algorithm 1; select D on validation AUROC.

    `augment(x, gen)` randomises a training batch; `prepare(x)` maps stored samples to model input
    (e.g. appends the max/mean channels). Validation, if given, runs every `cfg.eval_every` epochs
    and on the last one; the test split is never seen here. With `val_views` > 1, x_val holds that
    many consecutive views (e.g. rotations) per validation sample and a sample's score is their mean.
    """
    if len(x_train) == 0:
        raise ValueError("x_train has 0 samples: expected at least one normal training sample")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    prepare = prepare or (lambda x: x)
    G, D = generator.to(device), discriminator.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    x_train = x_train.to(device)
    n_batches = (len(x_train) + cfg.batch_size - 1) // cfg.batch_size  # m in Alg. 1
    latents = LatentSchedule(cfg, latent_dim, n_batches, gen)
    buffer = Buffer(cfg.buffer_factor * cfg.batch_size, cfg.buffer_replace, gen)
    alpha = cfg.alpha if cfg.use_anomalous_latent else 1.0
    validate = x_val is not None and y_val is not None and len(np.unique(y_val)) == 2

    rows, best_auc, best_epoch, best_state, last_auc = [], -np.inf, 0, None, float("nan")
    bar = tqdm(range(1, cfg.epochs + 1), desc="ALGAN", disable=not progress, leave=False)
    for epoch in bar:                                                     # line 1
        start = time.perf_counter()
        G.train(); D.train()
        latents.maybe_resample(epoch)                                     # lines 2-5
        sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake_normal": 0.0, "d_fake_anomalous": 0.0}
        order = torch.randperm(len(x_train), generator=gen).to(device)
        for j in range(n_batches):                                        # line 6
            x = x_train[order[j * cfg.batch_size:(j + 1) * cfg.batch_size]]  # line 7: (B, ...)
            if augment is not None:
                x = augment(x, gen)
            x = prepare(x)
            (z_d, is_anom), z_g = latents.for_batch(j)
            z_d, is_anom, z_g = z_d.to(device), is_anom.to(device), z_g.to(device)
            use_buffer = cfg.use_buffer and epoch > 1 and len(buffer) > 0
            # line 9 sits inside the k loop, but G does not change there, so x' is the same for
            # every k: compute it once. (B, ...)
            with torch.no_grad():
                G.train(cfg.fake_bn_stats == "batch")
                x_fake = G(z_d)                                           # line 9: x' = {x'_n, x'_a}
                G.train()
            for _ in range(cfg.n_dis):                                    # line 8
                # ---- D step: maximise Eq. (6) = minimise its negative ----
                real_logits, fake_logits = D(x), D(x_fake)
                buf = {}
                if use_buffer:                                            # lines 10-15
                    x_buf, buf_anom = buffer.sample(cfg.batch_size)      # line 13
                    buf_logits = D(x_buf)
                    buf = {"buf_n": buf_logits[~buf_anom], "buf_a": buf_logits[buf_anom]}
                loss_d = discriminator_loss(real_logits, fake_logits[~is_anom], fake_logits[is_anom],
                                            **buf, alpha=alpha, xi=cfg.xi)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()                                              # line 16
            if cfg.use_buffer:
                buffer.push(x_fake, is_anom)                              # line 18
            # ---- G step: Eq. (5), normal latents only ----
            g_logits = D(G(z_g))                                          # line 19
            loss_g = generator_loss(g_logits, cfg.generator_loss)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()                                                  # line 20
            sums["loss_d"] += loss_d.item()
            sums["loss_g"] += loss_g.item()
            sums["d_real"] += real_logits.mean().item()
            sums["d_fake_normal"] += fake_logits[~is_anom].mean().item() if (~is_anom).any() else 0.0
            sums["d_fake_anomalous"] += fake_logits[is_anom].mean().item() if is_anom.any() else float("nan")
        row = {"epoch": epoch, **{k: v / n_batches for k, v in sums.items()}, "val_auroc": float("nan")}
        if validate and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
            scores = discriminator_scores(D, x_val, prepare=prepare, device=device).reshape(-1, val_views).mean(1)
            row["val_auroc"] = last_auc = auroc(y_val, scores)
            if row["val_auroc"] > best_auc:  # strict: the earliest of equal checkpoints is kept
                best_auc, best_epoch = row["val_auroc"], epoch
                best_state = _snapshot(G, D)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}",
                        val_auroc=f"{last_auc:.3f}" if validate else "-")
    if best_state is None:  # no validation: keep the last epoch
        best_epoch, best_auc, best_state = cfg.epochs, float("nan"), _snapshot(G, D)
    G.load_state_dict(best_state["generator"])
    D.load_state_dict(best_state["discriminator"])
    return TrainResult(pd.DataFrame(rows), best_epoch, float(best_auc), best_state)


def _snapshot(G: nn.Module, D: nn.Module) -> dict:
    return {"generator": copy.deepcopy({k: v.detach().cpu() for k, v in G.state_dict().items()}),
            "discriminator": copy.deepcopy({k: v.detach().cpu() for k, v in D.state_dict().items()})}
