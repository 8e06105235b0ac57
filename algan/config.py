"""Every hyperparameter of the paper, once, with its default and where it comes from.

Section and equation numbers refer to Murase & Fukumizu, "ALGAN", IEEE Access 10 (2022).
Profiles (`smoke`, `cpu`, `paper`) are named overrides of these defaults; `paper` is the
defaults unchanged.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import Any

LATENT_SCHEDULES = ("literal", "per_batch")
AMPS = ("none", "bf16")  # train.amp: the training loop's forward passes in float32, or under bf16 autocast
GENERATOR_LOSSES = ("saturating", "non_saturating")
FAKE_BN_STATS = ("running", "batch", "separate")
FEATURE_SCALINGS = ("standardise", "drop_constant")
FAKE_CHANNELS = ("free", "derived")
BUFFER_SIZES = ("batch", "data")
BUFFER_UPDATES = ("per_batch", "per_epoch")
LAST_BATCHES = ("keep", "drop")
ROTATE_FILLS = ("black", "reflection", "border")
SELECTS = ("val_labels", "last", "ema", "proxy")  # train.select: how the checkpoint that scores is chosen
LABEL_FREE_SELECTS = ("last", "ema", "proxy")
# What `fit(X)` without any validation data keeps under "val_labels": the label-free rule that lost least
# against the labelled choice over images, image features and tables on the book's selection page
# (algan.pages.selection.choose_default, at `cpu`, 3 seeds); "last" before that page.
LABEL_FREE_DEFAULT = "ema"

# Settings added after runs were cached, with the value those runs used: a stored run that lacks
# one of them is still current when the setting is at this value (results.cached_run).
ADDED_SETTINGS: dict[tuple[str, str], Any] = {
    ("model", "feature_scaling"): "standardise", ("model", "fake_channels"): "free",
    ("train", "buffer_size"): "batch", ("train", "buffer_update"): "per_batch",
    ("train", "last_batch"): "keep", ("train", "rotate_fill"): "black", ("train", "select"): "val_labels",
    ("train", "record_selects"): False, ("train", "amp"): "none", ("train", "channels_last"): False,
    ("train", "fast_step"): False,
}


def check_types(section: str, config: Any) -> None:
    """Each field of a config dataclass has a value of its declared type, else a ValueError naming it:
    an int field takes whole numbers only (not 2.5, "2" or True), a float field finite numbers (not NaN
    or inf), a bool field True or False, a str field a string. Values are checked, never converted, so a
    config (and its run hash) is what the caller wrote."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.type == "bool":
            ok, expected = isinstance(value, bool), "true or false"
        elif f.type == "int":
            ok, expected = isinstance(value, numbers.Integral) and not isinstance(value, bool), "a whole number"
        elif f.type == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
            expected = "a finite number"
        else:
            ok, expected = isinstance(value, str), "a string"
        if not ok:
            raise ValueError(f"{section}.{f.name}={value!r}: expected {expected} ({f.type})")


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "image"             # "image" (ALGAN-image, DCGAN-like) or "feature" (ALGAN-feature, MLPs)
    latent_dim: int = 100           # Sec. IV-A-1: "The latent variable z had 100 dimensions"
    image_size: int = 256           # Sec. IV-A-1: 256x256 for all image methods
    channels: int = 5               # input channels of D / output of G, as the model sees them:
                                    # RGB + channel-axis max + mean = 5 on MVTec (Sec. IV-B-5)
    extra_channels: bool = True     # Sec. IV-B-5: append channel-axis max and mean to the image;
                                    # the estimator adds them, so callers pass plain images
    g_width: int = 64               # DCGAN's ngf; the paper does not print widths (deviation page)
    d_width: int = 64               # DCGAN's ndf
    max_width_mult: int = 8         # widths double per layer up to 8x, as in DCGAN
    feature_dim: int = 2048         # Sec. IV-A-1: WideResNet-101 last block, GAP -> 2048-d
    feature_hidden: int = 512       # hidden width of the 3 FC layers (not printed in the paper)
    leaky_slope: float = 0.2        # DCGAN's LeakyReLU slope; the paper says "Leaky-ReLU"
    feature_scaling: str = "standardise"  # the paper is silent. "standardise": training mean / std
                                    # per dimension, std floored at 1e-6; "drop_constant": the same,
                                    # but dimensions constant over the training rows are set to 0
    fake_channels: str = "free"     # the paper is silent. "free": G emits all `channels` (image + max +
                                    # mean) independently; "derived": G emits the image channels only and
                                    # the max/mean channels are computed from its output, as for real images

    def __post_init__(self):
        check_types("model", self)
        if self.kind not in ("image", "feature"):
            raise ValueError(f"model.kind={self.kind!r}: expected 'image' or 'feature'")
        if self.feature_scaling not in FEATURE_SCALINGS:
            raise ValueError(f"model.feature_scaling={self.feature_scaling!r}: expected one of {FEATURE_SCALINGS}")
        if self.fake_channels not in FAKE_CHANNELS:
            raise ValueError(f"model.fake_channels={self.fake_channels!r}: expected one of {FAKE_CHANNELS}")
        if self.kind == "image":
            size = self.image_size
            if size < 16 or size & (size - 1):
                raise ValueError(f"model.image_size={size}: expected a power of two >= 16 (e.g. 64, 128, 256)")
        for name in ("latent_dim", "channels", "g_width", "d_width", "feature_dim", "feature_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name}={getattr(self, name)}: expected a positive integer")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 512               # Sec. IV-C: 512 epochs for ALGAN-image (192 for ALGAN-feature)
    batch_size: int = 16            # Sec. IV-A-1: "All the models were trained using a batch size of 16"
    lr_g: float = 2e-4              # Sec. IV-A-1
    lr_d: float = 1e-4              # Sec. IV-A-1
    beta1: float = 0.0              # Sec. IV-A-1: Adam momentum beta1 = 0
    beta2: float = 0.9              # Sec. IV-A-1: beta2 = 0.9
    sigma: float = 4.0              # Sec. IV-A-1: std of the anomalous latent z_a ~ N(0, sigma^2 I)
    alpha: float = 0.75             # Eq. (6): share of fake-normal vs fake-anomalous data
    xi: float = 0.75                # Eq. (6): share of generated vs buffered data
    n_z: int = 2                    # Alg. 1 line 2: latents re-sampled when epoch mod n_z = 0
    n_dis: int = 2                  # Alg. 1 line 8: discriminator updates per data batch
    buffer_factor: int = 2          # Sec. IV-A-1: "The buffer holds twice the batch size"
    buffer_replace: float = 0.5     # Sec. IV-A-1: "half of which is randomly replaced"
    buffer_size: str = "batch"      # what buffer_factor multiplies. "batch": Sec. IV-A-1, "The buffer holds
                                    # twice the batch size"; "data": Sec. III-A, "The buffer size is twice as
                                    # large as the training data"
    buffer_update: str = "per_batch"  # "per_batch": Alg. 1 line 18, "Buffer <- x'" after every data batch;
                                      # "per_epoch": Sec. III-A, "in each epoch, a portion of the old buffer
                                      # is replaced with newly generated data" (the epoch's x' replace
                                      # buffer_replace of it once, at the end of the epoch)
    eval_every: int = 8             # Sec. IV-C: validated every eight epochs, best AUROC kept
    use_buffer: bool = True         # Table 7 ablation switch: buffered data x^
    use_anomalous_latent: bool = True  # Table 7 ablation switch: fake-anomalous data from z_a
    latent_schedule: str = "literal"   # "literal": one latent batch held for n_z epochs (Alg. 1 as
                                       # printed); "per_batch": one latent batch per data batch index
    generator_loss: str = "saturating"  # Eq. (5) as printed: min log(1 - D(G(z_n)));
                                        # "non_saturating": max log D(G(z_n)) (common practice)
    fake_bn_stats: str = "running"  # batch norm in G when making x' for D (the paper is silent):
                                    # "running" uses the running statistics of the G steps, which see
                                    # normal latents only, so z_a keeps its larger spread; "batch"
                                    # normalises over the mixed z_d batch (one G call in train mode),
                                    # which squeezes x'_n and lets D reject x' by batch statistics alone;
                                    # "separate": one train-mode call for z_n and one for z_a, each
                                    # normalised by its own batch (removes sigma at G's first batch norm)
    last_batch: str = "keep"        # the paper is silent. "keep": the last, smaller batch of an epoch is
                                    # trained on (bottle: 209 = 13 x 16 + 1 gives a 1-image batch);
                                    # "drop": it is left out (a new random order every epoch)
    rotate_fill: str = "black"      # Sec. IV-B-5 names random rotation, not what fills the corners it
                                    # uncovers. "black": -1 (black corners that no test image has);
                                    # "reflection" / "border": mirrored / edge pixels (grid_sample's modes)
    select: str = "val_labels"      # which checkpoint scores (algan.train.train_algan states each rule):
                                    # "val_labels": Sec. IV-C, the best validation AUROC (needs anomalous
                                    # validation samples); label-free: "last" (the final epoch), "ema" (an
                                    # exponential moving average of D's weights), "proxy" (the best AUROC of
                                    # normal validation data against made-up anomalies)
    amp: str = "none"               # beyond the paper, for GPUs: "bf16" runs the training loop's forward
                                    # passes of G and D under bfloat16 autocast (weights, optimiser and
                                    # losses stay float32; spectral norm's power iteration too is autocast)
    channels_last: bool = False     # beyond the paper: image batches and conv weights in NHWC memory order
                                    # during training (the same arithmetic up to the kernels' summation order)
    fast_step: bool = False         # beyond the paper, for speed: D sees the real, fake and buffered rows of a
                                    # D step in one call (the same logits, as D has no batch statistics, but
                                    # each spectral norm's power iteration runs once per D step instead of
                                    # once per call), Adam is torch's fused kernel, and ALGAN-feature's D uses
                                    # fused spectral-norm layers (sigma = ||W^T u||); without amp, ALGAN-feature's
                                    # D and G updates are written out by hand (algan.models.feature_step, no
                                    # autograd): the same algorithm in other floating-point arithmetic
                                    # (benchmarks/bench_feature_step.py)
    record_selects: bool = False    # also keep the D that every other rule of SELECTS would choose (where it
                                    # applies), so that one run measures them all (ALGAN.rule_discriminators);
                                    # the training and the chosen checkpoint are unchanged
    threshold_fpr: float = 0.05     # Eq. (8) leaves the threshold to the user: we pick it at this
                                    # false-positive rate on normal validation scores only

    def __post_init__(self):
        check_types("train", self)
        if self.latent_schedule not in LATENT_SCHEDULES:
            raise ValueError(f"train.latent_schedule={self.latent_schedule!r}: expected one of {LATENT_SCHEDULES}")
        if self.generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"train.generator_loss={self.generator_loss!r}: expected one of {GENERATOR_LOSSES}")
        if self.fake_bn_stats not in FAKE_BN_STATS:
            raise ValueError(f"train.fake_bn_stats={self.fake_bn_stats!r}: expected one of {FAKE_BN_STATS}")
        for name, allowed in (("buffer_size", BUFFER_SIZES), ("buffer_update", BUFFER_UPDATES),
                              ("last_batch", LAST_BATCHES), ("rotate_fill", ROTATE_FILLS), ("select", SELECTS),
                              ("amp", AMPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"train.{name}={getattr(self, name)!r}: expected one of {allowed}")
        for name in ("alpha", "xi", "buffer_replace"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"train.{name}={value}: expected a value in [0, 1]")
        for name in ("epochs", "batch_size", "n_z", "n_dis", "buffer_factor", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)}: expected a positive integer")
        if self.sigma <= 0:
            raise ValueError(f"train.sigma={self.sigma}: expected a positive standard deviation")
        for name in ("lr_g", "lr_d"):
            if getattr(self, name) <= 0:
                raise ValueError(f"train.{name}={getattr(self, name)}: expected a positive learning rate")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"train.{name}={getattr(self, name)}: expected an Adam beta in [0, 1)")
        if not 0.0 < self.threshold_fpr < 1.0:
            raise ValueError(f"train.threshold_fpr={self.threshold_fpr}: expected a value in (0, 1)")


@dataclass(frozen=True)
class ALGANConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    profile: str = "paper"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ALGANConfig":
        _check_keys("config", data, {f.name for f in fields(cls)})
        model = data.get("model", {})
        train = data.get("train", {})
        _check_keys("config.model", model, {f.name for f in fields(ModelConfig)})
        _check_keys("config.train", train, {f.name for f in fields(TrainConfig)})
        return cls(model=ModelConfig(**model), train=TrainConfig(**train), profile=data.get("profile", "custom"))

    def override(self, **changes: Any) -> "ALGANConfig":
        """Dotted overrides, e.g. override(**{"train.sigma": 5, "model.image_size": 64})."""
        model, train, top = {}, {}, {}
        for key, value in changes.items():
            section, _, name = key.rpartition(".")
            target = {"model": model, "train": train, "": top}.get(section)
            if target is None:
                raise ValueError(f"unknown config section in {key!r}: expected 'model.<name>' or 'train.<name>'")
            target[name] = value
        _check_keys("config.model", model, {f.name for f in fields(ModelConfig)})
        _check_keys("config.train", train, {f.name for f in fields(TrainConfig)})
        _check_keys("config", top, {"profile"})
        return replace(self, model=replace(self.model, **model), train=replace(self.train, **train), **top)


def _check_keys(where: str, data: dict, allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


# Each profile names only what it changes relative to the paper. `cpu` is sized so one run on
# MVTec bottle / MTD / COIL-100 takes a few minutes on a 2-core CPU; the book's deviations page
# lists these values.
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {
        "model.image_size": 64, "model.g_width": 32, "model.d_width": 32,
        "train.epochs": 64, "train.eval_every": 4,
    },
    "smoke": {
        "model.image_size": 32, "model.g_width": 8, "model.d_width": 8,
        "train.epochs": 2, "train.eval_every": 1,
    },
}
# ALGAN-feature (Sec. IV-C: 192 epochs); the smoke and cpu profiles shorten it likewise.
FEATURE_PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"model.kind": "feature", "train.epochs": 192},
    "cpu": {"model.kind": "feature", "train.epochs": 96, "train.eval_every": 4},
    "smoke": {"model.kind": "feature", "model.feature_hidden": 64, "train.epochs": 2, "train.eval_every": 1},
}


# Readings of Algorithm 1 and Sec. III-A / IV-A where the text is ambiguous or silent, by name. "literal"
# is the printed text read most literally (the defaults above); "active" is the reading in which the
# two pseudo-anomaly mechanisms carry D's gradient (chosen on validation AUROC and training
# diagnostics only: the book's readings page). A reading is a set of overrides, so its runs are the
# same cache entries as the same keys set one by one.
READINGS: dict[str, dict[str, Any]] = {
    "literal": {},
    "active": {
        "train.buffer_size": "data", "train.buffer_update": "per_epoch",   # Sec. III-A's buffer
        "train.fake_bn_stats": "running",                                  # chosen on the readings page
        "model.fake_channels": "derived",                                  # fakes get real images' channel step
        "train.rotate_fill": "reflection", "train.last_batch": "drop",     # no artefact, no 1-image batch
    },
}
IMAGE_ONLY = frozenset({"model.fake_channels", "train.rotate_fill"})
# Of a reading's keys, the GAN baselines (their own training loops) read only these: their training data.
BASELINE_KEYS = frozenset({"train.rotate_fill", "train.last_batch"})


def reading_overrides(name: str, kind: str = "image", baseline: bool = False) -> dict[str, Any]:
    """The overrides of a named reading (READINGS); keys that only concern images are left out for features,
    and for a GAN baseline (`baseline`) every key but its training data's (BASELINE_KEYS), so that its runs
    do not depend on ALGAN-only settings."""
    if name not in READINGS:
        raise ValueError(f"unknown reading {name!r}: expected one of {sorted(READINGS)}")
    return {k: v for k, v in READINGS[name].items()
            if (kind == "image" or k not in IMAGE_ONLY) and (not baseline or k in BASELINE_KEYS)}


def reading_of(config: dict[str, Any], baseline: bool = False) -> str:
    """The name of the reading a resolved config (ALGANConfig.to_dict()) follows, else "custom"; for a GAN
    baseline's config (`baseline`) judged on BASELINE_KEYS only."""
    defaults = ALGANConfig().to_dict()
    value = lambda c, key: c[key.split(".")[0]].get(key.split(".")[1], ADDED_SETTINGS.get(tuple(key.split("."))))  # noqa: E731
    keys = {k for r in READINGS.values() for k in r if not baseline or k in BASELINE_KEYS}
    for name, changes in sorted(READINGS.items(), key=lambda item: -len(item[1])):
        wanted = {k: changes.get(k, value(defaults, k)) for k in keys}
        if config.get("model", {}).get("kind") == "feature":
            wanted = {k: v for k, v in wanted.items() if k not in IMAGE_ONLY}
        if all(value(config, k) == v for k, v in wanted.items()):
            return name
    return "custom"


def profile(name: str, kind: str = "image", reading: str = "literal", **overrides: Any) -> ALGANConfig:
    """The named profile for ALGAN-image (kind="image") or ALGAN-feature (kind="feature"), under a named
    reading of the paper (READINGS); explicit overrides win over both."""
    table = PROFILES if kind == "image" else FEATURE_PROFILES
    if kind not in ("image", "feature"):
        raise ValueError(f"kind={kind!r}: expected 'image' or 'feature'")
    if name not in table:
        raise ValueError(f"unknown profile {name!r}: expected one of {sorted(table)}")
    return (ALGANConfig(profile=name).override(**table[name]).override(**reading_overrides(reading, kind))
            .override(**overrides))
