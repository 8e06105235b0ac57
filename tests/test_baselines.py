"""GANomaly, Skip-GANomaly and ALOCC: shapes, losses, training on obvious anomalies, the protocol,
persistence, determinism, batch independence, bad input. Tiny images (16x16) on the CPU."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from algan.runs.image import METHODS

from algan.config import profile
from algan.data.splits import ImageSplit, Splits
from algan.models.algan_nets import n_conv_layers
from algan.models.alocc import ALOCC, ALOCCHParams, reconstructor_loss
from algan.models.baseline_common import Discriminator, discriminator_loss
from algan.models.ganomaly import GANomaly, GANomalyHParams, generator_loss as ganomaly_loss, latent_error
from algan.models.skip_ganomaly import (SkipGANomaly, SkipGANomalyHParams, anomaly_score,
                                        generator_loss as skip_loss)
from algan.score import auroc

DETECTORS = (GANomaly, SkipGANomaly, ALOCC)
SIZE = 16
LOG2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (conftest)


# ---- tiny synthetic data -------------------------------------------------------------------------
def smooth_images(n: int, seed: int) -> torch.Tensor:
    """Normal images: 4x4 uniform noise in [-0.5, 0.5], bilinearly upsampled to 16x16. (n, 3, 16, 16)"""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) - 0.5
    return F.interpolate(low, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def bright_squares(x: torch.Tensor, seed: int, side: int = 4) -> torch.Tensor:
    """A white side x side square pasted at a random place of each image."""
    g = torch.Generator().manual_seed(seed)
    x = x.clone()
    for i in range(len(x)):
        top, left = torch.randint(0, SIZE - side + 1, (2,), generator=g).tolist()
        x[i, :, top:top + side, left:left + side] = 1.0
    return x


def faded(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Washed-out images: the contrast cut to a fifth."""
    return 0.2 * x


# What is obvious depends on the score. GANomaly / Skip-GANomaly score reconstruction errors, which a
# white square raises. ALOCC scores how unreal D finds the reconstruction R(x); R's outputs are
# blurrier than real images, so D learns "contrast = real" and rates a white square's reconstruction
# *more* real (AUROC near 0 on that set, measured), while a washed-out image is plainly fake to it.
ANOMALY = {GANomaly: bright_squares, SkipGANomaly: bright_squares, ALOCC: faded}


def labelled(cls, n: int, seed: int):
    x = torch.cat([smooth_images(n, seed), ANOMALY[cls](smooth_images(n, seed + 1), seed + 2)])
    return x, np.r_[np.zeros(n), np.ones(n)]


def config(**changes):
    # smoke widths (8) at 16x16; extra_channels off: the plain 3-channel image is the model input
    return profile("smoke", **{"model.image_size": SIZE, "model.extra_channels": False, **changes})


EPOCHS, EVAL_EVERY = 20, 2


@functools.lru_cache(maxsize=None)
def trained(cls):
    """One detector per class trained on 64 normal images, selected on a labelled validation set."""
    x_val, y_val = labelled(cls, 32, 10)
    det = cls(config(**{"train.epochs": EPOCHS, "train.eval_every": EVAL_EVERY}), seed=0, device="cpu",
              progress=False)
    return det.fit(smooth_images(64, 0), X_val=x_val, y_val=y_val)


# ---- networks --------------------------------------------------------------------------------------
def _count(module: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("size", [16, 32])
def test_network_shapes_follow_the_resolution(size):
    x = torch.rand(3, 3, size, size) * 2 - 1
    cfg = profile("smoke", **{"model.image_size": size, "model.extra_channels": False})
    n = n_conv_layers(size)  # log2(size) - 1, as ALGAN-image's networks

    g = GANomaly.initialised(cfg, device="cpu").nets
    x_hat, z, z_hat = g["generator"](x)
    assert x_hat.shape == x.shape and z.shape == z_hat.shape == (3, 100)
    assert _count(g["generator"].encoder, nn.Conv2d) == _count(g["generator"].encoder2, nn.Conv2d) == n
    assert _count(g["generator"].decoder, nn.ConvTranspose2d) == n

    s = SkipGANomaly.initialised(cfg, device="cpu").nets
    seen = {}
    s["generator"].bottleneck.register_forward_hook(lambda mod, inp, out: seen.update(latent=out.shape))
    assert s["generator"](x).shape == x.shape
    assert seen["latent"] == (3, 512, 1, 1)  # Skip-GANomaly's 512-d bottleneck
    assert _count(s["generator"], nn.Conv2d) == _count(s["generator"], nn.ConvTranspose2d) == n

    a = ALOCC.initialised(cfg, device="cpu").nets
    assert a["reconstructor"](x).shape == x.shape
    assert a["reconstructor"].encoder(x).shape == (3, 100)

    for nets in (g, s, a):
        D = nets["discriminator"]
        logits, feat = D.logit_and_features(x)
        assert logits.shape == (3,) and feat.shape[0] == 3 and feat.shape[2:] == (4, 4)
        assert _count(D, nn.Conv2d) == n and _count(D, nn.BatchNorm2d) == 0  # ALGAN's D: spectral norm


def test_extra_channels_are_appended_for_the_model():
    det = GANomaly.initialised(profile("smoke", **{"model.image_size": SIZE}), device="cpu")
    assert det.config.model.channels == 5  # RGB + channel-axis max + mean, as ALGAN-image
    assert det.decision_function(smooth_images(2, 0)).shape == (2,)


# ---- losses and scores ---------------------------------------------------------------------------
def test_loss_values():
    g = torch.Generator().manual_seed(0)
    x, z, feat = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 100, generator=g), torch.randn(4, 16, 4, 4)
    zeros = torch.zeros(4)
    assert discriminator_loss(zeros, zeros).item() == pytest.approx(LOG2)
    assert discriminator_loss(zeros + 30, zeros - 30).item() == pytest.approx(0.0, abs=1e-9)

    # GANomaly: 1 * ||f(x) - f(x_hat)||^2 + 50 * |x - x_hat| + 1 * ||z - z_hat||^2
    out = ganomaly_loss(x, x + 0.1, z, z + 1.0, feat, feat + 2.0, GANomalyHParams())
    assert out["loss_adv"].item() == pytest.approx(4.0) and out["loss_con"].item() == pytest.approx(0.1)
    assert out["loss_enc"].item() == pytest.approx(1.0)
    assert out["loss_g"].item() == pytest.approx(4.0 + 50 * 0.1 + 1.0, rel=1e-5)
    assert torch.allclose(latent_error(z, z + 2.0), torch.full((4,), 4.0))

    # Skip-GANomaly: 1 * BCE(D(x_hat), real) + 40 * |x - x_hat| + 1 * ||f(x) - f(x_hat)||^2
    out = skip_loss(x, x - 0.2, zeros, feat, feat + 0.5, SkipGANomalyHParams())
    assert out["loss_g"].item() == pytest.approx(LOG2 + 40 * 0.2 + 0.25, rel=1e-5)
    # score: 0.9 * mean |x - x_hat| + 0.1 * mean (f(x) - f(x_hat))^2
    assert torch.allclose(anomaly_score(x, x + 0.1, feat, feat + 1.0, 0.9), torch.full((4,), 0.9 * 0.1 + 0.1))

    # ALOCC: BCE(D(R(x~)), real) + 0.2 * ||x - R(x~)||^2
    out = reconstructor_loss(x, x + 0.5, zeros, ALOCCHParams())
    assert out["loss_r"].item() == pytest.approx(LOG2 + 0.2 * 0.25, rel=1e-5)


@pytest.mark.parametrize("cls", DETECTORS)
def test_decision_function_is_the_published_score(cls):
    det = cls.initialised(config(), device="cpu")
    x = smooth_images(5, 3)
    nets = det.nets.eval()
    with torch.no_grad():
        if cls is GANomaly:
            _, z, z_hat = nets["generator"](x)
            expected = ((z - z_hat) ** 2).mean(1)
        elif cls is SkipGANomaly:
            x_hat, D = nets["generator"](x), nets["discriminator"]
            expected = (0.9 * (x - x_hat).abs().flatten(1).mean(1)
                        + 0.1 * ((D.features(x) - D.features(x_hat)) ** 2).flatten(1).mean(1))
        else:
            expected = -nets["discriminator"](nets["reconstructor"](x))  # -logit D(R(x))
    np.testing.assert_allclose(det.decision_function(x), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", DETECTORS)
def test_scoring_is_batched_in_eval_and_inference_mode(cls, monkeypatch):
    det = cls.initialised(config(), device="cpu")
    det.nets.train()
    calls = []
    score_batch = det.score_batch

    def spy(x):
        calls.append((len(x), torch.is_inference_mode_enabled(), det.nets.training))
        return score_batch(x)

    monkeypatch.setattr(det, "score_batch", spy)
    assert det.decision_function(smooth_images(5, 1), batch_size=2).shape == (5,)
    assert calls == [(2, True, False), (2, True, False), (1, True, False)]
    assert det.nets.training  # the mode is restored


# ---- training and the protocol -----------------------------------------------------------------
@pytest.mark.parametrize("cls", DETECTORS)
def test_training_detects_obvious_anomalies(cls):
    det = trained(cls)
    x_test, y_test = labelled(cls, 16, 20)
    # seed 0; over seeds 0-5 GANomaly and Skip-GANomaly reach 0.9-1.0 here, ALOCC 0.72-1.0
    assert auroc(y_test, det.decision_function(x_test)) >= 0.8

    h = det.history_
    assert list(h["epoch"]) == list(range(1, EPOCHS + 1))
    assert {"loss_d", "val_auroc", "seconds"} <= set(h.columns)
    evaluated = h.loc[h["val_auroc"].notna(), "epoch"]
    assert list(evaluated) == list(range(EVAL_EVERY, EPOCHS + 1, EVAL_EVERY))  # Figure 7's curve
    best = h.loc[h["val_auroc"].idxmax()]  # the first of equal maxima
    assert det.best_epoch_ == best["epoch"] and det.best_val_auroc_ == best["val_auroc"]
    # it learned: G's reconstruction error fell; ALOCC's R (weighted 0.2) keeps its error, but D
    # learned to tell x from R(x~)
    learned = "loss_d" if cls is ALOCC else "loss_con"
    assert h[learned].iloc[-3:].mean() < h[learned].iloc[:3].mean() - 0.02

    # threshold: 5 % false positives on the normal validation images
    x_val, y_val = labelled(cls, 32, 10)
    assert np.mean(det.decision_function(x_val[:32]) > det.threshold_) <= 0.05 + 1e-9
    assert det.predict(x_val).shape == (64,)


@pytest.mark.parametrize("cls", DETECTORS)
def test_scores_are_batch_independent(cls):
    det = trained(cls)
    x = torch.cat([smooth_images(4, 30), bright_squares(smooth_images(3, 31), 32)])
    full = det.decision_function(x)
    single = np.array([det.decision_function(x[i:i + 1])[0] for i in range(len(x))])
    np.testing.assert_allclose(full, single, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", DETECTORS)
def test_same_seed_same_scores(cls):
    x_val, y_val = labelled(cls, 4, 10)

    def fit(seed):
        cfg = config(**{"train.epochs": 2, "train.eval_every": 1})
        return cls(cfg, seed=seed, device="cpu", progress=False).fit(smooth_images(32, 0), X_val=x_val, y_val=y_val)

    x = smooth_images(5, 9)
    a, b, c = fit(0), fit(0), fit(1)
    np.testing.assert_array_equal(a.decision_function(x), b.decision_function(x))
    assert a.history_.drop(columns="seconds").equals(b.history_.drop(columns="seconds"))
    assert not np.array_equal(a.decision_function(x), c.decision_function(x))


@pytest.mark.parametrize("cls", DETECTORS)
def test_save_load_round_trip(cls, tmp_path):
    det = trained(cls)
    det.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    assert state["format"] == f"{cls.name}-1" and state["config"]["model"]["image_size"] == SIZE
    back = cls.load(tmp_path / "m.pt")
    x = torch.cat([smooth_images(3, 40), bright_squares(smooth_images(3, 41), 42)])
    np.testing.assert_array_equal(det.decision_function(x), back.decision_function(x))
    np.testing.assert_array_equal(det.predict(x), back.predict(x))
    assert (back.threshold_, back.best_epoch_, back.best_val_auroc_) == (det.threshold_, det.best_epoch_,
                                                                        det.best_val_auroc_)
    assert back.hparams == det.hparams
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write
    other = next(c for c in DETECTORS if c is not cls)
    with pytest.raises(ValueError, match=f"expected a {other.__name__} checkpoint"):
        other.load(tmp_path / "m.pt")


@pytest.mark.parametrize("name, cls", [("ganomaly", GANomaly), ("skip_ganomaly", SkipGANomaly), ("alocc", ALOCC)])
def test_experiments_method(name, cls):
    """METHODS[name](splits, profile, seed, overrides, device, progress), as algan.runs.image runs it."""
    fit = METHODS[name]
    def split(x, y):
        return ImageSplit(x=x, y=torch.as_tensor(y, dtype=torch.long), paths=[f"{i}.png" for i in range(len(x))])

    x_val, y_val = labelled(cls, 4, 10)
    splits = Splits(name="toy", category="toy", image_size=SIZE, seed=0,
                    train=split(smooth_images(16, 0), np.zeros(16)), val=split(x_val, y_val),
                    test=split(x_val, y_val), channels=3, extra_channels=True, augmentations=("hflip",))
    det, extra, history = fit(splits, "smoke", 0, {"model.image_size": SIZE, "train.epochs": 1}, "cpu", False)
    assert isinstance(det, cls) and det.config.model.channels == 5  # the data set's extra channels
    assert {"best_epoch", "val_auroc", "epochs", "image_size", "seconds_per_epoch"} <= set(extra)
    assert extra["epochs"] == 1 and len(history) == 1 and np.isfinite(history["val_auroc"].iloc[0])
    assert det.decision_function(splits.test.x).shape == (8,) and np.isfinite(det.threshold_)


# ---- bad input -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", DETECTORS)
def test_bad_input(cls):
    fresh = cls(config(), device="cpu", progress=False)
    nan = smooth_images(4, 0)
    nan[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf in 1 sample"):
        fresh.fit(nan)
    with pytest.raises(ValueError, match="expected images"):
        fresh.fit(torch.zeros(4, 8))
    with pytest.raises(ValueError, match="model.image_size=16"):
        fresh.fit(torch.zeros(4, 3, 32, 32))
    with pytest.raises(ValueError, match="y_val has 3 labels for 4 validation images"):
        fresh.fit(smooth_images(4, 0), X_val=smooth_images(4, 1), y_val=[0, 1, 0])
    with pytest.raises(ValueError, match="not fitted"):
        fresh.decision_function(smooth_images(2, 0))
    with pytest.raises(ValueError, match=r"expected \(N, 3, 16, 16\)"):
        trained(cls).decision_function(torch.zeros(2, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match="expected a number >= 1"):
        cls.HParams(latent_dim=0)
    with pytest.raises(ValueError, match=f"expected {cls.HParams.__name__}"):
        cls(config(), hparams=object())


def test_reinit_where_takes_fresh_weights_only_where_the_condition_holds():
    """GANomaly's re-initialisation without a host sync (the accelerator path, run here on the CPU)."""
    from algan.models.baseline_common import reinit_where

    torch.manual_seed(0)
    D = Discriminator(profile("smoke").model)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    reinit_where(D, torch.tensor(False))
    assert all(torch.equal(before[k], v) for k, v in D.state_dict().items())
    reinit_where(D, torch.tensor(True))
    changed = [k for k, v in D.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and all(k.endswith("original") or k.endswith("bias") for k in changed)
