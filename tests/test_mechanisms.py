"""The pseudo-anomaly mechanisms and their diagnostics (issue: make the anomalous latent and the buffer
carry gradient): buffer ages, gradient shares, the readings' options and their one-line errors."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from algan import ALGAN
from algan.config import READINGS, profile, reading_of, reading_overrides
from algan.data.transforms import augment, rotate
from algan.models.algan_nets import build_networks
from algan.pages.studies import sigma_effect
from algan.train import (SATURATED_LOGIT, Buffer, check_batches, discriminator_loss, discriminator_terms,
                         gradient_shares, make_fakes)


def test_buffer_ages_are_known():
    buf = Buffer(4, 0.5, torch.Generator().manual_seed(0))
    buf.push(torch.zeros(2, 3), torch.zeros(2, dtype=torch.bool), birth=3)
    buf.push(torch.ones(2, 3), torch.ones(2, dtype=torch.bool), birth=5)
    x, anom, born = buf.sample(64)
    # the birth travels with the sample: zeros were made at 3, ones at 5
    assert (born[x[:, 0] == 0] == 3).all() and (born[x[:, 0] == 1] == 5).all()
    assert (anom == (x[:, 0] == 1)).all()
    buf.push(torch.full((4, 3), 2.0), torch.zeros(4, dtype=torch.bool), birth=torch.tensor([7, 7, 8, 8]))
    assert int((buf.x[:, 0] == 2).sum()) == 2  # half of the capacity replaced
    assert set(buf.birth[buf.x[:, 0] == 2].tolist()) <= {7, 8}


def test_gradient_shares_by_hand():
    # D(x) = w . x: d softplus(-w.x) / dw = -sigmoid(-w.x) x, d softplus(w.x) / dw = sigmoid(w.x) x
    w = nn.Parameter(torch.tensor([1.0, 0.0]))
    real, fake = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    terms = {"real": nn.functional.softplus(-(real @ w)).mean(), "fake": nn.functional.softplus(fake @ w).mean(),
             "empty": torch.zeros(())}
    shares = gradient_shares(terms, [w])
    g_real = torch.sigmoid(torch.tensor(-2.0)) * 2.0
    g_fake = torch.sigmoid(torch.tensor(0.0)) * 3.0
    assert shares["real"] == pytest.approx(float(g_real / (g_real + g_fake)), rel=1e-6)
    assert shares["fake"] == pytest.approx(float(g_fake / (g_real + g_fake)), rel=1e-6)
    assert shares["empty"] == 0.0


def test_terms_sum_to_the_loss():
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(n, generator=gen) for n in (16, 12, 4, 11, 5)]
    loss = discriminator_loss(*logits, alpha=0.75, xi=0.6)
    terms = discriminator_terms(*logits, alpha=0.75, xi=0.6)
    assert float(sum(terms.values())) == pytest.approx(float(loss), rel=1e-6)
    no_buffer = discriminator_terms(*logits[:3], alpha=0.75, xi=0.6)  # epoch 1: xi taken as 1
    assert float(no_buffer["buf_normal"]) == 0 and float(sum(no_buffer.values())) == pytest.approx(
        float(discriminator_loss(*logits[:3], alpha=0.75, xi=0.6)), rel=1e-6)


def _feature_run(sigma, **over):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 6, generator=gen)
    cfg = profile("smoke", kind="feature", **{"train.epochs": 8, "train.sigma": sigma, **over})
    return ALGAN(cfg, seed=0, device="cpu", progress=False).fit(x).history_


def test_sigma_one_makes_fake_anomalous_like_fake_normal():
    """With sigma = 1, z_a and z_n have one law: D cannot tell x'_a from x'_n; with sigma = 8 it can."""
    same = _feature_run(1.0).iloc[-4:]
    far = _feature_run(8.0).iloc[-4:]
    gap = lambda h: float((h["d_fake_normal"] - h["d_fake_anomalous"]).abs().mean())  # noqa: E731
    assert gap(same) < 0.25 * gap(far)
    assert gap(far) > 0.2


def test_history_has_the_diagnostics():
    h = _feature_run(4.0)
    for col in ("d_real", "d_fake_normal", "d_fake_anomalous", "d_buf_normal", "d_buf_anomalous",
                "sat_fake_anomalous", "buffer_age_mean", "buffer_age_median", "g_updates",
                "grad_share_real", "grad_share_buf_anomalous"):
        assert col in h
    shares = h[[c for c in h if c.startswith("grad_share_")]]
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert math.isnan(h["buffer_age_mean"].iloc[0])      # no buffer in epoch 1 (Alg. 1 line 10)
    # 128 rows / 16 = 8 G updates per epoch; half of 2 x 16 replaced per update -> about 2 updates old
    assert 1.0 <= h["buffer_age_median"].iloc[-1] <= 4.0
    assert h["sat_fake_anomalous"].between(0, 1).all()


def test_sec3a_buffer_holds_older_samples():
    """Sec. III-A's buffer (twice the training set, replaced once per epoch) holds samples older than an epoch."""
    h = _feature_run(4.0, **{"train.buffer_size": "data", "train.buffer_update": "per_epoch"})
    per_epoch = h["g_updates"].diff().iloc[-1]
    assert h["buffer_age_median"].iloc[-1] > per_epoch


def test_ablation_switches_zero_their_gradient_share():
    h = _feature_run(4.0, **{"train.use_buffer": False, "train.use_anomalous_latent": False})
    assert (h["grad_share_buf_normal"] == 0).all() and (h["grad_share_fake_anomalous"] == 0).all()
    assert h["d_fake_anomalous"].isna().all() and h["buffer_age_mean"].isna().all()


def test_saturation_threshold():
    assert torch.sigmoid(torch.tensor(SATURATED_LOGIT)).item() == pytest.approx(1e-3, rel=1e-4)


def test_derived_channels_come_from_the_fake_image():
    x = torch.rand(20, 3, 16, 16) * 2 - 1
    cfg = profile("smoke", **{"model.image_size": 16, "model.fake_channels": "derived", "train.epochs": 1})
    det = ALGAN(cfg, seed=0, device="cpu", progress=False).fit(x)
    assert det.generator.net[-2].out_channels == 3  # G emits image channels only
    fake = det.generate(4)
    assert fake.shape == (4, 5, 16, 16)
    assert torch.equal(fake[:, 3], fake[:, :3].amax(1)) and torch.allclose(fake[:, 4], fake[:, :3].mean(1))
    free = ALGAN(profile("smoke", **{"model.image_size": 16, "train.epochs": 1}), seed=0, progress=False).fit(x)
    assert free.generator.net[-2].out_channels == 5


def test_separate_bn_calls_normalise_each_kind_alone():
    cfg = profile("smoke", kind="feature", **{"model.feature_dim": 4, "model.feature_hidden": 8}).model
    G, _ = build_networks(cfg)
    z = torch.randn(16, cfg.latent_dim)
    is_anom = torch.arange(16) >= 12
    z[is_anom] *= 4
    with torch.no_grad():
        out = make_fakes(G, z, is_anom, 4, "separate")
        G.train(True)
        assert torch.allclose(out[is_anom], G(z[is_anom]), atol=1e-6)
        assert torch.allclose(out[~is_anom], G(z[~is_anom]), atol=1e-6)
        mixed = make_fakes(G, z, is_anom, 4, "batch")
        assert torch.allclose(mixed, G(z), atol=1e-6)
    assert G.training


def test_sigma_effect_is_nil_under_separate_bn_calls():
    """Batch norm's scale invariance: with z_a through G alone in train mode, sigma changes nothing."""
    effect = {bn: sigma_effect(profile("smoke", **{"train.fake_bn_stats": bn}).to_dict())
              for bn in ("running", "batch", "separate")}
    assert effect["separate"] < 1e-3 and effect["batch"] > 0.1 and effect["running"] > 0.1
    assert sigma_effect(profile("smoke", **{"train.sigma": 1.0}).to_dict()) == 0.0


def test_rotation_fill_leaves_no_black_corners():
    x = torch.zeros(2, 3, 16, 16)
    angles = torch.tensor([45.0, 30.0])
    assert (rotate(x, angles, "black") < -0.5).any()          # the corners the rotation uncovers
    for fill in ("reflection", "border"):
        assert torch.allclose(rotate(x, angles, fill), x, atol=1e-6)
    with pytest.raises(ValueError, match="rotation fill 'zeros'"):
        augment(x, ("rotate",), torch.Generator(), fill="zeros")


def test_last_batch_drop():
    cfg = profile("smoke").train
    assert check_batches(209, cfg) == 14
    drop = profile("smoke", **{"train.last_batch": "drop"}).train
    assert check_batches(209, drop) == 13
    with pytest.raises(ValueError, match="train.last_batch='drop' needs at least train.batch_size=16"):
        check_batches(10, drop)


def test_readings_by_name():
    assert profile("cpu", reading="literal") == profile("cpu")
    active = profile("cpu", reading="active")
    assert active.train.buffer_size == READINGS["active"]["train.buffer_size"]
    assert reading_of(active.to_dict()) == "active" and reading_of(profile("cpu").to_dict()) == "literal"
    assert reading_of(profile("cpu", **{"train.sigma": 2.0}).to_dict()) == "literal"  # not a reading key
    assert reading_of(profile("cpu", **{"train.rotate_fill": "border"}).to_dict()) == "custom"
    feature = profile("cpu", kind="feature", reading="active")
    assert "model.fake_channels" not in reading_overrides("active", "feature")
    assert reading_of(feature.to_dict()) == "active"
    # a GAN baseline reads only its training data's keys: its runs do not depend on ALGAN-only settings
    assert reading_overrides("active", baseline=True) == {"train.rotate_fill": "reflection", "train.last_batch": "drop"}
    baseline = profile("cpu", **reading_overrides("active", baseline=True)).to_dict()
    assert reading_of(baseline, baseline=True) == "active" and reading_of(baseline) == "custom"
    # an explicit key wins over the reading
    assert profile("cpu", reading="active", **{"train.last_batch": "keep"}).train.last_batch == "keep"
    with pytest.raises(ValueError, match=r"unknown reading 'activ': expected one of \['active', 'literal'\]"):
        profile("cpu", reading="activ")


@pytest.mark.parametrize("key, value", [("train.buffer_size", "huge"), ("train.buffer_update", "never"),
                                        ("train.rotate_fill", "zeros"), ("model.fake_channels", "some"),
                                        ("train.fake_bn_stats", "mixed"), ("train.last_batch", "merge")])
def test_unknown_option_values_name_the_key(key, value):
    with pytest.raises(ValueError, match=rf"{key}='{value}': expected one of"):
        profile("cpu", **{key: value})
