"""One function per table / figure of the paper, each returning tidy DataFrames.

Runs go through the run cache (`algan.results.cached_run`): a finished run is never redone, an
interrupted one is (a GAN's training from its last checkpoint, `algan.resume`). Tidy result rows
carry their provenance (profile, seed, device, commit, wall time) and are written to
`results/<page>_<profile>.csv`, which the book's pages read.
"""
from __future__ import annotations

import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np
import pandas as pd
import torch

from . import paper, results, resume
from .config import ALGANConfig, PROFILES, profile as make_profile, reading_of, reading_overrides
from .data import DataError, MVTEC_CATEGORIES, Splits, load_dataset, resolve_root
from .data.splits import require_evaluable
from .detector import ALGAN
from .models.alocc import ALOCC
from .models.ganomaly import GANomaly
from .models.knn import PixelKNN
from .models.skip_ganomaly import SkipGANomaly
from .score import auroc

SEEDS = {"smoke": (0,), "cpu": (0, 1, 2), "paper": tuple(range(10))}  # paper: 10 seeds (Sec. IV-C)
RESULTS_DIR = Path(os.environ.get("ALGAN_RESULTS", results.REPO_ROOT / "results"))


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}: expected one of {sorted(PROFILES)}")
    return profile


def default_seeds(profile: str, seeds: Optional[Iterable[int]] = None) -> tuple[int, ...]:
    return tuple(int(s) for s in (seeds if seeds is not None else SEEDS[check_profile(profile)]))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


# ---- methods: each fits one detector on a split and returns it with its extra metrics -----------
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
READING_TAGS = ("active",)  # readings other than "literal" that a table shows as methods of their own


def tag_readings(tidy: pd.DataFrame) -> pd.DataFrame:
    """`method` becomes "algan [active]" on rows run under a reading of READING_TAGS."""
    if "reading" not in tidy or not tidy["reading"].isin(READING_TAGS).any():
        return tidy
    return tidy.assign(method=[f"{m} [{r}]" if r in READING_TAGS else m for m, r in zip(tidy["method"], tidy["reading"])])


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
            for name, s in scores.items()]))
        if history is not None:
            results.write_csv(folder / "history.csv", history, float_format="%.6g")
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


# ---- tables ---------------------------------------------------------------------------------
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


def interval(mean: float, std: float, n: int, level: float = 0.95, bounds=(0.0, 1.0)) -> str:
    """The `level` confidence interval of a mean over n seeds (Student's t), as "[lo, hi]", cut to `bounds`
    (an AUROC's [0, 1]); "-" below 2 seeds."""
    from scipy import stats

    if n is None or n < 2 or pd.isna(std):
        return "-"
    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / np.sqrt(n)
    return f"[{max(mean - half, bounds[0]):.3f}, {min(mean + half, bounds[1]):.3f}]"


def save_results(frame: pd.DataFrame, name: str, profile: str) -> Path:
    path = RESULTS_DIR / f"{name}_{profile}.csv"
    results.write_csv(path, frame)
    return path



# ---- figures ---------------------------------------------------------------------------------
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
    from . import toy

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


# ---- the two readings of Algorithm 1 -------------------------------------------------------------
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


# ---- the book's pages (notebooks/): parameter check, provenance line, display tables -----------
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


def show(table: pd.DataFrame):
    """A table as the book shows it: no index column, cells as they are."""
    return table.style.hide(axis="index")


def run_histories(tidy: pd.DataFrame, runs_dir=None) -> pd.DataFrame:
    """Per-epoch `history.csv` of each run in a tidy table (methods without epochs have none)."""
    root = Path(runs_dir or results.default_runs_dir())
    runs = tidy.dropna(subset=["run"]).drop_duplicates("run") if "run" in tidy else tidy.iloc[:0]
    frames = [pd.read_csv(root / r.run / "history.csv").assign(dataset=r.dataset, category=r.category,
                                                              method=r.method, seed=int(r.seed), run=r.run,
                                                              reading=getattr(r, "reading", None))
              for r in runs.itertuples() if (root / r.run / "history.csv").is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["epoch", "val_auroc", "dataset", "category", "method", "seed", "run"])


def below_reference(summary: pd.DataFrame, reference: str = "knn") -> str:
    """One sentence: where each learned method's mean test AUROC falls below the reference row's."""
    ref = summary[summary["method"] == reference].set_index(["dataset", "category"])["mean"]
    if ref.empty:
        return "No reference row on this page."
    below = [f"{method_label(r.method)} on {r.category} ({r.mean:.3f} vs {ref[(r.dataset, r.category)]:.3f})"
             for r in summary[summary["method"] != reference].itertuples()
             if (r.dataset, r.category) in ref.index and r.mean < ref[(r.dataset, r.category)]]
    label = METHOD_LABELS.get(reference, reference)
    if not below:
        return f"Every method is above the {label} on every row of this page."
    return f"Below the {label}: " + "; ".join(below) + "."


GAN_BASELINES = ("ganomaly", "skip_ganomaly", "alocc")


def margin_over_baselines(summary: pd.DataFrame, method: str = "algan", others=GAN_BASELINES) -> str:
    """One sentence: how far `method`'s mean test AUROC is above (or below) each baseline's, in percent,
    averaged over the page's categories (the paper's Table 1 text claims ALGAN-image is > 10 % higher)."""
    means = summary.pivot_table(index="category", columns="method", values="mean")
    present = [o for o in others if o in means and method in means]
    if not present:
        return "No GAN baseline has been run on this page yet."
    parts = []
    for other in present:
        rel = 100 * (means[method] / means[other] - 1)
        parts.append(f"{METHOD_LABELS.get(other, other)} {rel.mean():+.1f} %")
    return (f"{METHOD_LABELS.get(method, method)} relative to each baseline (mean test AUROC, averaged over "
            f"{len(means)} categor{'y' if len(means) == 1 else 'ies'}): " + ", ".join(parts) + ".")


def near_perfect(summary: pd.DataFrame, level: float = 0.95) -> str:
    """One sentence checking the paper's COIL-100 claim ("all methods almost perfect") on our runs."""
    if summary.empty:
        return "No runs on this page."
    label = method_label
    hits = [f"{label(r.method)} ({r.mean:.3f})" for r in summary.itertuples() if r.mean >= level]
    misses = [f"{label(r.method)} ({r.mean:.3f})" for r in summary.itertuples() if r.mean < level]
    return (f"Mean test AUROC at or above {level}: {', '.join(hits) or 'none'}; below it: "
            f"{', '.join(misses) or 'none'}.")


def rank_among_gans(summary: pd.DataFrame, method: str = "algan", others=GAN_BASELINES) -> str:
    """One sentence per category: where `method` ranks among the GAN methods by mean test AUROC
    (the paper's text claims ALGAN-image is the best image-based method)."""
    lines = []
    for category, rows in summary[summary["method"].isin((method, *others))].groupby("category", sort=False):
        ranked = rows.sort_values("mean", ascending=False)["method"].tolist()
        if method not in ranked or len(ranked) < 2:
            continue
        above = [METHOD_LABELS.get(m, m) for m in ranked[:ranked.index(method)]]
        lines.append(f"{category}: {METHOD_LABELS.get(method, method)} ranks {ranked.index(method) + 1} of "
                     f"{len(ranked)} GAN methods" + (f" (above it: {', '.join(above)})." if above else " (best)."))
    return "\n".join(lines) or "No GAN baseline has been run on this page yet."


# ---- sweeps (algan.sweep), re-exported here; loaded on first use since algan.sweep imports this module --
_SWEEP_NAMES = frozenset({"sweep", "expand_grid", "sweep_status"})


def __getattr__(name: str):
    if name in _SWEEP_NAMES:
        from . import sweep as sweep_module
        return getattr(sweep_module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
