"""Deployment: ALGAN's discriminator as an ONNX model that scores like `ALGAN.decision_function`.

The graph holds the input pre-processing too: for ALGAN-image its input is the plain image in
[-1, 1] (N, C, H, W) and it appends the channel-axis max and mean itself (Sec. IV-B-5); for
ALGAN-feature its input is the raw feature vector (N, D) and it standardises it with the training
statistics. Its output is the anomaly score -D(x), shape (N,). The calibrated threshold, the input
shape and the config travel in the model's metadata, so `OnnxScorer` needs only the .onnx file.
"""
from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from . import __version__, results
from .config import ALGANConfig
from .detector import ALGAN, as_tensor, prepare_image
from .models.algan_nets import build_networks

FORMAT = "algan-onnx-1"
FORMATS = ("onnx",)
BASELINE_FORMATS = {"ganomaly-1": "GANomaly", "skip_ganomaly-1": "Skip-GANomaly", "alocc-1": "ALOCC",
                    "pixel-knn-1": "PixelKNN"}


class ExportError(ValueError):
    """A model that cannot be exported, an unknown export format, or a missing deploy package."""


def _require(package: str):
    try:
        return __import__(package)
    except ImportError:
        raise ExportError(f"the {package} package is not installed: pip install algan[deploy]") from None


def load_checkpoint(path: str | Path) -> ALGAN:
    """The ALGAN detector saved at `path`; ExportError for anything else (only ALGAN can be exported)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist: expected a model.pt written by `algan train`")
    what = "only ALGAN checkpoints (format 'algan-1', written by ALGAN.save / `algan train`) can be exported"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a random file: pickle, zip or magic-number errors, depending on its bytes
        raise ExportError(f"checkpoint {path} is not a PyTorch checkpoint: {what}") from None
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt in BASELINE_FORMATS:
        raise ExportError(f"checkpoint {path} is a {BASELINE_FORMATS[fmt]} checkpoint (format {fmt!r}): {what}")
    if fmt != "algan-1":
        raise ExportError(f"checkpoint {path} has format {fmt!r}: {what}")
    return ALGAN.load(path, device="cpu")


class _Scoring(nn.Module):
    """Pre-processing + D + negation, as `ALGAN.decision_function` does it for one batch."""

    def __init__(self, det: ALGAN):
        super().__init__()
        self.config = det.config
        self.discriminator = _bake_spectral_norm(det)
        feature = det.config.model.kind == "feature"
        self.register_buffer("mean", det.feature_mean.float().cpu() if feature else None)
        self.register_buffer("std", det.feature_std.float().cpu() if feature else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            return -self.discriminator((x - self.mean) / self.std)
        return -self.discriminator(prepare_image(self.config, x))


def _bake_spectral_norm(det: ALGAN) -> nn.Module:
    """A CPU eval-mode copy of D whose spectrally normalised weights are plain tensors. In eval mode
    the parametrisation only divides W by its stored sigma estimate, so baking it changes no score;
    the graph then holds plain Conv/Gemm nodes instead of the power-iteration ops (aten::vdot has no
    ONNX symbolic). The copy is built afresh, not deep-copied: a deep copy shares its parametrised
    class with D, and removing the parametrisation from it would break D itself."""
    _, module = build_networks(det.config.model)
    module.load_state_dict(det.discriminator.state_dict())
    module.eval()  # before baking: in train mode reading the weight runs a power-iteration step
    for sub in module.modules():
        if parametrize.is_parametrized(sub):
            for name in list(sub.parametrizations.keys()):
                parametrize.remove_parametrizations(sub, name, leave_parametrized=True)
    return module


def input_shape(config: ALGANConfig) -> tuple[int, ...]:
    """One sample's shape as the exported graph takes it: (C, H, W) of the plain image, or (D,)."""
    m = config.model
    if m.kind == "feature":
        return (m.feature_dim,)
    return (m.channels - 2 * m.extra_channels, m.image_size, m.image_size)


def export_onnx(checkpoint_or_detector: ALGAN | str | Path, path: str | Path, *, opset: int = 17) -> Path:
    """Write the detector (or the ALGAN checkpoint at that path) as ONNX to `path`, atomically.

    Input "x": plain images (N, C, H, W) in [-1, 1] or raw features (N, D); output "score": -D(x), (N,).
    """
    onnx = _require("onnx")
    det = checkpoint_or_detector
    det = det if isinstance(det, ALGAN) else load_checkpoint(det)
    if det.discriminator is None:
        raise ExportError("the detector is not fitted: fit it or load a checkpoint before exporting")
    m, t = det.config.model, det.config.train
    scoring = _Scoring(det).eval()
    example = torch.zeros(2, *input_shape(det.config))
    buffer = io.BytesIO()
    # The TorchScript exporter (dynamo=False): D is a plain feed-forward net once spectral norm is
    # baked, which tracing handles exactly; it needs only `onnx` and writes opset 17 natively. The
    # torch.export-based exporter (the default since torch 2.9) needs onnxscript as well and, for
    # opset < 18, a version down-conversion. Revisit if torch drops the TorchScript exporter.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the deliberate choice above
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # D's shape check: constant per export
        torch.onnx.export(scoring, (example,), buffer, dynamo=False, opset_version=opset,
                          input_names=["x"], output_names=["score"],
                          dynamic_axes={"x": {0: "N"}, "score": {0: "N"}})
    model = onnx.load_from_string(buffer.getvalue())
    props = {"format": FORMAT, "kind": m.kind, "threshold": repr(float(det.threshold_)),
             "threshold_fpr": repr(float(t.threshold_fpr)), "config": det.config.to_json(),
             "algan_version": __version__}
    if m.kind == "feature":
        props["feature_dim"] = str(m.feature_dim)
    else:
        props.update(image_size=str(m.image_size), channels=str(input_shape(det.config)[0]))
    onnx.helper.set_model_props(model, props)
    with results.atomic_path(path) as tmp:
        onnx.save(model, tmp)
    return Path(path)


def export(checkpoint_or_detector: ALGAN | str | Path, path: str | Path, *, format: str = "onnx") -> Path:
    """Export in `format`; only "onnx" is supported."""
    if format not in FORMATS:
        raise ExportError(f"format {format!r} is not supported: expected one of {', '.join(FORMATS)}")
    return export_onnx(checkpoint_or_detector, path)


class OnnxScorer:
    """Scores with an exported model on onnxruntime's CPU provider: `decision_function` and `predict`
    as `ALGAN`'s, with the threshold and input shape read from the model's metadata."""

    def __init__(self, path: str | Path):
        ort = _require("onnxruntime")
        self.path = path = Path(path)
        if not path.is_file():
            raise ValueError(f"ONNX model {path} does not exist: expected a file written by `algan export`")
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:
            raise ValueError(f"{path} is not a readable ONNX model ({str(err).splitlines()[0][:200]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} has format {meta.get('format')!r}: expected an ALGAN model "
                             f"(format {FORMAT!r}, written by `algan export`)")
        self.metadata = dict(meta)
        self.config = ALGANConfig.from_dict(json.loads(meta["config"]))
        try:
            self.threshold_ = float(meta["threshold"])
        except (KeyError, ValueError):
            raise ValueError(f"{path}: metadata threshold {meta.get('threshold')!r}: expected a number") from None
        if math.isinf(self.threshold_):
            raise ValueError(f"{path}: metadata threshold {self.threshold_} is not finite: expected a fitted "
                             "detector's (NaN: none set)")
        self.kind = meta["kind"]
        size = int(meta.get("image_size", 0))
        self.shape = ((int(meta["feature_dim"]),) if self.kind == "feature" else (int(meta["channels"]), size, size))

    def _expected(self) -> str:
        if self.kind == "feature":
            return f"(N, {self.shape[0]}) features or (N, R, {self.shape[0]}) rotated views"
        return f"(N, {', '.join(map(str, self.shape))})"

    def decision_function(self, X, batch_size: int = 256) -> np.ndarray:
        """Anomaly score -D(x) per sample (float64), batched; the mean over views for (N, R, D).

        X as for `ALGAN.decision_function`: float images in [-1, 1] (uint8 or 0..255 images are refused,
        not rescaled: convert with x / 127.5 - 1) or real feature vectors; NaN, inf, complex refused."""
        x = as_tensor(X, "X", images=self.kind == "image").cpu().numpy()
        views = x.ndim == 3 and self.kind == "feature"
        if x.shape[1 + views:] != self.shape:
            raise ValueError(f"X has shape {x.shape}: expected {self._expected()} as in the exported model "
                             f"({self.path.name} metadata)")
        flat = x.reshape(-1, *self.shape)
        scores = np.concatenate([self.session.run(None, {"x": flat[i:i + batch_size]})[0]
                                 for i in range(0, len(flat), batch_size)]).astype(np.float64)
        return scores.reshape(len(x), -1).mean(1) if views else scores

    def predict(self, X) -> np.ndarray:
        """0 = normal, 1 = anomalous (score above `threshold_`)."""
        if not math.isfinite(self.threshold_):
            raise ValueError(f"{self.path.name} has threshold {self.threshold_}: expected a finite one; export a "
                             "fitted detector")
        return (self.decision_function(X) > self.threshold_).astype(np.int64)
