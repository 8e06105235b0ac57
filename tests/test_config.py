import dataclasses

import numpy as np
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


@pytest.mark.parametrize("key,value", [
    ("train.epochs", "two"), ("train.epochs", 2.5), ("train.epochs", True), ("train.use_buffer", 1),
    ("train.sigma", float("nan")), ("train.sigma", float("inf")), ("train.sigma", "4"), ("model.kind", 1),
    ("train.lr_g", -1e-4), ("train.lr_d", 0.0), ("train.beta2", 1.0),
])
def test_values_are_checked_against_the_field_types(key, value):
    """The Python API refuses what the CLI refuses (`--set train.epochs=true` is not one epoch), naming the key."""
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        profile("smoke", **{key: value})
    with pytest.raises(ValueError, match=key.split(".")[1]):
        ALGANConfig.from_dict({key.split(".")[0]: {key.split(".")[1]: value}})


def test_values_are_kept_as_given():
    """Checked, not converted: an int given for a float field stays an int, so run hashes do not move."""
    cfg = profile("smoke", **{"train.sigma": 5, "train.lr_g": 1e-3})
    assert type(cfg.train.sigma) is int and cfg.to_dict()["train"]["sigma"] == 5
    assert profile("smoke", **{"train.epochs": np.int64(3)}).train.epochs == 3
