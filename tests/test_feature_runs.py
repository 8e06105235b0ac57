"""ALGAN-feature on rotated views, the Table 2 runs and their summary."""
import numpy as np
import pandas as pd
import pytest

from algan import ALGAN, claims, results
from algan.config import profile
from algan.pages import features as FT
from algan.runs import feature as RF

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (conftest)


def _views(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3, 8)).astype("float32")
    x_val = np.concatenate([rng.normal(size=(10, 3, 8)), 3 * rng.normal(size=(10, 3, 8))]).astype("float32")
    return x, x_val, np.r_[np.zeros(10), np.ones(10)]


def test_rotated_views_score_is_the_mean_over_views():
    x, x_val, y_val = _views()
    det = ALGAN(profile("smoke", kind="feature"), progress=False).fit(x, X_val=x_val, y_val=y_val)
    assert det.config.model.feature_dim == 8
    per_view = det.decision_function(x_val.reshape(-1, 8)).reshape(20, 3)
    np.testing.assert_allclose(det.decision_function(x_val), per_view.mean(1), rtol=1e-6)
    # the recorded validation AUROC is that of the view-averaged score
    from algan.score import auroc
    last = det.history_.dropna(subset=["val_auroc"]).iloc[-1]
    assert last["epoch"] == det.best_epoch_ or det.best_val_auroc_ >= last["val_auroc"]
    with pytest.raises(ValueError, match=r"\(N, R, 8\)"):
        det.decision_function(np.zeros((2, 3, 5), dtype="float32"))
    assert auroc(y_val, det.decision_function(x_val)) == pytest.approx(
        auroc(y_val, per_view.mean(1)))


def test_feature_run_on_adbench_is_cached(tmp_path, data_root):
    first = RF.run_feature("algan", "adbench", category="bottle", profile="smoke", seed=0,
                           data_root=data_root, runs_dir=tmp_path)
    m = first["metrics"]
    assert 0.0 <= m["test_auroc"] <= 1.0 and m["dim"] == 512
    assert m["n_train"] + m["n_val"] + m["n_test"] == 292
    scores = results.read_scores(first["folder"])
    assert set(scores["split"]) == {"val", "test"} and len(scores) == m["n_val"] + m["n_test"]
    ids = results.split_files(first["folder"])  # the row ids, kept once per split in _splits
    assert len(ids["test"]) == m["n_test"] and len(ids["train"]) == m["n_train"]
    again = RF.run_feature("algan", "adbench", category="bottle", profile="smoke", seed=0,
                           data_root=data_root, runs_dir=tmp_path)
    assert again["config"]["finished_utc"] == first["config"]["finished_utc"]


def test_feature_scaling_runs_reuse_table2_runs_and_add_the_option(tmp_path, data_root):
    plain = RF.run_feature("algan", "adbench", category="bottle", profile="smoke", seed=0,
                           data_root=data_root, runs_dir=tmp_path)
    rows = FT.feature_scaling_runs(profile="smoke", seeds=[0], categories=["bottle"], data_root=data_root,
                                   runs_dir=tmp_path, progress=False)
    test = rows[rows["metric"] == "test_auroc"].set_index("feature_scaling")
    assert test.loc["standardise", "run"] == plain["config"]["hash"]  # Table 2's run, not a new one
    assert test.loc["drop_constant", "run"] != plain["config"]["hash"]
    assert rows["first_val_auroc"].between(0, 1).all()
    summary = FT.feature_scaling_summary(rows)
    assert list(summary.index) == ["standardise", "drop_constant"] and (summary["runs"] == 1).all()
    assert claims.feature_scaling_verdict(summary).startswith("drop_constant: test AUROC over all categories")


def test_constant_dimensions_of_adbench_bottle(data_root):
    row = FT.constant_dimensions(seed=0, categories=["bottle"], data_root=data_root).loc["bottle"]
    assert 0 < row["constant dims"] < 512
    assert row["anomalous test rows off"] > row["normal test rows off"]  # the constant dims carry signal
    assert 0.5 < row["AUROC of the off-count"] <= 1.0


def test_baseline_run_on_adbench(tmp_path, data_root):
    run = RF.run_feature("mahalanobis", "adbench", category="bottle", profile="smoke", seed=0,
                         data_root=data_root, runs_dir=tmp_path)
    assert run["metrics"]["test_auroc"] > 0.8  # one Gaussian on ResNet-18 features separates bottle well
    assert run["metrics"]["input"] == "pooled"


def test_table2_rejects_bad_names_before_any_run(tmp_path, data_root):
    with pytest.raises(ValueError, match="methods"):
        FT.table2(methods=["algan", "patchcore_50"], data_root=data_root, runs_dir=tmp_path)
    with pytest.raises(ValueError, match="sources"):
        FT.table2(sources=["imagenet"], data_root=data_root, runs_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_table2_missing_source_is_a_row(tmp_path):
    tidy = FT.table2(sources=["adbench"], data_root=tmp_path, runs_dir=tmp_path / "runs", progress=False)
    assert list(tidy["metric"]) == ["missing_data"]
    assert "adbench" in tidy["note"].iloc[0]


def test_summary_groups_textures_and_objects():
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.1)):
        for cat, v in (("carpet", 0.6), ("wood", 0.8), ("bottle", 0.9)):
            rows.append({"source": "adbench", "category": cat, "method": "algan", "seed": seed,
                         "backbone": "resnet18 (ADBench)", "metric": "test_auroc", "value": v + shift})
    s = FT.table2_summary(pd.DataFrame(rows)).set_index("group")
    assert s.loc["Texture", "mean"] == pytest.approx(0.75)
    assert s.loc["Object", "mean"] == pytest.approx(0.95)
    assert s.loc["ALL", "mean"] == pytest.approx((2.3 / 3 + 2.6 / 3) / 2)
    assert s.loc["ALL", "std"] == pytest.approx(np.std([2.3 / 3, 2.6 / 3], ddof=1))
    assert s.loc["ALL", "paper"] == 0.911
    rows.append({**rows[0], "source": "mtd", "category": "mtd", "backbone": "efficientnet_lite0", "value": 0.7})
    tables = FT.table2_display(FT.table2_summary(pd.DataFrame(rows)))
    assert tables["mvtec"].loc["PatchCore-25", "paper, ALL"] == "0.991"
    assert tables["mvtec"].loc["PatchCore-25", "ours, ALL"] == "not run"
    assert tables["mvtec"].loc["ALGAN-feature", "ours, Texture"] == "0.750 ± 0.071"
    assert tables["images"].loc["ALGAN-feature", "mtd (efficientnet_lite0)"] == "0.700"
