"""A run's scores in their compact form (results.write_scores / read_scores), the older scores.csv still read,
tools/compact_runs.py converting a cache in place, and what a new run adds to results/."""
import importlib.util
import json
import re

import numpy as np
import pandas as pd
import pytest

from algan import results
from algan.runs import image as RI

TOOL = results.REPO_ROOT / "tools" / "compact_runs.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("compact_runs", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores_frame(n_val=40, n_test=60, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    return pd.concat([pd.DataFrame({"split": name, "label": rng.integers(0, 2, n),
                                    "score": rng.normal(size=n).astype(dtype)})
                      for name, n in (("val", n_val), ("test", n_test))])


def test_scores_read_back_exactly_in_their_own_dtypes(tmp_path):
    f32 = scores_frame(dtype="float32")
    f32.iloc[3, 2] = np.nan  # a missing score stays missing
    results.write_scores(tmp_path, f32)
    back = results.read_scores(tmp_path)
    assert back.equals(f32.reset_index(drop=True)) and back.dtypes.equals(f32.dtypes)
    assert back["score"].to_numpy().tobytes() == f32["score"].to_numpy().tobytes()  # float32, bit for bit
    f64 = scores_frame(dtype="float64").assign(group=lambda f: np.where(f["label"] == 1, "fake", "real"),
                                               flagged=lambda f: f["score"] > 0)
    assert not np.array_equal(f64["score"].astype("float32"), f64["score"])  # values float32 cannot hold
    results.write_scores(tmp_path, f64)
    back = results.read_scores(tmp_path)
    assert back.equals(f64.reset_index(drop=True)) and back.dtypes.equals(f64.dtypes)
    assert list(back.columns) == ["split", "label", "score", "group", "flagged"]
    assert back["score"].to_numpy().tobytes() == f64["score"].to_numpy().tobytes()
    # a float64 column of float32 values is kept in 4 bytes a value, and read back as float64
    widened = f32.astype({"score": "float64"})
    results.write_scores(tmp_path, widened)
    assert results.read_scores(tmp_path).equals(widened.reset_index(drop=True))
    assert np.load(tmp_path / "scores.npz")["score.bytes"].shape == (4, 100)


def test_a_column_of_the_splits_file_lists_is_rebuilt_not_kept(tmp_path):
    folder = tmp_path / "runs" / "abc"
    files = {"train": ["a.png"], "val": [f"v{i}.png" for i in range(40)], "test": [f"t{i}.png" for i in range(60)]}
    results.write_splits(folder, {"split_hash": "h"}, files)
    frame = scores_frame()
    frame.insert(1, "path", files["val"] + files["test"])
    results.write_scores(folder, frame)
    assert not any(name.startswith("path") for name in np.load(folder / "scores.npz").files)
    back = results.read_scores(folder)
    assert back.equals(frame.reset_index(drop=True)) and back.dtypes.equals(frame.dtypes)
    # two checkpoints' rows (tabular runs): each split's whole list again, in order
    ids = {"val": list(range(5)), "test": list(range(5, 8))}
    results.write_splits(tmp_path / "runs" / "tab", {"split_hash": "t"}, ids)
    rows = pd.DataFrame({"split": ["val"] * 5 + ["test"] * 3, "id": ids["val"] + ids["test"], "score": 0.5})
    both = pd.concat([rows.assign(checkpoint="chosen"), rows.assign(checkpoint="last")])
    results.write_scores(tmp_path / "runs" / "tab", both)
    assert results.read_scores(tmp_path / "runs" / "tab").equals(both.reset_index(drop=True))
    shuffled = rows.assign(id=rows["id"][::-1].to_numpy())  # not the lists' order: kept as it is
    results.write_scores(tmp_path / "runs" / "tab", shuffled)
    assert results.read_scores(tmp_path / "runs" / "tab").equals(shuffled)
    # a store that no longer matches the rows is one clear error, not a wrong column
    results.write_json(tmp_path / "runs" / "_splits" / "h.json", {**files, "val": files["val"][:-1]})
    with pytest.raises(ValueError, match=r"abc/scores.npz: its 'path' column .* does not match its rows"):
        results.read_scores(folder)


def test_an_older_runs_scores_csv_still_reads(tmp_path):
    frame = scores_frame()
    frame.to_csv(tmp_path / "scores.csv", index=False, float_format="%.9g")  # as image runs wrote it
    assert results.scores_path(tmp_path).name == "scores.csv"
    assert results.read_scores(tmp_path).equals(pd.read_csv(tmp_path / "scores.csv"))
    (tmp_path / "scores.npz").write_bytes(b"not a zip")  # the new form wins once it is there ...
    with pytest.raises(ValueError, match="scores.npz: not a run's scores"):  # ... and a broken one says so
        results.read_scores(tmp_path)


def old_run(runs, name, files, scores, args=None):
    """A run folder as runs were written before the compact form: lists in splits.json, scores.csv."""
    folder = runs / name
    folder.mkdir(parents=True)
    args = args or RI.image_run_args("algan", "mtd", None, "cpu", 0)
    results.write_json(folder / "config.json", {"args": args, "hash": name})
    results.write_json(folder / "splits.json", {"split_hash": "s1", "sizes": {"val": 3}, "files": files})
    scores.to_csv(folder / "scores.csv", index=False)
    (folder / "samples.png").write_bytes(b"png")  # an MTD run's: no figure shows it
    (folder / "done").write_text("x\n")
    return folder


def test_compact_runs_converts_old_folders_once(tmp_path, capsys):
    runs = tmp_path / "runs"
    files = {"train": ["x.png"], "val": ["a.png", "b.png", "c.png"], "test": ["d.png", "e.png"]}
    scores = pd.DataFrame({"split": ["val"] * 3 + ["test"] * 2, "path": files["val"] + files["test"],
                           "label": [0, 1, 1, 0, 1], "score": [0.1, -2.5, 1 / 3, 7.0, np.float32(0.2)]})
    folder = old_run(runs, "r1", files, scores)
    before = results.read_scores(folder)
    unfinished = old_run(runs, "r2", files, scores)
    (unfinished / "done").unlink()
    tool = load_tool()
    tool.main(runs)
    out = capsys.readouterr().out
    assert "1 run folders converted" in out and re.search(r"image_run mtd: 1 runs, mean \d+\.\d KB", out)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "done", "scores.npz", "splits.json"]
    after = results.read_scores(folder)
    assert after.equals(before) and after.dtypes.equals(before.dtypes)
    assert json.loads((folder / "splits.json").read_text()) == {"split_hash": "s1", "sizes": {"val": 3},
                                                                 "files": "../_splits/s1.json"}
    assert results.split_files(folder) == files
    assert (unfinished / "scores.csv").is_file() and (unfinished / "samples.png").is_file()  # not done: left
    tool.main(runs)
    assert "0 run folders converted" in capsys.readouterr().out


def test_compact_runs_refuses_a_split_store_with_other_lists(tmp_path):
    runs = tmp_path / "runs"
    files = {"val": ["a.png"], "test": ["b.png"]}
    folder = old_run(runs, "r1", files, pd.DataFrame({"split": ["val", "test"], "label": [0, 1], "score": [0.5, 0.7]}))
    results.write_json(runs / "_splits" / "s1.json", {"val": ["a.png"], "test": ["z.png"]})
    with pytest.raises(SystemExit) as stop:
        load_tool().main(runs)
    message = str(stop.value)
    assert "\n" not in message and str(runs / "_splits" / "s1.json") in message
    assert str(folder / "splits.json") in message
    assert (folder / "scores.csv").is_file()  # the folder as it was
    assert isinstance(json.loads((folder / "splits.json").read_text())["files"], dict)


def tracked_bytes(folder):
    """What results/ keeps of a run: every file but the weights (git-ignored, .gitignore's results/runs/**/*.pt)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix != ".pt")


@pytest.mark.parametrize("method, dataset, category", [("knn", "mvtec", "bottle"), ("algan", "mtd", None),
                                                       ("algan", "coil100", None)])  # COIL: 3,384 test images
def test_a_new_run_adds_at_most_20_kb(tmp_path, data_root, method, dataset, category):
    run = RI.run_image(method, dataset, category=category, profile="smoke", seed=0, data_root=data_root,
                       runs_dir=tmp_path)
    folder = run["folder"]
    assert (folder / "scores.npz").is_file() and not (folder / "scores.csv").exists()
    assert not (folder / "samples.png").exists()  # no figure shows these runs' samples
    assert len(results.read_scores(folder)) == run["metrics"]["n_val"] + run["metrics"]["n_test"]
    assert tracked_bytes(folder) < 20_000, {p.name: p.stat().st_size for p in folder.iterdir()}


def test_a_runs_history_is_gzipped_reproducibly_and_an_older_csv_still_reads(tmp_path):
    history = pd.DataFrame({"epoch": [1, 2, 3], "loss_d": [1.2345678, 0.5, np.nan], "val_auroc": [np.nan, 0.75, 0.8]})
    for name in ("a", "b"):
        results.write_history(tmp_path / name, history)
    a, b = ((tmp_path / name / results.HISTORY).read_bytes() for name in ("a", "b"))
    assert a == b  # no file name or time in the gzip header
    back = results.read_history(tmp_path / "a")
    assert back["loss_d"].iloc[0] == 1.23457 and back["val_auroc"].iloc[1:].tolist() == [0.75, 0.8]  # 6 digits
    history.to_csv(tmp_path / "old.csv", index=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old.csv").rename(tmp_path / "old" / results.OLD_HISTORY)
    assert results.history_path(tmp_path / "old").name == "history.csv"
    pd.testing.assert_frame_equal(results.read_history(tmp_path / "old"), history)


def test_a_run_keeps_only_its_test_scores(tmp_path):
    frame = pd.DataFrame({"split": ["val", "val", "test", "test"], "label": [0, 1, 0, 1],
                          "score": np.array([0.1, 0.9, 0.2, 0.8], dtype=np.float32)})
    results.write_scores(tmp_path, frame, results.SCORED_SPLITS)
    back = results.read_scores(tmp_path)
    assert back[["split", "label"]].equals(frame[["split", "label"]])  # every row, with its label
    assert back["score"].iloc[:2].isna().all() and back["score"].iloc[2:].tolist() == frame["score"].iloc[2:].tolist()
