"""The `algan` command: help, train -> score round trip, toy, exit code 2 on bad input."""
import argparse
import contextlib
import io
import json
import subprocess
import sys

import numpy as np

import pandas as pd
import pytest
from PIL import Image

import algan
from algan.cli import build_parser, main


@pytest.mark.parametrize("cmd", [[], ["train"], ["score"], ["export"], ["toy"], ["table"], ["table2"], ["data", "check"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(cmd + ["--help"])
    assert exit_info.value.code == 0
    assert "usage: algan" in capsys.readouterr().out


def _subparsers(parser):
    """(name, parser) of the parser and of every subcommand below it, e.g. ("algan data check", ...)."""
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _subparsers(sub)


def test_every_argument_has_help():
    missing = [f"{name} {action.dest}" for name, parser in _subparsers(build_parser()) for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert missing == []


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"algan {algan.__version__}"


def test_cli_import_is_light():
    """`algan --help` must not wait for torch (benchmarks/bench_cli.py times it): importing the CLI, and
    parsing every subcommand's arguments, loads neither torch nor pandas."""
    code = ("import sys; from algan.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'numpy', 'algan.detector') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    import algan as package  # the package's names still resolve, on first use
    assert package.ALGAN.__name__ == "ALGAN" and "ALGAN" in dir(package)


def test_train_then_score(tmp_path, data_root):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "mvtec", "--category", "bottle", "--data-root", str(data_root),
                 "--profile", "smoke", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.iterdir()} >= {"model.pt", "history.csv", "metrics.json", "splits.json"}
    csv = tmp_path / "scores.csv"
    assert main(["score", str(out / "model.pt"), str(data_root / "mvtec/bottle/test"), "--out", str(csv)]) == 0
    frame = pd.read_csv(csv)
    assert len(frame) == 83 and set(frame.label) == {0, 1} and set(frame.prediction) <= {0, 1}
    assert frame.score.notna().all()
    assert frame.split.value_counts().to_dict() == {"test": 42, "val": 41}  # by path below the data root


def _category(folder, n_train=6, n_good=6, n_defect=6):
    """A small folder in MVTec layout of 16-pixel images (normals dark, defects bright)."""
    rng = np.random.default_rng(0)
    for sub, n, value in (("train/good", n_train, 60), ("test/good", n_good, 60), ("test/crack", n_defect, 190)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            arr = np.clip(rng.integers(-30, 30, (16, 16, 3)) + value, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / sub / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """`algan train` on a folder named like an MVTec-AD category, with an explicit --augment: (its stdout, the
    data folder, the run folder)."""
    d = tmp_path_factory.mktemp("folder_run")
    data, out = _category(d / "screw"), d / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", "--dataset", "folder", "--path", str(data), "--augment", "mvtec:bottle", "--profile",
                     "smoke", "--set", "train.epochs=1", "--out", str(out), "--quiet"])
    assert code == 0
    return stdout.getvalue(), data, out


def test_train_prints_splits_selection_and_augmentation(folder_run):
    """At the start, with --quiet too (it silences only the progress bar): the split sizes and their rule, the
    checkpoint selection and the augmentation, chosen by --augment and not by the folder's name (screw)."""
    lines = folder_run[0].splitlines()
    assert lines[0] == ("split (seed 0; train = train/good; test/ halved per label into val and test): "
                        "train 6 normal | val 3 normal + 3 anomalous | test 3 normal + 3 anomalous")
    assert lines[1].startswith("selection: the checkpoint of best validation AUROC (checked every 1 epoch and at "
                               "the last, the earliest of ties); threshold at 5% false positives on the validation "
                               "normals; augmentation: random horizontal flip, vertical flip, rotation "
                               "(--augment mvtec:bottle)")
    assert lines[2].startswith("best epoch 1: val AUROC") and len(lines) == 3


def test_train_banner_of_the_books_data_sets(tmp_path, data_root, capsys, monkeypatch):
    """mvtec keeps the paper's augmentation of its category; features state theirs (none) and their split."""
    from algan.detector import ALGAN

    monkeypatch.setattr(ALGAN, "fit", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):  # stops once the banner is out
        main(["train", "--dataset", "mvtec", "--category", "bottle", "--data-root", str(data_root),
              "--profile", "smoke", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert "train 209 normal | val 10 normal + 31 anomalous | test 10 normal + 32 anomalous" in out
    assert "augmentation: random horizontal flip, vertical flip, rotation (the paper's for MVTec-AD bottle)" in out
    y = np.r_[np.zeros(20), np.ones(10)].astype(int)
    np.savez(tmp_path / "f.npz", X=np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32), y=y)
    with pytest.raises(KeyboardInterrupt):
        main(["train", "--dataset", "features", "--path", str(tmp_path / "f.npz"), "--profile", "smoke",
              "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert out.startswith("split (seed 0; normal rows 60/20/20 train/val/test, anomalous rows 50/50 val/test): "
                          "train 12 normal | val 4 normal + 5 anomalous | test 4 normal + 5 anomalous")
    assert "augmentation: none (feature rows)" in out
    for rule, words in (("last", "selection: the last epoch's checkpoint (--select last: no labels used)"),
                        ("ema", "selection: an exponential average of D's weights"),
                        ("proxy", "against synthetic anomalies (checked every 1 epoch")):
        with pytest.raises(KeyboardInterrupt):
            main(["train", "--dataset", "features", "--path", str(tmp_path / "f.npz"), "--profile", "smoke",
                  "--select", rule, "--out", str(tmp_path / "o")])
        assert words in capsys.readouterr().out, rule


def test_score_prints_auroc_and_marks_the_validation_rows(folder_run, tmp_path, capsys):
    """The split column comes from splits.json beside model.pt; the AUROC leaves out the validation rows."""
    _, data, run = folder_run
    csv = tmp_path / "scores.csv"
    assert main(["score", str(run / "model.pt"), str(data / "test"), str(data / "train/good/000.png"),
                 "--out", str(csv)]) == 0
    frame = pd.read_csv(csv)
    lists = json.loads((run / "splits.json").read_text())["files"]
    assert sorted(frame.path[frame.split == "val"]) == sorted(str(data / rel) for rel in lists["val"])
    assert frame.split.value_counts().to_dict() == {"val": 6, "test": 6, "train": 1}
    test = frame[frame.split == "test"]
    from algan.score import auroc
    line = capsys.readouterr().out.splitlines()[-1]
    assert line == (f"AUROC {auroc(test.label, test.score):.4f} on 7 labelled rows not in the model's validation "
                    "split (6 left out, by its splits.json); labels from the folders (good/ normal, test/<defect>/ "
                    "anomalous)")
    assert f"{json.loads((run / 'metrics.json').read_text())['test_auroc']:.4f}" in line  # = train's test AUROC
    copy = tmp_path / "copy"  # the same model without its splits.json: every labelled row counts
    copy.mkdir()
    (copy / "model.pt").write_bytes((run / "model.pt").read_bytes())
    assert main(["score", str(copy / "model.pt"), str(data / "test"), "--out", str(csv)]) == 0
    assert "split" not in pd.read_csv(csv)
    assert "on all 12 labelled rows (no splits.json beside the checkpoint" in capsys.readouterr().out


def test_score_features_marks_rows_of_the_runs_file(tmp_path, capsys):
    y = np.r_[np.zeros(20), np.ones(10)].astype(int)
    X = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32) + 3 * y[:, None]
    np.savez(tmp_path / "f.npz", X=X, y=y)
    assert main(["train", "--dataset", "features", "--path", str(tmp_path / "f.npz"), "--profile", "smoke",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["score", str(tmp_path / "run/model.pt"), str(tmp_path / "f.npz"), "--out",
                 str(tmp_path / "s.csv")]) == 0
    frame = pd.read_csv(tmp_path / "s.csv")
    rows = json.loads((tmp_path / "run/splits.json").read_text())["files"]
    assert sorted(frame.row[frame.split == "val"]) == sorted(rows["val"]) and len(rows["val"]) == 9
    assert "on 21 labelled rows not in the model's validation split (9 left out" in capsys.readouterr().out
    np.savez(tmp_path / "other.npz", X=X, y=y)  # another file: its rows are none of the run's
    assert main(["score", str(tmp_path / "run/model.pt"), str(tmp_path / "other.npz"), "--out",
                 str(tmp_path / "s.csv")]) == 0
    assert set(pd.read_csv(tmp_path / "s.csv").split) == {"-"}
    assert "on 30 labelled rows not in the model's validation split (0 left out" in capsys.readouterr().out


def test_bad_input_exit_code_2(tmp_path, capsys):
    code = main(["train", "--dataset", "mvtec", "--category", "bottle", "--data-root", str(tmp_path / "nope"),
                 "--profile", "smoke", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "nope" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written
    assert main(["train", "--dataset", "mtd", "--profile", "smoke", "--set", "train.sigmaa=3",
                 "--out", str(tmp_path / "o")]) == 2
    assert "sigmaa" in capsys.readouterr().err


def test_score_folder_lists_files_as_train_does(tmp_path, capsys):
    """Only MVTec-layout masks (ground_truth/<defect>/*_mask.png) are left out, not every name with "_mask";
    hidden files and folders (._x.png from macOS) are skipped, not decoded."""
    from PIL import Image

    from algan.config import profile
    from algan.detector import ALGAN

    det = ALGAN.initialised(profile("smoke"), device="cpu")
    det.threshold_ = 0.0
    det.save(tmp_path / "model.pt")
    folder = tmp_path / "images"
    kept = ["face_mask_01.png", "normal.png", "sub/other_mask.png", "test/broken/000.png"]
    for name in kept + ["ground_truth/broken/000_mask.png"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (30, 60, 90)).save(folder / name)
    for junk in ["._normal.png", ".thumbs/a.png"]:  # undecodable: scoring them would abort the run
        (folder / junk).parent.mkdir(parents=True, exist_ok=True)
        (folder / junk).write_bytes(b"AppleDouble")
    csv = tmp_path / "scores.csv"
    assert main(["score", str(tmp_path / "model.pt"), str(folder), "--out", str(csv)]) == 0, capsys.readouterr().err
    assert sorted(pd.read_csv(csv).path) == sorted(str(folder / name) for name in kept)
    assert "scored 4 samples" in capsys.readouterr().out


def test_table2_command(tmp_path, data_root, capsys, monkeypatch):
    monkeypatch.setenv("ALGAN_RUNS", str(tmp_path / "runs"))
    assert main(["table2", "--methods", "patchcore_50", "--data-root", str(data_root)]) == 2
    assert "patchcore_50" in capsys.readouterr().err
    assert main(["table2", "--profile", "smoke", "--sources", "adbench", "--methods", "spade", "mahalanobis",
                 "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "SPADE" in out and "Mah.AD" in out and "paper, ALL" in out


def test_toy_command_writes_under_out(tmp_path):
    """The figure goes into the --out folder (made), never into the current folder."""
    here = tmp_path / "cwd"
    here.mkdir()
    out = tmp_path / "toy_run"
    proc = subprocess.run([sys.executable, "-m", "algan.cli", "toy", "--epochs", "3", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=300, cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert "ALGAN" in proc.stdout and "plain GAN" in proc.stdout and (out / "toy.png").stat().st_size > 10_000
    assert proc.stdout.strip().splitlines()[-1] == f"figure saved to {out / 'toy.png'}"
    assert [p.name for p in out.iterdir()] == ["toy.png"] and list(here.iterdir()) == []


def test_data_check_exit_codes(tmp_path, data_root):
    assert main(["data", "check", str(data_root)]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 1
