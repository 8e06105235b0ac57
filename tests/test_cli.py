"""The `algan` command: help, train -> score round trip, toy, exit code 2 on bad input."""
import argparse
import subprocess
import sys

import pandas as pd
import pytest

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


def test_toy_command(tmp_path):
    fig = tmp_path / "toy.png"
    proc = subprocess.run([sys.executable, "-m", "algan.cli", "toy", "--epochs", "3", "--out", str(fig), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ALGAN" in proc.stdout and "plain GAN" in proc.stdout and fig.stat().st_size > 10_000


def test_data_check_exit_codes(tmp_path, data_root):
    assert main(["data", "check", str(data_root)]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 1
