"""The toy problem of Figure 3: a GAN maps 100-d latents to a 2-D standard normal.

ALGAN's discriminator should enclose the normal data, so points on a ring of radius 4 (where
fake-anomalous data from sigma = 4 fall) score as anomalous; a plain GAN's discriminator, trained
with the same budget but without buffer and anomalous latents, need not.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import ALGANConfig, profile
from .detector import ALGAN
from .score import auroc

RING_RADIUS = 4.0


# The toy needs latents that cover the ring: with the literal schedule D sees the same four
# fake-anomalous points for n_z epochs. Both readings are shown in the book.
TOY_READINGS = {"latent_schedule": "per_batch", "fake_bn_stats": "running"}
LITERAL_READINGS = {"latent_schedule": "literal", "fake_bn_stats": "running"}


def toy_config(kind: str = "algan", epochs: int = 60, hidden: int = 64, readings: dict | None = None) -> ALGANConfig:
    """ALGAN-feature settings on 2-D data; kind="plain_gan" switches off both pseudo-anomaly sources."""
    plain = kind == "plain_gan"
    readings = TOY_READINGS if readings is None else readings
    return profile("paper", kind="feature", **{
        "model.feature_dim": 2, "model.feature_hidden": hidden,
        "train.epochs": epochs, "train.eval_every": epochs, "train.select": "last",  # Figure 3: the final model
        "train.use_buffer": not plain, "train.use_anomalous_latent": not plain,
        **{f"train.{k}": v for k, v in readings.items()},
    }).override(profile="toy")


def toy_data(seed: int, n_train: int = 1024, n_test: int = 512):
    """Train: N(0, I) in 2-D. Test: held-out N(0, I) (label 0) and a ring of radius 4 (label 1)."""
    rng = np.random.default_rng(seed)
    x_train = rng.standard_normal((n_train, 2)).astype(np.float32)
    angles = rng.uniform(0, 2 * np.pi, n_test)
    ring = RING_RADIUS * np.stack([np.cos(angles), np.sin(angles)], 1)
    x_test = np.concatenate([rng.standard_normal((n_test, 2)), ring]).astype(np.float32)
    y_test = np.r_[np.zeros(n_test), np.ones(n_test)].astype(np.int64)
    return x_train, x_test, y_test


@dataclass
class ToyResult:
    detector: ALGAN
    x_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    test_auroc: float


def run_toy(kind: str = "algan", seed: int = 0, epochs: int = 60, readings: dict | None = None,
            progress: bool = False) -> ToyResult:
    """Train ALGAN (or the plain GAN) on the toy data and score the held-out normal + ring points."""
    x_train, x_test, y_test = toy_data(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-D MLP: more threads only thrash, badly so on a busy CPU
    try:
        det = ALGAN(toy_config(kind, epochs, readings=readings), seed=seed, device="cpu",
                    progress=progress).fit(x_train)
    finally:
        torch.set_num_threads(threads)
    return ToyResult(det, x_train, x_test, y_test, auroc(y_test, det.decision_function(x_test)))


def decision_grid(det: ALGAN, lim: float = 6.0, steps: int = 121):
    """Anomaly score on a square grid, for the contour plot: (xx, yy, scores)."""
    axis = np.linspace(-lim, lim, steps, dtype=np.float32)
    xx, yy = np.meshgrid(axis, axis)
    scores = det.decision_function(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(xx.shape)
    return xx, yy, scores


def plot_toy(res: ToyResult, ax=None, n_points: int = 400, title: str | None = None, legend: bool = True):
    """Figure 3: real-normal, fake-normal, fake-anomalous points and D's decision contour (legend=False
    leaves the legend to the caller, e.g. one for a row of panels)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    ax = ax or plt.subplots(figsize=(5, 5))[1]
    det = res.detector
    xx, yy, scores = decision_grid(det)
    filled = ax.contourf(xx, yy, scores, levels=20, cmap="RdBu_r", alpha=0.6)
    ax.contour(xx, yy, scores, levels=[det.threshold_], colors="k", linewidths=1.5)
    fake_n = det.generate(n_points, seed=1).numpy()
    fake_a = det.generate(n_points, anomalous=True, seed=2).numpy()
    ax.scatter(*res.x_train[:n_points].T, s=6, c="black", label="real normal")
    ax.scatter(*fake_n.T, s=6, c="tab:green", label="fake normal, z ~ N(0, I)")
    ax.scatter(*fake_a.T, s=6, c="tab:red", label=f"fake anomalous, sigma = {det.config.train.sigma:g}")
    ax.add_patch(Circle((0, 0), RING_RADIUS, fill=False, ls="--", color="gray"))
    ax.set(xlim=(-6, 6), ylim=(-6, 6), aspect="equal", xlabel="$x_1$", ylabel="$x_2$",
           title=title or f"test AUROC (normal vs ring r=4) = {res.test_auroc:.3f}")
    if legend:
        ax.legend(loc="upper right")
    ax.figure.colorbar(filled, ax=ax, shrink=0.7, label="anomaly score -D(x)")
    return ax

