"""ONNX export: score parity with PyTorch on real bottle, MTD and ADBench feature data, the exported
threshold, the `algan export` / `algan score --backend onnx` round trip, and bad input.

Parity tolerance: |onnx - torch| <= 1e-4 absolute for the image models (scores of order 1-10), and
1e-4 relative to the largest |score| for the feature model, whose scores on anomalous ADBench
features reach ~1e4, where float32 itself resolves only ~1e-3.
"""
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from algan.cli import main
from algan.config import profile
from algan.data import load_dataset, load_features
from algan.detector import ALGAN
from algan.export import ExportError, OnnxScorer, export, export_onnx
from algan.models.ganomaly import GANomaly

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (conftest)


def _fit_images(splits):
    cfg = profile("smoke", **{"model.extra_channels": splits.extra_channels})
    return ALGAN(cfg, seed=0, device="cpu", progress=False).fit(
        splits.train.x, X_val=splits.val.x, y_val=splits.val.y.numpy())


@pytest.fixture(scope="module")
def bottle(data_root):
    splits = load_dataset("mvtec", data_root, category="bottle", image_size=32, seed=0)
    return splits, _fit_images(splits)


@pytest.fixture(scope="module")
def mtd(data_root):
    splits = load_dataset("mtd", data_root, image_size=32, seed=0)
    return splits, _fit_images(splits)


def _fit_features(data_root, scaling):
    splits = load_features(data_root / "adbench/mvtec_resnet18/bottle.npz", seed=0)
    cfg = profile("smoke", kind="feature", **{"model.feature_scaling": scaling})
    det = ALGAN(cfg, seed=0, device="cpu", progress=False).fit(splits.train.x, X_val=splits.val.x, y_val=splits.val.y)
    return splits, det


@pytest.fixture(scope="module")
def features(data_root):
    return _fit_features(data_root, "standardise")


@pytest.fixture(scope="module")
def features_drop_constant(data_root):  # std = inf in the graph for the dropped dimensions
    return _fit_features(data_root, "drop_constant")


@pytest.mark.parametrize("name,tol", [("bottle", 1e-4), ("mtd", 1e-4), ("features", None),
                                      ("features_drop_constant", None)])
def test_onnx_scores_and_predictions_match_torch(name, tol, request, tmp_path):
    splits, det = request.getfixturevalue(name)
    x = splits.test.x
    before = det.decision_function(x)
    path = export_onnx(det, tmp_path / "m.onnx")
    torch_scores = det.decision_function(x)
    np.testing.assert_array_equal(torch_scores, before)  # exporting leaves the detector as it was
    scorer = OnnxScorer(path)
    scores = scorer.decision_function(x, batch_size=16)  # several batches through the dynamic axis
    tol = tol or 1e-4 * np.abs(torch_scores).max()
    assert scores.dtype == np.float64 and scores.shape == (len(x),)
    assert np.abs(scores - torch_scores).max() <= tol
    assert scorer.threshold_ == det.threshold_
    np.testing.assert_array_equal(scorer.predict(x), det.predict(x))
    assert 0 < det.predict(x).sum() < len(x)  # the threshold separates something: the check has teeth
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file


def test_metadata(bottle, features, tmp_path):
    _, det = bottle
    meta = {p.key: p.value for p in onnx.load(export_onnx(det, tmp_path / "i.onnx")).metadata_props}
    assert meta["format"] == "algan-onnx-1" and meta["kind"] == "image" and float(meta["threshold"]) == det.threshold_
    assert (meta["image_size"], meta["channels"], meta["threshold_fpr"]) == ("32", "3", "0.05")
    assert '"extra_channels": true' in meta["config"] and meta["algan_version"]
    _, det = features
    meta = {p.key: p.value for p in onnx.load(export_onnx(det, tmp_path / "f.onnx")).metadata_props}
    assert meta["kind"] == "feature" and meta["feature_dim"] == "512" and "image_size" not in meta


def test_rotated_feature_views(features, tmp_path):
    splits, det = features
    views = np.stack([splits.test.x, splits.test.x[:, ::-1]], 1)  # (N, 2, D): mean over views
    scores = OnnxScorer(export_onnx(det, tmp_path / "f.onnx")).decision_function(views)
    expected = det.decision_function(views)
    assert np.abs(scores - expected).max() <= 1e-4 * np.abs(expected).max()


def test_cli_export_then_score(bottle, data_root, tmp_path, capsys):
    _, det = bottle
    det.save(tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt")]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "model.onnx") in out and f"{det.threshold_:.4f}" in out
    test_dir = str(data_root / "mvtec/bottle/test")
    assert main(["score", str(tmp_path / "model.pt"), test_dir, "--out", str(tmp_path / "torch.csv")]) == 0
    assert main(["score", str(tmp_path / "model.onnx"), test_dir, "--backend", "onnx",
                 "--out", str(tmp_path / "onnx.csv")]) == 0
    a, b = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert len(b) == 83 and list(a.columns) == list(b.columns)
    assert (a.path == b.path).all() and (a.label == b.label).all() and (a.prediction == b.prediction).all()
    assert np.abs(a.score - b.score).max() <= 1e-4


def test_cli_feature_npz_round_trip(features, tmp_path):
    splits, det = features
    det.save(tmp_path / "f.pt")
    np.savez(tmp_path / "x.npz", X=splits.test.x, y=splits.test.y)
    assert main(["export", str(tmp_path / "f.pt"), "--out", str(tmp_path / "deploy/f.onnx")]) == 0
    for backend, model in (("torch", "f.pt"), ("onnx", "deploy/f.onnx")):
        assert main(["score", str(tmp_path / model), str(tmp_path / "x.npz"), "--backend", backend,
                     "--out", str(tmp_path / f"{backend}.csv")]) == 0
    a, b = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert (a.prediction == b.prediction).all() and np.abs(a.score - b.score).max() <= 1e-4 * a.score.abs().max()


def test_export_rejects_other_checkpoints_and_formats(bottle, tmp_path, capsys):
    GANomaly.initialised(profile("smoke"), device="cpu").save(tmp_path / "ganomaly.pt")
    with pytest.raises(ExportError, match="GANomaly checkpoint .*only ALGAN checkpoints"):
        export_onnx(tmp_path / "ganomaly.pt", tmp_path / "g.onnx")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    assert main(["export", str(tmp_path / "notes.pt")]) == 2
    err = capsys.readouterr().err
    assert "not a PyTorch checkpoint" in err and "ALGAN" in err and len(err.strip().splitlines()) == 1
    bottle[1].save(tmp_path / "model.pt")
    assert main(["export", str(tmp_path / "model.pt"), "--format", "tflite"]) == 2
    err = capsys.readouterr().err
    assert "'tflite' is not supported" in err and "onnx" in err
    with pytest.raises(ExportError, match="does not exist"):
        export(tmp_path / "missing.pt", tmp_path / "m.onnx")
    assert not list(tmp_path.glob("*.onnx"))  # nothing written


def test_missing_deploy_packages(bottle, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    with pytest.raises(ExportError, match=r"pip install algan\[deploy\]"):
        export_onnx(bottle[1], tmp_path / "m.onnx")


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 1, 32, 32), (2, 3072)], ids=["size", "channels", "dims"])
def test_scoring_wrong_shape(bottle, tmp_path, shape):
    scorer = OnnxScorer(export_onnx(bottle[1], tmp_path / "m.onnx"))
    with pytest.raises(ValueError, match=rf"X has shape \({shape[0]}, .*expected \(N, 3, 32, 32\) as in the exported"):
        scorer.decision_function(torch.zeros(shape))


def test_scoring_bad_values_and_files(bottle, tmp_path, capsys):
    scorer = OnnxScorer(export_onnx(bottle[1], tmp_path / "m.onnx"))
    x = torch.zeros(2, 3, 32, 32)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf in 1 sample"):
        scorer.decision_function(x)
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        OnnxScorer(tmp_path / "bad.onnx")
    assert main(["score", str(tmp_path / "m.onnx"), str(tmp_path), "--out", str(tmp_path / "s.csv")]) == 2
    assert "--backend onnx" in capsys.readouterr().err


@pytest.fixture(scope="module")
def untrained_onnx(tmp_path_factory):
    """An exported freshly initialised image detector (threshold set by hand): for input checks, no training."""
    det = ALGAN.initialised(profile("smoke"), device="cpu")
    det.threshold_ = 0.0
    return export_onnx(det, tmp_path_factory.mktemp("onnx") / "m.onnx")


@pytest.mark.parametrize("x,match", [
    (torch.full((2, 3, 32, 32), 200, dtype=torch.uint8), r"uint8: expected float images in \[-1, 1\]"),
    (np.full((2, 3, 32, 32), 200, dtype=np.uint8), r"uint8: expected float images in \[-1, 1\]"),
    (torch.full((2, 3, 32, 32), 200.0), r"values in \[200, 200\]: expected images in \[-1, 1\]"),
    (torch.full((2, 3, 32, 32), -1.01), r"expected images in \[-1, 1\]"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.complex64), "complex"),
], ids=["uint8 tensor", "uint8 array", "0..255 floats", "below -1", "complex"])
def test_onnx_scoring_refuses_images_outside_their_range(untrained_onnx, x, match):
    """0..255 images scored as if in [-1, 1] would all come out normal: refused, with the conversion to make."""
    scorer = OnnxScorer(untrained_onnx)
    with pytest.raises(ValueError, match=match):
        scorer.decision_function(x)
    with pytest.raises(ValueError, match=match):
        scorer.predict(x)
    edge = torch.full((2, 3, 32, 32), 1.0005)  # within the tolerance of [-1, 1]
    assert scorer.decision_function(edge).shape == (2,)


@pytest.mark.parametrize("threshold", ["nan", "inf", "-inf", "none"])
def test_onnx_non_finite_threshold_is_an_error(untrained_onnx, tmp_path, threshold):
    model = onnx.load(untrained_onnx)
    props = {p.key: p.value for p in model.metadata_props}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, {**props, "threshold": threshold})
    onnx.save(model, tmp_path / "t.onnx")
    x = torch.zeros(2, 3, 32, 32)
    if threshold == "nan":  # not set: scores, but predicts nothing
        scorer = OnnxScorer(tmp_path / "t.onnx")
        assert scorer.decision_function(x).shape == (2,)
        with pytest.raises(ValueError, match="expected a finite"):
            scorer.predict(x)
    else:
        with pytest.raises(ValueError, match="threshold"):
            OnnxScorer(tmp_path / "t.onnx")
