"""Every hyperparameter of the paper, once, with its default and where it comes from.

Section and equation numbers refer to Murase & Fukumizu, "ALGAN", IEEE Access 10 (2022).
Profiles (`smoke`, `cpu`, `paper`) are named overrides of these defaults; `paper` is the
defaults unchanged.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, replace
from typing import Any

LATENT_SCHEDULES = ("literal", "per_batch")
GENERATOR_LOSSES = ("saturating", "non_saturating")
FAKE_BN_STATS = ("batch", "running")
FEATURE_SCALINGS = ("standardise", "drop_constant")

# Settings added after runs were cached, with the value those runs used: a stored run that lacks
# one of them is still current when the setting is at this value (results.cached_run).
ADDED_SETTINGS: dict[tuple[str, str], Any] = {("model", "feature_scaling"): "standardise"}


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

    def __post_init__(self):
        if self.kind not in ("image", "feature"):
            raise ValueError(f"model.kind={self.kind!r}: expected 'image' or 'feature'")
        if self.feature_scaling not in FEATURE_SCALINGS:
            raise ValueError(f"model.feature_scaling={self.feature_scaling!r}: expected one of {FEATURE_SCALINGS}")
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
                                    # which squeezes x'_n and lets D reject x' by batch statistics alone
    threshold_fpr: float = 0.05     # Eq. (8) leaves the threshold to the user: we pick it at this
                                    # false-positive rate on normal validation scores only

    def __post_init__(self):
        if self.latent_schedule not in LATENT_SCHEDULES:
            raise ValueError(f"train.latent_schedule={self.latent_schedule!r}: expected one of {LATENT_SCHEDULES}")
        if self.generator_loss not in GENERATOR_LOSSES:
            raise ValueError(f"train.generator_loss={self.generator_loss!r}: expected one of {GENERATOR_LOSSES}")
        if self.fake_bn_stats not in FAKE_BN_STATS:
            raise ValueError(f"train.fake_bn_stats={self.fake_bn_stats!r}: expected one of {FAKE_BN_STATS}")
        for name in ("alpha", "xi", "buffer_replace"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"train.{name}={value}: expected a value in [0, 1]")
        for name in ("epochs", "batch_size", "n_z", "n_dis", "buffer_factor", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name}={getattr(self, name)}: expected a positive integer")
        if self.sigma <= 0:
            raise ValueError(f"train.sigma={self.sigma}: expected a positive standard deviation")
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


def profile(name: str, kind: str = "image", **overrides: Any) -> ALGANConfig:
    """The named profile for ALGAN-image (kind="image") or ALGAN-feature (kind="feature")."""
    table = PROFILES if kind == "image" else FEATURE_PROFILES
    if kind not in ("image", "feature"):
        raise ValueError(f"kind={kind!r}: expected 'image' or 'feature'")
    if name not in table:
        raise ValueError(f"unknown profile {name!r}: expected one of {sorted(table)}")
    return ALGANConfig(profile=name).override(**table[name]).override(**overrides)
