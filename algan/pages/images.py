"""The image pages: Tables 1, 3, 4 and Figures 1, 3, 5, and the readings table, each returning tidy
DataFrames (and figures' material) from the image runs of the run cache (`algan.runs.image`)."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import pandas as pd

from .. import paper, results
from ..config import reading_overrides
from ..data import DataError
from ..runs.common import check_profile, default_seeds
from ..runs.image import (DATASET_LABELS, GAN_BASELINES, METHOD_LABELS, categories_present, image_run_args,
                          run_image, tidy_rows)
from ..score import auroc
from .common import interval, save_results


READING_TAGS = ("active",)  # readings other than "literal" that a table shows as methods of their own


def tag_readings(tidy: pd.DataFrame) -> pd.DataFrame:
    """`method` becomes "algan [active]" on rows run under a reading of READING_TAGS."""
    if "reading" not in tidy or not tidy["reading"].isin(READING_TAGS).any():
        return tidy
    return tidy.assign(method=[f"{m} [{r}]" if r in READING_TAGS else m for m, r in zip(tidy["method"], tidy["reading"])])


def missing_row(dataset: str, category: Optional[str], method: str, profile: str, err: Exception) -> dict:
    return {"dataset": dataset, "category": category or dataset, "method": method, "seed": np.nan,
            "profile": profile, "metric": "missing_data", "value": np.nan, "note": str(err)}


def image_auroc_table(dataset: str, *, profile: str = "smoke", seeds=None, methods=("algan", "knn"),
                      categories=None, data_root=None, runs_dir=None, overrides=None,
                      progress: bool = True, save_as: Optional[str] = None,
                      also: Optional[dict] = None) -> pd.DataFrame:
    """Tables 1 / 3 / 4: test AUROC of each method per category and seed (tidy rows).

    `also` = {reading name: methods} adds those methods' *finished* runs under another reading of the
    paper (algan.config.READINGS; the readings sweep, `algan studies --only readings`, makes them); the
    rows' `reading` column tells them apart (`method_label` shows it), and a `missing_data` row counts
    the runs not made yet. A data set absent from the data root gives one `missing_data` row with the
    reason, not an error.
    """
    if also:
        frames = [image_auroc_table(dataset, profile=profile, seeds=seeds, methods=methods, categories=categories,
                                    data_root=data_root, runs_dir=runs_dir, overrides=overrides, progress=progress)]
        cats = categories if categories is not None else [c for c in dict.fromkeys(frames[0]["category"])]
        for name, more in also.items():
            extra = {m: {**reading_overrides(name, baseline=m in GAN_BASELINES), **(overrides or {})} for m in more}
            jobs = [(m, c, s) for m in more for c in cats for s in default_seeds(profile, seeds)]
            done = [j for j in jobs if results.is_done(results.run_dir(image_run_args(
                j[0], dataset, None if dataset != "mvtec" else j[1], profile, j[2], extra[j[0]]), runs_dir))]
            rows = []
            for method, category, seed in done:
                rows += tidy_rows(run_image(method, dataset, category=None if dataset != "mvtec" else category,
                                            profile=profile, seed=seed, overrides=extra[method],
                                            data_root=data_root, runs_dir=runs_dir))
            if len(done) < len(jobs):
                rows.append({**missing_row(dataset, None, ",".join(more), profile, ValueError(
                    f"{name} reading: {len(jobs) - len(done)} of {len(jobs)} runs not made yet "
                    "(algan studies --only readings tables makes them)")), "category": dataset})
            frames.append(pd.DataFrame(rows))
        frame = pd.concat(frames, ignore_index=True)
        if save_as:
            save_results(frame, save_as, profile)
        return frame
    from tqdm import tqdm

    seeds = default_seeds(profile, seeds)
    try:
        cats = categories if categories is not None else categories_present(dataset, data_root)
    except DataError as err:
        cats, rows = [], [missing_row(dataset, None, m, profile, err) for m in methods]
    else:
        rows = []
    jobs = [(m, c, s) for m in methods for c in cats for s in seeds]
    for method, category, seed in tqdm(jobs, desc=f"{dataset} runs", disable=not progress):
        try:
            run = run_image(method, dataset, category=category, profile=profile, seed=seed,
                            overrides=overrides, data_root=data_root, runs_dir=runs_dir)
        except DataError as err:
            rows.append(missing_row(dataset, category, method, profile, err))
            continue
        rows.extend(tidy_rows(run))
    frame = pd.DataFrame(rows)
    if save_as:
        save_results(frame, save_as, profile)
    return frame


def summarize(tidy: pd.DataFrame, metric: str = "test_auroc") -> pd.DataFrame:
    """mean +- std over seeds per dataset/category/method, with the paper's number and our difference."""
    rows = tidy[tidy["metric"] == metric]
    if rows.empty:
        return pd.DataFrame(columns=["dataset", "category", "method", "seeds", "mean", "std", "paper_mean",
                                     "paper_std", "difference", "paper_source"])
    rows = tag_readings(rows)  # runs under another reading: rows of their own
    out = (rows.groupby(["dataset", "category", "method"], sort=False)["value"]
           .agg(seeds="count", mean="mean", std="std").reset_index())
    ref = [paper.image_auroc(d, c) if m.split(" [")[0] == "algan" else {"mean": np.nan, "std": np.nan, "source": ""}
           for d, c, m in zip(out["dataset"], out["category"], out["method"])]
    out["paper_mean"] = [r["mean"] for r in ref]
    out["paper_std"] = [r["std"] for r in ref]
    out["difference"] = out["mean"] - out["paper_mean"]
    out["paper_source"] = [r["source"] for r in ref]
    return out


def auroc_table(summary: pd.DataFrame) -> pd.DataFrame:
    """A page's table from `summarize`, one row per data set / category, method and reading: test AUROC
    mean ± std over seeds, its 95 % interval (Student's t over the seeds), the paper's ALGAN-image
    number where it survives and ours minus it. Long rather than one column per method, so it fits the
    page's column however many methods and readings it holds."""
    def cell(mean, std, n):
        if pd.isna(mean):
            return "-"
        return f"{mean:.3f}" if pd.isna(std) or n < 2 else f"{mean:.3f} ± {std:.3f}"

    rows = []
    for r in summary.itertuples():
        base, _, tag = r.method.partition(" [")
        theirs = "lost" if pd.isna(r.paper_mean) else f"{r.paper_mean:.3f} ± {r.paper_std:.3f}"
        name = r.category if isinstance(r.category, str) else r.dataset
        rows.append({"data set": DATASET_LABELS.get(name, name),
                     "method": METHOD_LABELS.get(base, base),
                     "reading": tag.rstrip("]") if tag else ("-" if base == "knn" else "literal"),
                     "seeds": int(r.seeds), "test AUROC": cell(r.mean, r.std, r.seeds),
                     "95 % interval": interval(r.mean, r.std, r.seeds),
                     "paper": theirs if base == "algan" else "",
                     "ours − paper": "" if pd.isna(r.difference) else f"{r.difference:+.3f}"})
    return pd.DataFrame(rows, columns=["data set", "method", "reading", "seeds", "test AUROC", "95 % interval",
                                       "paper", "ours − paper"])


def figure1_samples(*, profile: str = "smoke", seeds=None, data_root=None, runs_dir=None,
                    dataset: str = "mvtec", category: str = "bottle", readings=("literal",),
                    save_as: Optional[str] = None) -> pd.DataFrame:
    """Figure 1: fake-normal (top row) vs fake-anomalous (bottom row) images of ALGAN-image runs, per
    reading of the paper (algan.config.READINGS) and seed; `save_as` writes the rows (test AUROC and
    provenance; the images stay in the run folders) to results/."""
    rows = []
    try:
        for name, seed in ((name, seed) for name in readings for seed in default_seeds(profile, seeds)):
            run = run_image("algan", dataset, category=category, profile=profile, seed=seed,
                            overrides=reading_overrides(name) or None, data_root=data_root, runs_dir=runs_dir)
            rows.append({**tidy_rows(run, ["test_auroc"])[0], "samples": str(run["folder"] / "samples.png")})
    except DataError as err:
        rows = [missing_row(dataset, category, "algan", profile, err)]
    frame = pd.DataFrame(rows)
    if save_as:
        save_results(frame.drop(columns="samples", errors="ignore"), save_as, profile)
    return frame


def figure5_scores(*, profile: str = "smoke", seeds=None, data_root=None, runs_dir=None,
                   datasets=("mtd", "coil100"), split: str = "test", readings=("literal",)) -> pd.DataFrame:
    """Figure 5: raw anomaly scores -D(x) of ALGAN-image on MTD and COIL-100, per reading
    (algan.config.READINGS), seed and label."""
    frames = []
    for dataset in datasets:
        for name, seed in ((name, seed) for name in readings for seed in default_seeds(profile, seeds)):
            try:
                run = run_image("algan", dataset, profile=profile, seed=seed, data_root=data_root, runs_dir=runs_dir,
                                overrides=reading_overrides(name) or None)
            except DataError as err:
                print(f"{dataset}: data set missing under the data root ({err})")
                break
            scores = results.read_scores(run["folder"])
            scores = scores[scores["split"] == split].assign(dataset=dataset, reading=name, seed=seed,
                                                             profile=profile, run=run["config"]["hash"])
            frames.append(scores)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["split", "label", "score", "dataset", "reading", "seed", "profile", "run"])


def score_aurocs(scores: pd.DataFrame, save_as: Optional[str] = None, profile: str = "smoke") -> pd.DataFrame:
    """Figure 5's numbers: one tidy row per data set, reading and seed of `figure5_scores` - the AUROC of
    its scores and the normal / anomalous counts it comes from; `save_as` writes them to results/."""
    rows = [{"dataset": dataset, "reading": reading, "seed": int(seed), "profile": part["profile"].iloc[0],
             "run": part["run"].iloc[0], "normal": int((part["label"] == 0).sum()),
             "anomalous": int((part["label"] == 1).sum()), "metric": "test_auroc",
             "value": auroc(part["label"], part["score"])}
            for (dataset, reading, seed), part in scores.groupby(["dataset", "reading", "seed"], sort=False)]
    frame = pd.DataFrame(rows, columns=["dataset", "reading", "seed", "profile", "run", "normal", "anomalous",
                                        "metric", "value"])
    if save_as:
        save_results(frame, save_as, profile)
    return frame


def figure3_toy(*, profile: str = "smoke", seeds=None, epochs: Optional[int] = None, save_as: Optional[str] = None):
    """Figure 3 (toy 2-D): test AUROC (normal vs ring r=4) of ALGAN under both readings and a plain GAN.

    Returns (tidy AUROC rows, {variant: ToyResult of the first seed} for the plots).
    """
    from .. import toy

    epochs = epochs or {"smoke": 4, "cpu": 60, "paper": 60}[check_profile(profile)]
    variants = {"ALGAN (per-batch latents)": ("algan", toy.TOY_READINGS),
                "ALGAN (literal schedule)": ("algan", toy.LITERAL_READINGS),
                "plain GAN (same budget)": ("plain_gan", toy.TOY_READINGS)}
    rows, shown = [], {}
    prov = results.provenance("cpu")
    for seed in default_seeds(profile, seeds):
        for name, (kind, readings) in variants.items():
            start = time.perf_counter()
            res = toy.run_toy(kind, seed=seed, epochs=epochs, readings=readings)
            rows.append({"dataset": "toy2d", "category": "ring r=4", "method": name, "seed": seed,
                         "profile": profile, "epochs": epochs, "metric": "test_auroc", "value": res.test_auroc,
                         "device": prov["device"], "commit": prov["commit"],
                         "wall_seconds": round(time.perf_counter() - start, 2),
                         "finished_utc": results.provenance("cpu")["started_utc"]})
            shown.setdefault(name, res)
    frame = pd.DataFrame(rows)
    if save_as:
        save_results(frame, save_as, profile)
    return frame, shown


READINGS = {
    "default (literal schedule, running BN, Eq. 5 saturating)": {},
    "per-batch latents": {"train.latent_schedule": "per_batch"},
    "batch-statistics BN for x'": {"train.fake_bn_stats": "batch"},
    "non-saturating G loss": {"train.generator_loss": "non_saturating"},
}


def readings_table(*, profile: str = "smoke", seeds=None, dataset: str = "mvtec", category: str = "bottle",
                   data_root=None, runs_dir=None, progress: bool = True, save_as: Optional[str] = None) -> pd.DataFrame:
    """Test AUROC of ALGAN-image under each reading of Algorithm 1 (latent schedule, BN statistics)."""
    frames = []
    for name, overrides in READINGS.items():
        tidy = image_auroc_table(dataset, profile=profile, seeds=seeds, methods=("algan",), categories=[category],
                                 data_root=data_root,
                                 runs_dir=runs_dir, overrides=overrides or None, progress=progress)
        frames.append(tidy.assign(reading=name))  # the variant's name, not algan.config's reading
    frame = pd.concat(frames, ignore_index=True)
    if save_as:
        save_results(frame, save_as, profile)
    return frame
