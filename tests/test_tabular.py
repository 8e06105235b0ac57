"""The tabular page (beyond the paper): the loader and its split, bad input, PyOD's detectors through the
wrapper, the smoke comparison and its tidy frame, the sweep's tabular runs, the claim."""
import shutil

import numpy as np
import pandas as pd
import pytest

from algan import claims, results, sweep
from algan.data import DataError
from algan.data.splits import fraction_counts
from algan.models.pyod_baselines import PYOD_MODELS, PyODDetector, scale_columns
from algan.pages import tabular as T
from algan.runs import tabular as RT
from algan.score import auroc

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_classical_set_is_found_in_order(data_root):
    sets = RT.tabular_sets(data_root)
    assert len(sets) == 16 and sets[0] == "7_Cardiotocography" and sets[-1] == "46_WPBC"


def test_split_fractions_normal_only_training_and_determinism(data_root):
    split = RT.load_tabular("12_fault", seed=1, profile="cpu", data_root=data_root)
    n0, n1 = 1268, 673  # the file's normal and anomalous rows
    assert (split.train.y == 0).all() and len(split.train) == fraction_counts(n0, [0.6, 0.2, 0.2])[0]
    assert [(s.y == 0).sum() for s in (split.val, split.test)] == fraction_counts(n0, [0.6, 0.2, 0.2])[1:]
    assert [(s.y == 1).sum() for s in (split.val, split.test)] == fraction_counts(n1, [0.5, 0.5])
    rows = np.concatenate([split.train.rows, split.val.rows, split.test.rows])
    assert len(np.unique(rows)) == n0 + n1  # every row once
    again = RT.load_tabular("12_fault", seed=1, profile="cpu", data_root=data_root)
    assert again.split_hash() == split.split_hash() and np.array_equal(again.test.x, split.test.x)
    assert RT.load_tabular("12_fault", seed=2, profile="cpu", data_root=data_root).split_hash() != split.split_hash()


def test_smoke_subset_is_the_same_rows_for_every_seed(data_root):
    a, b = (RT.load_tabular("43_WDBC", seed=s, profile="smoke", data_root=data_root) for s in (0, 1))
    rows = lambda s: set(np.concatenate([s.train.rows, s.val.rows, s.test.rows]).tolist())  # noqa: E731
    assert rows(a) == rows(b) and len(rows(a)) == 60 + 10  # 60 normal, all 10 anomalous rows of WDBC
    assert a.split_hash() != b.split_hash()


def _write(folder, name, **arrays):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{name}.npz", **arrays)
    return folder / f"{name}.npz"


GOOD = {"X": np.random.default_rng(0).normal(size=(40, 3)), "y": np.r_[np.zeros(34), np.ones(6)].astype(int)}


@pytest.mark.parametrize("arrays, message", [
    ({"X": GOOD["X"]}, r"arrays \['y'\] missing"),
    ({"y": GOOD["y"]}, r"arrays \['X'\] missing"),
    ({"X": np.array([["a", "b"]] * 40), "y": GOOD["y"]}, "expected real numbers"),
    ({"X": np.where(np.arange(120).reshape(40, 3) == 7, np.nan, GOOD["X"]), "y": GOOD["y"]}, "NaN or inf"),
    ({"X": GOOD["X"], "y": np.zeros(40, dtype=int)}, "0 anomalous rows"),
    ({"X": GOOD["X"], "y": np.r_[np.zeros(39), 1].astype(int)}, "1 anomalous rows"),  # none left for the test split
])
def test_bad_input_is_one_line_naming_the_file(tmp_path, arrays, message):
    path = _write(tmp_path, "bad", **arrays)
    with pytest.raises(DataError, match=message) as err:
        RT.load_tabular("bad", 0, folder=tmp_path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_bad_file_stops_the_study_before_any_training(tmp_path, data_root):
    folder = tmp_path / "root" / RT.TABULAR_DIR
    folder.mkdir(parents=True)
    shutil.copy(data_root / RT.TABULAR_DIR / "15_Hepatitis.npz", folder)
    _write(folder, "43_WDBC", X=GOOD["X"], y=np.zeros(40, dtype=int))
    runs = tmp_path / "runs"
    with pytest.raises(DataError, match="43_WDBC.npz"):
        T.tabular_study("smoke", data_root=tmp_path / "root", runs_dir=runs, executor="serial")
    assert not runs.exists() or not any(runs.iterdir())
    with pytest.raises(DataError, match="43_WDBC.npz: 40 normal and 0 anomalous rows"):  # the sweep's own check
        sweep.sweep({"method": "tabular:knn", "dataset": "classical", "category": "all", "seed": 0,
                     "profile": "smoke"}, data_root=tmp_path / "root", runs_dir=runs, executor="serial")
    assert not runs.exists() or not any(runs.iterdir())


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(120, 4))
    test = np.r_[rng.normal(size=(30, 4)), rng.normal(size=(10, 4)) + 6]
    return train, test, np.r_[np.zeros(30), np.ones(10)]


@pytest.mark.parametrize("name", list(PYOD_MODELS))
def test_each_pyod_detector_through_the_wrapper(name):
    train, test, y = _blobs()
    params = {"epochs": 2} if name == "deepsvdd" else {}
    det = PyODDetector(name, seed=0, **params).fit(train)
    scores = det.decision_function(test)
    assert scores.shape == (40,) and np.isfinite(scores).all()
    assert auroc(y, scores) > 0.9  # anomalies 6 sd away
    assert det.predict(test).shape == (40,)
    if name in ("iforest", "deepsvdd"):  # seeded: the same seed scores the same
        assert np.allclose(PyODDetector(name, seed=0, **params).fit(train).decision_function(test), scores)


def test_the_wrapper_drops_constant_columns_and_checks_its_input():
    train, test, _ = _blobs()
    mean, std = scale_columns(np.c_[train, np.ones(len(train))])
    assert np.isinf(std[-1]) and np.isfinite(std[:-1]).all()
    det = PyODDetector("knn").fit(np.c_[train, np.ones(len(train))])
    shifted = det.decision_function(np.c_[test, np.full(len(test), 1e6)])
    assert np.allclose(shifted, det.decision_function(np.c_[test, np.ones(len(test))]))  # the column is 0
    with pytest.raises(ValueError, match="expected 5 as in training"):
        det.decision_function(test)
    with pytest.raises(ValueError, match="unknown PyOD detector 'knnn'"):
        PyODDetector("knnn")


def test_algan_epochs_rule():
    assert RT.algan_epochs(214, "cpu") == 96 and RT.algan_epochs(4028, "cpu") == 8
    assert RT.algan_epochs(100_000, "cpu") == 4 and RT.algan_epochs(10, "paper") == 192
    assert RT.algan_epochs(5000, "smoke") == 2


def test_smoke_comparison_gives_the_tidy_frame(tmp_path, data_root, monkeypatch):
    monkeypatch.setattr("algan.results.RESULTS_DIR", tmp_path / "results")
    tidy, log = T.tabular_study("smoke", data_root=data_root, runs_dir=tmp_path / "runs", executor="serial",
                                methods=("algan", "knn", "iforest"), save_as="tabular")
    assert "done 9 (9 run now)" in log
    assert set(tidy["dataset"]) == {"15_Hepatitis", "21_Lymphography", "43_WDBC"}
    assert set(tidy.loc[tidy["method"] == "algan", "metric"]) == set(RT.METRICS)
    assert set(tidy.loc[tidy["method"] == "knn", "metric"]) == {"test_auroc", "val_auroc"}
    assert tidy.groupby("dataset")["split_hash"].nunique().eq(1).all()  # every method, the same split
    assert (tidy["profile"] == "smoke").all() and tidy["value"].between(0, 1).all()
    assert (tmp_path / "results" / "tabular_smoke.csv").is_file()
    rows = T.comparison_rows(tidy)
    assert set(rows["method"]) == {RT.ALGAN_VAL, RT.ALGAN_LAST, "KNN", "IForest"}
    table = T.results_table(rows)
    assert list(table.index[-2:]) == ["mean AUROC", "average rank"] and len(table) == 3 + 2
    assert table.loc["21_Lymphography", "test anomalies"].endswith("⚠")  # 3 anomalous test rows
    summary = T.method_summary(rows)
    assert set(summary.index) == set(rows["method"]) and summary["average rank"].is_monotonic_increasing
    assert summary.loc[RT.ALGAN_LAST, "mean AUROC"] == pytest.approx(
        tidy.query("method == 'algan' and metric == 'test_auroc_last'")["value"].mean())
    ax = T.results_heatmap(rows)
    assert [t.get_text() for t in ax.get_yticklabels()][1] == "21_Lymphography (3 ⚠)"
    sizes = T.set_sizes(tidy)
    assert sizes.loc["43_WDBC", "train rows"] == "36" and sizes["flag"].str.startswith("<").all()
    again, log = T.tabular_study("smoke", data_root=data_root, runs_dir=tmp_path / "runs", executor="serial",
                                 methods=("algan", "knn", "iforest"))
    assert "done 9 (0 run now)" in log and len(again) == len(tidy)  # from the run cache
    run = results.load_run(tmp_path / "runs" / tidy.loc[tidy["method"] == "algan", "run"].iloc[0])
    scores = results.read_scores(run["folder"])
    assert set(scores["checkpoint"]) == {"chosen", "last"}
    ids = results.split_files(run["folder"])  # kept once per split, shared by the set's methods
    assert sorted(scores.loc[(scores["split"] == "test") & (scores["checkpoint"] == "chosen"), "id"]) == sorted(ids["test"])
    assert len(list((tmp_path / "runs" / "_splits").glob("*.json"))) == 3


def test_ranks_and_tests_on_a_known_grid():
    wide = pd.DataFrame({"A": [0.9, 0.8, 0.95, 0.7], "B": [0.8, 0.7, 0.9, 0.6], "C": [0.7, 0.9, 0.5, 0.5]},
                        index=list("wxyz"))
    assert claims.average_ranks(wide).to_dict() == {"A": 1.25, "B": 2.25, "C": 2.5}
    test = claims.friedman_nemenyi(wide)
    assert 0 < test["p"] < 1 and test["cd"] == pytest.approx(3.314 * np.sqrt(3 * 4 / (6 * 4)) / np.sqrt(2), rel=1e-3)
    w = T.wilcoxon_against(wide, "A").set_index("against")
    assert w.loc["B", "wins"] == 4 and (w["p (Holm)"] >= w["p"]).all()


def test_sweep_expands_the_tabular_grid(data_root):
    specs = sweep.expand_grid(T.tabular_grid("cpu", data_root=data_root), data_root=data_root)
    assert len(specs) == 16 * len(RT.METHODS) * 3 and {s.kind for s in specs} == {"tabular"}
    one = [s for s in specs if s.kwargs["category"] == "43_WDBC" and s.kwargs["seed"] == 0]
    assert {s.method for s in one} == {RT.PREFIX + m for m in RT.METHODS}
    assert one[0].hash == results.config_hash(RT.tabular_run_args(one[0].kwargs["method"], "43_WDBC", "cpu", 0))
    with pytest.raises(ValueError, match="not tabular sets"):
        sweep.expand_grid({"method": "tabular:knn", "dataset": "classical", "category": "bottle", "seed": 0,
                           "profile": "smoke"}, data_root=data_root)
    with pytest.raises(ValueError, match="tabular methods"):
        sweep.expand_grid({"method": "tabular:knn", "dataset": "adbench", "category": "bottle", "seed": 0,
                           "profile": "smoke"}, data_root=data_root)


def _tabular_rows(algan_last, best_other, seeds=(0, 1, 2), spread=0.002):
    rows = []
    for s in seeds:
        for d in ("a", "b"):
            rows += [{"dataset": d, "method": "algan", "seed": s, "metric": "test_auroc_last",
                      "value": algan_last + spread * s},
                     {"dataset": d, "method": "algan", "seed": s, "metric": "test_auroc", "value": algan_last + 0.01},
                     {"dataset": d, "method": "iforest", "seed": s, "metric": "test_auroc",
                      "value": best_other + spread * s},
                     {"dataset": d, "method": "knn", "seed": s, "metric": "test_auroc", "value": best_other - 0.1}]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("algan_last, best_other, want", [
    (0.90, 0.901, "reproduced"), (0.70, 0.90, "not reproduced")])
def test_the_tabular_claim_by_the_ledgers_rule(algan_last, best_other, want):
    frame = claims.ledger("cpu", frames={"tabular": _tabular_rows(algan_last, best_other)})
    row = frame[frame["page"] == "tabular"]
    assert len(row) == 2 and set(row["status"]) == {want}  # the same under both readings
    assert "iforest" in row["ours"].iloc[0]


def test_the_tabular_claim_is_not_tested_without_results():
    row = claims.ledger("cpu", frames={}).query("page == 'tabular'")
    assert set(row["status"]) == {"not tested"}
