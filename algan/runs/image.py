"""Image runs (Tables 1, 3, 4): one method on one data set / category / seed -> one run folder.

Runs go through the run cache (`algan.results.cached_run`): a finished run is never redone, an
interrupted one is (a GAN's training from its last checkpoint, `algan.resume`). `tidy_rows` gives a finished
run's rows with its provenance (profile, seed, device, commit, wall time), which the pages (`algan.pages`)
tabulate. Nothing here knows of sweeps or pages.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import pandas as pd
import torch

from .. import results, resume
from ..config import profile as make_profile, reading_of, reading_overrides
from ..data import DataError, MVTEC_CATEGORIES, Splits, load_dataset, resolve_root
from ..data.splits import require_evaluable
from ..detector import ALGAN
from ..models.alocc import ALOCC
from ..models.ganomaly import GANomaly
from ..models.knn import PixelKNN
from ..models.skip_ganomaly import SkipGANomaly
from ..score import auroc
from .common import check_profile, default_device


def fit_estimator(cls, splits: Splits, profile: str, seed: int, overrides: dict, device: str, progress: bool):
    """Fit a GAN detector (ALGAN or a baseline) on the training split; select its checkpoint on validation."""
    cfg = make_profile(profile, **overrides).override(**{"model.extra_channels": splits.extra_channels})
    det = cls(cfg, seed=seed, device=device, progress=progress)
    det.fit(splits.train.x, X_val=splits.val.x, y_val=splits.val.y.numpy(), augment=splits.augment)
    extra = {"best_epoch": det.best_epoch_, "val_auroc": det.best_val_auroc_, "epochs": cfg.train.epochs,
             "image_size": cfg.model.image_size, "seconds_per_epoch": float(det.history_["seconds"].mean())}
    return det, extra, det.history_


def fit_knn(splits: Splits, profile: str, seed: int, overrides: dict, device: str, progress: bool):
    """The raw-pixel kNN reference (32x32, k = 1): no epochs, so no validation-based selection."""
    det = PixelKNN(**overrides).fit(splits.train.x, X_val=splits.val.x, y_val=splits.val.y.numpy())
    return det, {"size": det.size, "k": det.k}, None


METHODS: dict[str, Callable] = {"algan": partial(fit_estimator, ALGAN), "knn": fit_knn,
                                "ganomaly": partial(fit_estimator, GANomaly),
                                "skip_ganomaly": partial(fit_estimator, SkipGANomaly),
                                "alocc": partial(fit_estimator, ALOCC)}
METHOD_LABELS = {"algan": "ALGAN-image", "knn": "raw-pixel kNN (reference)", "ganomaly": "GANomaly",
                 "skip_ganomaly": "Skip-GANomaly", "alocc": "ALOCC"}
DATASET_LABELS = {"mvtec": "MVTec-AD", "mtd": "MTD", "coil100": "COIL-100"}
GAN_BASELINES = ("ganomaly", "skip_ganomaly", "alocc")


def method_label(method: str) -> str:
    """"algan" -> "ALGAN-image"; "algan [active]" -> "ALGAN-image (active reading)"."""
    base, _, tag = method.partition(" [")
    label = METHOD_LABELS.get(base, base)
    return f"{label} ({tag.rstrip(']')} reading)" if tag else label


def image_run_args(method: str, dataset: str, category: Optional[str], profile: str, seed: int,
                   overrides: Optional[dict] = None) -> dict[str, Any]:
    """The arguments that name a run (and hash to its folder). The data root is not one of them; an override
    equal to the profile's own value is, as in the sweep runner, left out (the run is the profile's run)."""
    overrides = overrides or {}
    if overrides and method != "knn":
        base = make_profile(check_profile(profile)).to_dict()
        same = lambda key, value: base.get(key.split(".")[0], {}).get(key.split(".")[-1], object()) == value  # noqa: E731
        overrides = {k: v for k, v in overrides.items() if not same(k, v)}
    return {"task": "image_run", "method": method, "dataset": dataset, "category": category,
            "profile": check_profile(profile), "seed": int(seed), "overrides": dict(sorted(overrides.items()))}


def run_image(method: str, dataset: str, *, category: Optional[str] = None, profile: str = "cpu", seed: int = 0,
              overrides: Optional[dict] = None, data_root=None, runs_dir=None, device: Optional[str] = None,
              progress: bool = False, checkpoint_every: int = resume.CHECKPOINT_EVERY) -> dict[str, Any]:
    """Train `method` on one data set / category / seed with the profile's settings; cached. A GAN's
    training state is checkpointed every `checkpoint_every` epochs, and an interrupted run resumes from it."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}: expected one of {sorted(METHODS)}")
    args = image_run_args(method, dataset, category, profile, seed, overrides)
    device = device or default_device()
    # Every method loads the data at the profile's resolution, so all see the same split and pixels.
    cfg = make_profile(profile, **((overrides or {}) if method != "knn" else {}))
    size = cfg.model.image_size

    loaded: list[Splits] = []

    def splits_once() -> Splits:
        if not loaded:
            loaded.append(load_dataset(dataset, data_root, category=category, image_size=size, seed=seed))
        return loaded[0]

    def execute(folder: Path) -> dict[str, Any]:
        splits = splits_once()
        results.write_splits(folder, {"split_hash": splits.split_hash(), **splits.describe()}, splits.file_lists())
        det, extra, history = METHODS[method](splits, profile, seed, overrides or {}, device, progress)
        scores = {name: det.decision_function(getattr(splits, name).x) for name in ("val", "test")}
        # rows in the order of the split's file list (results.split_files), each score exact
        results.write_scores(folder, pd.concat([
            pd.DataFrame({"split": name, "label": getattr(splits, name).y.numpy(), "score": s})
            for name, s in scores.items()]), results.SCORED_SPLITS)
        if history is not None:
            results.write_history(folder, history)
        det.save(folder / "model.pt")
        if isinstance(det, ALGAN) and shows_samples(args):
            save_samples(det, folder / "samples.png")
        y_test = splits.test.y.numpy()
        pred = (scores["test"] > det.threshold_).astype(int)
        if isinstance(det, ALGAN):  # the last epoch's D beside the chosen one: what the selection rule buys
            extra["test_auroc_last"] = auroc(y_test, det.decision_function(splits.test.x, checkpoint="last"))
            extra.update(det.rule_metrics(splits.test.x, y_test))  # train.record_selects: every rule's
        return {"test_auroc": auroc(y_test, scores["test"]), "threshold": det.threshold_,
                "test_tpr_at_threshold": float(pred[y_test == 1].mean()),
                "test_fpr_at_threshold": float(pred[y_test == 0].mean()),
                "split_hash": splits.split_hash(), "n_train": len(splits.train), "n_val": len(splits.val),
                "n_test": len(splits.test), **extra}

    if not results.is_done(results.run_dir(args, runs_dir)):
        # a missing data set, or one too small to validate and test on, fails here, before a run folder is made
        require_evaluable(splits_once(), dataset + (f"/{category}" if category else ""))
    # The resolved settings guard the cache against changed defaults (the channel count comes from the data).
    gan = method != "knn"
    return results.cached_run(args, execute, runs_dir, device=device, resolved=cfg.to_dict() if gan else None,
                              checkpoint_every=checkpoint_every if gan else None)


def categories_present(dataset: str, data_root=None) -> list[Optional[str]]:
    """MVTec-AD categories under the data root (others have no categories)."""
    if dataset != "mvtec":
        return [None]
    root = resolve_root(data_root) / "mvtec"
    found = [c for c in MVTEC_CATEGORIES if (root / c).is_dir()]
    if not found:
        raise DataError(f"{root}: no MVTec-AD category folder found (expected e.g. {root / 'bottle'}); "
                        "point the data root at the folder holding mvtec/")
    return found


def tidy_rows(run: dict[str, Any], metrics: Iterable[str] = ("test_auroc", "val_auroc")) -> list[dict]:
    """One row per metric, carrying the run's arguments and provenance."""
    cfg, m = run["config"], run["metrics"]
    a = cfg["args"]
    base = {"dataset": a["dataset"], "category": a["category"] or a["dataset"], "method": a["method"],
            "seed": a["seed"], "profile": a["profile"], "device": cfg["device"], "commit": cfg["commit"],
            "code": cfg.get("code"), "finished_utc": cfg.get("finished_utc"), "wall_seconds": cfg.get("wall_seconds"),
            "run": cfg["hash"], "split_hash": m.get("split_hash"),
            "reading": (reading_of(cfg["resolved"], baseline=a["method"] in GAN_BASELINES) if cfg.get("resolved")
                        else "none (no config)")}
    return [{**base, "metric": k, "value": m[k]} for k in metrics if k in m]


def shows_samples(args: dict[str, Any]) -> bool:
    """Whether a run's samples are a figure's: Figure 1's (ALGAN-image on MVTec bottle under the literal and the
    active reading) or the readings page's (the active reading with each batch-norm choice for x'); other runs
    (`image_run_args`) keep no samples.png (~120 KB each)."""
    def named(name: str) -> dict:  # a reading's overrides as a run's arguments hold them
        return image_run_args("algan", "mvtec", "bottle", args["profile"], 0, reading_overrides(name))["overrides"]

    def without_bn(over: dict) -> dict:
        return {k: v for k, v in over.items() if k != "train.fake_bn_stats"}

    over = args["overrides"]
    return (args["method"] == "algan" and (args["dataset"], args["category"]) == ("mvtec", "bottle")
            and (over == named("literal") or without_bn(over) == without_bn(named("active"))))


def save_samples(det: ALGAN, path: Path, n: int = 8, seed: int = 0) -> None:
    """Figure 1's material: a row of fake-normal and a row of fake-anomalous images, made as D saw them in
    training (`ALGAN.training_fakes`: the reading's batch-norm statistics), as a PNG."""
    from PIL import Image

    rows = []
    for x in det.training_fakes(n, seed=seed):                  # (n, C, H, W) in [-1, 1]
        channels = det.config.model.channels - 2 * det.config.model.extra_channels
        x = x[:, :channels].clamp(-1, 1)                          # drop the max/mean channels
        x = x.expand(-1, 3, -1, -1) if channels == 1 else x
        rows.append(torch.cat(list(x), dim=2))                    # (3, H, n W)
    grid = ((torch.cat(rows, dim=1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    with results.atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
