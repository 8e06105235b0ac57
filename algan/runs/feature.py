"""Feature runs (Table 2): ALGAN-feature and the feature-based baselines on pretrained features.

Two sources of features, both split with the same seeds as the image pages:
- `adbench`: ADBench's ResNet-18 embeddings (512-d, last average pool) of all 15 MVTec-AD
  categories, one `.npz` per category with train and test merged; `load_features` makes the split.
- an image data set (`mvtec` bottle, `mtd`, `coil100`) through a pretrained backbone
  (`algan.extract`): pooled features of rotated copies for ALGAN-feature and the pooled
  baselines (DifferNet's protocol, Sec. IV-B-5), mid-level patch maps for PaDiM and PatchCore.
CutPaste (`algan.models.cutpaste`) fine-tunes the backbone itself, so it trains on the images of an image
data set (same split) and has no run on ADBench's pooled features (Table 2 says 'not applicable').
Each (method, source, category, seed, profile) is one run of the run cache; the Table 2 page is
`algan.pages.features`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from .. import results, resume
from ..config import profile as make_profile
from ..data import DataError, load_dataset, load_features, resolve_root
from ..detector import ALGAN
from ..models import cutpaste as cp
from ..models import feature_baselines as fb
from ..score import auroc


ADBENCH_DIR = "adbench/mvtec_resnet18"
IMAGE_SOURCES = ("mvtec", "mtd", "coil100")
METHODS = ("algan", "spade", "mahalanobis", "padim", "patchcore_25", "patchcore_10", "patchcore_1", "differnet",
           "cutpaste")
PATCH_METHODS = frozenset({"padim", "patchcore_25", "patchcore_10", "patchcore_1"})
IMAGE_TRAINED = frozenset({"cutpaste"})  # fine-tune the backbone on images: image sources only
NOT_APPLICABLE = "not applicable: trains its CNN on images, and ADBench ships pooled ResNet-18 features only"
LABELS = {"algan": "ALGAN-feature", **fb.LABELS, "cutpaste": "CutPaste"}
# Per profile: the backbone for image data sets, the rotations (training, prediction), DifferNet's
# epochs and which sources a page runs. The paper: WideResNet-101, 24 / 64 rotations (Sec. IV-A,
# IV-B-5). `cpu` uses the offline EfficientNet-Lite0 and 4 / 4 rotations (one angle of one image
# costs about 0.1 s on 2 busy cores: COIL-100's 7,200 images took 82 min); `smoke` runs two sources.
FEATURE_SETTINGS = {
    "paper": {"backbone": "wide_resnet101_2", "rotations": (24, 64), "differnet_epochs": 192,
              "sources": ("adbench",) + IMAGE_SOURCES},
    "cpu": {"backbone": "efficientnet_lite0", "rotations": (4, 4), "differnet_epochs": 64,
            "sources": ("adbench",) + IMAGE_SOURCES},
    "smoke": {"backbone": "efficientnet_lite0", "rotations": (1, 1), "differnet_epochs": 2,
              "sources": ("adbench", "mvtec")},
}


@dataclass
class FeatureData:
    """One seeded split of features. `pooled` per split is (N, D) or rotated views (N, R, D);
    `maps` per split is (N, C, h, w) patch features, for image sources only; `images` per split is
    (N, C, H, W) in [-1, 1], for the methods that train on images (IMAGE_TRAINED) only."""

    source: str
    category: str
    seed: int
    ids: dict[str, list]
    labels: dict[str, np.ndarray]
    pooled: dict[str, np.ndarray]
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)


def settings(profile: str) -> dict:
    if profile not in FEATURE_SETTINGS:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(FEATURE_SETTINGS)}")
    return FEATURE_SETTINGS[profile]


def adbench_categories(data_root=None) -> list[str]:
    """MVTec-AD categories with an ADBench feature file under the data root."""
    folder = resolve_root(data_root) / ADBENCH_DIR
    found = sorted(p.stem for p in folder.glob("*.npz"))
    if not found:
        raise DataError(f"{folder}: no <category>.npz feature files, expected ADBench's MVTec-AD ResNet-18 "
                        "features; point the data root at the folder holding adbench/")
    return found


def load_feature_data(source: str, category: Optional[str], seed: int, profile: str, *, data_root=None,
                      backbone: Optional[str] = None, with_maps: bool = False) -> FeatureData:
    """The features of one source / category, split by `seed` (extraction is cached on disk)."""
    if source == "adbench":
        fs = load_features(resolve_root(data_root) / ADBENCH_DIR / f"{category}.npz", seed=seed)
        parts = {"train": fs.train, "val": fs.val, "test": fs.test}
        return FeatureData(source, category, seed, ids={k: v.rows.tolist() for k, v in parts.items()},
                           labels={k: v.y for k, v in parts.items()}, pooled={k: v.x for k, v in parts.items()},
                           info={"split_hash": fs.split_hash(), "path": str(fs.path), "dim": fs.train.x.shape[1]})
    if source not in IMAGE_SOURCES:
        raise ValueError(f"unknown feature source {source!r}: expected 'adbench' or one of {IMAGE_SOURCES}")
    from .. import extract

    st = settings(profile)
    backbone = backbone or st["backbone"]
    root = resolve_root(data_root)
    # The image loader makes the split (the same files per seed as ALGAN-image); 8 px keeps it cheap.
    splits = load_dataset(source, root, category=category, image_size=8, seed=seed)
    category = category or source
    names = ("train", "val", "test")
    rel = {k: getattr(splits, k).paths for k in names}
    everything = sorted({p for k in names for p in rel[k]})
    row = {p: i for i, p in enumerate(everything)}
    files = [root / p for p in everything]
    n_train, n_pred = st["rotations"]
    kw = dict(backbone=backbone, category=category, root=root)
    train_views = extract.cached_features(files, angles=extract.rotation_angles(n_train), kind="pooled", **kw)
    pred_views = train_views if n_pred == n_train else extract.cached_features(
        files, angles=extract.rotation_angles(n_pred), kind="pooled", **kw)
    idx = {k: np.array([row[p] for p in rel[k]]) for k in names}
    pooled = {"train": train_views[idx["train"]], "val": pred_views[idx["val"]], "test": pred_views[idx["test"]]}
    maps = {}
    if with_maps:
        all_maps = extract.cached_features(files, angles=[0.0], kind="maps", **kw)
        maps = {k: all_maps[idx[k]].astype(np.float32) for k in names}
    return FeatureData(source, category, seed, ids=rel, labels={k: getattr(splits, k).y.numpy() for k in names},
                       pooled=pooled, maps=maps,
                       info={"split_hash": splits.split_hash(), "backbone": backbone, "rotations": [n_train, n_pred],
                             "dim": int(pooled["train"].shape[-1])})


def load_image_data(source: str, category: Optional[str], seed: int, profile: str, *, data_root=None,
                    backbone: Optional[str] = None) -> FeatureData:
    """The images of one image source at CutPaste's `image_size` for `profile`, split by `seed` (the same
    files per split as the other Table 2 runs and the image pages)."""
    if source not in IMAGE_SOURCES:
        raise ValueError(f"feature source {source!r} for CutPaste: it trains on images, expected one of "
                         f"{IMAGE_SOURCES} ({NOT_APPLICABLE})")
    size = cp.settings(profile)["image_size"]
    splits = load_dataset(source, resolve_root(data_root), category=category, image_size=size, seed=seed)
    names = ("train", "val", "test")
    return FeatureData(source, category or source, seed, ids={k: getattr(splits, k).paths for k in names},
                       labels={k: getattr(splits, k).y.numpy() for k in names}, pooled={},
                       images={k: getattr(splits, k).x for k in names},
                       info={"split_hash": splits.split_hash(), "backbone": backbone or cp.default_backbone(profile),
                             "image_size": size, "dim": None})


def fit_and_score(method: str, data: FeatureData, profile: str, seed: int, overrides: dict,
                  device: str) -> tuple[dict[str, np.ndarray], dict, Optional[pd.DataFrame], Any]:
    """(scores per split, extra metrics, per-epoch history or None, the fitted detector)."""
    if method == "algan":
        cfg = make_profile(profile, kind="feature", **overrides)
        det = ALGAN(cfg, seed=seed, device=device, progress=False)
        det.fit(data.pooled["train"], X_val=data.pooled["val"], y_val=data.labels["val"])
        extra = {"best_epoch": det.best_epoch_, "val_auroc": det.best_val_auroc_, "epochs": cfg.train.epochs,
                 "test_auroc_last": auroc(data.labels["test"], det.decision_function(data.pooled["test"], checkpoint="last")),
                 **det.rule_metrics(data.pooled["test"], data.labels["test"])}  # train.record_selects: every rule's
        return {k: det.decision_function(data.pooled[k]) for k in ("val", "test")}, extra, det.history_, det
    if method == "cutpaste":
        det = cp.CutPaste(profile, seed=seed, device=device, **{"backbone": data.info["backbone"], **overrides})
        det.fit(data.images["train"])
        scores = {k: det.decision_function(data.images[k]) for k in ("val", "test")}
        h = pd.DataFrame(det.history)
        extra = {"input": f"images {det.settings['image_size']} px", "dim": det.embedding_dim_,
                 "val_auroc": auroc(data.labels["val"], scores["val"]), "steps": det.settings["steps"],
                 "final_train_accuracy": float(h["train_accuracy"].tail(8).mean()) if len(h) else None}
        return scores, extra, h if len(h) else None, det
    if method not in fb.FEATURE_BASELINES:
        raise ValueError(f"unknown feature method {method!r}: expected one of {METHODS}")
    kwargs = dict(overrides)
    if method == "differnet":
        kwargs.setdefault("epochs", settings(profile)["differnet_epochs"])
    det = fb.FEATURE_BASELINES[method](seed=seed, **kwargs)
    use_maps = method in PATCH_METHODS and data.maps
    x = data.maps if use_maps else data.pooled
    extra = {"input": "patch maps" if use_maps else "pooled"}
    if x["train"].ndim == 3:  # rotated views of pooled features
        fb.fit_rotations(det, x["train"], X_val=x["val"], y_val=data.labels["val"])
        scores = {k: fb.score_rotations(det, x[k]) for k in ("val", "test")}
    else:
        det.fit(x["train"], X_val=x["val"], y_val=data.labels["val"])
        scores = {k: det.decision_function(x[k]) for k in ("val", "test")}
    history = pd.DataFrame(det.history) if getattr(det, "history", None) else None
    extra["val_auroc"] = auroc(data.labels["val"], scores["val"])
    if history is not None and "val_auroc" in history:
        extra["val_auroc"] = float(history["val_auroc"].max())
    return scores, extra, history, det


def feature_run_args(method: str, source: str, category: Optional[str], profile: str, seed: int,
                     backbone: Optional[str] = None, overrides: Optional[dict] = None) -> dict[str, Any]:
    """The arguments that name a run (and hash to its folder). The data root is not one of them."""
    if source != "adbench":
        default = cp.default_backbone(profile) if method in IMAGE_TRAINED else settings(profile)["backbone"]
        backbone = backbone or default
    return {"task": "feature_run", "method": method, "source": source, "category": category or source,
            "profile": profile, "seed": int(seed), "backbone": backbone if source != "adbench" else "resnet18 (ADBench)",
            "overrides": dict(sorted((overrides or {}).items()))}


def run_feature(method: str, source: str, *, category: Optional[str] = None, profile: str = "cpu", seed: int = 0,
                backbone: Optional[str] = None, overrides: Optional[dict] = None, data_root=None, runs_dir=None,
                device: str = "cpu", checkpoint_every: int = resume.CHECKPOINT_EVERY) -> dict[str, Any]:
    """Fit one feature method on one source / category / seed; cached like the image runs (ALGAN-feature's
    training resumable as theirs)."""
    if method not in METHODS:
        raise ValueError(f"unknown feature method {method!r}: expected one of {METHODS}")
    settings(profile)
    if method in IMAGE_TRAINED and source not in IMAGE_SOURCES:
        raise ValueError(f"method {method!r} on source {source!r}: {NOT_APPLICABLE}; expected one of {IMAGE_SOURCES}")
    args = feature_run_args(method, source, category, profile, seed, backbone, overrides)
    resolved = make_profile(profile, kind="feature", **(overrides or {})).to_dict() if method == "algan" else None
    if method == "cutpaste":  # its resolved settings: a changed default reruns the run
        resolved = json.loads(json.dumps(cp.CutPaste(profile, **{"backbone": args["backbone"],
                                                                 **(overrides or {})}).settings))

    loaded: list[FeatureData] = []

    def data_once() -> FeatureData:
        if not loaded and method in IMAGE_TRAINED:
            loaded.append(load_image_data(source, category, seed, profile, data_root=data_root,
                                          backbone=args["backbone"]))
        if not loaded:
            loaded.append(load_feature_data(source, category, seed, profile, data_root=data_root,
                                            backbone=backbone, with_maps=method in PATCH_METHODS))
        return loaded[0]

    def execute(folder: Path) -> dict[str, Any]:
        data = data_once()
        # the row ids once per split in <runs>/_splits (results.split_files reads them back)
        results.write_splits(folder, {**data.info, "source": source, "category": data.category, "seed": seed},
                             data.ids)
        start = time.perf_counter()
        scores, extra, history, det = fit_and_score(method, data, profile, seed, overrides or {}, device)
        fit_seconds = time.perf_counter() - start
        results.write_scores(folder, pd.concat([
            pd.DataFrame({"split": k, "id": data.ids[k], "label": data.labels[k], "score": scores[k]})
            for k in ("val", "test")]), results.SCORED_SPLITS)
        if history is not None:
            results.write_history(folder, history)
        if isinstance(det, ALGAN):
            det.save(folder / "model.pt")
        return {"test_auroc": auroc(data.labels["test"], scores["test"]), "split_hash": data.info["split_hash"],
                "n_train": len(data.labels["train"]), "n_val": len(data.labels["val"]),
                "n_test": len(data.labels["test"]), "fit_and_score_seconds": round(fit_seconds, 3),
                "dim": data.info["dim"], "rotations": data.info.get("rotations"), **extra}

    if not results.is_done(results.run_dir(args, runs_dir)):
        data_once()  # a missing source fails here, before a run folder is made; execute reuses the data
    return results.cached_run(args, execute, runs_dir, device=device, resolved=resolved,
                              checkpoint_every=checkpoint_every if method == "algan" else None)


def tidy(run: dict[str, Any]) -> list[dict]:
    """One row per metric of a finished feature run, with its arguments and provenance."""
    cfg, m, a = run["config"], run["metrics"], run["config"]["args"]
    base = {"source": a["source"], "category": a["category"], "method": a["method"], "seed": a["seed"],
            "profile": a["profile"], "backbone": a["backbone"], "device": cfg["device"], "commit": cfg["commit"],
            "finished_utc": cfg.get("finished_utc"), "wall_seconds": cfg.get("wall_seconds"), "run": cfg["hash"],
            "split_hash": m.get("split_hash")}
    return [{**base, "metric": k, "value": m[k]} for k in ("test_auroc", "val_auroc") if k in m]
