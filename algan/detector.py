"""Estimators with PyOD's conventions: fit, decision_function (higher = more anomalous), predict.

`ALGAN` takes image tensors (N, C, H, W) in [-1, 1], feature arrays (N, D), or feature arrays of
rotated views (N, R, D) (DifferNet's protocol, Sec. IV-B-5: every view is a training sample, and a
sample's score is the mean over its views). Image inputs
are the plain images: when `model.extra_channels` is set the estimator appends the channel-axis
max and mean itself (Sec. IV-B-5), so the same call works at fit and at scoring time.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch

from . import results
from .data.transforms import add_extra_channels
from .config import ALGANConfig, profile as make_profile
from .models.algan_nets import build_networks
from .score import auroc, discriminator_scores, threshold_at_fpr
from .train import check_select, train_algan


IMAGE_RANGE_TOL = 1e-3  # images may stray this far outside [-1, 1] (float error of a user's conversion)


def as_tensor(X: Any, name: str = "X", images: bool = False) -> torch.Tensor:
    """Float tensor from an array/tensor, rejecting with one clear line: empty input, NaN/inf, and values
    that are not real numbers (complex, strings, objects). With `images`, the input must be float images
    in [-1, 1] (the generator's tanh range, as `load_dataset` / `load_images` make them): integer images
    such as uint8 0..255 and values outside [-1, 1] are refused, never rescaled, since a wrong scale
    scores every image, defects included, as normal."""
    if isinstance(X, torch.Tensor):
        x = X
    else:
        a = np.asarray(X)
        if a.dtype.kind not in "biufc":
            raise ValueError(f"{name} has dtype {a.dtype}: expected an array of real numbers")
        x = torch.as_tensor(a)
    if x.is_complex():
        raise ValueError(f"{name} is complex ({x.dtype}): expected real values")
    if x.numel() == 0 or len(x) == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): expected at least one sample")
    if images and not x.is_floating_point():
        raise ValueError(f"{name} is {x.dtype}: expected float images in [-1, 1]; convert 0..255 images "
                         "with x / 127.5 - 1")
    x = x.float()
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).reshape(len(x), -1).any(1).sum())
        raise ValueError(f"{name} contains NaN or inf in {bad} sample(s): expected finite values")
    if images and (x.min() < -1 - IMAGE_RANGE_TOL or x.max() > 1 + IMAGE_RANGE_TOL):
        raise ValueError(f"{name} has values in [{x.min():.4g}, {x.max():.4g}]: expected images in [-1, 1] "
                         "(convert 0..255 images with x / 127.5 - 1, 0..1 images with 2 * x - 1)")
    return x


def image_config_for(config: ALGANConfig, x: torch.Tensor) -> ALGANConfig:
    """The config for training images x (N, C, H, W): the data decides the channels (+2 for the
    max/mean channels); the resolution must match the configured one."""
    m = config.model
    if x.shape[-2:] != (m.image_size, m.image_size):
        raise ValueError(f"X has images of {x.shape[-2]}x{x.shape[-1]}: expected model.image_size="
                         f"{m.image_size} (resize the images or set model.image_size)")
    return config.override(**{"model.kind": "image", "model.channels": x.shape[1] + 2 * m.extra_channels})


def check_image_input(config: ALGANConfig, x: torch.Tensor, name: str) -> None:
    """Images to score must have the plain-image shape the model was trained on."""
    m = config.model
    channels = m.channels - 2 * m.extra_channels
    if x.dim() != 4 or x.shape[1:] != (channels, m.image_size, m.image_size):
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected (N, {channels}, {m.image_size}, "
                         f"{m.image_size}) as in training (model.channels / model.image_size)")


def prepare_image(config: ALGANConfig, x: torch.Tensor) -> torch.Tensor:
    """Model input: the image plus its channel-axis max and mean when model.extra_channels is set."""
    return add_extra_channels(x) if config.model.extra_channels else x


def checkpoint_bytes(config: ALGANConfig) -> int:
    """About the size of a checkpoint of this config's networks: 4 bytes a parameter and buffer (built on
    torch's meta device, so no memory is taken and no random number drawn)."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate config's warnings come when it trains, not here
        nets = build_networks(config.model)
    return 4 * sum(t.numel() for net in nets for t in (*net.parameters(), *net.buffers()))


def run_disk_bytes(config: ALGANConfig) -> int:
    """Free disk a run of this config needs, generously: model.pt, a training state (the networks, their Adam
    moments, the best checkpoint) and its atomic copy, images and CSVs: 12 checkpoints and 64 MiB."""
    return 12 * checkpoint_bytes(config) + 64 * 2**20


FEATURE_STD_FLOOR = 1e-6  # below it a training dimension counts as constant
# What ALGAN.save writes (besides "format"); ALGAN.load refuses a checkpoint that lacks any of them.
CHECKPOINT_KEYS = frozenset({"config", "seed", "generator", "discriminator", "threshold", "best_epoch",
                             "best_val_auroc", "feature_mean", "feature_std"})


def feature_statistics(flat: torch.Tensor, scaling: str = "standardise") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension (mean, std) of training features (N, D) for standardisation. The std is floored
    at FEATURE_STD_FLOOR; with `scaling="drop_constant"` a dimension below the floor gets std = inf
    instead, so it is 0 after scaling whatever its value (ADBench's ResNet-18 features have 172-402 of 512
    dimensions constant over a category's training rows: see the book's deviations page)."""
    mean, std = flat.mean(0), flat.std(0)
    if scaling == "drop_constant":
        return mean, torch.where(std < FEATURE_STD_FLOOR, torch.full_like(std, math.inf), std)
    return mean, std.clamp_min(FEATURE_STD_FLOOR)


class BaseDetector:
    """Shared thresholding and prediction. Subclasses implement fit/decision_function/_state."""

    threshold_: float = math.nan

    def set_threshold(self, normal_scores, fpr: float) -> float:
        """Eq. (8): threshold from normal scores only, at the target false-positive rate."""
        self.threshold_ = threshold_at_fpr(normal_scores, fpr)
        return self.threshold_

    def predict(self, X) -> np.ndarray:
        """0 = normal, 1 = anomalous (score above `threshold_`); X as for `decision_function`."""
        if not math.isfinite(self.threshold_):
            raise ValueError(f"threshold_ is {self.threshold_}: expected a finite threshold; fit the detector "
                             "(or call set_threshold) first")
        return (self.decision_function(X) > self.threshold_).astype(np.int64)


class ALGAN(BaseDetector):
    """ALGAN: the discriminator, trained with fake-normal, fake-anomalous and buffered data, is the detector."""

    def __init__(self, config: ALGANConfig | str = "paper", *, seed: int = 0, device: str | None = None,
                 progress: bool = True):
        self.config = make_profile(config) if isinstance(config, str) else config
        self.seed = seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.progress = progress
        self.generator = self.discriminator = None
        self.feature_mean = self.feature_std = None
        self.history_: Optional[pd.DataFrame] = None
        self.best_epoch_ = 0
        self.best_val_auroc_ = math.nan
        self.last_discriminator = None  # D after the last epoch (decision_function(checkpoint="last"))
        self.rule_discriminators: dict = {}  # train.record_selects: rule -> D it chose (not saved by save())
        self.rule_epochs_: dict = {}         # ... and the epoch it chose
        # Scoring fast paths, kept where benchmarks/bench_timing.py measured a gain at equal scores:
        # NHWC batches on CPU (1.2x at 64 px, 1.4x at 256 px, batch 64; not at batch 1, where it loses).
        # bf16 autocast and torch.compile are opt-in (benchmarks/bench_timing.py).
        self.scoring = {"channels_last": self.device.type == "cpu", "amp_dtype": None}

    # ---- fitting -----------------------------------------------------------------------------
    def fit(self, X, *, X_val=None, y_val=None,
            augment: Optional[Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = None) -> "ALGAN":
        """Train on normal samples X; choose the checkpoint by `train.select`; set the threshold.

        `train.select="val_labels"` (the default, the paper's) needs y_val with normal and anomalous samples, or
        no validation data at all (`fit(X)` then keeps the checkpoint of config.LABEL_FREE_DEFAULT, "ema", the
        label-free rule measured best on the book's selection page); X_val without anomalies is an error naming
        the label-free rules "last", "ema" and "proxy" ("proxy" uses X_val's normal rows: y_val == 0, or every
        row when y_val is None). The threshold comes from the normal validation samples (the training samples
        without X_val) scored by the chosen checkpoint.

        On a CPU the result depends on torch's thread count, which is the caller's here (not pinned as in
        the run cache, `results.run_threads`): call `torch.set_num_threads(n)` first to repeat a run exactly."""
        x = as_tensor(X, "X", images=np.ndim(X) == 4)
        self.config = self._config_for(x)
        if self.config.model.kind == "feature":
            flat = x.reshape(-1, x.shape[-1])  # rotated views (N, R, D) are R training samples each
            self.feature_mean, self.feature_std = feature_statistics(flat, self.config.model.feature_scaling)
        x_val = None if X_val is None else as_tensor(X_val, "X_val", images=self.config.model.kind == "image")
        if x_val is not None:
            self._check_input(x_val, "X_val")
        views = x_val.shape[1] if x_val is not None and x_val.dim() == 3 else 1
        check_select(self.config.train, x_val, y_val)  # before the networks are built: one line, no training
        torch.manual_seed(self.seed)  # network initialisation
        self.generator, self.discriminator = build_networks(self.config.model)
        image = self.config.model.kind == "image"  # a feature G's output is D's input as it is
        result = train_algan(
            self.generator, self.discriminator, self._stored(x), self.config.train,
            latent_dim=self.config.model.latent_dim, seed=self.seed, augment=augment,
            prepare=self._prepare, prepare_fake=self._prepare_fake if image else None,
            x_val=None if x_val is None else self._stored(x_val),
            y_val=None if y_val is None else np.asarray(y_val), val_views=views, device=self.device,
            progress=self.progress)
        self.history_, self.best_epoch_, self.best_val_auroc_ = result.history, result.best_epoch, result.best_val_auroc
        self.last_discriminator = self._built(result.last_state["discriminator"])
        self.rule_discriminators = {rule: self._built(state) for rule, (_, state) in result.rule_states.items()}
        self.rule_epochs_ = {rule: epoch for rule, (epoch, _) in result.rule_states.items()}
        normal = x if x_val is None else x_val if y_val is None else x_val[torch.as_tensor(np.asarray(y_val) == 0)]
        self.set_threshold(self.decision_function(normal), self.config.train.threshold_fpr)
        return self

    @classmethod
    def initialised(cls, config: ALGANConfig | str = "paper", *, image_channels: int = 3, seed: int = 0,
                    device: str | None = None) -> "ALGAN":
        """An image detector with freshly initialised networks (no training, no threshold): for shape
        checks and speed benchmarks of `decision_function`, like the baselines' `initialised`."""
        det = cls(config, seed=seed, device=device, progress=False)
        size = det.config.model.image_size
        det.config = image_config_for(det.config, torch.zeros(1, image_channels, size, size))
        torch.manual_seed(seed)
        det.generator, det.discriminator = build_networks(det.config.model)
        det.generator.to(det.device).eval()
        det.discriminator.to(det.device).eval()
        return det

    def _config_for(self, x: torch.Tensor) -> ALGANConfig:
        if x.dim() in (2, 3):
            return self.config.override(**{"model.kind": "feature", "model.feature_dim": x.shape[-1]})
        if x.dim() != 4:
            raise ValueError(f"X has shape {tuple(x.shape)}: expected images (N, C, H, W), features (N, D) "
                             "or rotated feature views (N, R, D)")
        return image_config_for(self.config, x)

    # ---- scoring -----------------------------------------------------------------------------
    def _stored(self, x: torch.Tensor) -> torch.Tensor:
        """Feature vectors are standardised with the training statistics (views flattened in sample
        order, (N, R, D) -> (N * R, D)); images are kept as given."""
        if self.config.model.kind == "feature":
            return (x.reshape(-1, x.shape[-1]) - self.feature_mean) / self.feature_std
        return x

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        return prepare_image(self.config, x) if self.config.model.kind == "image" else x

    def _prepare_fake(self, x: torch.Tensor) -> torch.Tensor:
        """G's output as D's input: with model.fake_channels="derived" G emits the image channels only
        and the max/mean channels are computed from them, as for real images."""
        m = self.config.model
        return prepare_image(self.config, x) if m.kind == "image" and m.fake_channels == "derived" else x

    def _check_input(self, x: torch.Tensor, name: str) -> None:
        m = self.config.model
        if m.kind == "image":
            return check_image_input(self.config, x, name)
        if x.dim() not in (2, 3) or x.shape[-1] != m.feature_dim:
            raise ValueError(f"{name} has shape {tuple(x.shape)}: expected (N, {m.feature_dim}) features "
                             f"or (N, R, {m.feature_dim}) rotated views")

    def _built(self, state: dict) -> torch.nn.Module:
        """A discriminator of this config holding `state`, in eval mode on the detector's device."""
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: leave the caller's RNG alone
            _, D = build_networks(self.config.model)
        D.load_state_dict(state)
        return D.to(self.device).eval()

    def decision_function(self, X, batch_size: int = 256, checkpoint: str = "chosen") -> np.ndarray:
        """Anomaly score -D(x) per sample (eval mode, no gradients, batched); the mean over views
        for rotated feature views (N, R, D). `checkpoint`: "chosen" (by `train.select`, the default) or
        "last" (D after the last epoch, kept by every fit: the cost of a rule is the difference), or with
        `train.record_selects` the name of any rule in `rule_discriminators` (the D that rule chose).

        X: float images (N, C, H, W) in [-1, 1], as `load_dataset` and `algan.data.load_images` make them
        (uint8 or 0..255 images are refused, not rescaled: convert with x / 127.5 - 1), or real feature
        vectors (N, D) / (N, R, D); NaN, inf and complex values are refused."""
        if self.discriminator is None:
            raise ValueError("the detector is not fitted: call fit() or ALGAN.load() first")
        if checkpoint not in ("chosen", "last", *self.rule_discriminators):
            raise ValueError(f"checkpoint={checkpoint!r}: expected one of "
                             f"{sorted({'chosen', 'last', *self.rule_discriminators})} (other rules' checkpoints "
                             "are kept with train.record_selects)")
        if checkpoint == "last" and self.last_discriminator is None:
            raise ValueError("checkpoint='last': this detector has no last-epoch weights (a checkpoint saved "
                             "before they were kept); use checkpoint='chosen'")
        x = as_tensor(X, "X", images=self.config.model.kind == "image")
        self._check_input(x, "X")
        D = (self.discriminator if checkpoint == "chosen" else self.last_discriminator if checkpoint == "last"
             else self.rule_discriminators[checkpoint])
        scores = discriminator_scores(D, self._stored(x), prepare=self._prepare,
                                      batch_size=batch_size, device=self.device, **self.scoring)
        return scores.reshape(len(x), -1).mean(1) if x.dim() == 3 else scores

    def rule_metrics(self, X, y, split: str = "test") -> dict[str, float]:
        """With `train.record_selects`: `<split>_auroc_<rule>` of each rule's checkpoint on (X, y) and the epoch
        it chose (`epoch_<rule>`), so that one run measures every selection rule; {} without it."""
        out = {}
        for rule in sorted(self.rule_discriminators):
            out[f"{split}_auroc_{rule}"] = auroc(np.asarray(y), self.decision_function(X, checkpoint=rule))
            out[f"epoch_{rule}"] = int(self.rule_epochs_[rule])
        return out

    @torch.inference_mode()
    def generate(self, n: int, *, anomalous: bool = False, seed: int = 0) -> torch.Tensor:
        """Fake-normal (z ~ N(0, I)) or fake-anomalous (z ~ N(0, sigma^2 I)) samples from G, eval mode, as D
        sees them (images with their max/mean channels when the model has them)."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.model.latent_dim, generator=gen)
        if anomalous:
            z = z * self.config.train.sigma
        self.generator.eval()
        out = self._prepare_fake(self.generator(z.to(self.device))).cpu()
        if self.config.model.kind == "feature":  # dropped (constant) dimensions get their training value
            out = torch.where(self.feature_std.isinf(), self.feature_mean, out * self.feature_std + self.feature_mean)
        return out

    @torch.inference_mode()
    def training_fakes(self, n: int, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(x'_n, x'_a), n of each, made as D saw them in training (Alg. 1 line 9 under
        `train.fake_bn_stats`): a latent batch mixed at alpha, through a copy of G (its running statistics
        stay as they are). With "running" statistics this is `generate` for both kinds."""
        import copy

        from .train import make_fakes, sample_latents

        t = self.config.train
        if self.config.model.kind == "feature":
            raise ValueError("training_fakes is for image models; use generate() for feature models")
        total = max(t.batch_size, math.ceil(n / (1 - t.alpha)), math.ceil(n / t.alpha))
        z, is_anom = sample_latents(total, self.config.model.latent_dim, t.alpha, t.sigma,
                                    torch.Generator().manual_seed(seed))
        G = copy.deepcopy(self.generator)
        out = self._prepare_fake(make_fakes(G, z.to(self.device), is_anom.to(self.device), int(is_anom.sum()),
                                            t.fake_bn_stats)).cpu()
        return out[~is_anom][:n], out[is_anom][:n]

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """State dicts + config (+ threshold, feature statistics) in one file, written atomically."""
        results.torch_save({
            "format": "algan-1",
            "config": self.config.to_dict(),
            "seed": self.seed,
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "threshold": self.threshold_,
            "best_epoch": self.best_epoch_,
            "best_val_auroc": self.best_val_auroc_,
            "last_discriminator": None if self.last_discriminator is None else self.last_discriminator.state_dict(),
            "feature_mean": self.feature_mean,
            "feature_std": self.feature_std,
        }, path)

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> "ALGAN":
        """The detector saved at `path` by `save`; anything else (a missing, truncated or foreign file, a
        checkpoint without its keys, an infinite threshold) is a ValueError of one line naming the file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"checkpoint {path} does not exist: expected a file written by ALGAN.save")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated, empty, random or pickled-object files; torch's text is not shown
            raise ValueError(f"checkpoint {path} cannot be read as an ALGAN checkpoint ({type(err).__name__}): "
                             "expected a file written by ALGAN.save / `algan train`") from None
        if not isinstance(state, dict) or state.get("format") != "algan-1":
            raise ValueError(f"checkpoint {path}: expected an ALGAN checkpoint (format 'algan-1')")
        missing = sorted(CHECKPOINT_KEYS - set(state))
        if missing:
            raise ValueError(f"checkpoint {path}: key(s) {missing} missing: expected a file written by ALGAN.save")
        try:
            config = ALGANConfig.from_dict(state["config"])
            threshold = float(state["threshold"])
        except (TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"checkpoint {path}: {err}") from None
        if math.isinf(threshold):
            raise ValueError(f"checkpoint {path}: threshold {threshold} is not finite: expected a fitted detector's")
        det = cls(config, seed=state["seed"], device=device, progress=False)
        det.generator, det.discriminator = build_networks(det.config.model)
        for name in ("generator", "discriminator"):
            try:
                getattr(det, name).load_state_dict(state[name])
            except (RuntimeError, TypeError, AttributeError) as err:
                first = str(err).strip().splitlines()[1:2] or [str(err)]
                raise ValueError(f"checkpoint {path}: {name} weights do not match its config "
                                 f"({first[0].strip()})") from None
        det.generator.to(det.device).eval()
        det.discriminator.to(det.device).eval()
        if state.get("last_discriminator") is not None:  # older checkpoints hold the chosen weights only
            try:
                det.last_discriminator = det._built(state["last_discriminator"])
            except (RuntimeError, TypeError, AttributeError):
                raise ValueError(f"checkpoint {path}: last_discriminator weights do not match its config") from None
        det.threshold_ = threshold
        det.best_epoch_, det.best_val_auroc_ = state["best_epoch"], state["best_val_auroc"]
        det.feature_mean, det.feature_std = state["feature_mean"], state["feature_std"]
        return det
