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

import contextlib
import copy
import dataclasses
import functools
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import resume
from .config import TrainConfig
from .device import to_device
from .models.feature_step import FeatureSteps
from .score import auroc, discriminator_scores

Transform = Callable[[torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

try:  # optional: a bare accelerator machine may not have it (benchmarks/paper_gpu.sh)
    from tqdm import tqdm
except ImportError:
    tqdm = None


class _Plain:
    """The iterable without a bar; `set_postfix` does nothing."""

    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **_):
        pass


def progress_bar(iterable, desc: str, enabled: bool):
    """tqdm's bar over `iterable` when it is wanted and tqdm is installed; else the plain iterable."""
    return tqdm(iterable, desc=desc, leave=False) if enabled and tqdm is not None else _Plain(iterable)


# --------------------------------------------------------------------------------------------
# Pseudo-anomalous data: the latent mixture (line 3) and the buffer (lines 13, 18)
# --------------------------------------------------------------------------------------------
def sample_latents(n: int, latent_dim: int, alpha: float, sigma: float, gen: torch.Generator):
    """z_d: the first round(alpha n) rows z_n ~ N(0, I), the rest z_a ~ N(0, sigma^2 I). Returns (z, is_anomalous),
    both on the CPU (the generator's device)."""
    n_normal = int(round(alpha * n))
    z = torch.randn(n, latent_dim, generator=gen)
    is_anomalous = torch.arange(n) >= n_normal
    z[is_anomalous] *= sigma
    return z, is_anomalous


class LatentSchedule:
    """Alg. 1 lines 2-5: z_d and z_g are drawn when epoch mod n_z = 0 (and before the first epoch).

    `literal` holds one latent batch for n_z epochs, as the printed algorithm reads; `per_batch`
    holds one latent batch per data-batch index j, so each batch of an epoch sees other latents.
    The latents are drawn on the CPU and kept on `device`; the flags `is_anomalous` stay on the CPU.
    """

    def __init__(self, cfg: TrainConfig, latent_dim: int, n_batches: int, gen: torch.Generator,
                 device: str | torch.device = "cpu"):
        self.cfg, self.latent_dim, self.gen, self.device = cfg, latent_dim, gen, torch.device(device)
        self.n_sets = 1 if cfg.latent_schedule == "literal" else n_batches
        self.z_d: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.z_g: list[torch.Tensor] = []

    def maybe_resample(self, epoch: int) -> bool:
        if self.z_d and epoch % self.cfg.n_z != 0:
            return False
        alpha = self.cfg.alpha if self.cfg.use_anomalous_latent else 1.0
        b = self.cfg.batch_size
        z_d = [sample_latents(b, self.latent_dim, alpha, self.cfg.sigma, self.gen) for _ in range(self.n_sets)]
        z_g = [torch.randn(b, self.latent_dim, generator=self.gen) for _ in range(self.n_sets)]
        self.load(z_d, z_g)
        return True

    def load(self, z_d: list, z_g: list) -> None:
        """Hold these latents (from `maybe_resample`, or a checkpoint's): z on the device, flags on the CPU."""
        self.z_d = [(to_device(z, self.device), is_anom.cpu()) for z, is_anom in z_d]
        self.z_g = [to_device(z, self.device) for z in z_g]

    def for_batch(self, j: int):
        k = j % self.n_sets
        return self.z_d[k], self.z_g[k]


class Buffer:
    """Fakes from earlier steps (x^), each with its birth: the number of G updates made before it.

    Capacity `buffer_factor` x the batch (Sec. IV-A-1) or x the training set (Sec. III-A); each push
    fills it up first, then replaces `replace_fraction` of it (at most the pushed count) at random.
    The samples stay on their device; their flags and births, and the random draws, on the CPU, so
    that neither a push nor a draw waits for the device.
    """

    def __init__(self, capacity: int, replace_fraction: float, gen: torch.Generator):
        self.capacity, self.replace_fraction, self.gen = capacity, replace_fraction, gen
        self.x: Optional[torch.Tensor] = None
        self.is_anomalous: Optional[torch.Tensor] = None
        self.birth: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return 0 if self.x is None else len(self.x)

    def push(self, x: torch.Tensor, is_anomalous: torch.Tensor, birth: int | torch.Tensor = 0) -> None:
        """Store fakes x (B, ...) made after `birth` G updates (one count, or one per row)."""
        x, is_anomalous = x.detach(), is_anomalous.cpu()
        born = birth.cpu() if isinstance(birth, torch.Tensor) else torch.full((len(x),), birth, dtype=torch.long)
        if self.x is None or len(self.x) < self.capacity:  # fill up first
            cat = lambda old, new: new[: self.capacity] if old is None else torch.cat([old, new])[: self.capacity]  # noqa: E731
            self.x, self.is_anomalous, self.birth = cat(self.x, x), cat(self.is_anomalous, is_anomalous), cat(self.birth, born)
            return
        n_new = min(len(x), int(round(self.replace_fraction * self.capacity)))
        slots = torch.randperm(self.capacity, generator=self.gen)[:n_new]
        pick = torch.randperm(len(x), generator=self.gen)[:n_new]
        self.x[to_device(slots, x.device)] = x[to_device(pick, x.device)]
        self.is_anomalous[slots] = is_anomalous[pick]
        self.birth[slots] = born[pick]

    def sample(self, n: int, grouped: bool = False):
        """(x^, is_anomalous, birth) of n draws with replacement; x^ on the samples' device, the rest on the CPU.
        `grouped`: the normal draws first, then the anomalous (each in draw order)."""
        idx = torch.randint(len(self), (n,), generator=self.gen)
        if grouped:
            idx = idx[torch.argsort(self.is_anomalous[idx].to(torch.uint8), stable=True)]
        return self.x[to_device(idx, self.x.device)], self.is_anomalous[idx], self.birth[idx]


def split_rows(logits: torch.Tensor, is_anomalous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits[~is_anomalous], logits[is_anomalous]) for flags on the CPU: the same rows in the same order as
    boolean indexing, without the host sync that boolean indexing of a device tensor makes."""
    rows = torch.cat([(~is_anomalous).nonzero()[:, 0], is_anomalous.nonzero()[:, 0]])
    grouped = logits[to_device(rows, logits.device)]
    n_normal = len(is_anomalous) - int(is_anomalous.sum())
    return grouped[:n_normal], grouped[n_normal:]


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


def discriminator_row_weights(n_real: int, n_normal: int, n_anom: int, n_buf_normal: int = 0, n_buf_anom: int = 0,
                              *, alpha: float, xi: float, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, s) on the CPU with `discriminator_loss` = sum(w * softplus(s * logits)) for the logits of rows grouped
    as [real, fake normal, fake anomalous, buffered normal, buffered anomalous] with these counts (no buffered
    rows: xi is taken as 1, as there): each row's w is its group's weight in Eq. (6) over the group's size, and
    s is -1 on the real rows, +1 on the others."""
    if n_buf_normal + n_buf_anom == 0:
        xi = 1.0
    groups = [(n_real, 1.0), (n_normal, alpha * xi), (n_anom, (1 - alpha) * xi), (n_buf_normal, alpha * (1 - xi)),
              (n_buf_anom, (1 - alpha) * (1 - xi))]
    w = torch.cat([torch.full((n,), weight / n, dtype=torch.double) for n, weight in groups if n]).to(dtype)
    s = torch.ones(len(w), dtype=dtype)
    s[:n_real] = -1.0
    return w, s


@functools.lru_cache(maxsize=256)
def _row_weights_on(device: torch.device, counts: tuple[int, ...], alpha: float, xi: float):
    """`discriminator_row_weights` on the device, once per group counts (a run meets a few dozen)."""
    return tuple(to_device(t, device) for t in discriminator_row_weights(*counts, alpha=alpha, xi=xi))


TERMS = ("real", "fake_normal", "fake_anomalous", "buf_normal", "buf_anomalous")


def discriminator_terms(real, fake_n, fake_a, buf_n=None, buf_a=None, *, alpha: float, xi: float) -> dict:
    """The five weighted terms of `discriminator_loss`, by name (their sum is the loss)."""
    if buf_n is None:
        xi = 1.0
        buf_n = buf_a = real.new_zeros(0)
    return {"real": F.softplus(-real).mean(), "fake_normal": alpha * xi * _fake_term(fake_n),
            "fake_anomalous": (1 - alpha) * xi * _fake_term(fake_a),
            "buf_normal": alpha * (1 - xi) * _fake_term(buf_n), "buf_anomalous": (1 - alpha) * (1 - xi) * _fake_term(buf_a)}


def gradient_shares(terms: dict, params: list) -> dict:
    """Each term's share of the summed gradient norms ||d term / d phi|| over D's parameters: which terms
    D learns from. Terms without samples (or without a path to the parameters) get 0."""
    norms = {}
    for name, term in terms.items():
        if not term.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        norms[name] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
    total = sum(norms.values())
    return {name: (n / total if total > 0 else float("nan")) for name, n in norms.items()}


SATURATED_LOGIT = float(np.log(1e-3 / (1 - 1e-3)))  # D(x) < 1e-3: the term's gradient is < 1e-3 of its maximum


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
    best_epoch: int               # the chosen checkpoint's epoch (train.select; "ema": the last epoch)
    best_val_auroc: float         # its validation AUROC where measured on labels, else NaN
    best_state: dict              # {"generator": state_dict, "discriminator": state_dict}: the chosen checkpoint
    last_state: Optional[dict] = None  # the same at the last epoch, whatever the rule
    select: str = "val_labels"    # the rule that chose best_state
    rule_states: dict = dataclasses.field(default_factory=dict)  # train.record_selects: rule -> (epoch, D's state)


EMA_DECAY = 0.9          # train.select="ema": D_ema <- 0.9 D_ema + 0.1 D after every epoch (epoch 1: D_ema = D)
EMA_POWER_ITERATIONS = 10  # ... then u, v of each spectral norm refined on the averaged weights
PROXY_SEED = 7919        # train.select="proxy": its own generator, seed + PROXY_SEED (training draws are untouched)
PROXY_MIN_PIXELS = 20    # a CutPaste patch (>= 20 % of the image) needs >= 4 pixels: images of >= 20 pixels


def check_select(cfg: TrainConfig, x_val: Optional[torch.Tensor], y_val: Optional[np.ndarray]) -> None:
    """One-line errors, before training, for a selection rule that cannot apply to this validation data."""
    from .config import LABEL_FREE_SELECTS

    free = ", ".join(f"train.select={name!r}" for name in LABEL_FREE_SELECTS)
    if cfg.select == "val_labels" and x_val is not None:
        labels = set() if y_val is None else set(np.unique(np.asarray(y_val)).tolist())
        if len(labels) != 2:
            found = ("no labels" if y_val is None else "no anomalies" if labels == {0} else
                     "no normal samples" if labels == {1} else f"the labels {sorted(labels)}")
            raise ValueError(f"train.select='val_labels' chooses the checkpoint on validation AUROC, but the "
                             f"validation data has {found}: pass y_val with both 0 and 1, or a label-free rule: {free}")
    if cfg.select == "proxy":
        if x_val is None:
            raise ValueError("train.select='proxy' needs normal validation data: pass X_val (labels optional), or "
                             "train.select='last' / 'ema'")
        if x_val.dim() == 4 and x_val.shape[-1] * x_val.shape[-2] < PROXY_MIN_PIXELS:
            raise ValueError(f"train.select='proxy' pastes CutPaste patches of >= 20 % of an image, but the images are "
                             f"{x_val.shape[-2]}x{x_val.shape[-1]} (fewer than {PROXY_MIN_PIXELS} pixels): "
                             "use train.select='last' or 'ema'")


class _Selection:
    """The selection rules of `train.select`, apart from the training loop.

    - "val_labels" (Sec. IV-C, the default): every `eval_every` epochs and at the last, the validation AUROC on
      (x_val, y_val); the checkpoint with the highest is kept, the earliest of equal ones. Without any
      validation data (a plain `fit(X)`) the rule of config.LABEL_FREE_DEFAULT ("ema") chooses instead.
    - "last": the weights after the last epoch.
    - "ema": D's weights averaged over training, D_ema <- EMA_DECAY D_ema + (1 - EMA_DECAY) D after every epoch
      (D_ema = D after epoch 1), every parameter and spectral-norm vector; at the end each spectral norm's u, v
      are refined by EMA_POWER_ITERATIONS power iterations on the averaged weights (so sigma is theirs). G is
      the last epoch's (it does not score).
    - "proxy": as "val_labels", with the AUROC of the normal validation rows (y_val == 0, or all of x_val when
      y_val is None: the anomalous rows and the labels are never read otherwise) against made-up anomalies
      fixed before training from their own generator (seed + PROXY_SEED): for features, G's fake-anomalous
      samples G(z_a) from one held-out latent set z_a ~ N(0, sigma^2 I) (G in eval mode, at each evaluation);
      for images, the normal validation images with a CutPaste-style patch (20-30 % of the area, colour-
      jittered: `data.transforms.cutpaste`) pasted into each. Recorded in the history as `proxy_auroc`.
    """

    def __init__(self, cfg: TrainConfig, x_val, y_val, val_views: int, latent_dim: int, seed: int, device):
        self.rule, self.cfg = cfg.select, cfg
        self.ema: Optional[dict] = None
        self.normal = self.fake_z = self.pasted = None
        self.rules = {cfg.select}  # the rules followed: the chosen one, and with train.record_selects every one
        if cfg.record_selects:     # that applies (proxy: normal validation data of >= PROXY_MIN_PIXELS pixels)
            from .config import SELECTS
            labelled = y_val is not None and len(np.unique(np.asarray(y_val))) == 2
            proxy = x_val is not None and (x_val.dim() != 4 or x_val.shape[-1] * x_val.shape[-2] >= PROXY_MIN_PIXELS)
            self.rules |= {r for r in SELECTS if (r != "val_labels" or labelled) and (r != "proxy" or proxy)}
        if "proxy" in self.rules:
            rows = (np.ones(len(x_val) // val_views, bool) if y_val is None else np.asarray(y_val) == 0)
            keep = to_device(torch.as_tensor(np.repeat(rows, val_views)), x_val.device)
            self.normal, self.views = x_val[keep], val_views
            gen = torch.Generator().manual_seed(seed + PROXY_SEED)
            if x_val.dim() == 4:
                from .data.transforms import cutpaste
                self.pasted = cutpaste(self.normal.cpu(), gen).to(x_val.device)
            else:
                self.fake_z = to_device(torch.randn(int(rows.sum()), latent_dim, generator=gen) * cfg.sigma, device)

    def proxy_auroc(self, G, D, prepare, prepare_fake, device) -> float:
        normal = discriminator_scores(D, self.normal, prepare=prepare, device=device).reshape(-1, self.views).mean(1)
        if self.pasted is not None:
            odd = discriminator_scores(D, self.pasted, prepare=prepare, device=device).reshape(-1, self.views).mean(1)
        else:
            with torch.no_grad():
                G.eval()
                fakes = prepare_fake(G(self.fake_z))
                G.train()
            odd = discriminator_scores(D, fakes, device=device)
        return auroc(np.r_[np.zeros(len(normal)), np.ones(len(odd))], np.r_[normal, odd])

    def end_epoch(self, D: nn.Module) -> None:
        if "ema" not in self.rules:
            return
        state = {k: v.detach() for k, v in D.state_dict().items() if v.is_floating_point()}
        if self.ema is None:
            self.ema = {k: v.clone() for k, v in state.items()}
        else:
            for k, v in state.items():
                self.ema[k].mul_(EMA_DECAY).add_(v, alpha=1 - EMA_DECAY)

    def ema_state(self, D: nn.Module) -> dict:
        """D's state dict with the averaged weights, u and v refined on them (a copy of D does the work)."""
        from torch.nn.utils.parametrize import is_parametrized

        D = copy.deepcopy(D)
        D.load_state_dict({**D.state_dict(), **self.ema})
        with torch.no_grad():
            for module in D.modules():
                if is_parametrized(module, "weight"):
                    for sn in module.parametrizations.weight:
                        if hasattr(sn, "_power_method"):
                            weight = module.parametrizations.weight.original
                            sn._u.copy_(F.normalize(sn._u, dim=0, eps=sn.eps))
                            sn._v.copy_(F.normalize(sn._v, dim=0, eps=sn.eps))
                            sn._power_method(sn._reshape_weight_to_matrix(weight), EMA_POWER_ITERATIONS)
        return {k: v.detach().cpu().clone() for k, v in D.state_dict().items()}


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
    prepare_fake: Optional[Transform] = None,
    x_val: Optional[torch.Tensor] = None,
    y_val: Optional[np.ndarray] = None,
    val_views: int = 1,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train G and D on normal data `x_train` (N, ...) by Algorithm 1; choose the checkpoint by `cfg.select`
    (`_Selection` states each rule; the default, "val_labels", is the best validation AUROC). The result holds
    the chosen state and the last epoch's (`last_state`), and G and D end with the chosen weights.

    `augment(x, gen)` randomises a training batch; `prepare(x)` maps stored samples to model input
    (e.g. appends the max/mean channels); `prepare_fake(x)` does the same for G's output (identity
    when G emits every model channel). Validation, if given, runs every `cfg.eval_every` epochs
    and on the last one; the test split is never seen here. With `val_views` > 1, x_val holds that
    many consecutive views (e.g. rotations) per validation sample and a sample's score is their mean.

    The history has, per epoch, the mechanism diagnostics: D's mean logit on each kind of data, the
    share of x'_a (and x'_n) that D rejects with D(x) < 1e-3, each loss term's share of D's gradient
    norm (measured on the first D step of every validation epoch, `gradient_shares`), and the age in
    G updates of the buffered samples D saw.

    Data, augmentation, latents and the buffer's samples live on `device`; random draws come from one
    CPU generator (the same run on any device) and reach the device asynchronously (`device.to_device`),
    and the losses and diagnostics are summed there: the host waits for the device once per epoch
    (and in validation epochs, for the gradient shares and the scores), not per step.
    """
    n_batches = check_batches(len(x_train), cfg)  # m in Alg. 1
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    prepare = prepare or (lambda x: x)
    explicit_fake, prepare_fake = prepare_fake, prepare_fake or (lambda x: x)
    G, D = generator.to(device), discriminator.to(device)
    adam = {"fused": True} if cfg.fast_step else {"foreach": True}  # fused: one pass per parameter, not ~7
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2), **adam)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), **adam)
    d_params = [p for p in D.parameters() if p.requires_grad]
    x_train = x_train.to(device)
    x_val = None if x_val is None else x_val.to(device)
    latents = LatentSchedule(cfg, latent_dim, n_batches, gen, device)
    capacity = cfg.buffer_factor * (cfg.batch_size if cfg.buffer_size == "batch" else len(x_train))
    buffer = Buffer(capacity, cfg.buffer_replace, gen)
    alpha = cfg.alpha if cfg.use_anomalous_latent else 1.0
    check_select(cfg, x_val, y_val)
    if cfg.select == "val_labels" and x_val is None:  # nothing to validate on: the label-free default
        from .config import LABEL_FREE_DEFAULT
        cfg = dataclasses.replace(cfg, select=LABEL_FREE_DEFAULT)
    validate = x_val is not None and y_val is not None and len(np.unique(y_val)) == 2
    select = _Selection(cfg, x_val, y_val, val_views, latent_dim, seed, device)
    keep_best = cfg.select in ("val_labels", "proxy")
    # train.record_selects: the best epoch and D of each other best-AUROC rule, beside the chosen rule's
    others = {r: (-np.inf, 0, None) for r in ("val_labels", "proxy") if r in select.rules and r != cfg.select}
    g_updates = 0
    # train.fast_step on ALGAN-feature's nets (float32, G's output as D's input): the hand-written updates
    by_hand = cfg.fast_step and cfg.amp == "none" and explicit_fake is None and FeatureSteps.applies(G, D)
    steps = FeatureSteps(G, D, opt_g, opt_d) if by_hand else None

    rows, best_auc, best_epoch, best_state, last_auc = [], -np.inf, 0, None, float("nan")
    loop = {"loop": "algan", "train": dataclasses.asdict(cfg), "latent_dim": latent_dim, "seed": seed,
            "train_shape": tuple(x_train.shape), "val_shape": None if x_val is None else tuple(x_val.shape)}
    if cfg.channels_last and x_train.dim() != 4:
        raise ValueError(f"train.channels_last=True orders image batches (4-d); these samples are "
                         f"{x_train.dim()}-d: set it False")
    with resume.session(loop) as ckpt, forward_options((G, D), cfg, device):
        if (state := ckpt and ckpt.restore()) is not None:
            G.load_state_dict(state["generator"]); D.load_state_dict(state["discriminator"])  # noqa: E702
            opt_g.load_state_dict(state["opt_g"]); opt_d.load_state_dict(state["opt_d"])  # noqa: E702
            buffer.x, buffer.is_anomalous, buffer.birth = state["buffer"]
            buffer.x = None if buffer.x is None else buffer.x.to(device)
            latents.load(*state["latents"])
            g_updates, rows, last_auc = state["g_updates"], state["rows"], state["last_auc"]
            best_auc, best_epoch, best_state = state["best"]
            select.ema = state.get("ema")
            others = state.get("others", others)
            resume.set_rng_state(state["rng"], gen)
        first = 1 if state is None else state["epoch"] + 1
        bar = progress_bar(range(first, cfg.epochs + 1), "ALGAN", progress)
        for epoch in bar:                                                     # line 1
            start = time.perf_counter()
            G.train(); D.train()
            latents.maybe_resample(epoch)                                     # lines 2-5
            stats = _EpochStats()
            measure = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
            shares = {}
            pending: list[tuple[torch.Tensor, torch.Tensor, int]] = []     # per_epoch buffer updates
            order = to_device(torch.randperm(len(x_train), generator=gen), device)
            for j in range(n_batches):                                        # line 6
                x = x_train[order[j * cfg.batch_size:(j + 1) * cfg.batch_size]]  # line 7: (B, ...)
                if augment is not None:
                    x = augment(x, gen) if cfg.rotate_fill == "black" else augment(x, gen, fill=cfg.rotate_fill)
                x = prepare(x)
                (z_d, is_anom), z_g = latents.for_batch(j)                  # z on the device, flags on the CPU
                n_anom = int(is_anom.sum())
                n_normal = len(is_anom) - n_anom                               # z_n are the first rows
                use_buffer = cfg.use_buffer and epoch > 1 and len(buffer) > 0
                # line 9 sits inside the k loop, but G does not change there, so x' is the same for
                # every k: compute it once. (B, ...)
                if steps is not None and cfg.fake_bn_stats != "separate":
                    x_fake = steps.fakes(z_d, cfg.fake_bn_stats)              # line 9: x'
                else:
                    with torch.no_grad():
                        x_fake = prepare_fake(make_fakes(G, z_d, is_anom, n_anom, cfg.fake_bn_stats))
                for k in range(cfg.n_dis):                                    # line 8
                    # ---- D step: maximise Eq. (6) = minimise its negative ----
                    if use_buffer:                                            # lines 10-15
                        x_buf, buf_anom, born = buffer.sample(cfg.batch_size, grouped=steps is not None)  # line 13
                    parts = [x, x_fake, x_buf] if use_buffer else [x, x_fake]
                    if steps is not None and not (measure and j == 0 and k == 0):  # (the shares need autograd)
                        counts = (len(x), n_normal, n_anom)  # the rows' groups: fakes and draws are grouped
                        if use_buffer:
                            n_ba = int(buf_anom.sum())
                            counts += (len(buf_anom) - n_ba, n_ba)
                            stats.add_ages(g_updates - born)
                        logits, loss_d = steps.d_step(torch.cat(parts), *_row_weights_on(device, counts, alpha, cfg.xi))
                        stats.add_d_rows(loss_d, logits, counts)
                        continue
                    if cfg.fast_step:  # one call on all rows: D has no batch statistics, so the same logits
                        logits = D(torch.cat(parts)).split([len(p) for p in parts])
                    else:
                        logits = [D(x), D(x_fake)] + ([D(x_buf)] if use_buffer else [])
                    real_logits, fake_logits = logits[0], logits[1]
                    fake_n, fake_a = fake_logits[:n_normal], fake_logits[n_normal:]
                    buf = {}
                    if use_buffer:
                        buf = dict(zip(("buf_n", "buf_a"), split_rows(logits[2], buf_anom)))
                        stats.add_buffer(buf["buf_n"], buf["buf_a"], g_updates - born)
                    loss_d = discriminator_loss(real_logits, fake_n, fake_a, **buf, alpha=alpha, xi=cfg.xi)
                    if measure and j == 0 and k == 0:
                        shares = gradient_shares(discriminator_terms(
                            real_logits, fake_n, fake_a, **buf, alpha=alpha, xi=cfg.xi), d_params)
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()                                              # line 16
                    stats.add_d(loss_d, real_logits, fake_n, fake_a)
                if cfg.use_buffer:                                            # line 18
                    if cfg.buffer_update == "per_batch":
                        buffer.push(x_fake, is_anom, g_updates)
                    else:
                        pending.append((x_fake, is_anom, g_updates))
                # ---- G step: Eq. (5), normal latents only ----
                if steps is not None:
                    loss_g = steps.g_step(z_g, cfg.generator_loss)           # lines 19-20
                else:
                    with frozen(d_params):  # D's gradients of the G step were never used: not computed
                        g_logits = D(prepare_fake(G(z_g)))                    # line 19
                        loss_g = generator_loss(g_logits, cfg.generator_loss)
                        opt_g.zero_grad(set_to_none=True)
                        loss_g.backward()
                    opt_g.step()                                              # line 20
                g_updates += 1
                stats.add_g(loss_g)
            if pending:  # Sec. III-A: once per epoch, a portion of the buffer is replaced by this epoch's fakes
                births = torch.cat([torch.full((len(p[0]),), p[2], dtype=torch.long) for p in pending])
                buffer.push(torch.cat([p[0] for p in pending]), torch.cat([p[1] for p in pending]), births)
            row = {"epoch": epoch, **stats.row(n_batches, cfg.n_dis), "g_updates": g_updates,
                   **{f"grad_share_{name}": shares.get(name, float("nan")) for name in TERMS},
                   "val_auroc": float("nan")}
            evaluate = epoch % cfg.eval_every == 0 or epoch == cfg.epochs
            if validate and evaluate:
                scores = discriminator_scores(D, x_val, prepare=prepare, device=device).reshape(-1, val_views).mean(1)
                row["val_auroc"] = last_auc = auroc(y_val, scores)
            if "proxy" in select.rules:
                row["proxy_auroc"] = select.proxy_auroc(G, D, prepare, prepare_fake, device) if evaluate else float("nan")
            by = {"val_labels": row["val_auroc"], "proxy": row.get("proxy_auroc")}
            if keep_best and evaluate and by[cfg.select] > best_auc:  # strict: the earliest of equal ones is kept
                best_auc, best_epoch = by[cfg.select], epoch
                best_state = _snapshot(G, D)
            for rule, (auc, _, _) in list(others.items()):
                if evaluate and by[rule] > auc:
                    others[rule] = (by[rule], epoch, _state(D))
            select.end_epoch(D)
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}",
                            val_auroc=f"{last_auc:.3f}" if validate else "-")
            if ckpt:
                ckpt.end_epoch(epoch, lambda: {
                    "generator": G.state_dict(), "discriminator": D.state_dict(), "opt_g": opt_g.state_dict(),
                    "opt_d": opt_d.state_dict(), "buffer": (buffer.x, buffer.is_anomalous, buffer.birth),
                    "latents": (latents.z_d, latents.z_g), "g_updates": g_updates, "rows": rows,
                    "last_auc": last_auc, "best": (best_auc, best_epoch, best_state), "ema": select.ema,
                    **({"others": others} if others else {}),
                    "rng": resume.rng_state(gen)})
    history = pd.DataFrame(rows)
    last_state = _snapshot(G, D)
    if cfg.select == "ema":
        best_epoch, best_state = cfg.epochs, {"generator": last_state["generator"], "discriminator": select.ema_state(D)}
        best_auc = float("nan")
    elif best_state is None:  # "last", or no validation data at all: keep the last epoch
        best_epoch, best_state = cfg.epochs, last_state
        best_auc = last_auc if cfg.select == "last" else float("nan")
    if cfg.select == "proxy":  # the labelled AUROC of the chosen epoch, where measured (never used to choose)
        best_auc = float(history.loc[history["epoch"] == best_epoch, "val_auroc"].iloc[0])
    rule_states = {}
    if cfg.record_selects:
        rule_states = {"last": (cfg.epochs, last_state["discriminator"]), cfg.select: (best_epoch, best_state["discriminator"]),
                       **{rule: (epoch, state) for rule, (_, epoch, state) in others.items() if state is not None}}
        if "ema" in select.rules and cfg.select != "ema":
            rule_states["ema"] = (cfg.epochs, select.ema_state(D))
    G.load_state_dict(best_state["generator"])
    D.load_state_dict(best_state["discriminator"])
    return TrainResult(history, best_epoch, float(best_auc), best_state, last_state, cfg.select, rule_states)


@contextlib.contextmanager
def forward_options(nets, cfg: TrainConfig, device: torch.device):
    """Inside the block, `nets`' forward passes follow `train.amp` (bf16 autocast, outputs back in float32)
    and `train.channels_last` (4-d inputs and conv weights in NHWC order); afterwards the nets are as they
    were. With the defaults this does nothing, so the float32 path is bit for bit today's. `train.fast_step`
    without amp runs a net's `forward_fused` where it has one (ALGAN-feature's D: fused spectral-norm layers)."""
    fused = cfg.fast_step and cfg.amp == "none"
    if cfg.amp == "none" and not cfg.channels_last and not fused:
        yield
        return
    for net in nets:
        if cfg.channels_last:
            net.to(memory_format=torch.channels_last)

        def forward(x, *args, _inner=getattr(net, "forward_fused", net.forward) if fused else net.forward, **kwargs):
            if cfg.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
                return _inner(x, *args, **kwargs).float()
        net.forward = forward  # an instance attribute: nn.Module calls it, state_dict() does not see it
    try:
        yield
    finally:
        for net in nets:
            del net.forward
            if cfg.channels_last:
                net.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def frozen(params: list):
    """`params` do not require gradients inside the block (the values, and every other gradient, are as
    without it: autograd computes an input's gradient the same way whether or not a weight's is wanted)."""
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def check_batches(n: int, cfg: TrainConfig) -> int:
    """m in Alg. 1: the number of batches per epoch; one-line errors for data too small to train on."""
    if n == 0:
        raise ValueError("x_train has 0 samples: expected at least one normal training sample")
    if cfg.last_batch == "drop":
        if n < cfg.batch_size:
            raise ValueError(f"train.last_batch='drop' needs at least train.batch_size={cfg.batch_size} training "
                             f"samples, got {n}: use train.last_batch='keep' or a smaller batch")
        return n // cfg.batch_size
    return (n + cfg.batch_size - 1) // cfg.batch_size


def make_fakes(G: nn.Module, z: torch.Tensor, is_anom: torch.Tensor, n_anom: int, bn_stats: str) -> torch.Tensor:
    """x' = G(z_d) for D (Alg. 1 line 9) with G's batch norm as `train.fake_bn_stats` says; G ends in train mode.

    "running": eval-mode statistics; "batch": one train-mode call on the mixed batch; "separate": one
    train-mode call per kind of latent (rows stay in z's order; `is_anom` on the CPU spares a host sync)."""
    if bn_stats == "separate" and 0 < n_anom < len(z):
        rows = {"n": (~is_anom).cpu().nonzero()[:, 0], "a": is_anom.cpu().nonzero()[:, 0]}
        rows = {key: to_device(r, z.device) for key, r in rows.items()}
        parts = {}
        for key in ("n", "a"):
            G.train(True)
            parts[key] = G(z[rows[key]])
        out = parts["n"].new_empty((len(z), *parts["n"].shape[1:]))
        out[rows["n"]], out[rows["a"]] = parts["n"], parts["a"]
        return out
    G.train(bn_stats != "running")
    out = G(z)
    G.train()
    return out


class _EpochStats:
    """Per-epoch sums of the losses and diagnostics: each step's values are kept as they are (tensors on the
    device) and summed once at the end of the epoch in float64 (one host sync per epoch, few bookkeeping ops per
    step), in an order fixed by the steps; counts are Python numbers."""

    def __init__(self):
        self.values: dict[str, list[torch.Tensor]] = {}
        self.counts: dict[str, float] = {}
        self.ages: list[torch.Tensor] = []
        self.rows: dict[tuple[int, ...], list[torch.Tensor]] = {}  # add_d_rows: the logits of steps, by counts

    def _add(self, name: str, value) -> None:
        if isinstance(value, torch.Tensor):
            self.values.setdefault(name, []).append(value.detach())
        else:
            self.counts[name] = self.counts.get(name, 0.0) + float(value)

    def add_d(self, loss_d, real_logits, fn, fa) -> None:
        """One D step: its loss, and D's logits on the real, fake-normal (fn) and fake-anomalous (fa) rows."""
        self._add("loss_d", loss_d)
        self._add("d_real", real_logits.mean())
        if len(fn):
            self._add("d_fake_normal", fn.mean())
            self._add("sat_fake_normal", (fn < SATURATED_LOGIT).double().mean())
            self._add("n_steps_normal", 1.0)
        if len(fa):
            self._add("d_fake_anomalous", fa.mean())
            self._add("sat_fake_anomalous", (fa < SATURATED_LOGIT).double().mean())
            self._add("n_steps_anomalous", 1.0)

    def add_buffer(self, buf_n, buf_a, ages) -> None:
        """D's logits on the buffered normal and anomalous rows of one draw, and the draw's ages (CPU)."""
        self._add("d_buf_sum_normal", buf_n.double().sum())
        self._add("d_buf_sum_anomalous", buf_a.double().sum())
        self._add("n_buf_normal", float(len(buf_n)))
        self._add("n_buf_anomalous", float(len(buf_a)))
        self.add_ages(ages)

    def add_ages(self, ages) -> None:
        self.ages.append(ages)

    def add_g(self, loss_g) -> None:
        self._add("loss_g", loss_g)

    def add_d_rows(self, loss_d, logits, counts: tuple[int, ...]) -> None:
        """One D step as `add_d` and `add_buffer` take it, with D's logits (R,) on rows grouped as [real, fake
        normal, fake anomalous[, buffered normal, buffered anomalous]] with these counts; the draw's ages go to
        `add_ages`. Nothing is computed until the epoch ends."""
        self._add("loss_d", loss_d)
        self.rows.setdefault(counts, []).append(logits.detach())

    def _grouped(self) -> dict[str, float]:
        """The sums `add_d` and `add_buffer` would have made for the steps of `add_d_rows`: per group counts, the
        steps' logits as one (steps, R) float64 matrix."""
        names, sums, counts = [], [], {}
        for key, logits in self.rows.items():
            n_steps, (real, fn, fa, *buf) = len(logits), torch.stack(logits).double().split(key, 1)
            parts = [("d_real", real.mean(1))]
            for name, group in (("normal", fn), ("anomalous", fa)):
                if group.shape[1]:
                    parts += [(f"d_fake_{name}", group.mean(1)), (f"sat_fake_{name}", (group < SATURATED_LOGIT).double().mean(1))]
                    counts[f"n_steps_{name}"] = counts.get(f"n_steps_{name}", 0.0) + n_steps
            for name, group in zip(("normal", "anomalous"), buf):
                parts.append((f"d_buf_sum_{name}", group.sum(1)))
                counts[f"n_buf_{name}"] = counts.get(f"n_buf_{name}", 0.0) + n_steps * group.shape[1]
            names += [name for name, _ in parts]
            sums += [values.sum() for _, values in parts]
        totals = dict(counts)
        for name, value in zip(names, torch.stack(sums).tolist() if sums else []):
            totals[name] = totals.get(name, 0.0) + value
        return totals

    def row(self, n_batches: int, n_dis: int) -> dict:
        names = list(self.values)
        flat = torch.cat([torch.stack(self.values[k]).double() for k in names]).tolist() if names else []
        v, at = dict(self.counts), 0   # the epoch's one host sync, above; each sum in step order below
        for k in names:
            total = 0.0
            for x in flat[at:at + len(self.values[k])]:  # not sum(): Python >= 3.12 compensates its rounding
                total += x
            v[k], at = total, at + len(self.values[k])
        for k, total in self._grouped().items():
            v[k] = v.get(k, 0.0) + total
        nan = float("nan")
        per = lambda name, count: v[name] / v[count] if v.get(count) else nan  # noqa: E731
        steps = n_batches * n_dis
        ages = torch.cat(self.ages).double() if self.ages else None
        return {"loss_d": v["loss_d"] / steps, "loss_g": v["loss_g"] / n_batches, "d_real": v["d_real"] / steps,
                "d_fake_normal": per("d_fake_normal", "n_steps_normal"),
                "d_fake_anomalous": per("d_fake_anomalous", "n_steps_anomalous"),
                "d_buf_normal": per("d_buf_sum_normal", "n_buf_normal"),
                "d_buf_anomalous": per("d_buf_sum_anomalous", "n_buf_anomalous"),
                "sat_fake_normal": per("sat_fake_normal", "n_steps_normal"),
                "sat_fake_anomalous": per("sat_fake_anomalous", "n_steps_anomalous"),
                "buffer_age_mean": float(ages.mean()) if ages is not None else nan,
                "buffer_age_median": float(ages.median()) if ages is not None else nan}


def _state(net: nn.Module) -> dict:
    return copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})


def _snapshot(G: nn.Module, D: nn.Module) -> dict:
    return {"generator": _state(G), "discriminator": _state(D)}
