"""The estimator API, the toy claim of Figure 3, determinism, persistence and bad input."""
import numpy as np
import pytest
import torch

from algan.config import profile
from algan.detector import ALGAN
from algan.toy import run_toy


def test_toy_algan_encloses_normal_data_and_beats_plain_gan():
    algan = run_toy("algan", seed=0)
    plain = run_toy("plain_gan", seed=0)
    assert algan.test_auroc >= 0.95
    assert algan.test_auroc > plain.test_auroc


def _images(n, seed, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 0.4 - 0.2


def _fit(seed=0):
    x_val = torch.cat([_images(6, 1), _images(6, 2) + 0.6])
    y_val = np.r_[np.zeros(6), np.ones(6)]
    return ALGAN("smoke", seed=seed, device="cpu", progress=False).fit(_images(20, 0), X_val=x_val, y_val=y_val)


def test_same_seed_same_scores_and_save_load_round_trip(tmp_path):
    a, b = _fit(0), _fit(0)
    x = _images(5, 9)
    np.testing.assert_array_equal(a.decision_function(x), b.decision_function(x))
    assert a.config.model.channels == 5  # 3 image channels + max + mean
    a.save(tmp_path / "m.pt")
    c = ALGAN.load(tmp_path / "m.pt")
    np.testing.assert_array_equal(a.decision_function(x), c.decision_function(x))
    assert c.threshold_ == a.threshold_
    np.testing.assert_array_equal(a.predict(x), c.predict(x))
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_scores_are_batch_independent():
    det = _fit(0)
    x = _images(7, 3)
    full = det.decision_function(x)
    single = np.array([det.decision_function(x[i:i + 1])[0] for i in range(7)])
    np.testing.assert_allclose(full, single, rtol=1e-5, atol=1e-5)


def test_features_fit_and_threshold():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    x_val = np.r_[rng.standard_normal((50, 8)), rng.standard_normal((50, 8)) + 6].astype(np.float32)
    y_val = np.r_[np.zeros(50), np.ones(50)]
    det = ALGAN(profile("smoke", kind="feature", **{"train.epochs": 6}), progress=False).fit(x, X_val=x_val, y_val=y_val)
    scores = det.decision_function(x_val)
    assert scores.shape == (100,) and np.isfinite(scores).all()
    # the threshold sits at the 95th percentile of the normal validation scores
    assert np.mean(scores[:50] > det.threshold_) <= 0.05 + 1e-9


def test_drop_constant_scaling_ignores_dimensions_constant_in_training():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 6)).astype(np.float32)
    x[:, :2] = 0.0  # constant over the training rows, as in ADBench's ResNet-18 features
    probe = rng.standard_normal((10, 6)).astype(np.float32)
    probe[:, :2] = 0.0
    shifted = probe.copy()
    shifted[:, :2] = 3.0
    fits = {s: ALGAN(profile("smoke", kind="feature", **{"model.feature_scaling": s}), progress=False).fit(x)
            for s in ("standardise", "drop_constant")}
    drop, plain = fits["drop_constant"], fits["standardise"]
    assert drop.feature_std[:2].isinf().all() and torch.isfinite(drop.feature_std[2:]).all()
    np.testing.assert_array_equal(drop.decision_function(probe), drop.decision_function(shifted))
    assert np.abs(plain.decision_function(shifted)).max() > 1e3 * np.abs(plain.decision_function(probe)).max()
    fake = drop.generate(5)
    assert torch.isfinite(fake).all() and (fake[:, :2] == 0).all()  # dropped dims keep their training value
    with pytest.raises(ValueError, match="model.feature_scaling='zscore'"):
        profile("smoke", kind="feature", **{"model.feature_scaling": "zscore"})


@pytest.mark.parametrize("bad,match", [
    (np.full((4, 3), np.nan, dtype=np.float32), "NaN or inf"),
    (np.zeros((0, 3), dtype=np.float32), "empty"),
    (np.zeros((4, 3, 2, 2, 1), dtype=np.float32), "expected images"),
])
def test_bad_training_input(bad, match):
    with pytest.raises(ValueError, match=match):
        ALGAN("smoke", progress=False).fit(bad)


def test_wrong_resolution_and_channels():
    with pytest.raises(ValueError, match="model.image_size=32"):
        ALGAN("smoke", progress=False).fit(torch.zeros(4, 3, 64, 64))
    det = _fit(0)
    with pytest.raises(ValueError, match=r"expected \(N, 3, 32, 32\)"):
        det.decision_function(torch.zeros(2, 1, 32, 32))


def test_checkpoint_with_mismatching_config(tmp_path):
    det = _fit(0)
    det.save(tmp_path / "m.pt")
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    state["config"]["model"]["d_width"] = 16
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="do not match its config"):
        ALGAN.load(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not exist"):
        ALGAN.load(tmp_path / "missing.pt")


@pytest.mark.parametrize("x,match", [
    (torch.full((2, 3, 32, 32), 200, dtype=torch.uint8), r"uint8: expected float images in \[-1, 1\]"),
    (np.full((2, 3, 32, 32), 200, dtype=np.uint8), r"uint8: expected float images in \[-1, 1\]"),
    (torch.full((2, 3, 32, 32), 255.0), r"values in \[255, 255\]: expected images in \[-1, 1\]"),
    (torch.full((2, 3, 32, 32), 1.1), r"expected images in \[-1, 1\]"),
    (np.zeros((2, 3, 32, 32), dtype=np.complex64), "complex"),
    (np.full((2, 3, 32, 32), "a"), "expected an array of real numbers"),
], ids=["uint8 tensor", "uint8 array", "0..255 floats", "above 1", "complex", "strings"])
def test_scoring_refuses_images_outside_their_range(x, match):
    """0..255 images read as [-1, 1] would all score as normal (every defect missed): refused, not rescaled."""
    det = ALGAN.initialised(profile("smoke"), device="cpu")
    det.threshold_ = 0.0
    with pytest.raises(ValueError, match=match):
        det.decision_function(x)
    with pytest.raises(ValueError, match=match):
        det.predict(x)
    assert det.decision_function(torch.full((2, 3, 32, 32), -1.0005)).shape == (2,)  # within tolerance


def test_training_refuses_uint8_images_and_complex_features():
    with pytest.raises(ValueError, match="uint8: expected float images"):
        ALGAN("smoke", progress=False).fit(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    x_val = torch.zeros(2, 3, 32, 32)
    x_val[1, 0, 0, 0] = 255.0
    with pytest.raises(ValueError, match=r"X_val has values in \[0, 255\]"):
        ALGAN("smoke", progress=False).fit(torch.zeros(4, 3, 32, 32), X_val=x_val, y_val=[0, 1])
    with pytest.raises(ValueError, match="X is complex"):
        ALGAN(profile("smoke", kind="feature"), progress=False).fit(np.ones((8, 4), np.complex64))


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), -float("inf")])
def test_predict_needs_a_finite_threshold(threshold, tmp_path):
    det = ALGAN.initialised(profile("smoke"), device="cpu")
    det.threshold_ = threshold
    with pytest.raises(ValueError, match="expected a finite threshold"):
        det.predict(torch.zeros(2, 3, 32, 32))
    det.save(tmp_path / "m.pt")
    if np.isnan(threshold):  # a detector without a threshold loads (it scores), but predicts nothing
        assert np.isnan(ALGAN.load(tmp_path / "m.pt").threshold_)
    else:
        with pytest.raises(ValueError, match="threshold .*inf is not finite"):
            ALGAN.load(tmp_path / "m.pt")
