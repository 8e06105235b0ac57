"""What GANomaly, Skip-GANomaly and ALOCC share: the DCGAN-like encoder and discriminator, the BCE
discriminator loss, the estimator, and the training loop of ALGAN's protocol (Sec. IV-C).

The ALGAN paper implemented the three "using a DCGAN-like architecture similar to ALGAN-image"
(Sec. IV-A-1), so their networks follow the resolution like ALGAN's: log2(size) - 1 conv layers
per encoder / decoder / discriminator, widths from `model.g_width` / `model.d_width`. Encoders and
decoders use batch norm, as the published ones do. The discriminator is ALGAN-image's (spectral
norm, no batch norm) rather than the published batch-norm one: a batch-norm discriminator is
trained on all-real and all-fake batches, so in eval mode (running statistics of both) it is a
function it was never trained as, and ALOCC's score and Skip-GANomaly's latent score are read
from it in eval mode.

The protocol is ALGAN's: the same inputs (plain images in [-1, 1]; the max / mean channels are
appended here when `model.extra_channels` is set), the same augmentation, epochs, batch size and
validation every `train.eval_every` epochs, with the checkpoint of best validation AUROC kept. The
test split is never seen here, and scores are never normalised over a test set.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .. import resume, results
from ..config import ALGANConfig, TrainConfig, profile as make_profile
from ..detector import BaseDetector, as_tensor, check_image_input, image_config_for, prepare_image
from ..device import to_device
from ..score import auroc
from ..train import Augment, TrainResult, check_batches, progress_bar
from .algan_nets import ImageDiscriminator, _dcgan_init, _widths, n_conv_layers

Step = Callable[[torch.Tensor, torch.Generator], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class BaselineHParams:
    """Optimiser shared by the baselines. The ALGAN paper does not print the baselines' optimiser
    settings, so all three use GANomaly's published ones (Akcay et al., ACCV 2018: Adam,
    lr 2e-4, beta1 0.5, beta2 0.999), not ALGAN's (beta1 0, beta2 0.9)."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            least = 1 if isinstance(value, int) else 0  # integer fields are sizes or counts
            if not value >= least:
                raise ValueError(f"{type(self).__name__}.{f.name}={value}: expected a number >= {least}")
        if not (self.beta1 < 1 and self.beta2 < 1):
            raise ValueError(f"{type(self).__name__}: beta1={self.beta1}, beta2={self.beta2}: "
                             "expected values in [0, 1)")

    def adam(self, params) -> torch.optim.Adam:
        return torch.optim.Adam(params, lr=self.lr, betas=(self.beta1, self.beta2))


# --------------------------------------------------------------------------------------------
# Networks and the loss they share
# --------------------------------------------------------------------------------------------
class ImageEncoder(nn.Module):
    """DCGAN encoder: image (B, C, S, S) -> code (B, out_dim).

    Conv 4-2-1 + LeakyReLU, then conv + batch norm + LeakyReLU per halving down to 4x4, then a
    4x4 conv to 1x1: log2(S) - 1 layers, the mirror image of ALGAN's generator.
    """

    def __init__(self, channels: int, image_size: int, width: int, out_dim: int, max_mult: int, slope: float):
        super().__init__()
        widths = _widths(width, n_conv_layers(image_size), max_mult)  # high-resolution end first
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(slope, True)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.LeakyReLU(slope, True)]
        layers.append(nn.Conv2d(widths[-1], out_dim, 4, 1, 0, bias=False))  # 4x4 -> 1x1
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)                                       # (B, out_dim)


class Discriminator(ImageDiscriminator):
    """ALGAN-image's discriminator, image -> logit (B,), with access to its last 4x4 feature map f(x)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[:-1](x)                                             # (B, W, 4, 4)

    def logit_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.features(x)
        return self.net[-1](feat).flatten(), feat


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """BCE of real -> 1 and reconstructed -> 0, averaged over the two halves (GANomaly's err_d)."""
    return 0.5 * (F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean())


def reinit_below(D: nn.Module, loss_d: torch.Tensor, threshold: float) -> None:
    """GANomaly's rule (its authors' code): D is re-initialised (DCGAN init) when its loss falls below
    `threshold`. On the CPU the host reads the loss, as their code does; on an accelerator fresh weights
    are drawn every step and taken only when the loss is below, so the host never waits for the step
    (the fresh weights come from the device's generator there)."""
    if loss_d.device.type == "cpu":
        if loss_d.item() < threshold:
            D.apply(_dcgan_init)
        return
    reinit_where(D, loss_d.detach() < threshold)


@torch.no_grad()
def reinit_where(D: nn.Module, condition: torch.Tensor) -> None:
    """D's state becomes a fresh DCGAN initialisation where the 0-d bool tensor `condition` holds (no host sync)."""
    fresh = copy.deepcopy(D).apply(_dcgan_init)
    for now, new in zip(D.state_dict().values(), fresh.state_dict().values(), strict=True):
        now.copy_(torch.where(condition, new, now))


# --------------------------------------------------------------------------------------------
# The training loop: any per-batch step, validation AUROC, best checkpoint
# --------------------------------------------------------------------------------------------
def fit_adversarial(
    nets: nn.Module,
    step: Step,
    score: Callable[[torch.Tensor], np.ndarray],
    x_train: torch.Tensor,
    cfg: TrainConfig,
    *,
    seed: int = 0,
    augment: Optional[Augment] = None,
    prepare: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    x_val: Optional[torch.Tensor] = None,
    y_val: Optional[np.ndarray] = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    desc: str = "baseline",
) -> TrainResult:
    """Run `step(batch, gen) -> {loss: value}` over shuffled batches of normal data for `cfg.epochs`;
    `step.optimizers` names its optimisers, so that a checkpoint (`algan.resume`) holds their state.
    The values (0-d tensors) are summed on the device in float64 and read once per epoch: the host does
    not wait for a step.

    As `train_algan`: `augment(x, gen)` randomises a batch, `prepare(x)` makes the model input;
    `score(x_val)` (eval mode, no gradients) gives the validation AUROC every `cfg.eval_every`
    epochs and on the last one, and `nets` ends at the best of those checkpoints (the last epoch
    without validation data).
    """
    if cfg.select != "val_labels":
        raise ValueError(f"train.select={cfg.select!r}: the GAN baselines keep the best validation AUROC only "
                         "(train.select='val_labels'); 'last', 'ema' and 'proxy' are ALGAN's")
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    prepare = prepare or (lambda x: x)
    x_train = x_train.to(device)
    n_batches = check_batches(len(x_train), cfg)
    validate = x_val is not None and y_val is not None and len(np.unique(y_val)) == 2

    rows, best_auc, best_epoch, best_state, last_auc = [], -np.inf, 0, None, math.nan
    loop = {"loop": desc, "train": dataclasses.asdict(cfg), "seed": seed, "train_shape": tuple(x_train.shape),
            "val_shape": None if x_val is None else tuple(x_val.shape)}
    with resume.session(loop) as ckpt:
        if (state := ckpt and ckpt.restore()) is not None:
            nets.load_state_dict(state["networks"])
            for opt, saved in zip(step.optimizers, state["optimizers"], strict=True):
                opt.load_state_dict(saved)
            rows, last_auc, (best_auc, best_epoch, best_state) = state["rows"], state["last_auc"], state["best"]
            resume.set_rng_state(state["rng"], gen)
        first = 1 if state is None else state["epoch"] + 1
        bar = progress_bar(range(first, cfg.epochs + 1), desc, progress)
        for epoch in bar:
            start = time.perf_counter()
            nets.train()
            sums: dict[str, torch.Tensor] = {}
            order = to_device(torch.randperm(len(x_train), generator=gen), device)
            for j in range(n_batches):
                x = x_train[order[j * cfg.batch_size:(j + 1) * cfg.batch_size]]   # (B, C, H, W)
                if augment is not None:
                    x = augment(x, gen) if cfg.rotate_fill == "black" else augment(x, gen, fill=cfg.rotate_fill)
                for name, value in step(prepare(x), gen).items():
                    sums[name] = sums.get(name, 0.0) + torch.as_tensor(value, dtype=torch.float64).detach()
            row = {"epoch": epoch, **{k: float(v) / n_batches for k, v in sums.items()}, "val_auroc": math.nan}
            if validate and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                row["val_auroc"] = last_auc = auroc(y_val, score(x_val))
                if row["val_auroc"] > best_auc:  # strict: the earliest of equal checkpoints is kept
                    best_auc, best_epoch, best_state = row["val_auroc"], epoch, _snapshot(nets)
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            bar.set_postfix(val_auroc=f"{last_auc:.3f}" if validate else "-")
            if ckpt:
                ckpt.end_epoch(epoch, lambda: {
                    "networks": nets.state_dict(), "optimizers": [opt.state_dict() for opt in step.optimizers],
                    "rows": rows, "last_auc": last_auc, "best": (best_auc, best_epoch, best_state),
                    "rng": resume.rng_state(gen)})
    if best_state is None:
        best_epoch, best_auc, best_state = cfg.epochs, math.nan, _snapshot(nets)
    nets.load_state_dict(best_state)
    return TrainResult(pd.DataFrame(rows), best_epoch, float(best_auc), {"networks": best_state})


def _snapshot(nets: nn.Module) -> dict:
    return copy.deepcopy({k: v.detach().cpu() for k, v in nets.state_dict().items()})


# --------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------
class AdversarialBaseline(BaseDetector):
    """Estimator shell of the baselines: fit / decision_function / predict / save / load.

    A subclass names its checkpoint format (`name`), its hyperparameters (`HParams`), and
    implements `build_networks`, `make_step` (one training step on a batch) and `score_batch`
    (anomaly scores of a prepared batch, higher = more anomalous).
    """

    name: ClassVar[str] = "baseline"
    HParams: ClassVar[type] = BaselineHParams

    def __init__(self, config: ALGANConfig | str = "paper", *, hparams: Any = None, seed: int = 0,
                 device: str | None = None, progress: bool = True):
        self.config = make_profile(config) if isinstance(config, str) else config
        self.hparams = self.HParams() if hparams is None else hparams
        if not isinstance(self.hparams, self.HParams):
            raise ValueError(f"hparams is a {type(self.hparams).__name__}: expected {self.HParams.__name__}")
        self.seed = seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress = progress
        self.nets: Optional[nn.ModuleDict] = None
        self.history_: Optional[pd.DataFrame] = None
        self.best_epoch_ = 0
        self.best_val_auroc_ = math.nan

    # ---- what a subclass provides -------------------------------------------------------------
    def build_networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def make_step(self) -> Step:
        raise NotImplementedError

    def score_batch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ---- fitting ------------------------------------------------------------------------------
    def fit(self, X, *, X_val=None, y_val=None, augment: Optional[Augment] = None) -> "AdversarialBaseline":
        """Train on normal images X; select the checkpoint on (X_val, y_val) if given; set the threshold."""
        x = as_tensor(X, "X")
        self.config = self._config_for(x)
        x_val = None if X_val is None else as_tensor(X_val, "X_val")
        if x_val is not None:
            self._check_input(x_val, "X_val")
        y = None if y_val is None else np.asarray(y_val)
        if y is not None and (x_val is None or len(y) != len(x_val)):
            raise ValueError(f"y_val has {len(y)} labels for {0 if x_val is None else len(x_val)} validation "
                             "images: expected one label (0 normal, 1 anomalous) per image of X_val")
        self._init_networks()
        result = fit_adversarial(
            self.nets, self.make_step(), self._scores, x, self.config.train, seed=self.seed, augment=augment,
            prepare=self._prepare, x_val=x_val, y_val=y, device=self.device, progress=self.progress, desc=self.name)
        self.history_, self.best_epoch_, self.best_val_auroc_ = result.history, result.best_epoch, result.best_val_auroc
        normal = x if y is None or not (y == 0).any() else x_val[torch.as_tensor(y == 0)]
        self.set_threshold(self._scores(normal), self.config.train.threshold_fpr)
        return self

    def _init_networks(self) -> None:
        torch.manual_seed(self.seed)  # network initialisation
        self.nets = nn.ModuleDict(self.build_networks())
        self.nets.apply(_dcgan_init)
        self.nets.to(self.device)

    @classmethod
    def initialised(cls, config: ALGANConfig | str = "paper", *, image_channels: int = 3, hparams: Any = None,
                    seed: int = 0, device: str | None = None) -> "AdversarialBaseline":
        """A detector with freshly initialised networks (no training, no threshold): for shape checks
        and speed benchmarks of `decision_function`."""
        det = cls(config, hparams=hparams, seed=seed, device=device, progress=False)
        size = det.config.model.image_size
        det.config = det._config_for(torch.zeros(1, image_channels, size, size))
        det._init_networks()
        det.nets.eval()
        return det

    def _config_for(self, x: torch.Tensor) -> ALGANConfig:
        if x.dim() != 4:
            raise ValueError(f"X has shape {tuple(x.shape)}: expected images (N, C, H, W) "
                             f"({type(self).__name__} is image-only)")
        return image_config_for(self.config, x)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return prepare_image(self.config, x)

    def _check_input(self, x: torch.Tensor, name: str) -> None:
        check_image_input(self.config, x, name)

    # ---- scoring ------------------------------------------------------------------------------
    def decision_function(self, X, batch_size: int = 256) -> np.ndarray:
        """Anomaly score per image, higher = more anomalous (eval mode, no gradients, batched)."""
        if self.nets is None:
            raise ValueError(f"the detector is not fitted: call fit() or {type(self).__name__}.load() first")
        x = as_tensor(X, "X")
        self._check_input(x, "X")
        return self._scores(x, batch_size)

    @torch.inference_mode()
    def _scores(self, x: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        """Batch norm uses running statistics, so a score does not depend on the other images of its batch."""
        was_training = self.nets.training
        self.nets.eval()
        out = [self.score_batch(self._prepare(x[i:i + batch_size].to(self.device, non_blocking=True))).float().cpu()
               for i in range(0, len(x), batch_size)]
        self.nets.train(was_training)
        return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)

    # ---- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """State dicts + config + hyperparameters + threshold in one file, written atomically."""
        if self.nets is None:
            raise ValueError(f"the detector is not fitted: nothing to save to {path}")
        results.torch_save({
            "format": f"{self.name}-1",
            "config": self.config.to_dict(),
            "hparams": dataclasses.asdict(self.hparams),
            "seed": self.seed,
            "networks": self.nets.state_dict(),
            "threshold": self.threshold_,
            "best_epoch": self.best_epoch_,
            "best_val_auroc": self.best_val_auroc_,
        }, path)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "AdversarialBaseline":
        path = Path(path)
        fmt = f"{cls.name}-1"
        if not path.is_file():
            raise ValueError(f"checkpoint {path} does not exist: expected a file written by {cls.__name__}.save")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != fmt:
            raise ValueError(f"checkpoint {path}: expected a {cls.__name__} checkpoint (format {fmt!r})")
        det = cls(ALGANConfig.from_dict(state["config"]), hparams=cls.HParams(**state["hparams"]),
                  seed=state["seed"], device=device, progress=False)
        det.nets = nn.ModuleDict(det.build_networks())
        try:
            det.nets.load_state_dict(state["networks"])
        except RuntimeError as err:
            first = str(err).strip().splitlines()[1:2] or [str(err)]
            raise ValueError(f"checkpoint {path}: weights do not match its config ({first[0].strip()})") from None
        det.nets.to(det.device).eval()
        det.threshold_ = state["threshold"]
        det.best_epoch_, det.best_val_auroc_ = state["best_epoch"], state["best_val_auroc"]
        return det
