"""The raw-pixel kNN reference: exact scores, same split as ALGAN, persistence, bad input."""
import json

import numpy as np
import pytest
import torch

from algan import claims, results
from algan.models.knn import PixelKNN
from algan.pages import images as IM


def test_scores_equal_numpy_brute_force():
    g = torch.Generator().manual_seed(0)
    train, test = torch.rand(12, 3, 8, 8, generator=g) * 2 - 1, torch.rand(5, 3, 8, 8, generator=g) * 2 - 1
    det = PixelKNN(size=8, k=3).fit(train)  # size = input size: the resize is the identity
    a, b = train.flatten(1).numpy(), test.flatten(1).numpy()
    dists = np.sqrt(((b[:, None, :] - a[None, :, :]) ** 2).sum(-1))
    expected = np.sort(dists, 1)[:, :3].mean(1)
    np.testing.assert_allclose(det.decision_function(test), expected, rtol=1e-5)


def test_save_load_round_trip(tmp_path):
    g = torch.Generator().manual_seed(1)
    train, test = torch.rand(10, 1, 16, 16, generator=g), torch.rand(4, 1, 16, 16, generator=g)
    det = PixelKNN(size=4).fit(train, X_val=test, y_val=np.array([0, 0, 1, 1]))
    det.save(tmp_path / "knn.pt")
    back = PixelKNN.load(tmp_path / "knn.pt")
    np.testing.assert_array_equal(det.decision_function(test), back.decision_function(test))
    assert back.threshold_ == det.threshold_


def test_bad_input():
    train = torch.zeros(3, 3, 16, 16)
    with pytest.raises(ValueError, match="k=5 neighbours requested but the training set has 3"):
        PixelKNN(k=5).fit(train)
    det = PixelKNN(size=4).fit(train)
    with pytest.raises(ValueError, match=r"expected \(3, 16, 16\)"):
        det.decision_function(torch.zeros(2, 3, 32, 32))


def test_same_split_as_algan(tmp_path, data_root):
    tidy = IM.image_auroc_table("mvtec", profile="smoke", categories=["bottle"], data_root=data_root,
                                runs_dir=tmp_path, progress=False, methods=("algan", "knn"))
    auc = tidy[tidy.metric == "test_auroc"].set_index("method")
    files = {m: results.split_files(tmp_path / auc.loc[m, "run"]) for m in auc.index}
    assert files["algan"] == files["knn"]
    assert auc.loc["knn", "split_hash"] == auc.loc["algan", "split_hash"]
    assert 0.5 < auc.loc["knn", "value"] <= 1.0  # pixels separate broken bottles from good ones


def test_below_reference_sentence():
    import pandas as pd
    summary = pd.DataFrame({"dataset": ["mvtec"] * 4, "category": ["bottle", "bottle", "cable", "cable"],
                            "method": ["algan", "knn", "algan", "knn"], "mean": [0.90, 0.95, 0.80, 0.70]})
    text = claims.below_reference(summary)
    assert "bottle (0.900 vs 0.950)" in text and "cable" not in text
    assert "Every method is above" in claims.below_reference(summary.iloc[2:])


def test_margin_over_baselines_sentence():
    import pandas as pd
    summary = pd.DataFrame({"category": ["bottle"] * 3, "method": ["algan", "ganomaly", "alocc"],
                            "mean": [0.88, 0.80, 0.96]})
    text = claims.margin_over_baselines(summary)
    assert "GANomaly +10.0 %" in text and "ALOCC -8.3 %" in text and "Skip" not in text
    assert "No GAN baseline" in claims.margin_over_baselines(summary.iloc[:1])
