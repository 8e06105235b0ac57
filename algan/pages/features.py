"""Table 2's page: ALGAN-feature and the feature-based baselines (the runs of `algan.runs.feature`), and
the feature-scaling study of the deviations page."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from .. import paper, results
from ..config import FEATURE_SCALINGS
from ..data import DataError, TEXTURES, load_dataset, load_features, resolve_root
from ..detector import FEATURE_STD_FLOOR
from ..runs.common import default_seeds
from ..runs.feature import (ADBENCH_DIR, IMAGE_SOURCES, IMAGE_TRAINED, LABELS, METHODS, NOT_APPLICABLE,
                            adbench_categories, run_feature, settings, tidy)
from ..score import auroc
from .common import save_results
from .images import image_auroc_table


def table2(*, profile: str = "smoke", seeds=None, methods=METHODS, sources=None, data_root=None, runs_dir=None,
           progress: bool = True, save_as: Optional[str] = None) -> pd.DataFrame:
    """Table 2: test AUROC of each feature method per source / category / seed (tidy rows).

    A source absent from the data root gives one `missing_data` row with the reason, not an error.
    """
    from tqdm import tqdm

    seeds = default_seeds(profile, seeds)
    sources = settings(profile)["sources"] if sources is None else (
        (sources,) if isinstance(sources, str) else tuple(sources))
    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    for name, given, known in (("method", methods, METHODS), ("source", sources, ("adbench",) + IMAGE_SOURCES)):
        unknown = [g for g in given if g not in known]
        if unknown or not given:
            raise ValueError(f"{name}s {list(given)}: expected one or more of {list(known)}")
    jobs, rows = [], []
    for source in sources:
        try:
            cats = adbench_categories(data_root) if source == "adbench" else (
                ["bottle"] if source == "mvtec" else [None])
            if source != "adbench":
                load_dataset(source, data_root, category=cats[0], image_size=8, seed=seeds[0])
        except DataError as err:
            rows.append({"source": source, "category": source, "method": "-", "profile": profile,
                         "metric": "missing_data", "value": np.nan, "note": str(err)})
            continue
        if source == "adbench":
            rows += [{"source": source, "category": source, "method": m, "profile": profile, "metric": "not_applicable",
                      "value": np.nan, "note": NOT_APPLICABLE} for m in methods if m in IMAGE_TRAINED]
        jobs += [(m, source, c, s) for m in methods for c in cats for s in seeds
                 if not (source == "adbench" and m in IMAGE_TRAINED)]
    for method, source, category, seed in tqdm(jobs, desc="Table 2 runs", disable=not progress):
        rows.extend(tidy(run_feature(method, source, category=category, profile=profile, seed=seed,
                                      data_root=data_root, runs_dir=runs_dir)))
    frame = pd.DataFrame(rows)
    if save_as:
        save_results(frame, save_as, profile)
    return frame


def group_of(source: str, category: str) -> str:
    if source != "adbench":
        return category
    return "Texture" if category in TEXTURES else "Object"


def table2_summary(tidy: pd.DataFrame) -> pd.DataFrame:
    """MVTec-AD (ADBench features): per seed the mean over Texture / Object / ALL categories, then
    mean +- std over seeds, beside the paper's Table 2 number; image sources: mean +- std over seeds."""
    rows = tidy[tidy["metric"] == "test_auroc"]
    if rows.empty:
        return pd.DataFrame(columns=["features", "group", "method", "label", "seeds", "mean", "std", "paper"])
    out = []
    ad = rows[rows["source"] == "adbench"]
    if not ad.empty:
        ad = ad.assign(group=[group_of("adbench", c) for c in ad["category"]])
        per_seed = pd.concat([ad.groupby(["method", "seed", "group"])["value"].mean().reset_index(),
                              ad.groupby(["method", "seed"])["value"].mean().reset_index().assign(group="ALL")])
        for (method, group), v in per_seed.groupby(["method", "group"], sort=False):
            out.append({"features": "ADBench ResNet-18 (pooled, 512-d)", "group": group, "method": method,
                        "seeds": len(v), "mean": v["value"].mean(), "std": v["value"].std(),
                        "paper": paper.TABLE2.get(LABELS.get(method, method), {}).get(group, np.nan)})
    for (source, category, method, backbone), v in rows[rows["source"] != "adbench"].groupby(
            ["source", "category", "method", "backbone"], sort=False):
        out.append({"features": f"{category} ({backbone})", "group": category, "method": method,
                    "seeds": len(v), "mean": v["value"].mean(), "std": v["value"].std(), "paper": np.nan})
    frame = pd.DataFrame(out)
    frame.insert(3, "label", [LABELS.get(m, m) for m in frame["method"]])
    return frame


def table2_display(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The page's two tables, one row per method ('mean ± std' over seeds):
    "mvtec": ours on ADBench's features per group beside the paper's Table 2;
    "images": ours on bottle / MTD / COIL-100 through the backbone (the paper has no such column)."""
    cell = lambda m, s, n: "-" if pd.isna(m) else (f"{m:.3f}" if n < 2 else f"{m:.3f} ± {s:.3f}")  # noqa: E731
    s = summary.assign(cell=[cell(m, sd, n) for m, sd, n in zip(summary["mean"], summary["std"], summary["seeds"])])
    groups = ("Texture", "Object", "ALL")
    ad = s[s["features"].str.startswith("ADBench")]
    ours = ad.pivot(index="label", columns="group", values="cell").reindex(columns=list(groups))
    ours.columns = [f"ours, {g}" for g in groups]
    labels = list(dict.fromkeys([LABELS[m] for m in METHODS] + list(paper.TABLE2)))
    theirs = pd.DataFrame({f"paper, {g}": [paper.TABLE2.get(label, {}).get(g, np.nan) for label in labels]
                           for g in groups}, index=labels).map(lambda v: "-" if pd.isna(v) else f"{v:.3f}")
    ours = ours.reindex(labels).astype(object)
    for m in IMAGE_TRAINED:  # trains on images: ADBench's pooled features cannot train it
        ours.loc[LABELS[m]] = "not applicable"
    mvtec = ours.fillna("not run").join(theirs)
    img = s[~s["features"].str.startswith("ADBench")]
    images = (img.pivot(index="label", columns="features", values="cell")
              .reindex([LABELS[m] for m in METHODS]).dropna(how="all")) if not img.empty else pd.DataFrame()
    for table in (mvtec, images):
        table.index.name, table.columns.name = "method", None
    return {"mvtec": mvtec, "images": images}


def feature_vs_image(summary: pd.DataFrame, profile: str, data_root=None, runs_dir=None) -> str:
    """ALGAN-feature against ALGAN-image (the image pages' cached runs) on each image data set of the page;
    the paper: ALGAN-feature worse than ALGAN-image on MTD, every method near perfect on COIL-100."""
    rows = summary[(summary["method"] == "algan") & ~summary["features"].str.startswith("ADBench")]
    lines = []
    for r in rows.itertuples():
        source = "mvtec" if r.group in TEXTURES or r.group not in IMAGE_SOURCES else r.group
        tidy = image_auroc_table(source, profile=profile, methods=("algan",), data_root=data_root,
                                 categories=[r.group] if source == "mvtec" else None, runs_dir=runs_dir,
                                 progress=False)
        image = tidy.loc[tidy["metric"] == "test_auroc", "value"]
        if not image.empty:
            lines.append(f"{r.group}: ALGAN-feature {r.mean:.3f} vs ALGAN-image {image.mean():.3f} "
                         f"({len(image)} seed{'s' * (len(image) != 1)}, the image pages' runs)")
    return "\n".join(lines) or "No ALGAN-feature run on an image data set on this page."


def feature_scaling_runs(*, profile: str = "smoke", seeds=None, categories=None, data_root=None, runs_dir=None,
                         progress: bool = True) -> pd.DataFrame:
    """ALGAN-feature on ADBench's features with each `model.feature_scaling` (tidy rows of `tidy`,
    plus `feature_scaling` and `first_val_auroc`, the validation AUROC at the first evaluation).
    The default, "standardise", is Table 2's own runs (no override, so the same cache entries)."""
    from tqdm import tqdm

    seeds = default_seeds(profile, seeds)
    categories = adbench_categories(data_root) if categories is None else list(categories)
    jobs = [(s, c, seed) for s in FEATURE_SCALINGS for c in categories for seed in seeds]
    rows = []
    for scaling, category, seed in tqdm(jobs, desc="feature scaling runs", disable=not progress):
        overrides = {} if scaling == "standardise" else {"model.feature_scaling": scaling}
        run = run_feature("algan", "adbench", category=category, profile=profile, seed=seed, overrides=overrides,
                          data_root=data_root, runs_dir=runs_dir)
        history = results.read_history(run["folder"]).dropna(subset=["val_auroc"])
        first = float(history["val_auroc"].iloc[0]) if not history.empty else np.nan
        rows += [{**r, "feature_scaling": scaling, "first_val_auroc": first} for r in tidy(run)]
    return pd.DataFrame(rows)


def feature_scaling_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per scaling: test AUROC over all categories (per seed the mean over categories, then mean and
    std over seeds), the paper's ALL number, and how many runs start inverted (first val AUROC < 0.5)."""
    test = rows[rows["metric"] == "test_auroc"]
    out = []
    for scaling, v in test.groupby("feature_scaling", sort=False):
        per_seed = v.groupby("seed")["value"].mean()
        out.append({"feature_scaling": scaling, "runs": len(v), "seeds": len(per_seed),
                    "test AUROC, ALL (mean)": per_seed.mean(), "std over seeds": per_seed.std(),
                    "paper, ALL": paper.TABLE2["ALGAN-feature"]["ALL"],
                    "runs starting inverted": int((v["first_val_auroc"] < 0.5).sum()),
                    "median first val AUROC": v["first_val_auroc"].median()})
    return pd.DataFrame(out).set_index("feature_scaling")


def constant_dimensions(*, seed: int = 0, categories=None, data_root=None) -> pd.DataFrame:
    """Per ADBench category: how many of the (512) dimensions are constant over the training rows of
    the seeded split, the share of normal / anomalous test rows that leave that constant anywhere,
    and the test AUROC of that count alone as a score (how much signal `drop_constant` gives up)."""
    rows = []
    for category in adbench_categories(data_root) if categories is None else categories:
        split = load_features(resolve_root(data_root) / ADBENCH_DIR / f"{category}.npz", seed=seed)
        train, test, y = split.train.x, split.test.x, split.test.y
        const = train.std(0) < FEATURE_STD_FLOOR
        off = (np.abs(test[:, const] - train[0, const]) > FEATURE_STD_FLOOR).sum(1)
        rows.append({"category": category, "constant dims": int(const.sum()),
                     "normal test rows off": (off[y == 0] > 0).mean(),
                     "anomalous test rows off": (off[y == 1] > 0).mean(), "AUROC of the off-count": auroc(y, off)})
    return pd.DataFrame(rows).set_index("category")
