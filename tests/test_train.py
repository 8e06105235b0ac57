"""Algorithm 1 pieces: Eq. (6) weights, the buffer, the latent schedule, short real runs."""
import math

import numpy as np
import pytest
import torch

from algan.config import profile
from algan.models.algan_nets import build_networks
from algan.train import (Buffer, LatentSchedule, discriminator_loss, generator_loss, sample_latents, split_rows,
                         train_algan)


def sp(v):  # softplus
    return math.log1p(math.exp(v))


def test_eq6_weights_on_fixed_logits():
    t = lambda v: torch.tensor([float(v)])
    loss = discriminator_loss(t(0.5), t(1.0), t(2.0), t(-1.0), t(3.0), alpha=0.75, xi=0.75)
    expected = sp(-0.5) + 0.75 * (0.75 * sp(1.0) + 0.25 * sp(-1.0)) + 0.25 * (0.75 * sp(2.0) + 0.25 * sp(3.0))
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # epoch 1 / use_buffer=False: no buffer term, the generated data take the whole weight (xi = 1)
    loss = discriminator_loss(t(0.5), t(1.0), t(2.0), alpha=0.75, xi=0.75)
    assert loss.item() == pytest.approx(sp(-0.5) + 0.75 * sp(1.0) + 0.25 * sp(2.0), rel=1e-6)
    # use_anomalous_latent=False is alpha = 1: fake-anomalous and its buffer drop out
    loss = discriminator_loss(t(0.5), t(1.0), t(2.0), t(-1.0), t(3.0), alpha=1.0, xi=0.75)
    assert loss.item() == pytest.approx(sp(-0.5) + 0.75 * sp(1.0) + 0.25 * sp(-1.0), rel=1e-6)


def test_generator_loss_forms():
    logits = torch.tensor([0.3, -1.2])
    assert generator_loss(logits, "saturating").item() == pytest.approx(-(sp(0.3) + sp(-1.2)) / 2, rel=1e-6)
    assert generator_loss(logits, "non_saturating").item() == pytest.approx((sp(-0.3) + sp(1.2)) / 2, rel=1e-6)


def test_buffer_capacity_and_half_replacement():
    gen = torch.Generator().manual_seed(0)
    buf = Buffer(capacity=8, replace_fraction=0.5, gen=gen)
    buf.push(torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool))
    assert len(buf) == 4
    buf.push(torch.ones(4, 2), torch.ones(4, dtype=torch.bool))
    assert len(buf) == 8
    before = buf.x.clone()
    buf.push(torch.full((6, 2), 7.0), torch.zeros(6, dtype=torch.bool))
    assert len(buf) == 8
    changed = (buf.x != before).any(1)
    assert int(changed.sum()) == 4 and bool((buf.x[changed] == 7).all())
    assert not buf.is_anomalous[changed].any()  # the kind travels with the sample
    x, kind, _ = buf.sample(16)
    assert x.shape == (16, 2) and kind.shape == (16,)


def test_latent_mixture_shares():
    z, anom = sample_latents(4000, 100, alpha=0.75, sigma=4.0, gen=torch.Generator().manual_seed(0))
    assert int((~anom).sum()) == 3000 and int(anom.sum()) == 1000
    assert z[~anom].std().item() == pytest.approx(1.0, abs=0.02)
    assert z[anom].std().item() == pytest.approx(4.0, abs=0.08)


def test_latent_schedule_n_z():
    cfg = profile("smoke", **{"train.n_z": 2, "train.batch_size": 4}).train
    sched = LatentSchedule(cfg, 8, n_batches=3, gen=torch.Generator().manual_seed(0))
    fresh = [sched.maybe_resample(epoch) for epoch in range(1, 7)]
    assert fresh == [True, True, False, True, False, True]  # before epoch 1, then i mod n_z = 0
    assert len(sched.z_d) == 1  # literal: one latent batch held for all batches
    (z0, _), _ = sched.for_batch(0)
    (z2, _), _ = sched.for_batch(2)
    assert torch.equal(z0, z2)
    per_batch = LatentSchedule(profile("smoke", **{"train.latent_schedule": "per_batch"}).train, 8, 3,
                               torch.Generator().manual_seed(0))
    per_batch.maybe_resample(1)
    assert len(per_batch.z_d) == 3 and not torch.equal(per_batch.for_batch(0)[0][0], per_batch.for_batch(1)[0][0])


def _tiny_run(**overrides):
    cfg = profile("smoke", **{"model.image_size": 16, "model.channels": 3, "train.epochs": 2,
                              "train.batch_size": 4, **overrides})
    torch.manual_seed(0)
    g, d = build_networks(cfg.model)
    x = torch.rand(10, 3, 16, 16) * 2 - 1
    x_val = torch.rand(6, 3, 16, 16) * 2 - 1
    y_val = np.array([0, 0, 0, 1, 1, 1])
    return train_algan(g, d, x, cfg.train, latent_dim=100, seed=0, x_val=x_val, y_val=y_val, progress=False)


def test_two_epoch_run_on_tiny_images():
    res = _tiny_run()
    h = res.history
    assert list(h["epoch"]) == [1, 2]
    assert np.isfinite(h[["loss_d", "loss_g", "d_real", "val_auroc", "seconds"]].to_numpy()).all()
    assert res.best_epoch in (1, 2) and 0.0 <= res.best_val_auroc <= 1.0


def test_ablation_switches_remove_their_data():
    no_anom = _tiny_run(**{"train.use_anomalous_latent": False})
    assert no_anom.history["d_fake_anomalous"].isna().all()  # no fake-anomalous sample was ever made
    both = _tiny_run()
    assert both.history["d_fake_anomalous"].notna().all()


def test_empty_training_set():
    cfg = profile("smoke", **{"model.image_size": 16})
    g, d = build_networks(cfg.model)
    with pytest.raises(ValueError, match="x_train has 0 samples"):
        train_algan(g, d, torch.zeros(0, 5, 16, 16), cfg.train, latent_dim=100, progress=False)


def test_split_rows_is_boolean_indexing():
    """The buffer's logits split by CPU flags: the rows and order boolean indexing gives (no host sync)."""
    logits = torch.randn(9, generator=torch.Generator().manual_seed(0))
    flags = torch.tensor([1, 0, 0, 1, 1, 0, 1, 0, 0], dtype=torch.bool)
    normal, anomalous = split_rows(logits, flags)
    assert torch.equal(normal, logits[~flags]) and torch.equal(anomalous, logits[flags])
    assert [len(t) for t in split_rows(logits, torch.zeros(9, dtype=torch.bool))] == [9, 0]


@pytest.mark.parametrize("options", [{"train.amp": "bf16"}, {"train.channels_last": True},
                                     {"train.amp": "bf16", "train.channels_last": True}])
def test_amp_and_channels_last_train_close_to_float32_and_leave_the_nets_as_they_were(options, one_torch_thread):
    from algan import ALGAN

    gen = torch.Generator().manual_seed(0)
    x, x_val = torch.rand(48, 3, 32, 32, generator=gen) * 2 - 1, torch.rand(16, 3, 32, 32, generator=gen) * 2 - 1
    y_val = np.r_[np.zeros(8), np.ones(8)]
    fit = lambda **o: ALGAN(profile("smoke", **{"train.epochs": 1, **o}), seed=0, progress=False).fit(  # noqa: E731
        x, X_val=x_val, y_val=y_val)
    ref, det = fit(), fit(**options)
    gap = np.abs(det.decision_function(x_val) - ref.decision_function(x_val)).max()
    assert 0 < gap < (1e-2 if "train.amp" in options else 1e-4)  # the option did something, and not much
    for net in (det.generator, det.discriminator):
        assert "forward" not in vars(net)  # the autocast / NHWC forward is gone after training
        assert all(p.is_contiguous() for p in net.parameters())
    with pytest.raises(ValueError, match=r"train.amp='fp16': expected one of \('none', 'bf16'\)"):
        profile("smoke", **{"train.amp": "fp16"})


def test_channels_last_is_refused_for_features():
    from algan import ALGAN

    det = ALGAN(profile("smoke", kind="feature", **{"train.channels_last": True}), progress=False)
    with pytest.raises(ValueError, match=r"train.channels_last=True orders image batches \(4-d\); these samples are 2-d"):
        det.fit(np.random.default_rng(0).normal(size=(32, 8)).astype("float32"))
