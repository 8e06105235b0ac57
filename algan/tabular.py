"""Beyond the paper: ALGAN-feature on tabular data against PyOD's detectors (ADBench's classical sets).

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
them (`algan sweep` with `method: tabular:<name>`, `dataset: classical`; `algan studies --only tabular`).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import results, resume
from .config import profile as make_profile
from .data import DataError, resolve_root
from .data.features import FeatureSplits, read_npz, split_arrays
from .data.splits import require_evaluable
from .models.pyod_baselines import LABELS as PYOD_LABELS, PYOD_MODELS, PyODDetector
from .score import auroc

TABULAR_DIR = "adbench/classical"
DATASET = "classical"  # the sweep's name for the folder of tabular sets under the data root
PREFIX = "tabular:"
METHODS = ("algan",) + tuple(PYOD_MODELS)
LABELS = {"algan": "ALGAN-feature", **PYOD_LABELS}
SCALING = "drop_constant"  # chosen once, before any result: a column constant in training carries nothing to learn
FEW_ANOMALIES = 20  # a set with fewer anomalous test rows is flagged wherever its numbers are shown
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


# ---- data ------------------------------------------------------------------------------------------
def folder_of(data_root=None, folder=None) -> Path:
    return Path(folder).expanduser() if folder is not None else resolve_root(data_root) / TABULAR_DIR


def tabular_sets(data_root=None, folder=None) -> list[str]:
    """The sets (file stems) of a folder of `.npz` files, default the data root's ADBench classical sets."""
    where = folder_of(data_root, folder)
    found = sorted((p.stem for p in where.glob("*.npz")), key=_natural)
    if not found:
        raise DataError(f"{where}: no <set>.npz files, expected tabular sets with arrays X (n, d) and y (n,); "
                        "point the data root at the folder holding adbench/classical/")
    return found


def _natural(name: str):
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


# ---- runs --------------------------------------------------------------------------------------------
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
            from .detector import ALGAN

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
        results.write_scores(folder, pd.concat(frames))
        if history is not None:
            results.write_csv(folder / "history.csv", history, float_format="%.6g")
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


# ---- the study: grid, sweep, tidy rows ------------------------------------------------------------------
def tabular_grid(profile: str, seeds=None, data_root=None, methods=METHODS) -> list[dict]:
    """Every method on every set of the profile (all files under the data root's adbench/classical/ by
    default), the profile's seeds: one grid of the sweep runner ([] when the data root has no such folder)."""
    from .experiments import default_seeds

    try:
        present = tabular_sets(data_root)
    except DataError:
        return []
    wanted = settings(profile)["sets"]
    sets = [s for s in present if wanted is None or s in wanted]
    return [{"method": [PREFIX + m for m in methods], "dataset": DATASET, "category": sets,
             "seed": list(default_seeds(profile, seeds)), "profile": profile}] if sets else []


def tabular_study(profile: str = "smoke", seeds=None, *, data_root=None, runs_dir=None, executor: str = "local",
                  workers=None, methods=METHODS, save_as: Optional[str] = None) -> tuple[pd.DataFrame, str]:
    """Run what is not in the run cache yet (executor "cached": nothing) and return (tidy rows of the finished
    runs, the sweep's summary lines). Every set is read and split before any run starts."""
    from .studies import run_study

    grid = tabular_grid(profile, seeds, data_root, methods)
    if not grid:
        return pd.DataFrame(), f"{folder_of(data_root)}: no tabular sets under the data root, nothing to run"
    check_sets(grid[0]["category"], profile, data_root=data_root)
    frame, lines = run_study(grid, [], data_root=data_root, runs_dir=runs_dir, executor=executor, workers=workers)
    if save_as:
        from .experiments import save_results
        save_results(frame, save_as, profile)
    return frame, lines


# ---- the comparison ----------------------------------------------------------------------------------
def comparison_rows(tidy: pd.DataFrame) -> pd.DataFrame:
    """(dataset, method label, seed, test AUROC): PyOD's detectors by name, ALGAN twice (ALGAN_VAL: the
    checkpoint chosen on validation; ALGAN_LAST: the last epoch, no labels used)."""
    if tidy.empty:
        return pd.DataFrame(columns=["dataset", "method", "seed", "value", "n_test_anomalous"])
    keep = ["dataset", "seed", "value", "n_test_anomalous"]
    algan = tidy[tidy["method"] == "algan"]
    parts = [algan[algan["metric"] == "test_auroc"][keep].assign(method=ALGAN_VAL),
             algan[algan["metric"] == "test_auroc_last"][keep].assign(method=ALGAN_LAST)]
    other = tidy[(tidy["method"] != "algan") & (tidy["metric"] == "test_auroc")]
    parts.append(other[keep].assign(method=other["method"].map(LABELS)))
    return pd.concat(parts, ignore_index=True)[["dataset", "method", "seed", "value", "n_test_anomalous"]]


def set_sizes(tidy: pd.DataFrame) -> pd.DataFrame:
    """Per set: columns, training rows (normal only), test rows and anomalies (per seed; "a/b" when seeds
    differ), ALGAN's epochs and the seeds run; sets with fewer than FEW_ANOMALIES test anomalies flagged."""
    if tidy.empty:
        return pd.DataFrame()
    both = lambda v: "/".join(str(int(x)) for x in sorted(set(v.dropna())))  # noqa: E731
    out = tidy.groupby("dataset").agg(columns=("dim", both), train_rows=("n_train", both), test_rows=("n_test", both),
                                      test_anomalies=("n_test_anomalous", both), seeds=("seed", "nunique"))
    epochs = tidy[tidy["method"] == "algan"].groupby("dataset")["epochs"].agg(both)
    out["ALGAN epochs"] = epochs.reindex(out.index).fillna("-")
    out["flag"] = [f"< {FEW_ANOMALIES} test anomalies" if int(a.split("/")[0]) < FEW_ANOMALIES else ""
                   for a in out["test_anomalies"]]
    out = out.loc[sorted(out.index, key=_natural)]
    out.columns = [c.replace("_", " ") for c in out.columns]
    out.index.name = "data set"
    return out


def method_order(methods) -> list[str]:
    order = [ALGAN_VAL, ALGAN_LAST] + [PYOD_LABELS[m] for m in PYOD_MODELS]
    return [m for m in order if m in set(methods)] + sorted(set(methods) - set(order))


def auroc_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """Sets x methods: test AUROC, mean over seeds; only sets where every method has a result."""
    wide = rows.pivot_table(index="dataset", columns="method", values="value", aggfunc="mean")
    wide = wide[method_order(wide.columns)].dropna()
    return wide.loc[sorted(wide.index, key=_natural)]


def results_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The page's table: one row per set (its test anomalies, flagged below FEW_ANOMALIES), one column per
    method (mean test AUROC over seeds), then each method's mean AUROC and average rank."""
    wide = auroc_grid(rows)
    if wide.empty:
        return pd.DataFrame()
    anomalies = rows.groupby("dataset")["n_test_anomalous"].agg(lambda v: "/".join(map(str, sorted(set(v.astype(int))))))
    cells = wide.map(lambda v: f"{v:.3f}").astype(object)
    few = [int(a.split("/")[0]) < FEW_ANOMALIES for a in anomalies.reindex(wide.index)]
    table = cells.copy()
    table.insert(0, "test anomalies", [f"{a} ⚠" if f else a for a, f in zip(anomalies.reindex(wide.index), few)])
    ranks = average_ranks(wide)
    table.loc["mean AUROC"] = [""] + [f"{wide[c].mean():.3f}" for c in wide]
    table.loc["average rank"] = [""] + [f"{ranks[c]:.2f}" for c in wide]
    table.index.name, table.columns.name = "data set", None
    return table


def set_label(name: str, anomalies: str) -> str:
    """A set's name with its anomalous test rows, flagged (⚠) below FEW_ANOMALIES."""
    return f"{name} ({anomalies}{' ⚠' if int(anomalies.split('/')[0]) < FEW_ANOMALIES else ''})"


def results_heatmap(rows: pd.DataFrame, ax=None):
    """`results_table` as the page shows it (too wide for an HTML table at the book's width): sets x methods,
    the mean test AUROC over seeds in each cell, each set labelled with its anomalous test rows."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    table = results_table(rows)
    sets = table.index[:-2]
    wide = table.loc[sets].drop(columns="test anomalies").astype(float)
    wide.index = [set_label(n, a.replace(" ⚠", "")) for n, a in zip(sets, table.loc[sets, "test anomalies"])]
    if ax is None:
        _, ax = plt.subplots(figsize=(11, 0.42 * len(wide) + 1.6))
    sns.heatmap(wide, annot=True, fmt=".3f", cmap="viridis", vmin=0.5, vmax=1.0, ax=ax, annot_kws={"fontsize": 10},
                cbar_kws={"label": "test AUROC (mean over seeds)"})
    ax.set(xlabel="", ylabel="", title=f"In brackets: a set's anomalous test rows (⚠ fewer than {FEW_ANOMALIES})")
    ax.tick_params(axis="x", rotation=30)
    return ax


def method_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method (the sets where every method ran): mean test AUROC over the sets, average rank and the
    sets on which it is best (ties count for each), best average rank first."""
    wide = auroc_grid(rows)
    if wide.empty:
        return pd.DataFrame()
    ranks, best = average_ranks(wide), wide.eq(wide.max(axis=1), axis=0).sum()
    out = pd.DataFrame({"mean AUROC": wide.mean(), "average rank": ranks, "best on (sets)": best}).loc[ranks.index]
    out.index.name = "method"
    return out


def set_ranks(wide: pd.DataFrame) -> pd.DataFrame:
    """Per set, each method's rank by mean test AUROC (1 = best; ties share their average rank)."""
    return wide.rank(axis=1, ascending=False, method="average")


def average_ranks(wide: pd.DataFrame) -> pd.Series:
    return set_ranks(wide).mean().sort_values()


def friedman_nemenyi(wide: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Friedman's test over the sets (methods as treatments) and the Nemenyi critical difference of average
    ranks, CD = q_alpha(k, inf) / sqrt(2) * sqrt(k (k + 1) / (6 N)) (Demsar, JMLR 2006)."""
    from scipy import stats

    n, k = wide.shape
    out = {"sets": n, "methods": k, "alpha": alpha, "chi2": math.nan, "p": math.nan, "cd": math.nan}
    if n < 2 or k < 3:
        return out
    chi2, p = stats.friedmanchisquare(*[wide[c].to_numpy() for c in wide])
    q = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return {**out, "chi2": float(chi2), "p": float(p), "cd": float(q * math.sqrt(k * (k + 1) / (6 * n)))}


def wilcoxon_against(wide: pd.DataFrame, method: str) -> pd.DataFrame:
    """`method` against each other method over the sets: median difference of mean AUROC, wins / ties /
    losses, Wilcoxon's signed-rank p and Holm's adjusted p."""
    from scipy import stats

    rows = []
    for other in [c for c in wide if c != method]:
        d = wide[method] - wide[other]
        p = stats.wilcoxon(d).pvalue if (d != 0).sum() >= 1 and len(d) >= 2 else math.nan
        rows.append({"against": other, "median difference": float(d.median()), "wins": int((d > 0).sum()),
                     "ties": int((d == 0).sum()), "losses": int((d < 0).sum()), "p": float(p)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = out["p"].fillna(1).argsort().to_numpy()
    m, adjusted, running = len(out), np.empty(len(out)), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * (out["p"].fillna(1).iloc[j])))
        adjusted[j] = running
    return out.assign(**{"p (Holm)": adjusted})


def ranks_figure(wide: pd.DataFrame, test: dict, ax=None):
    """Average rank per method (1 = best), the band of the Nemenyi critical difference from the best."""
    import matplotlib.pyplot as plt

    ranks = average_ranks(wide)
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.42 * len(ranks) + 1.4))
    y = np.arange(len(ranks))[::-1]
    best = ranks.iloc[0]
    if math.isfinite(test.get("cd", math.nan)):
        ax.axvspan(best, best + test["cd"], color="tab:green", alpha=0.15,
                   label=f"within the critical difference of the best ({test['cd']:.2f})")
    colours = ["tab:red" if name.startswith("ALGAN") else "tab:blue" for name in ranks.index]
    ax.scatter(ranks.to_numpy(), y, c=colours, zorder=3)
    for yi, (name, r) in zip(y, ranks.items()):
        ax.annotate(f"{r:.2f}", (r, yi), xytext=(6, 0), textcoords="offset points", va="center", fontsize=11)
    ax.set_yticks(y, ranks.index)
    ax.set_xlim(0.5, len(ranks) + 0.5)
    ax.set(xlabel="average rank over the data sets (1 = best)")
    title = f"{test['sets']} data sets, {test['methods']} methods"
    if math.isfinite(test.get("p", math.nan)):
        title += f"; Friedman p = {test['p']:.2g}"
    ax.set_title(title)
    if math.isfinite(test.get("cd", math.nan)):
        ax.legend(loc="upper left", bbox_to_anchor=(0, -0.16), fontsize=11, frameon=False)
    return ax


def verdict_lines(rows: pd.DataFrame) -> str:
    """The page's reading of the results: where each ALGAN view ranks, and the tests."""
    if rows.empty:
        return "No finished runs on this page."
    lines = []
    for label, drop in ((ALGAN_LAST, ALGAN_VAL), (ALGAN_VAL, ALGAN_LAST)):
        wide = auroc_grid(rows[rows["method"] != drop])
        if wide.empty or label not in wide:
            continue
        ranks, test = average_ranks(wide), friedman_nemenyi(wide)
        place = list(ranks.index).index(label) + 1
        gap = ranks[label] - ranks.iloc[0]
        within = "within" if math.isfinite(test["cd"]) and gap <= test["cd"] else "outside"
        best = ", ".join(ranks.index[ranks == ranks.iloc[0]])
        lines.append(f"{label} among PyOD's detectors: average rank {ranks[label]:.2f} ({place} of {len(ranks)}; "
                     f"best {best} {ranks.iloc[0]:.2f}; {within} the Nemenyi critical difference "
                     f"{test['cd']:.2f}, Friedman p = {test['p']:.2g}); mean AUROC {wide[label].mean():.3f} "
                     f"against the best mean {wide.mean().max():.3f} ({wide.mean().idxmax()}).")
    return "\n".join(lines)
