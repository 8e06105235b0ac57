"""Checkpoints without labels: the test AUROC each rule of `train.select` gives, on the runs of the
'selection' study (`algan.pages.studies.selection_grid`: one run per data set and seed records the checkpoint of every
rule, `train.record_selects`), and the rule this library uses for data without labelled anomalies.

The rules are chosen on validation data only (`algan.train._Selection`); the test split is read here, once
per rule, to measure what each rule costs against the paper's `val_labels`. The default for users' data is
chosen from these measurements over every data set of every family, never from one set's test split.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..config import LABEL_FREE_SELECTS as LABEL_FREE, SELECTS as RULES
from .common import finished_runs, run_study
from .studies import selection_grid

RULE_LABELS = {"val_labels": "validation labels (the paper's)", "last": "last epoch", "ema": "weight average (EMA)",
               "proxy": "proxy validation"}
FAMILIES = {"image": "ALGAN-image (MVTec bottle, MTD, COIL-100)",
            "feature": "ALGAN-feature on ADBench's MVTec-AD features",
            "tabular": "ALGAN-feature on ADBench's classical tables"}
SHORT_FAMILIES = {"image": "images", "feature": "features", "tabular": "tables"}
IMAGE_SETS = {"mvtec": "MVTec bottle", "mtd": "MTD", "coil100": "COIL-100"}


def selection_runs(profile: str, seeds=None, data_root=None, runs_dir=None, executor: str = "local",
                   workers=None) -> tuple[pd.DataFrame, str]:
    """Sweep the selection study (only what the run cache lacks; executor="cached" runs nothing), then one row
    per finished run and rule: family, data set, seed, rule, the test AUROC of the rule's checkpoint (metric
    "test_auroc", value: the claims ledger's form), the epoch it chose, the run's epochs and provenance."""
    grid = selection_grid(profile, seeds, data_root)
    _, log = run_study(grid, [], data_root=data_root, runs_dir=runs_dir, executor=executor, workers=workers)
    rows = []
    for spec, run in finished_runs(grid, data_root, runs_dir):
        cfg, m, a = run["config"], run["metrics"], run["config"]["args"]
        name = IMAGE_SETS.get(a.get("dataset"), a.get("category")) if spec.kind == "image" else a["category"]
        base = {"family": spec.kind, "dataset": name, "seed": a["seed"], "profile": a["profile"],
                "epochs": m.get("epochs"), "run": cfg["hash"], "device": cfg["device"], "commit": cfg["commit"],
                "finished_utc": cfg.get("finished_utc"), "wall_seconds": cfg.get("wall_seconds")}
        rows += [{**base, "rule": rule, "metric": "test_auroc", "value": float(m[f"test_auroc_{rule}"]),
                  "epoch": m[f"epoch_{rule}"]} for rule in RULES if f"test_auroc_{rule}" in m]
    return pd.DataFrame(rows), log


def per_seed(frame: pd.DataFrame) -> pd.DataFrame:
    """Per family, rule and seed: the mean test AUROC over the family's data sets (those every rule ran)."""
    full = frame.groupby(["family", "dataset", "seed"])["rule"].transform("nunique") == frame["rule"].nunique()
    return frame[full].groupby(["family", "rule", "seed"], sort=False)["value"].mean().reset_index()


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per family and rule: the mean over data sets of the test AUROC (mean ± std over seeds), its difference
    to `val_labels` (mean over seeds of the per-seed differences, with their standard error), the data sets
    where the rule's mean over seeds is at least val_labels', and the median epoch the rule chose."""
    seeds = per_seed(frame)
    by_set = frame.groupby(["family", "dataset", "rule"])["value"].mean().unstack("rule")
    rows = []
    for (family, rule), g in seeds.groupby(["family", "rule"], sort=False):
        ref = seeds[(seeds["family"] == family) & (seeds["rule"] == "val_labels")].set_index("seed")["value"]
        diff = g.set_index("seed")["value"] - ref
        sets = by_set.loc[family]
        part = frame[(frame["family"] == family) & (frame["rule"] == rule)]
        rows.append({"family": family, "rule": rule, "data sets": int(sets[rule].notna().sum()), "seeds": len(g),
                     "test AUROC": g["value"].mean(), "std": g["value"].std(),
                     "minus val_labels": diff.mean(), "SE": diff.std() / math.sqrt(len(diff)) if len(diff) > 1 else math.nan,
                     "sets >= val_labels": f"{int((sets[rule] >= sets['val_labels'] - 1e-12).sum())} of "
                                                  f"{int(sets[rule].notna().sum())}",
                     "median epoch": float(part["epoch"].median()),
                     "epochs": float(part.drop_duplicates("run")["epochs"].median())})
    order = {r: i for i, r in enumerate(RULES)}
    return pd.DataFrame(rows).sort_values(["family", "rule"], key=lambda s: s.map(order) if s.name == "rule"
                                          else s.map({f: i for i, f in enumerate(FAMILIES)})).reset_index(drop=True)


def choose_default(table: pd.DataFrame) -> tuple[str, str]:
    """The label-free rule for users' data: the highest mean over the families (each family weighs the same,
    whatever its number of data sets) of the rule's difference to val_labels. Returns (rule, the reason)."""
    free = table[table["rule"].isin(LABEL_FREE)]
    families = set(table["family"])
    complete = free.groupby("rule")["family"].nunique() == len(families)
    means = free.groupby("rule")["minus val_labels"].mean()[complete]
    if means.empty:
        return "last", "no label-free rule has runs on every family: the last epoch, the rule that needs nothing"
    best = str(means.idxmax())
    others = ", ".join(f"{r} {means[r]:+.3f}" for r in means.index if r != best)
    return best, (f"{best} loses the least against the labelled choice, averaged over the {len(families)} families "
                  f"({means[best]:+.3f} AUROC; {others})")


def per_set(frame: pd.DataFrame) -> pd.DataFrame:
    """Per family, data set and rule: mean ± std over seeds of the test AUROC, and the difference of the
    means to val_labels' (the figure's points; the page's CSV keeps the per-seed rows)."""
    g = frame.groupby(["family", "dataset", "rule"], sort=False)["value"]
    out = g.agg(mean="mean", std="std", seeds="count").reset_index()
    ref = out[out["rule"] == "val_labels"].set_index(["family", "dataset"])["mean"]
    out["minus val_labels"] = out["mean"].to_numpy() - ref.reindex(
        pd.MultiIndex.from_frame(out[["family", "dataset"]])).to_numpy()
    return out


def plot(frame: pd.DataFrame):
    """One panel per family: each data set's mean test AUROC under a label-free rule minus under val_labels
    (a dot per set, the bar its mean over sets)."""
    import matplotlib.pyplot as plt

    points = per_set(frame)
    points = points[points["rule"].isin(LABEL_FREE)]
    families = [f for f in FAMILIES if f in set(points["family"])]
    fig, axes = plt.subplots(1, len(families), figsize=(3.3 * len(families), 4.2), sharey=True, squeeze=False)
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, family in zip(axes[0], families):
        part = points[points["family"] == family]
        for i, rule in enumerate(LABEL_FREE):
            d = part.loc[part["rule"] == rule, "minus val_labels"].to_numpy()
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=16, alpha=0.7)
            ax.hlines(d.mean(), i - 0.3, i + 0.3, color="black", lw=2)
        ax.axhline(0, color="grey", lw=1, ls="--")
        ax.set_xticks(range(len(LABEL_FREE)), [RULE_LABELS[r].split(" (")[0] for r in LABEL_FREE], rotation=20)
        ax.set_title(f"{SHORT_FAMILIES[family]} ({part['dataset'].nunique()} sets)")
    axes[0, 0].set_ylabel("test AUROC minus val_labels'")
    fig.tight_layout()
    return fig
