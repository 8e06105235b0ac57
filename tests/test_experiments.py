"""The run cache: one folder per argument hash, `done` last, resume after interruption, never repeat."""
import json

import pandas as pd
import pytest

from algan import config, results
from algan.pages import images as IM
from algan.runs import image as RI


def test_cached_run_never_repeats_and_resumes(tmp_path):
    calls = []

    def work(folder):
        calls.append(folder)
        (folder / "out.txt").write_text("x")
        return {"value": 1.5}

    args = {"task": "t", "seed": 0}
    first = results.cached_run(args, work, tmp_path)
    second = results.cached_run(args, work, tmp_path)
    assert len(calls) == 1 and first["metrics"] == second["metrics"] == {"value": 1.5}
    folder = first["folder"]
    assert folder.name == results.config_hash(args) and (folder / "done").exists()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["args"] == args and cfg["wall_seconds"] >= 0 and "commit" in cfg and "device" in cfg
    # the hash does not depend on key order
    assert results.config_hash({"seed": 0, "task": "t"}) == folder.name

    # an interrupted run (no `done`) is cleared and redone
    def crash(folder):
        (folder / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        results.cached_run({"task": "t", "seed": 1}, crash, tmp_path)
    broken = results.run_dir({"task": "t", "seed": 1}, tmp_path)
    assert broken.exists() and not results.is_done(broken)
    redone = results.cached_run({"task": "t", "seed": 1}, work, tmp_path)
    assert results.is_done(redone["folder"]) and not (redone["folder"] / "partial.txt").exists()


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    results.write_json(path, {"a": 1})
    with pytest.raises(RuntimeError):
        with results.atomic_path(path) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("boom")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_image_table_smoke_on_real_bottle(tmp_path, data_root):
    tidy = IM.image_auroc_table("mvtec", profile="smoke", categories=["bottle"], data_root=data_root,
                                runs_dir=tmp_path, progress=False, methods=("algan",))
    auc = tidy[tidy.metric == "test_auroc"]
    assert len(auc) == 1 and 0.0 <= auc.value.iloc[0] <= 1.0
    assert {"profile", "seed", "device", "commit", "wall_seconds", "split_hash"} <= set(tidy.columns)
    folder = tmp_path / auc.run.iloc[0]
    splits = results.split_files(folder)  # the file lists, kept once per split beside the run folders
    assert len(splits["train"]) == 209 and len(splits["test"]) == 42
    assert json.loads((folder / "splits.json").read_text())["files"] == f"../_splits/{auc.split_hash.iloc[0]}.json"
    assert (folder / "scores.npz").is_file() and not (folder / "scores.csv").exists()
    scores = results.read_scores(folder)
    assert sorted(scores.split.unique()) == ["test", "val"] and len(scores) == 83
    assert list(scores.columns) == ["split", "label", "score"] and scores.score.dtype == "float32"  # split order
    assert scores.loc[scores.split == "val", "score"].isna().all() and scores.loc[scores.split == "test", "score"].notna().all()
    assert (folder / "history.csv.gz").exists() and (folder / "samples.png").exists()  # a reading's point: Figure 1's
    assert results.read_history(folder)["epoch"].tolist() == list(range(1, len(results.read_history(folder)) + 1))
    size = sum(f.stat().st_size for f in folder.iterdir() if f.name not in ("model.pt", "samples.png"))
    assert size < 20_000, size  # what results/ keeps of a run, less the figure's samples
    summary = IM.summarize(tidy)
    assert summary.paper_mean.iloc[0] == 0.948  # Tables 8/10, bottle at the defaults


def test_only_runs_a_figure_shows_keep_samples():
    def args(overrides, dataset="mvtec", category="bottle", method="algan"):
        return RI.image_run_args(method, dataset, category, "cpu", 0, overrides)

    active = config.reading_overrides("active")
    assert RI.shows_samples(args({})) and RI.shows_samples(args(active))  # Figure 1's
    assert RI.shows_samples(args({**active, "train.fake_bn_stats": "batch"}))  # the readings page's
    assert not RI.shows_samples(args({"train.sigma": 2.0}))  # a study's variation
    assert not RI.shows_samples(args({**active, "train.use_buffer": False}))
    assert not any(RI.shows_samples(args(over)) for over in IM.READINGS.values() if over)
    assert not RI.shows_samples(args({}, "mtd", None))
    assert not RI.shows_samples(args(active, "mvtec", "cable"))
    assert not RI.shows_samples(args({}, method="ganomaly"))


def test_a_table_shows_another_reading_from_finished_runs_only(tmp_path, data_root):
    kw = dict(profile="smoke", categories=["bottle"], data_root=data_root, runs_dir=tmp_path, progress=False,
              methods=("algan",), also={"active": ("algan",)})
    before = IM.image_auroc_table("mvtec", **kw)
    assert len([p for p in tmp_path.iterdir() if p.name != "_splits"]) == 1  # the literal run, not the active
    assert "1 of 1 runs not made yet" in before.loc[before.metric == "missing_data", "note"].iloc[0]
    RI.run_image("algan", "mvtec", category="bottle", profile="smoke", data_root=data_root,
                 runs_dir=tmp_path, overrides=config.reading_overrides("active"))
    after = IM.image_auroc_table("mvtec", **kw)
    assert "missing_data" not in set(after.metric)
    assert set(after.reading) == {"literal", "active"}
    summary = IM.summarize(after)
    assert set(summary.method) == {"algan", "algan [active]"}
    assert RI.method_label("algan [active]") == "ALGAN-image (active reading)"
    table = IM.auroc_table(summary)
    assert list(zip(table["method"], table["reading"])) == [("ALGAN-image", "literal"), ("ALGAN-image", "active")]
    assert (table["ours − paper"] != "").all()  # both readings are compared with the paper's number


def test_an_override_equal_to_the_profile_names_the_profiles_run():
    """run_image and the sweep runner name a run alike: a reading's key at the profile's value drops out."""
    from algan.sweep import make_spec
    over = {"train.fake_bn_stats": "running", "train.buffer_size": "data"}
    args = RI.image_run_args("algan", "mvtec", "bottle", "cpu", 0, over)
    assert args["overrides"] == {"train.buffer_size": "data"}
    assert make_spec("algan", "mvtec", "bottle", "cpu", 0, over).hash == results.config_hash(args)


def test_missing_data_set_is_one_row_not_a_traceback(tmp_path):
    (tmp_path / "root").mkdir()
    tidy = IM.image_auroc_table("mtd", profile="smoke", data_root=tmp_path / "root",
                                runs_dir=tmp_path / "runs", progress=False)
    assert list(tidy.metric) == ["missing_data"] * 2 and "mtd" in tidy.note.iloc[0]  # one row per method
    assert not (tmp_path / "runs").exists()


def test_unknown_profile_fails_at_once():
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        IM.image_auroc_table("mvtec", profile="gpu")


def test_changed_defaults_invalidate_a_finished_run(tmp_path):
    calls = []
    work = lambda folder: calls.append(1) or {"v": len(calls)}  # noqa: E731
    results.cached_run({"task": "t"}, work, tmp_path, resolved={"sigma": 4.0})
    results.cached_run({"task": "t"}, work, tmp_path, resolved={"sigma": 4.0})
    assert len(calls) == 1
    run = results.cached_run({"task": "t"}, work, tmp_path, resolved={"sigma": 5.0})
    assert len(calls) == 2 and run["config"]["resolved"] == {"sigma": 5.0}


def test_a_setting_added_later_keeps_old_runs_only_at_the_value_they_used(tmp_path):
    calls = []
    work = lambda folder: calls.append(1) or {"v": len(calls)}  # noqa: E731
    old = {"model": {"kind": "feature"}, "train": {}}  # stored before model.feature_scaling existed
    results.cached_run({"task": "t"}, work, tmp_path, resolved=old)
    results.cached_run({"task": "t"}, work, tmp_path,
                       resolved={"model": {"kind": "feature", "feature_scaling": "standardise"}, "train": {}})
    assert len(calls) == 1
    results.cached_run({"task": "t"}, work, tmp_path,
                       resolved={"model": {"kind": "feature", "feature_scaling": "drop_constant"}, "train": {}})
    assert len(calls) == 2


def test_empty_root_gives_missing_rows(tmp_path):
    (tmp_path / "root").mkdir()
    tidy = IM.image_auroc_table("mvtec", profile="smoke", data_root=tmp_path / "root",
                                runs_dir=tmp_path / "runs", progress=False)
    assert set(tidy.metric) == {"missing_data"} and "mvtec" in tidy.note.iloc[0]
    fig1 = IM.figure1_samples(profile="smoke", data_root=tmp_path / "root", runs_dir=tmp_path / "runs")
    assert list(fig1.metric) == ["missing_data"]


def test_score_aurocs_one_row_per_dataset_reading_seed_and_saved(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    scores = pd.DataFrame({"label": [0, 0, 1, 1, 0, 1], "score": [0.1, 0.5, 0.4, 0.9, 0.2, 0.3],
                           "dataset": "mtd", "reading": "literal", "seed": [0, 0, 0, 0, 1, 1],
                           "profile": "smoke", "run": ["a"] * 4 + ["b"] * 2})
    table = IM.score_aurocs(scores, save_as="fig5_histograms", profile="smoke")
    assert list(table["seed"]) == [0, 1] and list(table["run"]) == ["a", "b"]
    assert table["value"].tolist() == [0.75, 1.0]
    assert table[["normal", "anomalous"]].values.tolist() == [[2, 2], [1, 1]]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "fig5_histograms_smoke.csv"), table, check_dtype=False)


def test_figure1_saves_its_rows_without_local_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    (tmp_path / "root").mkdir()
    IM.figure1_samples(profile="smoke", data_root=tmp_path / "root", runs_dir=tmp_path / "runs",
                       save_as="fig1_samples")
    saved = pd.read_csv(tmp_path / "fig1_samples_smoke.csv")
    assert list(saved.metric) == ["missing_data"] and "samples" not in saved
