"""Tabular runs (beyond the paper): ALGAN-feature and PyOD's detectors on ADBench's classical sets.

The paper (Sec. VI): "our proposed method can be directly applied to both images and features ... Standard
GANs have the potential to approximate any data distribution. ALGAN, an extension of standard GANs, has
the same potential." Here ALGAN-feature (the profile's feature settings) and seven of PyOD's detectors
(`algan.models.pyod_baselines`) are trained on the same normal rows of each set in a folder of `.npz`
files (`X` (n, d), `y` (n,), 1 = anomaly; the data root's `adbench/classical/` holds 16 of ADBench's).

- The split is the library's feature split (`algan.data.features.split_arrays`, that of Table 2's
  ADBench features): per seed, normal rows 60 / 20 / 20 into train / validation / test, anomalous rows
  halved between validation and test; training sees normal rows only, and every method of a seed gets
  the same split.
- One scaling step for every method (`SCALING`): each column standardised with the training rows' mean
  and std, a column constant over the training rows set to 0 (ALGAN: `model.feature_scaling =
  "drop_constant"`; PyOD: `pyod_baselines.scale_columns`).
- ALGAN is reported twice from the same run: the checkpoint chosen on validation AUROC (labels of the
  validation split used) and the last epoch's D (no labels used, as PyOD's detectors).

Each (method, set, seed, profile) is one run of the run cache (`tabular_run_args`); the sweep runner runs
them (`algan sweep` with `method: tabular:<name>`, `dataset: classical`; `algan studies --only tabular`), and
the tabular page is `algan.pages.tabular`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from .. import results, resume
from ..config import profile as make_profile
from ..data import DataError, resolve_root
from ..data.features import FeatureSplits, read_npz, split_arrays
from ..data.splits import require_evaluable
from ..models.pyod_baselines import LABELS as PYOD_LABELS, PYOD_MODELS, PyODDetector
from ..score import auroc


TABULAR_DIR = "adbench/classical"
DATASET = "classical"  # the sweep's name for the folder of tabular sets under the data root
PREFIX = "tabular:"
METHODS = ("algan",) + tuple(PYOD_MODELS)
LABELS = {"algan": "ALGAN-feature", **PYOD_LABELS}
SCALING = "drop_constant"  # chosen once, before any result: a column constant in training carries nothing to learn
# The page's two views of ALGAN (the same runs): the method column of `comparison_rows`.
ALGAN_VAL, ALGAN_LAST = "ALGAN (val.)", "ALGAN (last)"  # the checkpoint chosen on validation; the last epoch
# Per profile: ALGAN's epochs (at most `max_epochs`; with `updates`, a set with many training rows gets fewer,
# about `updates` generator updates, in whole multiples of eval_every), the sets (None: every file), a
# subset of each file (at most n normal, n anomalous rows, drawn once, the same for every seed) and PyOD's
# non-default settings. cpu: 96 epochs (Table 2's) on sets up to about 400 training rows, then about 2,500
# generator updates, sized so the page's 384 runs take about 1.3-2 h on 2 busy cores (issue 22's measurements).
TABULAR_SETTINGS = {
    "paper": {"max_epochs": 192, "updates": None, "sets": None, "subset": None, "pyod": {}},
    "cpu": {"max_epochs": 96, "updates": 2500, "sets": None, "subset": None, "pyod": {}},
    "smoke": {"max_epochs": 2, "updates": None, "sets": ("15_Hepatitis", "21_Lymphography", "43_WDBC"),
              "subset": (60, 12), "pyod": {"deepsvdd": {"epochs": 2}}},
}


def settings(profile: str) -> dict:
    if profile not in TABULAR_SETTINGS:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(TABULAR_SETTINGS)}")
    return TABULAR_SETTINGS[profile]


def folder_of(data_root=None, folder=None) -> Path:
    return Path(folder).expanduser() if folder is not None else resolve_root(data_root) / TABULAR_DIR


def tabular_sets(data_root=None, folder=None) -> list[str]:
    """The sets (file stems) of a folder of `.npz` files, default the data root's ADBench classical sets."""
    where = folder_of(data_root, folder)
    found = sorted((p.stem for p in where.glob("*.npz")), key=natural_key)
    if not found:
        raise DataError(f"{where}: no <set>.npz files, expected tabular sets with arrays X (n, d) and y (n,); "
                        "point the data root at the folder holding adbench/classical/")
    return found


def natural_key(name: str):
    head = name.split("_", 1)[0]
    return (int(head), name) if head.isdigit() else (math.inf, name)


def load_tabular(name: str, seed: int = 0, profile: str = "cpu", *, data_root=None, folder=None) -> FeatureSplits:
    """One set split by `seed` (normal rows 60/20/20, anomalous rows 50/50 validation / test); `name` is a
    set of the folder or a path to an .npz. Bad files are a DataError of one line naming the file."""
    path = Path(name) if str(name).endswith(".npz") else folder_of(data_root, folder) / f"{name}.npz"
    X, y = read_npz(path)
    rows = np.arange(len(y))
    subset = settings(profile)["subset"]
    if subset is not None:  # the same rows for every seed and method: a fixed draw, not the run's seed
        rng = np.random.default_rng(0)
        keep = [np.sort(rng.permutation(np.flatnonzero(y == label))[:cap]) for label, cap in ((0, subset[0]), (1, subset[1]))]
        rows = np.sort(np.concatenate(keep))
        X, y = X[rows], y[rows]
    splits = split_arrays(X, y, seed, path, rows)
    require_evaluable(splits, str(path))
    return splits


def check_sets(names, profile: str = "cpu", *, data_root=None, folder=None) -> dict[str, dict]:
    """Every set read and split (seed 0) before any training: the first bad file stops here (DataError)."""
    return {name: load_tabular(name, 0, profile, data_root=data_root, folder=folder).describe() for name in names}


def algan_epochs(n_train: int, profile: str) -> int:
    """ALGAN's epochs on a set of `n_train` training rows under the profile's rule (TABULAR_SETTINGS)."""
    st, cfg = settings(profile), make_profile(profile, kind="feature")
    if st["updates"] is None:
        return st["max_epochs"]
    every = cfg.train.eval_every
    per_epoch = math.ceil(n_train / cfg.train.batch_size)
    return int(min(st["max_epochs"], max(every, every * round(st["updates"] / per_epoch / every))))


def tabular_run_args(method: str, category: str, profile: str, seed: int,
                     overrides: Optional[dict] = None) -> dict[str, Any]:
    """The arguments that name a run (and hash to its folder). The data root is not one of them."""
    st = settings(profile)
    args = {"task": "tabular_run", "method": method, "dataset": DATASET, "category": category, "profile": profile,
            "seed": int(seed), "scaling": SCALING, "subset": st["subset"],
            "overrides": dict(sorted((overrides or {}).items()))}
    if method == "algan":
        args["epochs_rule"] = {"max_epochs": st["max_epochs"], "updates": st["updates"]}
    else:
        args["params"] = st["pyod"].get(method, {})
    return args


def algan_config(profile: str, n_train: int, overrides: Optional[dict] = None):
    return make_profile(profile, kind="feature", **{"model.feature_scaling": SCALING,
                                                    "train.epochs": algan_epochs(n_train, profile),
                                                    **(overrides or {})})


def run_tabular(method: str, dataset: str = DATASET, *, category: str, profile: str = "cpu", seed: int = 0,
                overrides: Optional[dict] = None, data_root=None, runs_dir=None, device: str = "cpu",
                checkpoint_every: int = resume.CHECKPOINT_EVERY) -> dict[str, Any]:
    """Fit one method on one set and seed (cached; ALGAN's training resumable as every GAN run's)."""
    if method not in METHODS:
        raise ValueError(f"unknown tabular method {method!r}: expected one of {list(METHODS)}")
    if dataset != DATASET:
        raise ValueError(f"tabular data set {dataset!r}: expected {DATASET!r} (the data root's {TABULAR_DIR}/)")
    args = tabular_run_args(method, category, profile, seed, overrides if method == "algan" else None)
    data = load_tabular(category, seed, profile, data_root=data_root)  # a bad file fails before a run folder
    cfg = algan_config(profile, len(data.train), overrides) if method == "algan" else None

    def execute(folder: Path) -> dict[str, Any]:
        results.write_splits(folder, data.describe(), data.file_lists())  # the row ids once per split in _splits
        parts = {"val": data.val, "test": data.test}
        start = time.perf_counter()
        extra, history = {}, None
        if method == "algan":
            from ..detector import ALGAN

            det = ALGAN(cfg, seed=seed, device=device, progress=False).fit(data.train.x, X_val=data.val.x,
                                                                            y_val=data.val.y)
            scores = {k: det.decision_function(p.x) for k, p in parts.items()}
            last_scores = {k: det.decision_function(p.x, checkpoint="last") for k, p in parts.items()}
            history = det.history_
            extra = {"best_epoch": det.best_epoch_, "val_auroc": det.best_val_auroc_, "epochs": cfg.train.epochs,
                     "test_auroc_last": auroc(data.test.y, last_scores["test"]),
                     "val_auroc_last": auroc(data.val.y, last_scores["val"]),
                     **det.rule_metrics(data.test.x, data.test.y)}  # train.record_selects: every rule's
            det.save(folder / "model.pt")
        else:
            det = PyODDetector(method, seed=seed, **args["params"]).fit(data.train.x, data.val.x, data.val.y)
            scores = {k: det.decision_function(p.x) for k, p in parts.items()}
            last_scores = None
            extra = {"val_auroc": auroc(data.val.y, scores["val"])}
        fit_seconds = time.perf_counter() - start
        frames = [pd.DataFrame({"split": k, "checkpoint": "chosen", "id": p.rows, "label": p.y, "score": scores[k]})
                  for k, p in parts.items()]
        if last_scores is not None:
            frames += [pd.DataFrame({"split": k, "checkpoint": "last", "id": p.rows, "label": p.y,
                                     "score": last_scores[k]}) for k, p in parts.items()]
        results.write_scores(folder, pd.concat(frames), results.SCORED_SPLITS)
        if history is not None:
            results.write_history(folder, history)
        return {"test_auroc": auroc(data.test.y, scores["test"]), "split_hash": data.split_hash(),
                "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
                "n_test_anomalous": int(data.test.y.sum()), "dim": int(data.train.x.shape[1]),
                "fit_and_score_seconds": round(fit_seconds, 3), **extra}

    return results.cached_run(args, execute, runs_dir, device=device,
                              resolved=cfg.to_dict() if cfg is not None else None,
                              checkpoint_every=checkpoint_every if method == "algan" else None)


METRICS = ("test_auroc", "val_auroc", "test_auroc_last", "val_auroc_last")


def tidy(run: dict[str, Any]) -> list[dict]:
    """One row per metric of a finished tabular run, with its arguments, split sizes and provenance."""
    cfg, m, a = run["config"], run["metrics"], run["config"]["args"]
    base = {"dataset": a["category"], "method": a["method"], "seed": a["seed"], "profile": a["profile"],
            "device": cfg["device"], "commit": cfg["commit"], "code": cfg.get("code"),
            "finished_utc": cfg.get("finished_utc"), "wall_seconds": cfg.get("wall_seconds"), "run": cfg["hash"],
            "split_hash": m.get("split_hash"), "n_train": m.get("n_train"), "n_test": m.get("n_test"),
            "n_test_anomalous": m.get("n_test_anomalous"), "dim": m.get("dim"), "epochs": m.get("epochs")}
    return [{**base, "metric": k, "value": m[k]} for k in METRICS if k in m]
