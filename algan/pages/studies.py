"""Sections V-D to V-G: stability (Fig. 7), the ablation (Table 7), the hyperparameters (Tables 8-11),
robustness to unseen anomalies (Sec. V-G, Fig. 8), and the readings page's study.

Each study is a grid of the sweep runner (`algan.sweep`): a page calls the study's function, which runs
what is not in the run cache yet (a process pool by default, `algan.pages.common.run_study`) and returns tidy
rows read from the finished runs. Runs at a study's default point are the tables' own runs (same hash), so
nothing is trained twice. The claims these pages check are `algan.claims`'.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch

from .. import paper, results
from ..claims import cell, paper_points
from ..config import ADDED_SETTINGS, READINGS, profile as make_profile, reading_of
from ..data import DataError
from ..runs import feature as feature_runs
from ..runs.common import default_seeds
from ..runs.image import GAN_BASELINES, categories_present
from .common import run_histories, run_study
from .tabular import tabular_grid


# The paper's sigma values are inferred (2..7, Table 8); n_z / n_dis values 1, 2, 4, 8 (Table 10's are a guess).
HYPERPARAMETERS = {
    "sigma": {"train.sigma": [2.0, 3.0, 4.0, 5.0, 6.0, 7.0]},
    "n_z": {"train.n_z": [1, 2, 4, 8]},
    "n_dis": {"train.n_dis": [1, 2, 4, 8]},
}
ALPHA_XI = [0.25, 0.5, 0.75, 0.85]  # Table 9: the diagonal and both axes through 0.75
# Beside Table 11: n_dis again with the non-saturating generator loss, to test whether the drop at large
# n_dis is the saturating loss of Eq. (5) losing its gradient once D wins (not a table of the paper).
N_DIS_NON_SATURATING = {"train.n_dis": HYPERPARAMETERS["n_dis"]["train.n_dis"], "train.generator_loss": "non_saturating"}
STUDY_KEYS = {"sigma": ["sigma"], "n_z": ["n_z"], "n_dis": ["n_dis"], "alpha_xi": ["alpha", "xi"],
              "n_dis_non_saturating": ["n_dis", "generator_loss"], "ablation": ["use_buffer", "use_anomalous_latent"]}


def present(dataset: str, data_root=None) -> list:
    """The categories of `dataset` under the data root ([] when the data root lacks it)."""
    try:
        return categories_present(dataset, data_root)
    except DataError:
        return []


def ablation_grid(profile: str, seeds=None, data_root=None, readings=("literal", "active")) -> list[dict]:
    """Table 7: the four variants on every MVTec-AD category under the data root and on MTD, under each
    reading of the paper (algan.config.READINGS)."""
    base = {"method": "algan", "profile": profile, "seed": list(default_seeds(profile, seeds)),
            "reading": list(readings), "train.use_buffer": [True, False], "train.use_anomalous_latent": [True, False]}
    grids = [{**base, "dataset": "mvtec", "category": "all"}] if present("mvtec", data_root) else []
    return grids + ([{**base, "dataset": "mtd"}] if present("mtd", data_root) else [])


def hyperparameter_grid(name: str, profile: str, seeds=None, readings=("literal",)) -> list[dict]:
    """Tables 8-11 on MVTec bottle: one axis per table; alpha/xi as the diagonal plus both axes; under each
    reading of the paper named (algan.config.READINGS)."""
    base = {"method": "algan", "dataset": "mvtec", "category": "bottle", "profile": profile,
            "seed": list(default_seeds(profile, seeds)), "reading": list(readings)}
    if name == "alpha_xi":
        return ([{**base, "train.alpha": v, "train.xi": v} for v in ALPHA_XI]
                + [{**base, "train.alpha": ALPHA_XI, "train.xi": 0.75}, {**base, "train.alpha": 0.75, "train.xi": ALPHA_XI}])
    if name == "n_dis_non_saturating":
        return [{**base, **N_DIS_NON_SATURATING}]
    if name not in HYPERPARAMETERS:
        raise ValueError(f"unknown hyperparameter study {name!r}: expected one of "
                         f"{sorted(HYPERPARAMETERS) + ['alpha_xi', 'n_dis_non_saturating']}")
    return [{**base, **HYPERPARAMETERS[name]}]


def study_summary(tidy: pd.DataFrame, keys, by=("dataset", "category")) -> pd.DataFrame:
    """Test AUROC mean +- std over seeds per data set / category and study value."""
    rows = tidy[tidy["metric"] == "test_auroc"]
    group = list(by) + list(keys)
    return rows.groupby(group, sort=True)["value"].agg(seeds="count", mean="mean", std="std").reset_index()


def ablation_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: ours per data set / category, and the paper's MVTec-AD mean (10 runs)."""
    variants = [(False, False, "neither"), (True, False, "buffered data only"),
                (False, True, "anomalous latent only"), (True, True, "both")]
    single = "0.761 ± 0.102 or 0.779 ± 0.104 (assignment lost)"
    paper_cells = {"neither": cell(*paper.TABLE7["neither"]), "both": cell(*paper.TABLE7["both"])}
    out = []
    for buf, anom, name in variants:
        row = {"variant": name, "buffered data": "✓" if buf else "", "anomalous latent": "✓" if anom else ""}
        part = summary[(summary["use_buffer"] == buf) & (summary["use_anomalous_latent"] == anom)]
        for r in part.itertuples():
            row[f"{r.category} ({int(r.seeds)} seeds)"] = cell(r.mean, r.std)
        out.append({**row, "paper (MVTec-AD mean)": paper_cells.get(name, single)})
    frame = pd.DataFrame(out).fillna("-")  # a data set missing from the first rows would follow the paper's column
    return frame[[c for c in frame if not c.startswith("paper")] + ["paper (MVTec-AD mean)"]]


def hyperparameter_table(summary: pd.DataFrame, name: str) -> pd.DataFrame:
    """One row per value: ours (mean ± std over seeds) and the paper's where it survives."""
    keys = STUDY_KEYS[name]
    ref = paper_points(name).set_index("value")
    out = []
    for r in summary.itertuples():
        value = tuple(getattr(r, k) for k in keys)
        row = {**({"reading": r.reading} if "reading" in summary else {}), **{k: getattr(r, k) for k in keys},
               "seeds": int(r.seeds), "ours": cell(r.mean, r.std)}
        if name in ("sigma", "n_z"):
            row["paper"] = cell(*ref.loc[value[0], ["mean", "std"]]) if value[0] in ref.index else "-"
        out.append(row)
    return pd.DataFrame(out)


STALL_LOGIT = -math.log(999)  # D(x') < 0.001: the saturating loss's gradient is scaled by D(x') (Eq. 5)


def generator_stall(history: pd.DataFrame, keys) -> pd.DataFrame:
    """Per value of `keys` (columns of `history`, e.g. n_dis): in how many epochs D's mean logit on the
    fake-normal data was below STALL_LOGIT (D(x') < 0.001, where the saturating generator loss of Eq. (5)
    passes on almost no gradient), averaged over the runs, and the mean final validation AUROC."""
    rows = []
    for values, g in history.groupby(list(keys), sort=True):
        per_run = g.groupby("run").agg(stalled=("d_fake_normal", lambda d: int((d < STALL_LOGIT).sum())),
                                       epochs=("epoch", "max"),
                                       final=("val_auroc", lambda v: v.dropna().iloc[-1] if v.notna().any() else math.nan))
        rows.append({**dict(zip(keys, values if isinstance(values, tuple) else (values,))), "runs": len(per_run),
                     "epochs with D(x') < 0.001": per_run["stalled"].mean(), "of epochs": int(per_run["epochs"].max()),
                     "final val AUROC": per_run["final"].mean()})
    return pd.DataFrame(rows)


def stability_histories(profile: str, seeds=None, data_root=None, runs_dir=None, executor: str = "local",
                        feature: bool = True) -> tuple[pd.DataFrame, str]:
    """Validation AUROC at every evaluation of ALGAN-image and the GAN baselines (the Tables 1 / 3 runs:
    every MVTec-AD category under the data root and MTD), and of ALGAN-feature where it has runs."""
    methods = ["algan", *GAN_BASELINES]
    seeds = list(default_seeds(profile, seeds))
    grid = [{"method": methods, "dataset": "mvtec", "category": "all", "profile": profile, "seed": seeds}]
    grid = grid if present("mvtec", data_root) else []
    grid += [{"method": methods, "dataset": "mtd", "profile": profile, "seed": seeds}] if present("mtd", data_root) else []
    if feature:  # ALGAN-feature on the same data, where the profile's Table 2 runs these sources
        sources = feature_runs.settings(profile)["sources"]
        grid += [{**g, "method": "feature:algan"} for g in list(grid) if g["dataset"] in sources]
    tidy, log = run_study(grid, [], data_root=data_root, runs_dir=runs_dir, executor=executor)
    if tidy.empty:
        return pd.DataFrame(), log
    hist = run_histories(tidy.drop_duplicates("run"), runs_dir).dropna(subset=["val_auroc"])
    return hist, log


def stability_rows(history: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows per run (the page's CSV): its first and final validation AUROC and the std of its
    validation AUROC over the second half of its evaluations (nan with fewer than two there)."""
    rows = []
    for (dataset, category, method, seed, run), g in history.groupby(
            ["dataset", "category", "method", "seed", "run"], sort=False, dropna=False):
        v = g.sort_values("epoch")["val_auroc"]
        half = v.iloc[len(v) // 2:]
        for metric, value in (("first_val_auroc", v.iloc[0]), ("final_val_auroc", v.iloc[-1]),
                              ("within_run_std", half.std() if len(half) > 1 else math.nan)):
            rows.append({"dataset": dataset, "category": category, "method": method, "seed": seed, "run": run,
                         "metric": metric, "value": float(value)})
    return pd.DataFrame(rows)


def stability_spread(history: pd.DataFrame) -> pd.DataFrame:
    """Per method and category: the final validation AUROC (mean, std over seeds) and how much it moves
    during training (the std over the second half of the evaluations, averaged over seeds)."""
    rows = []
    per_run = stability_rows(history)
    for (category, method), g in per_run.groupby(["category", "method"], sort=False):
        firsts, finals, wobble = (g.loc[g["metric"] == m, "value"].to_numpy()
                                  for m in ("first_val_auroc", "final_val_auroc", "within_run_std"))
        rows.append({"category": category, "method": method, "seeds": len(finals),
                     "first val AUROC": float(np.mean(firsts)),
                     "final val AUROC": cell(np.mean(finals), np.std(finals, ddof=1) if len(finals) > 1 else math.nan),
                     "std over seeds of the final": np.std(finals, ddof=1) if len(finals) > 1 else math.nan,
                     "within-run std, 2nd half": math.nan if np.isnan(wobble).all() else float(np.nanmean(wobble))})
    return pd.DataFrame(rows)


def robustness_rows(runs: list[dict]) -> pd.DataFrame:
    """Tidy rows per seed and group (the page's CSV): the share flagged at the threshold, the group's
    size and, for the anomalous groups, the AUROC against the normal test images."""
    rows = []
    for r in runs:
        counts = results.read_scores(r["folder"])["group"].value_counts()
        for name in r["metrics"]["groups"]:
            base = {"group": name, "seed": r["config"]["args"]["seed"], "run": r["folder"].name,
                    "images": int(counts.get(name, 0))}
            rows.append({**base, "metric": "flagged", "value": r["metrics"][f"flagged: {name}"]})
            if f"auroc: {name}" in r["metrics"]:
                rows.append({**base, "metric": "auroc", "value": r["metrics"][f"auroc: {name}"]})
    return pd.DataFrame(rows)


def robustness_table(runs: list[dict]) -> pd.DataFrame:
    """Per group: the share flagged at the threshold and the AUROC against the normal test images,
    mean ± std over seeds."""
    names = runs[0]["metrics"]["groups"]
    counts = results.read_scores(runs[0]["folder"])["group"].value_counts()
    rows = []
    for name in names:
        flagged = [r["metrics"][f"flagged: {name}"] for r in runs]
        aucs = [r["metrics"].get(f"auroc: {name}", math.nan) for r in runs]
        sd = lambda v: np.std(v, ddof=1) if len(v) > 1 else math.nan  # noqa: E731
        rows.append({"group": name, "images per seed": int(counts.get(name, 0)), "seeds": len(runs),
                     "flagged at the threshold": cell(np.mean(flagged), sd(flagged)),
                     "AUROC vs normal test": "-" if name == "normal test" else cell(np.mean(aucs), sd(aucs))})
    return pd.DataFrame(rows)


# The readings sweep: the literal reading and the Sec. III-A buffer + channel step + fill + full batches
# ("active") under each way of making x' for D (train.fake_bn_stats), on bottle first, then MTD.
READING_CANDIDATES = {"literal": {"reading": "literal"},
                      **{f"active, {bn} BN": {"reading": "active", "train.fake_bn_stats": bn}
                         for bn in ("batch", "running", "separate")}}


def readings_grid(profile: str, seeds=None, data_root=None) -> list[dict]:
    """Every candidate reading on MVTec bottle, then on MTD (where present): ALGAN-image, the profile's seeds.
    A candidate under which x'_a cannot depend on sigma (`sigma_effect`, a property of the settings, not of
    training) fails the rule whatever it trains to, so it runs on bottle only, to show its diagnostics."""
    base = {"method": "algan", "profile": profile, "seed": list(default_seeds(profile, seeds))}
    grid = [{**base, "dataset": "mvtec", "category": "bottle", **c} for c in READING_CANDIDATES.values()
            ] if "bottle" in present("mvtec", data_root) else []
    if present("mtd", data_root):
        eligible = [c for c in READING_CANDIDATES.values() if sigma_effect(make_profile(
            profile, reading=c["reading"], **{k: v for k, v in c.items() if k != "reading"}).to_dict())
            > ACTIVE_RULE["sigma_effect"]]
        grid += [{**base, "dataset": "mtd", **c} for c in eligible]
    return grid


def tables_grid(profile: str, seeds=None, data_root=None, reading: str = "active") -> list[dict]:
    """The Tables 1, 3 and 4 runs under a reading that the readings sweep does not make: the GAN baselines
    (of a reading's keys they read the rotation fill and the last batch) on bottle (every MVTec-AD category
    under the data root), MTD and COIL-100, and ALGAN-image on COIL-100 (first: it is the method itself)."""
    base = {"method": list(GAN_BASELINES), "profile": profile, "seed": list(default_seeds(profile, seeds)),
            "reading": reading}
    data = [{"dataset": "mvtec", "category": "all"}] if present("mvtec", data_root) else []
    data += [{"dataset": d} for d in ("mtd", "coil100") if present(d, data_root)]
    algan = [{**base, "method": "algan", "dataset": "coil100"}] if present("coil100", data_root) else []
    return algan + [{**base, **d} for d in data]


def candidate_of(resolved: dict) -> str:
    """The READING_CANDIDATES name a run's resolved settings follow, else the config's reading name."""
    for name, spec in READING_CANDIDATES.items():
        over = {k: v for k, v in spec.items() if k != "reading"}
        want = make_profile(resolved.get("profile", "cpu"), reading=spec["reading"], **over).to_dict()
        keys = {k for c in READING_CANDIDATES.values() for k in c if k != "reading"} | set(READINGS["active"])
        if all(_setting(resolved, k) == _setting(want, k) for k in keys):
            return name
    return reading_of(resolved)


def _setting(config: dict, key: str):
    section, name = key.split(".")
    return config.get(section, {}).get(name, ADDED_SETTINGS.get((section, name)))


READING_STUDY_KEYS = ["fake_bn_stats", "buffer_size", "buffer_update", "last_batch", "rotate_fill"]


def readings_study(profile: str, seeds=None, data_root=None, runs_dir=None, executor: str = "local", workers=None):
    """(tidy rows of the readings sweep with a `reading` column, the sweep's summary lines)."""
    tidy, lines = run_study(readings_grid(profile, seeds, data_root), READING_STUDY_KEYS, data_root=data_root,
                            runs_dir=runs_dir, executor=executor, workers=workers)
    if not tidy.empty:
        root = Path(runs_dir or results.default_runs_dir())
        names = {r: candidate_of(results.load_run(root / r)["config"]["resolved"]) for r in tidy["run"].unique()}
        tidy["reading"] = tidy["run"].map(names)
    return tidy, lines


# What "active" means for a reading's diagnostics (the readings page and the issue that asked for them):
# measured over the second half of training, per data set, as the mean over seeds.
# sigma_effect: x'_a must depend on sigma at all, or the anomalous latent is one more batch of x'_n.
ACTIVE_RULE = {"d_fake_anomalous": -6.0, "grad_share_fake_anomalous": 0.05, "grad_share_buffer": 0.05,
               "buffer_age_epochs": 1.0, "sigma_effect": 0.01}
RULE_LABELS = {"d_fake_anomalous": "x'_a logit > -6", "grad_share_fake_anomalous": "x'_a gradient > 5 %",
               "grad_share_buffer": "buffer gradient > 5 %", "buffer_age_epochs": "buffer age > 1 epoch",
               "sigma_effect": "x'_a depends on sigma"}


def sigma_effect(resolved: dict, seed: int = 0) -> float:
    """How much x'_a depends on sigma under a run's settings: G as the run built it before training (its
    config, its seed's DCGAN init), one latent batch mixed at alpha and made as Alg. 1 line 9 under
    `train.fake_bn_stats`; mean |x'_a(sigma) - x'_a(1)| over mean |x'_a(1)|, for the same N(0, I) draws.
    Batch norm is invariant to the scale of its input, so a train-mode call of G on z_a alone (`separate`)
    gives 0 up to batch norm's eps: sigma then changes nothing."""
    from ..config import ALGANConfig
    from ..models.algan_nets import build_networks
    from ..train import make_fakes, sample_latents

    cfg = ALGANConfig.from_dict(resolved)
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG stays as it was
        torch.manual_seed(seed)
        G, _ = build_networks(cfg.model)
    t = cfg.train
    z, is_anom = sample_latents(t.batch_size, cfg.model.latent_dim, t.alpha, 1.0, torch.Generator().manual_seed(seed))
    scaled = torch.where(is_anom[:, None], z * t.sigma, z)
    with torch.no_grad():
        base, out = (make_fakes(G, v, is_anom, int(is_anom.sum()), t.fake_bn_stats)[is_anom] for v in (z, scaled))
    return float((out - base).abs().mean() / base.abs().mean())


def add_sigma_effect(diagnostics: pd.DataFrame, runs_dir=None) -> pd.DataFrame:
    """`diagnostics` (one row per run) with each run's sigma_effect, from its stored resolved settings."""
    root = Path(runs_dir or results.default_runs_dir())
    effect = {r.run: sigma_effect(results.load_run(root / r.run)["config"]["resolved"], int(r.seed))
              for r in diagnostics.itertuples()}
    return diagnostics.assign(sigma_effect=diagnostics["run"].map(effect))


def mechanism_diagnostics(history: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, reading, seed): the second half of training's mean of each diagnostic; the buffer's
    median age in epochs (G updates / updates per epoch) and the buffered terms' summed gradient share."""
    h = history.copy()
    h["grad_share_buffer"] = h["grad_share_buf_normal"] + h["grad_share_buf_anomalous"]
    per_epoch = h.groupby("run")["g_updates"].transform(lambda g: g.diff().median())
    h["buffer_age_epochs"] = h["buffer_age_median"] / per_epoch
    h = h[h["epoch"] > h.groupby("run")["epoch"].transform("max") / 2]
    cols = ["d_real", "d_fake_normal", "d_fake_anomalous", "d_buf_normal", "d_buf_anomalous", "sat_fake_anomalous",
            "grad_share_real", "grad_share_fake_normal", "grad_share_fake_anomalous", "grad_share_buffer",
            "buffer_age_epochs"]
    return h.groupby(["dataset", "reading", "seed", "run"], sort=False)[cols].mean().reset_index()


def choose_reading(tidy: pd.DataFrame, diagnostics: pd.DataFrame) -> tuple[Optional[str], pd.DataFrame]:
    """The reading chosen on validation AUROC and diagnostics only (the test split is not read): among the
    readings that meet ACTIVE_RULE on every data set, the best mean validation AUROC over data sets and seeds.
    Returns (name or None, one row per reading with the checks)."""
    val = tidy[tidy["metric"] == "val_auroc"].groupby(["reading", "dataset"])["value"].mean().unstack()
    d = diagnostics.groupby(["reading", "dataset"])[list(ACTIVE_RULE)].mean()
    rows = []
    for name in val.index:
        ran = d.loc[name] if name in d.index.get_level_values(0) else d.iloc[:0]
        complete = set(ran.index) == set(val.columns) and val.loc[name].notna().all()  # every data set
        checks = {RULE_LABELS[k]: bool(complete and (ran[k] > v).all()) for k, v in ACTIVE_RULE.items()}
        rows.append({"reading": name, "mean val AUROC": float(val.loc[name].mean()),
                     **{f"val AUROC {ds}": float(val.loc[name, ds]) for ds in val.columns},
                     "every data set run": bool(complete), **checks, "active": all(checks.values())})
    table = pd.DataFrame(rows)
    ok = table[table["active"]] if not table.empty else table
    name = None if ok.empty else str(ok.sort_values("mean val AUROC", ascending=False)["reading"].iloc[0])
    return name, table


def selection_grid(profile: str, seeds=None, data_root=None) -> list[dict]:
    """Issue 24's measurement of the checkpoint rules (train.select): ALGAN under the library's default
    settings (the literal reading), recording every rule's checkpoint in one run (train.record_selects), on
    MVTec bottle, MTD, COIL-100, ADBench's MVTec-AD features (every category) and the tabular sets."""
    base = {"method": "algan", "profile": profile, "seed": list(default_seeds(profile, seeds)),
            "train.record_selects": True}
    grids = [{**base, "dataset": "mvtec", "category": "bottle"}] if present("mvtec", data_root) else []
    grids += [{**base, "dataset": d} for d in ("mtd", "coil100") if present(d, data_root)]
    try:
        grids.append({**base, "method": "feature:algan", "dataset": "adbench", "category": feature_runs.adbench_categories(data_root)})
    except DataError:
        pass
    return grids + [{**grid, "train.record_selects": True} for grid in tabular_grid(profile, seeds, data_root,
                                                                                      methods=("algan",))]


SIGMA_READINGS = ("literal", "active")  # Table 8 under both readings: sigma only matters where x'_a is active


def study_grids(profile: str, seeds=None, data_root=None) -> dict[str, list[dict]]:
    """Every study's grid: the readings first (they choose the active reading), the literal hyperparameters on
    bottle, the ablation (with MTD), Table 8 under both readings, the rest of Tables 1, 3, 4 under the active one
    and the tabular page's runs (ALGAN-feature and PyOD on ADBench's classical sets)."""
    grids = {"readings": readings_grid(profile, seeds, data_root)}
    grids.update({name: hyperparameter_grid(name, profile, seeds)
                  for name in ("alpha_xi", "n_z", "n_dis", "n_dis_non_saturating")})
    grids["ablation"] = ablation_grid(profile, seeds, data_root)
    grids["sigma"] = hyperparameter_grid("sigma", profile, seeds, readings=SIGMA_READINGS)
    grids["tables"] = tables_grid(profile, seeds, data_root)

    grids["tabular"] = tabular_grid(profile, seeds, data_root)
    grids["selection"] = selection_grid(profile, seeds, data_root)  # beyond the paper: checkpoints without labels
    return grids
