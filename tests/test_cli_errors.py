"""Bad input on the command line: exit code 2 and one line on stderr naming the field or path (the README's
promise), found before any work starts. One row per case; grow the table with every new case.

Each case runs `algan.cli.main(argv)` in this process, with ALGAN.fit replaced by a failure, so a case that
reaches training fails the test instead of training.
"""
import math

import numpy as np
import pytest
import torch
from PIL import Image

from algan.cli import main
from algan.config import profile
from algan.detector import ALGAN
from algan.models.algan_nets import build_networks

TRAIN = ["train", "--dataset", "mtd", "--profile", "smoke", "--quiet"]


class NotWeights:
    """An object a weights-only torch.load refuses (its message advises weights_only=False)."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Checkpoints and inputs, good and bad, by name."""
    d = tmp_path_factory.mktemp("inputs")
    image = ALGAN.initialised(profile("smoke"), device="cpu")
    image.threshold_ = 0.0
    image.save(d / "image.pt")
    cfg = profile("smoke", kind="feature", **{"model.feature_dim": 4})
    feature = ALGAN(cfg, device="cpu", progress=False)
    feature.generator, feature.discriminator = build_networks(cfg.model)
    feature.feature_mean, feature.feature_std, feature.threshold_ = torch.zeros(4), torch.ones(4), 0.0
    feature.save(d / "feature.pt")
    good = (d / "image.pt").read_bytes()
    (d / "truncated.pt").write_bytes(good[: len(good) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    torch.save({"format": "algan-1", "config": image.config.to_dict()}, d / "keyless.pt")
    torch.save({"format": "algan-1", "config": NotWeights()}, d / "pickled.pt")
    state = torch.load(d / "image.pt", weights_only=True)
    torch.save({**state, "threshold": math.inf}, d / "inf_threshold.pt")
    torch.save({**state, "threshold": math.nan}, d / "nan_threshold.pt")
    (d / "random.npz").write_bytes(np.random.default_rng(1).bytes(4096))
    np.save(d / "single.npy", np.zeros((3, 4), np.float32))
    (d / "single.npy").rename(d / "single.npz")
    np.savez(d / "strings.npz", X=np.array([["a", "b", "c", "d"]]))
    np.savez(d / "objects.npz", X=np.array([[1, 2, 3, None]], dtype=object))
    np.savez(d / "no_x.npz", features=np.zeros((3, 4), np.float32))
    np.savez(d / "complex.npz", X=np.ones((3, 4), np.complex64))
    np.savez(d / "complex_xy.npz", X=np.ones((10, 4), np.complex64), y=np.r_[np.zeros(7), np.ones(3)].astype(int))
    (d / "images").mkdir()
    (d / "outdir").mkdir()
    # too small to validate and test on: 2 normal test images (1 for val, 1 for test); 3 normal rows (0 in val)
    for sub, n in (("train/good", 4), ("test/good", 2), ("test/crack", 2)):
        for i in range(n):
            (d / "too_small" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(d / "too_small" / sub / f"{i:03d}.png")
    np.savez(d / "too_small.npz", X=np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32), y=[0, 0, 0, 1, 1])
    return d


def score(checkpoint, *inputs, out=None):
    return lambda d: ["score", str(d / checkpoint), *[str(d / i) for i in inputs],
                      "--out", str(d / (out or "scores.csv"))]


# (case, argv from the inputs folder, what stderr must name)
CASES = [
    ("epochs=two", lambda d: TRAIN + ["--set", "train.epochs=two", "--out", str(d / "o")], "train.epochs"),
    ("epochs=2.5", lambda d: TRAIN + ["--set", "train.epochs=2.5", "--out", str(d / "o")], "train.epochs"),
    ("epochs=true", lambda d: TRAIN + ["--set", "train.epochs=true", "--out", str(d / "o")], "train.epochs"),
    ("extra_channels=1", lambda d: TRAIN + ["--set", "model.extra_channels=1", "--out", str(d / "o")],
     "model.extra_channels"),
    ("sigma=nan", lambda d: TRAIN + ["--set", "train.sigma=nan", "--out", str(d / "o")], "train.sigma"),
    ("sigma=NaN", lambda d: TRAIN + ["--set", "train.sigma=NaN", "--out", str(d / "o")], "train.sigma"),
    ("sigma=Infinity", lambda d: TRAIN + ["--set", "train.sigma=Infinity", "--out", str(d / "o")], "train.sigma"),
    ("lr_g<0", lambda d: TRAIN + ["--set", "train.lr_g=-0.001", "--out", str(d / "o")], "train.lr_g"),
    ("lr_d=0", lambda d: TRAIN + ["--set", "train.lr_d=0", "--out", str(d / "o")], "train.lr_d"),
    ("table sigma=nan", lambda d: ["table", "mtd", "--profile", "smoke", "--set", "train.sigma=nan"], "train.sigma"),
    ("seed=-1", lambda d: TRAIN + ["--seed", "-1", "--out", str(d / "o")], "--seed"),
    ("seed=2**32", lambda d: TRAIN + ["--seed", str(2**32), "--out", str(d / "o")], "--seed"),
    ("seed=abc", lambda d: TRAIN + ["--seed", "abc", "--out", str(d / "o")], "--seed"),
    ("toy seed=-1", lambda d: ["toy", "--seed", "-1", "--out", str(d / "toy")], "--seed"),
    ("toy without --out", lambda d: ["toy"], "the following arguments are required: --out"),
    ("toy --out a .png", lambda d: ["toy", "--out", str(d / "toy.png")],
     "toy.png: expected a folder (the figure is written inside it as toy.png), e.g. --out"),
    ("toy --out a file", lambda d: ["toy", "--out", str(d / "image.pt")], "image.pt: expected a folder"),
    ("table seeds", lambda d: ["table", "mtd", "--seeds", "0", "-5"], "--seeds"),
    ("device=tpu", lambda d: TRAIN + ["--device", "tpu", "--out", str(d / "o")], "--device"),
    ("device=cuda:x", lambda d: TRAIN + ["--device", "cuda:x", "--out", str(d / "o")], "--device"),
    ("device=cuda, no GPU", lambda d: TRAIN + ["--device", "cuda", "--out", str(d / "o")], "--device"),
    ("score device=cuda, no GPU", lambda d: score("image.pt", "images")(d) + ["--device", "cuda"], "--device"),
    ("features, no --path", lambda d: ["train", "--dataset", "features", "--profile", "smoke", "--out",
                                       str(d / "o")], "--path"),
    ("folder, no --path", lambda d: ["train", "--dataset", "folder", "--profile", "smoke", "--out",
                                     str(d / "o")], "--path"),
    ("score --out folder", score("image.pt", "images", out="outdir"), "outdir"),
    ("truncated checkpoint", score("truncated.pt", "images"), "truncated.pt"),
    ("empty checkpoint", score("empty.pt", "images"), "empty.pt"),
    ("random-bytes checkpoint", score("random.pt", "images"), "random.pt"),
    ("key-less checkpoint", score("keyless.pt", "images"), "keyless.pt"),
    ("pickled-object checkpoint", score("pickled.pt", "images"), "pickled.pt"),
    ("infinite threshold", score("inf_threshold.pt", "images"), "inf_threshold.pt"),
    ("NaN threshold", score("nan_threshold.pt", "images"), "nan_threshold.pt"),
    ("missing .npz", score("feature.pt", "missing.npz"), "missing.npz"),
    ("random-bytes .npz", score("feature.pt", "random.npz"), "random.npz"),
    (".npy named .npz", score("feature.pt", "single.npz"), "single.npz"),
    ("string X", score("feature.pt", "strings.npz"), "strings.npz"),
    ("object X", score("feature.pt", "objects.npz"), "objects.npz"),
    ("complex X", score("feature.pt", "complex.npz"), "complex.npz"),
    ("no X", score("feature.pt", "no_x.npz"), "no_x.npz"),
    ("train on complex features", lambda d: ["train", "--dataset", "features", "--path", str(d / "complex_xy.npz"),
                                             "--profile", "smoke", "--out", str(d / "o")], "complex_xy.npz"),
    ("train on a .npy named .npz", lambda d: ["train", "--dataset", "features", "--path", str(d / "single.npz"),
                                              "--profile", "smoke", "--out", str(d / "o")], "single.npz"),
    ("folder with 1 normal val image", lambda d: ["train", "--dataset", "folder", "--path", str(d / "too_small"),
                                                  "--profile", "smoke", "--out", str(d / "o")], "too_small: the val split"),
    ("features with 0 normal val rows", lambda d: ["train", "--dataset", "features", "--path",
                                                   str(d / "too_small.npz"), "--profile", "smoke", "--out", str(d / "o")],
     "too_small.npz: the val split"),
    ("--augment rotate", lambda d: ["train", "--dataset", "folder", "--path", str(d / "too_small"), "--augment", "rotate",
                                    "--profile", "smoke", "--out", str(d / "o")],
     "--augment 'rotate': unknown augmentation; expected flip, none or mvtec:<category>"),
    ("--augment mvtec:scerw", lambda d: ["train", "--dataset", "folder", "--path", str(d / "too_small"), "--augment",
                                         "mvtec:scerw", "--profile", "smoke", "--out", str(d / "o")],
     "unknown MVTec-AD category 'scerw'; expected flip, none or mvtec:<category>, the category one of bottle, cable"),
    ("--augment with mtd", lambda d: TRAIN + ["--augment", "flip", "--out", str(d / "o")],
     "--augment flip: only --dataset folder takes one"),
    ("--out is a file", lambda d: TRAIN + ["--out", str(d / "image.pt")], "image.pt is a file"),
    ("studies without their data", lambda d: ["studies", "--only", "tabular", "--data-root", str(d)],
     "study tabular: nothing to run, its data is not under the data root (ADBench's classical sets in "),
]


@pytest.mark.parametrize("argv,names", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_code_2(argv, names, files, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(ALGAN, "fit", lambda *a, **k: pytest.fail("training started on bad input"))
    try:
        code = main(argv(files))
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert names in err, err
    assert "Traceback" not in err and "weights_only" not in err, err
    assert not (files / "o").exists() and not (files / "scores.csv").exists()
