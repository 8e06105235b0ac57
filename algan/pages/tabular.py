"""The tabular page (beyond the paper): ALGAN-feature against PyOD's detectors on ADBench's classical sets
(the runs of `algan.runs.tabular`): the study's grid and sweep, the comparison's tables and figures."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import pandas as pd

from ..claims import auroc_grid, average_ranks
from ..data import DataError
from ..runs.common import default_seeds
from ..runs.tabular import (ALGAN_LAST, ALGAN_VAL, DATASET, LABELS, METHODS, PREFIX, check_sets, folder_of,
                            natural_key, settings, tabular_sets)
from .common import run_study, save_results


FEW_ANOMALIES = 20  # a set with fewer anomalous test rows is flagged wherever its numbers are shown


def tabular_grid(profile: str, seeds=None, data_root=None, methods=METHODS) -> list[dict]:
    """Every method on every set of the profile (all files under the data root's adbench/classical/ by
    default), the profile's seeds: one grid of the sweep runner ([] when the data root has no such folder)."""
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
    grid = tabular_grid(profile, seeds, data_root, methods)
    if not grid:
        return pd.DataFrame(), f"{folder_of(data_root)}: no tabular sets under the data root, nothing to run"
    check_sets(grid[0]["category"], profile, data_root=data_root)
    frame, lines = run_study(grid, [], data_root=data_root, runs_dir=runs_dir, executor=executor, workers=workers)
    if save_as:
        save_results(frame, save_as, profile)
    return frame, lines


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
    out = out.loc[sorted(out.index, key=natural_key)]
    out.columns = [c.replace("_", " ") for c in out.columns]
    out.index.name = "data set"
    return out


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
