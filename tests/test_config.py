import dataclasses

import pytest

from algan.config import ALGANConfig, ModelConfig, TrainConfig, profile


def test_paper_profile_is_the_paper():
    cfg = profile("paper")
    m, t = cfg.model, cfg.train
    assert (m.latent_dim, m.image_size, m.channels) == (100, 256, 5)
    assert (t.sigma, t.alpha, t.xi, t.n_z, t.n_dis) == (4.0, 0.75, 0.75, 2, 2)
    assert (t.beta1, t.beta2, t.lr_g, t.lr_d, t.batch_size) == (0.0, 0.9, 2e-4, 1e-4, 16)
    assert (t.buffer_factor, t.buffer_replace, t.epochs, t.eval_every) == (2, 0.5, 512, 8)
    assert profile("paper", kind="feature").train.epochs == 192
    assert cfg.model == ModelConfig() and cfg.train == TrainConfig()


def test_profiles_shrink_only_size_and_time():
    paper, cpu = profile("paper"), profile("cpu")
    changed = {f"model.{k}" for k, v in dataclasses.asdict(cpu.model).items() if getattr(paper.model, k) != v}
    changed |= {f"train.{k}" for k, v in dataclasses.asdict(cpu.train).items() if getattr(paper.train, k) != v}
    assert changed == {"model.image_size", "model.g_width", "model.d_width", "train.epochs", "train.eval_every"}


def test_unknown_keys_raise():
    with pytest.raises(ValueError, match="unknown key"):
        profile("cpu", **{"train.sigmaa": 3})
    with pytest.raises(ValueError, match="unknown key"):
        ALGANConfig.from_dict({"model": {"latent": 3}})
    with pytest.raises(ValueError, match="unknown profile"):
        profile("gpu")
    with pytest.raises(ValueError, match="train.alpha"):
        profile("cpu", **{"train.alpha": 1.5})


def test_round_trip_through_dict():
    cfg = profile("smoke", **{"train.sigma": 5.0})
    assert ALGANConfig.from_dict(cfg.to_dict()) == cfg
