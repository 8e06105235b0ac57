"""CutPaste (Li et al. 2021): the augmentations' geometry, the classifier, the Gaussian density, the API, Table 2."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from algan import results
from algan.models import CutPaste, cutpaste as cp
from algan.models.feature_baselines import MahalanobisAD
from algan.pages import features as FT
from algan.runs import feature as RF

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small networks (conftest)


def test_paper_settings_are_declared_once_and_profiles_derive_from_them():
    p = cp.PAPER
    assert p["area"] == (0.02, 0.15) and p["aspect"] == (0.3, 3.3) and p["jitter"] == 0.1
    assert p["scar_width"] == (2, 16) and p["scar_length"] == (10, 25) and p["scar_rotation"] == (-45, 45)
    assert (p["lr"], p["momentum"], p["steps"], p["batch_size"]) == (0.03, 0.9, 256, 64)
    for name in ("cpu", "smoke"):  # the augmentation and the optimiser are the paper's at every profile
        s = cp.settings(name)
        assert all(s[k] == p[k] for k in ("area", "aspect", "jitter", "scar_width", "scar_length", "lr", "momentum"))
    with pytest.raises(ValueError, match="unknown profile"):
        cp.settings("gpu")


def test_cutpaste_patch_area_and_aspect_stay_in_the_papers_ranges():
    gen, size = torch.Generator().manual_seed(0), 256
    boxes = cp.cutpaste_boxes(3000, size, size, gen, cp.PAPER["area"], cp.PAPER["aspect"])
    shares = np.array([h * w / size ** 2 for h, w, *_ in boxes])
    ratios = np.array([w / h for h, w, *_ in boxes])
    for h, w, y0, x0, y1, x1 in boxes:
        assert 0 <= y0 <= size - h and 0 <= y1 <= size - h and 0 <= x0 <= size - w and 0 <= x1 <= size - w
    assert shares.min() >= 0.02 - 0.002 and shares.max() <= 0.15 + 0.003  # pixel rounding only
    assert ratios.min() >= 0.3 * 0.96 and ratios.max() <= 3.3 * 1.04
    assert shares.min() < 0.025 and shares.max() > 0.145 and ratios.min() < 0.33 and ratios.max() > 3.0
    assert 0.45 < (ratios < 1).mean() < 0.55  # log-uniform: as often tall as wide


def test_cutpaste_moves_the_source_patch_and_changes_nothing_else():
    images = torch.rand(16, 3, 64, 64) * 2 - 1
    out = cp.cutpaste(images, torch.Generator().manual_seed(3), 0.0, area=cp.PAPER["area"], aspect=cp.PAPER["aspect"])
    boxes = cp.cutpaste_boxes(16, 64, 64, torch.Generator().manual_seed(3), cp.PAPER["area"], cp.PAPER["aspect"])
    moved = 0
    for i, (h, w, y0, x0, y1, x1) in enumerate(boxes):
        # without jitter the pasted region is the source patch, and only the pasted region changes
        torch.testing.assert_close(out[i, :, y1:y1 + h, x1:x1 + w], images[i, :, y0:y0 + h, x0:x0 + w], atol=1e-6,
                                   rtol=0)
        outside = (out[i] != images[i]).any(0)
        outside[y1:y1 + h, x1:x1 + w] = False
        assert not outside.any()
        if (y0, x0) != (y1, x1):
            moved += 1
            assert (out[i, :, y1:y1 + h, x1:x1 + w] != images[i, :, y1:y1 + h, x1:x1 + w]).any()
    assert moved >= 14
    jittered = cp.cutpaste(images, torch.Generator().manual_seed(3), 0.1, area=cp.PAPER["area"], hue=0.1)
    assert jittered.min() >= -1 and jittered.max() <= 1


def test_scar_sizes_rotation_and_pasted_pixels():
    params = cp.scar_params(3000, torch.Generator().manual_seed(0))
    w, ln, angle = (np.array(v) for v in zip(*params))
    assert (w.min(), w.max(), ln.min(), ln.max()) == (2, 16, 10, 25)  # integers, both ends reached
    assert angle.min() >= -45 and angle.max() <= 45 and angle.min() < -44 and angle.max() > 44
    small = cp.scar_params(500, torch.Generator().manual_seed(0), scale=64 / 256)  # sizes scale with the image
    assert min(s[0] for s in small) >= 1 and max(s[0] for s in small) == 4 and max(s[1] for s in small) == 6
    images = torch.rand(64, 3, 256, 256) * 2 - 1
    out, masks = cp.scar(images, torch.Generator().manual_seed(1), return_masks=True)
    area = masks.flatten(1).sum(1).numpy()
    expected = np.array([a * b for a, b, _ in cp.scar_params(64, torch.Generator().manual_seed(1))])
    assert np.all(area >= 0.6 * expected) and np.all(area <= 1.4 * expected)  # a rotated w x l patch
    assert not (out != images).any(1)[~masks].any()  # nothing changes outside the scar


def test_augmented_batch_labels():
    x = torch.rand(5, 3, 32, 32) * 2 - 1
    batch, labels = cp.augmented_batch(x, torch.Generator().manual_seed(0), "3way")
    assert batch.shape == (15, 3, 32, 32) and labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    torch.testing.assert_close(batch[:5], x)
    batch, labels = cp.augmented_batch(x, torch.Generator().manual_seed(0), "binary")
    assert batch.shape == (10, 3, 32, 32) and labels.tolist() == [0] * 5 + [1] * 5


def test_gaussian_density_gives_the_analytic_mahalanobis_distance():
    rng = np.random.default_rng(0)
    mean = np.array([1.0, -2.0, 0.5])
    a = rng.standard_normal((3, 3))
    cov = a @ a.T + 0.5 * np.eye(3)
    x = rng.multivariate_normal(mean, cov, size=40000)
    gde = MahalanobisAD().fit(x)  # CutPaste's density estimator (Ledoit-Wolf, the distance, not squared)
    test = rng.multivariate_normal(mean, cov, size=200) + rng.normal(0, 2, size=(200, 3))
    d = test - mean
    analytic = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d))
    np.testing.assert_allclose(gde.decision_function(test), analytic, rtol=0.03, atol=0.02)


@pytest.fixture(scope="module")
def bottle(data_root):
    from algan.data import load_dataset

    return load_dataset("mvtec", data_root, category="bottle", image_size=32, seed=0)


@pytest.fixture(scope="module")
def fitted(bottle):
    """Smoke CutPaste (binary) on 160 of bottle's 209 training images; the other 49 are held out."""
    return CutPaste("smoke", seed=0, variant="binary", steps=40).fit(bottle.train.x[:160])


def test_classifier_separates_held_out_cutpaste_images(fitted, bottle):
    held_out = bottle.train.x[160:]
    batch, labels = cp.augmented_batch(held_out, torch.Generator().manual_seed(123), "binary", fitted.settings)
    accuracy = (fitted.logits(batch).argmax(1) == labels.numpy()).mean()
    assert accuracy > 0.85  # chance is 0.5 (0.96 measured)
    assert fitted.history[-1]["step"] == 40 and len(fitted.history) == 40


def test_scores_are_the_gaussians_distances_on_the_embeddings(fitted, bottle):
    test = bottle.test.x
    emb = fitted.embed(test)
    assert emb.shape == (len(test), fitted.embedding_dim_) and fitted.embedding_dim_ == 1280
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, rtol=1e-6)  # L2-normalised, as [PT]
    s = fitted.decision_function(test)
    assert s.shape == (len(test),) and s.dtype == np.float64
    np.testing.assert_allclose(s, MahalanobisAD().fit(fitted.embed(bottle.train.x[:160])).decision_function(emb))
    np.testing.assert_allclose(fitted.decision_function(test[:5]), s[:5], rtol=1e-5)  # not on the other images
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(bottle.test.y.numpy(), s) > 0.7


def test_grey_images_and_resizing(bottle):
    grey = bottle.train.x[:12].mean(1, keepdim=True)
    det = CutPaste("smoke", steps=1, batch_size=4, head=(8,)).fit(grey)
    assert det.decision_function(grey).shape == (12,)
    with pytest.raises(ValueError, match=r"expected \(N, 1, 32, 32\) as in fit"):
        det.decision_function(bottle.train.x[:2])


def test_bad_input_and_settings(fitted, bottle):
    x = bottle.test.x[:4]
    with pytest.raises(ValueError, match="not fitted"):
        CutPaste("smoke").decision_function(x)
    with pytest.raises(ValueError, match=r"expected \(N, 3, 32, 32\) as in fit"):
        fitted.decision_function(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"expected images \(N, 1 or 3, H, W\)"):
        fitted.decision_function(x[0])
    bad = x.clone()
    bad[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf in 1 sample"):
        fitted.decision_function(bad)
    with pytest.raises(ValueError, match="convert 0..255 images"):
        fitted.decision_function(((x + 1) * 127.5).to(torch.uint8))
    with pytest.raises(ValueError, match=r"expected images in \[-1, 1\]"):
        fitted.decision_function((x + 1) * 127.5)
    with pytest.raises(ValueError, match="at least 2 training images"):
        CutPaste("smoke").fit(x[:1])
    with pytest.raises(ValueError, match="unknown CutPaste setting"):
        CutPaste("smoke", epochs=3)
    with pytest.raises(ValueError, match="variant="):
        CutPaste("smoke", variant="4way")


def test_table2_run_on_bottle_and_not_applicable_on_adbench(tmp_path, data_root):
    run = RF.run_feature("cutpaste", "mvtec", category="bottle", profile="smoke", seed=0,
                         overrides={"steps": 2}, data_root=data_root, runs_dir=tmp_path)
    m = run["metrics"]
    assert 0 <= m["test_auroc"] <= 1 and m["dim"] == 1280 and m["steps"] == 2 and m["input"] == "images 32 px"
    assert run["config"]["args"]["backbone"] == "efficientnet_lite0"
    assert run["config"]["resolved"]["area"] == [0.02, 0.15]
    scores = results.read_scores(run["folder"])
    assert len(scores) == m["n_val"] + m["n_test"]
    # the split is the other Table 2 runs' (same files per seed)
    from algan.data import load_dataset
    assert m["split_hash"] == load_dataset("mvtec", data_root, category="bottle", image_size=8, seed=0).split_hash()
    with pytest.raises(ValueError, match="not applicable"):
        RF.run_feature("cutpaste", "adbench", category="bottle", profile="smoke", data_root=data_root,
                       runs_dir=tmp_path)
    rows = FT.table2(profile="smoke", methods=["cutpaste"], sources=["adbench"], data_root=data_root,
                     runs_dir=tmp_path, progress=False)
    assert rows["metric"].tolist() == ["not_applicable"] and "pooled" in rows["note"].iloc[0]
    tidy = pd.DataFrame(RF.tidy(run))
    shown = FT.table2_display(FT.table2_summary(tidy))
    assert shown["mvtec"].loc["CutPaste", "ours, ALL"] == "not applicable"
    assert shown["mvtec"].loc["CutPaste", "paper, ALL"] == "0.961"
    assert "CutPaste" in shown["images"].index
    assert math.isfinite(float(shown["images"].loc["CutPaste"].iloc[0]))


def test_resnet18_is_optional(monkeypatch, tmp_path):
    from algan.extract import BackboneError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # a hub cache without ResNet-18's weights
    assert cp.default_backbone("paper") == "efficientnet_lite0" and cp.PAPER["backbone"] == "resnet18"
    assert CutPaste("paper").settings["backbone"] == "efficientnet_lite0"
    with pytest.raises(BackboneError, match=r"resnet18-f37072fd\.pth.*efficientnet_lite0"):
        CutPaste("smoke", backbone="resnet18").fit(torch.zeros(4, 3, 32, 32))
