"""What every page of the book shares: its parameter check, style, provenance line, display helpers, the
results CSVs it saves (`results/<page>_<profile>.csv`, read by the claims ledger) and `run_study`, a sweep of a
study's grid and the tidy rows of its finished runs."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import pandas as pd

from .. import results
from ..runs import feature as feature_runs, tabular as tabular_runs
from ..runs.common import check_profile
from ..runs.image import DATASET_LABELS, METHOD_LABELS, tidy_rows
from ..sweep import expand_grid, sweep, sweep_status


def save_results(frame: pd.DataFrame, name: str, profile: str) -> Path:
    path = results.RESULTS_DIR / f"{name}_{profile}.csv"
    results.write_csv(path, frame)
    return path


def interval(mean: float, std: float, n: int, level: float = 0.95, bounds=(0.0, 1.0)) -> str:
    """The `level` confidence interval of a mean over n seeds (Student's t), as "[lo, hi]", cut to `bounds`
    (an AUROC's [0, 1]); "-" below 2 seeds."""
    from scipy import stats

    if n is None or n < 2 or pd.isna(std):
        return "-"
    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n)
    return f"[{max(mean - half, bounds[0]):.3f}, {min(mean + half, bounds[1]):.3f}]"


_NOTEBOOK_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})  # IPython's own


def check_page_parameters(namespace: dict, allowed: Iterable[str]) -> None:
    """A page calls this with globals() right after its parameters: papermill only warns on `-p unknown 3`."""
    import types

    allowed = set(allowed)
    unknown = sorted(name for name, value in namespace.items()
                     if name not in allowed and not name.startswith("_") and name not in _NOTEBOOK_NAMES
                     and not isinstance(value, types.ModuleType))
    if unknown:
        raise ValueError(f"unknown page parameter(s) {unknown}: this page takes only {sorted(allowed)} "
                         f"(e.g. papermill page.ipynb out.ipynb -p profile cpu)")
    if "profile" in allowed:
        check_profile(namespace["profile"])


def _frame_html(frame: pd.DataFrame) -> str:
    """A DataFrame as a page shows it: a named index becomes columns, an unnamed one (0..n, or row numbers
    left by a sort) is not shown."""
    if any(name is not None for name in frame.index.names):
        frame = frame.reset_index()
    return frame.style.hide(axis="index").format(precision=3, na_rep="-").to_html()


def page_style() -> None:
    """Called by each page after its seaborn theme: figure text sized to be read at the page's width (a
    figure a page shows is scaled to its ~690 px column), DataFrames without a bare index."""
    import matplotlib as mpl

    mpl.rcParams.update({"font.size": 13, "axes.titlesize": 13, "axes.labelsize": 13, "xtick.labelsize": 12,
                         "ytick.labelsize": 12, "legend.fontsize": 12, "legend.title_fontsize": 12})
    try:
        from IPython import get_ipython
    except ImportError:  # not in a notebook: nothing to register
        return
    if get_ipython() is not None:
        get_ipython().display_formatter.formatters["text/html"].for_type(pd.DataFrame, _frame_html)


def provenance_summary(frame: pd.DataFrame, runs_dir=None, labels: Optional[dict] = None) -> str:
    """One line for a page: profile, seeds, device, commit, when the runs finished, wall time per run."""
    labels = METHOD_LABELS if labels is None else labels
    if "device" not in frame and "run" in frame:  # score rows carry only the run: read its config.json
        configs = [results.load_run(Path(runs_dir or results.default_runs_dir()) / run)["config"]
                   for run in frame["run"].dropna().unique()]
        frame = pd.DataFrame([{"run": c["hash"], "method": c["args"]["method"], "profile": c["args"]["profile"],
                               "seed": c["args"]["seed"],
                               "device": c["device"], "commit": c["commit"], "finished_utc": c.get("finished_utc"),
                               "wall_seconds": c.get("wall_seconds")} for c in configs])
    if "wall_seconds" not in frame or frame["wall_seconds"].isna().all():
        return "provenance: no finished runs"
    runs = frame.dropna(subset=["wall_seconds"]).drop_duplicates("run" if "run" in frame else ["method", "seed"])
    join = lambda col: ", ".join(str(v) for v in dict.fromkeys(runs[col].dropna()))  # noqa: E731
    by = runs.assign(wall=runs["wall_seconds"].astype(float)).groupby(
        runs["method"] if "method" in runs else pd.Series("all", index=runs.index), sort=False)["wall"]
    wall = ", ".join(f"{labels.get(m, m)} {w.mean():.1f} s" for m, w in by)
    return (f"profile {join('profile')} | seeds {', '.join(str(int(s)) for s in sorted(runs['seed'].unique()))} | "
            f"device {join('device')} | commit {join('commit')} ({code_versions(runs)}) | "
            f"last finished {runs['finished_utc'].max()} | "
            f"{len(runs)} run{'s' * (len(runs) != 1)}, mean wall time per run: {wall}")


def code_versions(runs: pd.DataFrame) -> str:
    """How many versions of the library made these runs: a run's source hash (`code`, recorded since
    it existed), else its commit; runs of a '+dirty' commit without a source hash are counted apart,
    since the code that made them cannot be named."""
    code = runs["code"] if "code" in runs else pd.Series(None, index=runs.index, dtype=object)
    commit = runs["commit"].astype(str)
    unnamed = code.isna() & commit.str.endswith("+dirty")
    n = pd.concat([code.dropna(), commit[code.isna() & ~unnamed]]).nunique()
    k = int(unnamed.sum())
    return f"{n} code version{'s' * (n != 1)}" + (f"; {k} run{'s' * (k != 1)} of uncommitted code" if k else "")


TIDY_COLUMNS = ("dataset", "category", "method", "seed", "profile", "device", "commit", "code", "finished_utc",
                "wall_seconds", "run", "split_hash", "reading", "metric", "value")


def split_missing(tidy: pd.DataFrame, dataset: str) -> tuple[pd.DataFrame, list[str]]:
    """(the result rows, the `missing_data` notes once each); no rows at all is a note of its own."""
    if tidy.empty:
        return (pd.DataFrame(columns=list(TIDY_COLUMNS)),
                [f"{dataset}: no data found under the data root, so there is nothing to show"])
    missing = tidy["metric"] == "missing_data"
    notes = list(dict.fromkeys(tidy.loc[missing, "note"].dropna())) if "note" in tidy else []
    return tidy[~missing], notes


def show(table: pd.DataFrame):
    """A table as the book shows it: no index column, cells as they are."""
    return table.style.hide(axis="index")


def split_sizes(tidy: pd.DataFrame, runs_dir=None) -> str:
    """One line per data set / category of a page: its test and validation splits' normal / anomalous
    counts (from a run's scores), the AUROC step they allow, 1 / (normal x anomalous), and the most one
    normal image can move it, 1 / normal."""
    root = Path(runs_dir or results.default_runs_dir())
    lines = []
    runs = tidy.dropna(subset=["run"]).drop_duplicates(["dataset", "category"]) if "run" in tidy else tidy.iloc[:0]
    for r in runs.itertuples():
        path = results.scores_path(root / r.run)
        if not path.is_file():
            continue
        scores = results.read_scores(path.parent)
        parts = []
        for split in ("test", "val"):
            labels = scores.loc[scores["split"] == split, "label"]
            normal, anomalous = int((labels == 0).sum()), int((labels == 1).sum())
            if normal and anomalous:
                parts.append(f"{'validation' if split == 'val' else split} {normal} normal / {anomalous} anomalous "
                             f"images (AUROC in steps of {1 / (normal * anomalous):.2g}; one normal image can move "
                             f"it by up to {1 / normal:.2g})")
        name = r.category if isinstance(r.category, str) else r.dataset
        name = DATASET_LABELS.get(name, name)
        lines.append(f"{name}: " + "; ".join(parts))
    return "\n".join(lines)


def run_histories(tidy: pd.DataFrame, runs_dir=None) -> pd.DataFrame:
    """Per-epoch history (`results.read_history`) of each run in a tidy table (methods without epochs have none)."""
    root = Path(runs_dir or results.default_runs_dir())
    runs = tidy.dropna(subset=["run"]).drop_duplicates("run") if "run" in tidy else tidy.iloc[:0]
    frames = [results.read_history(root / r.run).assign(dataset=r.dataset, category=r.category,
                                                              method=r.method, seed=int(r.seed), run=r.run,
                                                              reading=getattr(r, "reading", None))
              for r in runs.itertuples() if results.history_path(root / r.run).is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "val_auroc", "dataset", "category", "method", "seed", "run"])


def finished_runs(grid, data_root=None, runs_dir=None):
    """(spec, loaded run) of every finished run of `grid`, in the grid's order."""
    for spec in expand_grid(grid, data_root=data_root):
        folder = spec.folder(runs_dir)
        if results.is_done(folder):
            yield spec, results.load_run(folder)


def run_study(grid, keys, *, data_root=None, runs_dir=None, executor: str = "local", workers=None,
              progress: bool = False, allow_dirty: bool = False) -> tuple[pd.DataFrame, str]:
    """Sweep `grid` (only what is not done runs), then tidy rows of its finished runs with the resolved
    values of the study's config `keys` as columns. Returns (rows, the sweep's summary lines).

    executor="cached" runs nothing: the page shows the finished runs and counts the rest."""
    if executor == "cached":
        status = sweep_status(grid, data_root=data_root, runs_dir=runs_dir)
        lines = [f"run cache only (executor='cached'): {status}"] + [
            f"failed {r.label}: {r.error}" for r in status.table.itertuples() if r.state == "failed"]
    else:
        outcome = sweep(grid, executor=executor, workers=workers, data_root=data_root, runs_dir=runs_dir,
                        progress=progress, allow_dirty=allow_dirty)
        lines = [f"sweep: {outcome}"] + [f"failed {f['label']}: {f['error']}" for f in outcome.failures]
    rows = []
    for spec, run in finished_runs(grid, data_root, runs_dir):
        train = (run["config"].get("resolved") or {}).get("train", {})
        if spec.kind == "tabular":
            tidy = tabular_runs.tidy(run)
        else:
            tidy = tidy_rows(run) if spec.kind == "image" else [
                {**r, "dataset": r.pop("source"), "method": "feature:" + r["method"]} for r in feature_runs.tidy(run)]
        rows += [{**r, **{k: train.get(k) for k in keys}} for r in tidy]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        runs = frame.drop_duplicates("run")
        lines.insert(1, f"{len(runs)} finished runs, {runs['wall_seconds'].astype(float).sum() / 60:.0f} min of "
                        f"recorded wall time in all (on {', '.join(runs['device'].unique())})")
    return frame, "\n".join(lines)
