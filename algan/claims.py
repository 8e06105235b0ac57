"""The claims ledger: one row per claim of the paper, judged from the tidy CSVs the pages save
(`results/<page>_<profile>.csv`) by one stated rule, so it changes when the results do.

Each row is one function of this module (`CLAIMS`, registered by `@claim` in the ledger's order), and every
status the book states comes from one of them: the ledger, the landing page's table and each page's findings
(`page_findings`). The pages' verdict sentences, each comparison against the paper in words with its size in
standard errors (`below_reference`, `compare_with_paper`, `ablation_claims`, `hyperparameter_claims`,
`speed_claims`, `verdict_lines`, ...), are here too; the pages (`algan.pages`) only print them.

Rules (SE of a difference of two means over seeds: sqrt(s_a^2/n_a + s_b^2/n_b); the paper's numbers
count as means over its 10 runs):
- a claim that one thing beats another ("effect") is *reproduced* when our difference is 2 SE or more in
  the claimed direction, *not reproduced* when it is 2 SE or more against it, else *inconclusive*;
- a claim of a number ("value") is *not reproduced* when ours differs from it by 2 SE or more, and
  *reproduced* only when it does not and the test was sharp enough to see a gap of VALUE_TOLERANCE
  (2 SE at most that), else *inconclusive*; "comparable" is a value claim of a difference of 0;
- a claim of a level ("level": every method at or above it) is reproduced when every mean clears it by
  2 SE, not reproduced when one falls 2 SE or more below it, else inconclusive;
- a speed claim is one measuring run, judged by its direction alone; a claim that *all* of a kind of
  image are flagged is reproduced only if every image of every seed was;
- a claim without the runs to judge it is *not tested*.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd

from . import paper, results
from .runs.image import GAN_BASELINES, METHOD_LABELS, method_label
from .models.pyod_baselines import LABELS as PYOD_LABELS, PYOD_MODELS
from .runs.tabular import ALGAN_LAST, ALGAN_VAL, natural_key
from .timing import FEATURE_METHODS, IMAGE_METHODS, LABELS as SPEED_LABELS

SIGNIFICANT_SE = 2.0
VALUE_TOLERANCE = 0.05
STATUSES = ("reproduced", "not reproduced", "inconclusive", "not tested")
READINGS = ("active", "literal")  # the ledger's columns: the mechanisms' reading first
PAGES = {"table1": "table1_mvtec", "table2": "table2_features", "table3": "table3_mtd", "table4": "table4_coil100",
         "table5_speed": "table5_speed", "fig7_stability": "fig7_stability", "table7": "table7_ablation",
         "tables8_11": "tables8_11_hyperparameters", "robustness": "robustness", "tabular": "tabular",
         "selection": "selection"}
GANS = ("ganomaly", "skip_ganomaly", "alocc")


def stats(values) -> dict:
    """mean, std and n of per-seed values (std nan below 2 seeds)."""
    v = pd.Series(values, dtype=float).dropna()
    return {"mean": v.mean() if len(v) else math.nan, "std": v.std() if len(v) > 1 else math.nan, "n": len(v)}


def se_of(*parts: dict) -> float:
    """SE of a sum or difference of independent means; nan if one part has no spread."""
    terms = [p["std"] ** 2 / p["n"] for p in parts if p["n"]]
    return math.sqrt(sum(terms)) if len(terms) == len(parts) and not any(map(math.isnan, terms)) else math.nan


def effect_status(d: float, se: float, sign: int = 1) -> str:
    if math.isnan(d):
        return "not tested"
    if math.isnan(se) or se == 0:
        return "inconclusive"
    z = sign * d / se
    return "reproduced" if z >= SIGNIFICANT_SE else "not reproduced" if z <= -SIGNIFICANT_SE else "inconclusive"


def value_status(d: float, se: float) -> str:
    if math.isnan(d):
        return "not tested"
    if math.isnan(se) or se == 0:
        return "inconclusive"
    if abs(d) >= SIGNIFICANT_SE * se:
        return "not reproduced"
    return "reproduced" if SIGNIFICANT_SE * se <= VALUE_TOLERANCE else "inconclusive"


def level_status(parts: list[dict], level: float) -> str:
    if not parts:
        return "not tested"
    z = [(p["mean"] - level) / (p["std"] / math.sqrt(p["n"])) if p["n"] > 1 and p["std"] > 0
         else math.copysign(math.inf, p["mean"] - level) for p in parts]
    if min(z) <= -SIGNIFICANT_SE:
        return "not reproduced"
    return "reproduced" if min(z) >= SIGNIFICANT_SE else "inconclusive"


def fmt(p: dict) -> str:
    if not p["n"]:
        return "-"
    return f"{p['mean']:.3f}" + (f" ± {p['std']:.3f}" if p["n"] > 1 else "") + f" (n={p['n']})"


def diff_text(d: float, se: float) -> str:
    if math.isnan(d):
        return "-"
    # rounded down, so that a size shown as 2.0 SE always meets the 2 SE rule
    return f"{d:+.3f}" + (f" ({math.floor(10 * abs(d) / se) / 10:.1f} SE)" if se and not math.isnan(se) else
                          " (no spread)")


def _row(status: str, ours: str, d: float = math.nan, se: float = math.nan) -> dict:
    return {"status": status, "ours": ours, "difference": diff_text(d, se)}


NOT_TESTED = _row("not tested", "-")


def _missing(methods) -> dict:
    """Not tested: the comparison needs runs of `methods` under this reading that have not been made."""
    return _row("not tested", "no runs yet of " + ", ".join(methods))


# ---- reading the saved CSVs ------------------------------------------------------------------------
def load(profile: str, results_dir=None) -> dict[str, pd.DataFrame]:
    """The pages' saved rows, by CSV name; absent CSVs are left out."""
    base, frames = Path(results_dir or results.RESULTS_DIR), {}
    for name in PAGES:
        path = base / f"{name}_{profile}.csv"
        if path.exists():
            frames[name] = pd.read_csv(path)
    return frames


def _per_seed(frame: Optional[pd.DataFrame], reading: Optional[str] = None, metric: str = "test_auroc",
              **where) -> dict:
    """stats over seeds of the `metric` rows matching `where` (a value or a tuple of allowed values) under a
    reading; rows without a reading of their own (kNN) count under every reading; several categories: their
    mean."""
    if frame is None or frame.empty:
        return stats([])
    keep = frame["metric"] == metric
    for key, value in where.items():
        keep &= frame[key].isin(value if isinstance(value, tuple) else (value,))
    if reading is not None and "reading" in frame:
        keep &= frame["reading"].eq(reading) | ~frame["reading"].isin(READINGS)
    rows = frame[keep]
    return stats(rows.groupby("seed")["value"].mean()) if len(rows) else stats([])


# ---- the claims: one function per row of the ledger ---------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """One row of the ledger: the CSV it is judged from (a key of PAGES), the claim, the paper's number or words,
    and the one function that judges it, judge(frames, reading) -> {"status", "ours", "difference"}."""

    csv: str
    claim: str
    paper: str
    judge: Callable[[dict, str], dict]


CLAIMS: list[Claim] = []  # in the ledger's order: the order of the functions below


def claim(csv: str, text: str, theirs: str) -> Callable:
    """Registers the decorated function as the judge of one claim of the ledger."""
    def register(judge: Callable) -> Callable:
        if csv not in PAGES:
            raise ValueError(f"claim {text!r}: unknown CSV {csv!r}, expected one of {sorted(PAGES)}")
        CLAIMS.append(Claim(csv, text, theirs, judge))
        return judge
    return register


# the shared rules, each used by several claims' functions
def _beats_best_other(f, reading, name: str, others) -> dict:
    frame = f.get(name)
    ours = _per_seed(frame, reading, method="algan")
    rivals = {m: _per_seed(frame, reading, method=m) for m in others}
    missing = [m for m, p in {"algan": ours, **rivals}.items() if not p["n"]]
    if missing:
        return _missing(missing)
    best = max(rivals, key=lambda m: rivals[m]["mean"])
    d, se = ours["mean"] - rivals[best]["mean"], se_of(ours, rivals[best])
    return _row(effect_status(d, se), f"{fmt(ours)}; best other: {best} {fmt(rivals[best])}", d, se)


def _feature_pair(f, other: str, kind: str, source: str = "adbench", category: Optional[str] = None) -> dict:
    """ALGAN-feature against `other` on Table 2's runs of `source` (and `category`): the pooled ADBench
    features of all 15 MVTec-AD categories, or our images through the backbone (CutPaste trains on images)."""
    frame = f.get("table2")
    if frame is None:
        return NOT_TESTED
    ad = frame[(frame["source"] == source) & ((frame["category"] == category) if category else True)]
    a, b = _per_seed(ad, None, method="algan"), _per_seed(ad, None, method=other)
    if not a["n"] or not b["n"]:
        return NOT_TESTED
    d, se = a["mean"] - b["mean"], se_of(a, b)
    status = value_status(d, se) if kind == "comparable" else effect_status(d, se, sign=-1)
    return _row(status, f"{fmt(a)} vs {fmt(b)}", d, se)


def _speed(f, column: str, method: str, group) -> dict:
    frame = f.get("table5_speed")
    if frame is None or method not in set(frame["method"]):
        return NOT_TESTED
    ratios = frame[frame["method"].isin(group) & (frame["method"] != method)][column]
    if ratios.empty:
        return NOT_TESTED
    status = "reproduced" if (ratios > 1).all() else "not reproduced"
    return _row(status, f"{ratios.min():.1f}-{ratios.max():.1f} x (one measuring run, "
                        f"{frame['device'].iloc[0]})")


def _steadier(f, reading, category: str) -> dict:
    """ALGAN-image's validation AUROC moves less within a run (std over its second half) than that of the
    steadiest other GAN method: the difference, theirs minus ours, should be positive."""
    frame = f.get("fig7_stability")
    if frame is None or reading != "literal":
        return NOT_TESTED if frame is None else _row("not tested", "made from the literal runs only")
    part = frame[frame["category"] == category]
    get = lambda m: _per_seed(part, None, metric="within_run_std", method=m)  # noqa: E731
    ours, others = get("ALGAN-image"), {m: get(m) for m in ("GANomaly", "Skip-GANomaly", "ALOCC")}
    missing = [m for m, p in {"ALGAN-image": ours, **others}.items() if not p["n"]]
    if missing:
        return _missing(missing)
    best = min(others, key=lambda m: others[m]["mean"])
    d, se = others[best]["mean"] - ours["mean"], se_of(ours, others[best])
    return _row(effect_status(d, se), f"within-run std {fmt(ours)}; steadiest other: {best} "
                                      f"{fmt(others[best])}", d, se)


def _ablation(f, reading, category: str, a: tuple, b: Optional[tuple]) -> dict:
    """Variant `a` (use_buffer, use_anomalous_latent) beats `b` (None: the better single one)."""
    frame = f.get("table7")
    if frame is None:
        return NOT_TESTED
    part = frame[frame["category"] == category]
    get = lambda key: _per_seed(part, reading, use_buffer=key[0], use_anomalous_latent=key[1])  # noqa: E731
    other = b or max([(True, False), (False, True)], key=lambda k: get(k)["mean"] if get(k)["n"] else -1)
    x, y = get(a), get(other)
    if not x["n"] or not y["n"]:
        return NOT_TESTED
    d, se = x["mean"] - y["mean"], se_of(x, y)
    return _row(effect_status(d, se), f"{fmt(x)} vs {fmt(y)}", d, se)


def _study(f, reading, study: str, better: dict, worse: dict) -> dict:
    """On the Tables 8-11 CSV, study `study`: the runs at the settings `better` beat those at `worse`."""
    frame = f.get("tables8_11")
    if frame is None or not set(better) <= set(frame):
        return NOT_TESTED
    part = frame[frame["study"] == study]
    x, y = _per_seed(part, reading, **better), _per_seed(part, reading, **worse)
    if not x["n"] or not y["n"]:
        return NOT_TESTED
    d, se = x["mean"] - y["mean"], se_of(x, y)
    return _row(effect_status(d, se), f"{fmt(x)} vs {fmt(y)}", d, se)


def _all_flagged(f, reading, prefix: str) -> dict:
    """Every image of the groups named `prefix...` flagged as anomalous, in every seed."""
    frame = f.get("robustness")
    if frame is None or reading != "literal":
        return NOT_TESTED if frame is None else _row("not tested", "scored with the literal models only")
    part = frame[frame["group"].str.startswith(prefix) & (frame["metric"] == "flagged")]
    if part.empty:
        return NOT_TESTED
    missed = ((1 - part["value"]) * part["images"]).round().sum()
    return _row("reproduced" if missed == 0 else "not reproduced",
                f"{int(missed)} of {int(part['images'].sum())} images not flagged "
                f"({part['seed'].nunique()} seeds; lowest share flagged {part['value'].min():.3f})")


def _needs_no_labels(f, reading, family: str) -> dict:
    """Figure 7's stability, as a user without labelled anomalies meets it: the last epoch (no labels) scores
    as the checkpoint of best labelled validation AUROC: a value claim of a difference of 0 in mean test AUROC
    over the family's data sets (the selection page's runs, which record both checkpoints)."""
    frame = f.get("selection")
    if frame is None or reading != "literal":
        return NOT_TESTED if frame is None else _row("not tested", "made from the literal runs only")
    ours = _per_seed(frame, None, family=family, rule="last")
    ref = _per_seed(frame, None, family=family, rule="val_labels")
    if not ours["n"] or not ref["n"]:
        return _missing([f"{family} runs with train.record_selects"])
    sets = frame.loc[frame["family"] == family, "dataset"].nunique()
    d, se = ours["mean"] - ref["mean"], se_of(ours, ref)
    return _row(value_status(d, se), f"last epoch {fmt(ours)} vs labelled choice {fmt(ref)}; {sets} sets", d, se)


# the ledger's rows, in its order
@claim("table1", "ALGAN-image on MVTec bottle scores the paper's AUROC", "0.948 ± 0.024 (Tables 8, 10)")
def bottle_scores_the_papers_auroc(f, reading):
    ours = _per_seed(f.get("table1"), reading, method="algan", category="bottle")
    ref = {"mean": paper.BOTTLE_DEFAULT["mean"], "std": paper.BOTTLE_DEFAULT["std"], "n": paper.HYPERPARAMETER_RUNS}
    if not ours["n"]:
        return NOT_TESTED
    d, se = ours["mean"] - ref["mean"], se_of(ours, ref)
    return _row(value_status(d, se), fmt(ours), d, se)


@claim("table1", "ALGAN-image beats every other GAN method on MVTec-AD", "> 10 % above each on average (text)")
def image_beats_the_gans_on_mvtec(f, reading):
    return _beats_best_other(f, reading, "table1", GANS)


@claim("table3", "ALGAN-image is the best image-based method on MTD", "state of the art (text)")
def image_is_best_on_mtd(f, reading):
    return _beats_best_other(f, reading, "table3", (*GANS, "knn"))


@claim("table4", "Every method is almost perfect on COIL-100 (AUROC at least 0.95)", "all almost perfect (text)")
def every_method_near_perfect_on_coil100(f, reading, level: float = 0.95):
    frame = f.get("table4")
    if frame is None:
        return NOT_TESTED
    methods = dict.fromkeys(frame.loc[frame["metric"] == "test_auroc", "method"])  # not the pages' notes
    parts = {m: _per_seed(frame, reading, method=m) for m in methods}
    if not all(p["n"] for p in parts.values()):
        return _missing(m for m, p in parts.items() if not p["n"])
    worst = min(parts, key=lambda m: parts[m]["mean"])
    return _row(level_status(list(parts.values()), level), f"lowest: {worst} {fmt(parts[worst])}")


@claim("table2", "ALGAN-feature is comparable to DifferNet (MVTec-AD, all categories)", "0.911 vs 0.927")
def feature_comparable_to_differnet(f, reading):
    return _feature_pair(f, "differnet", "comparable")


@claim("table2", "ALGAN-feature is below PatchCore-25 (MVTec-AD)", "0.911 vs 0.991")
def feature_below_patchcore_25(f, reading):
    return _feature_pair(f, "patchcore_25", "below")


@claim("table2", "ALGAN-feature is below PaDiM (MVTec-AD)", "0.911 vs 0.979")
def feature_below_padim(f, reading):
    return _feature_pair(f, "padim", "below")


@claim("table2", "ALGAN-feature is below CutPaste (MVTec-AD; ours: bottle, through the backbone)", "0.911 vs 0.961")
def feature_below_cutpaste(f, reading):
    return _feature_pair(f, "cutpaste", "below", source="mvtec", category="bottle")


@claim("table5_speed", "The other image methods take longer per image than ALGAN-image (batch 1)",
       "10.4-54.6 x (A100)")
def image_methods_slower_than_algan_image(f, reading):
    return _speed(f, "x_algan_image", "algan", ("algan", *GANS))


@claim("table5_speed", "The other feature methods take longer per image than ALGAN-feature (batch 1)",
       "1.3-2.2 x (A100)")
def feature_methods_slower_than_algan_feature(f, reading):
    return _speed(f, "x_algan_feature", "algan_feature", FEATURE_METHODS)


@claim("fig7_stability", "ALGAN-image validates more steadily than the other GAN methods (MVTec bottle)",
       "stable, the others not (Figure 7, transistor)")
def image_steadier_on_bottle(f, reading):
    return _steadier(f, reading, "bottle")


@claim("fig7_stability", "ALGAN-image validates more steadily than the other GAN methods (MTD)",
       "stable, the others not (Figure 7, transistor)")
def image_steadier_on_mtd(f, reading):
    return _steadier(f, reading, "mtd")


@claim("table7", "Both pseudo-anomaly mechanisms beat neither (MVTec bottle)", "0.878 vs 0.643 (MVTec-AD mean)")
def both_beat_neither_on_bottle(f, reading):
    return _ablation(f, reading, "bottle", (True, True), (False, False))


@claim("table7", "The buffer alone beats neither (MVTec bottle)", "0.761 or 0.779 vs 0.643")
def buffer_beats_neither_on_bottle(f, reading):
    return _ablation(f, reading, "bottle", (True, False), (False, False))


@claim("table7", "The anomalous latent alone beats neither (MVTec bottle)", "0.761 or 0.779 vs 0.643")
def latent_beats_neither_on_bottle(f, reading):
    return _ablation(f, reading, "bottle", (False, True), (False, False))


@claim("table7", "Both beat the better single mechanism (MVTec bottle)", "0.878 vs 0.779")
def both_beat_the_better_single_on_bottle(f, reading):
    return _ablation(f, reading, "bottle", (True, True), None)


@claim("table7", "Both pseudo-anomaly mechanisms beat neither (MTD)", "0.878 vs 0.643 (MVTec-AD mean)")
def both_beat_neither_on_mtd(f, reading):
    return _ablation(f, reading, "mtd", (True, True), (False, False))


@claim("table7", "The buffer alone beats neither (MTD)", "0.761 or 0.779 vs 0.643")
def buffer_beats_neither_on_mtd(f, reading):
    return _ablation(f, reading, "mtd", (True, False), (False, False))


@claim("table7", "The anomalous latent alone beats neither (MTD)", "0.761 or 0.779 vs 0.643")
def latent_beats_neither_on_mtd(f, reading):
    return _ablation(f, reading, "mtd", (False, True), (False, False))


@claim("table7", "Both beat the better single mechanism (MTD)", "0.878 vs 0.779")
def both_beat_the_better_single_on_mtd(f, reading):
    return _ablation(f, reading, "mtd", (True, True), None)


@claim("tables8_11", "sigma = 4 beats sigma = 2 (bottle)", "0.948 vs 0.859")
def sigma_4_beats_sigma_2(f, reading):
    return _study(f, reading, "sigma", {"sigma": 4.0}, {"sigma": 2.0})


@claim("tables8_11", "alpha = xi = 0.25 beats alpha = xi = 0.85 (bottle)", "text only (Table 9 lost)")
def low_alpha_xi_beats_high(f, reading):
    return _study(f, reading, "alpha_xi", {"alpha": 0.25, "xi": 0.25}, {"alpha": 0.85, "xi": 0.85})


@claim("tables8_11", "n_z = 2 beats n_z = 1 (bottle)", "0.948 vs 0.813 (n_z = 1 a guess)")
def n_z_2_beats_n_z_1(f, reading):
    return _study(f, reading, "n_z", {"n_z": 2}, {"n_z": 1})


@claim("tables8_11", "n_dis = 2 beats a very large n_dis (8; bottle)", "text: slightly worse when very large")
def n_dis_2_beats_n_dis_8(f, reading):
    return _study(f, reading, "n_dis", {"n_dis": 2}, {"n_dis": 8})


@claim("robustness", "Every fake-anomalous sample of sigma 5-8 is flagged (bottle, trained at sigma 4)",
       "all (Sec. V-G)")
def every_fake_anomalous_sample_flagged(f, reading):
    return _all_flagged(f, reading, "fake-anomalous")


@claim("robustness", "Every CutPaste-style image is flagged (bottle)", "all (Sec. V-G)")
def every_cutpaste_image_flagged(f, reading):
    return _all_flagged(f, reading, "CutPaste")


@claim("selection", "ALGAN-image trains stably enough to need no labels: its last epoch scores as its best-validated "
       "checkpoint (MVTec bottle, MTD, COIL-100)", "stable (Figure 7; selected on labelled validation data)")
def image_needs_no_labels(f, reading):
    return _needs_no_labels(f, reading, "image")


@claim("selection", "ALGAN-feature trains stably enough to need no labels: its last epoch scores as its "
       "best-validated checkpoint (ADBench's MVTec-AD features)",
       "stable (Figure 7; selected on labelled validation data)")
def feature_needs_no_labels(f, reading):
    return _needs_no_labels(f, reading, "feature")


@claim("tabular", "Beyond the paper: ALGAN-feature, applied directly to tabular data, is comparable to the best of "
       "PyOD's detectors (ADBench's classical sets; last epoch, no labels)",
       "\"can be directly applied to ... features\" (Sec. VI; no numbers)")
def tabular_comparable_to_pyod(f, reading):
    """Beyond the paper (Sec. VI: ALGAN "can be directly applied to ... features" and has a GAN's "potential
    to approximate any data distribution"): on the tabular page's sets, ALGAN-feature at its last epoch (no
    labels, as PyOD's detectors) is comparable to the best of PyOD's detectors: a value claim of a difference
    of 0 in mean test AUROC over the sets every method ran (per seed the mean over those sets)."""
    frame = f.get("tabular")
    if frame is None or frame.empty:
        return NOT_TESTED
    rows = frame[frame["metric"].isin(("test_auroc", "test_auroc_last"))]
    others = [m for m in dict.fromkeys(rows["method"]) if m != "algan"]
    if "algan" not in set(rows["method"]) or not others:
        return _missing(["algan"] if not others else ["PyOD's detectors"])
    sets = set.intersection(*(set(rows.loc[rows["method"] == m, "dataset"]) for m in ["algan", *others]))
    rows = rows[rows["dataset"].isin(sets)]
    ours = _per_seed(rows, None, metric="test_auroc_last", method="algan")
    chosen = _per_seed(rows, None, metric="test_auroc", method="algan")
    rivals = {m: _per_seed(rows, None, method=m) for m in others}
    best = max(rivals, key=lambda m: rivals[m]["mean"])
    d, se = ours["mean"] - rivals[best]["mean"], se_of(ours, rivals[best])
    return _row(value_status(d, se), f"last epoch {fmt(ours)} (validation checkpoint {fmt(chosen)}); best of PyOD: "
                                     f"{best} {fmt(rivals[best])}; {len(sets)} sets", d, se)


def ledger(profile: str, results_dir=None, frames: Optional[dict] = None) -> pd.DataFrame:
    """One row per claim and reading: page, claim, the paper's number, reading, status, ours, difference."""
    frames = load(profile, results_dir) if frames is None else frames
    rows = []
    for c in CLAIMS:
        for reading in READINGS:
            rows.append({"page": PAGES[c.csv], "claim": c.claim, "paper": c.paper, "reading": reading,
                         **c.judge(frames, reading), "profile": profile})
    frame = pd.DataFrame(rows)
    assert frame["status"].isin(STATUSES).all()
    return frame


def ledger_table(frame: pd.DataFrame, link: str = "pages/{page}.ipynb") -> pd.DataFrame:
    """The display: one row per claim, one column per reading holding "status: ours, difference"; claims
    whose judgement does not depend on the reading (features, speed) show "same" under `literal`. Each
    claim links to its page, `link` formatted with the page's name (the landing page's source links to
    the notebooks; a notebook's Markdown output is not resolved by the build, so it links "{page}.html")."""
    def cell(r):
        text = f"**{r.status}**" + (f": {r.ours}" if r.ours != "-" else "")
        return text + (f"; difference {r.difference}" if r.difference != "-" else "")

    out = []
    for (page, claim, theirs), g in frame.groupby(["page", "claim", "paper"], sort=False):
        cells = {r.reading: cell(r) for r in g.itertuples()}
        same = len(set(cells.values())) == 1
        out.append({"claim": f"{claim} ([page]({link.format(page=page)}))", "the paper": theirs,
                    "active reading": cells["active"], "literal reading": "same" if same else cells["literal"]})
    return pd.DataFrame(out)


def page_findings(profile: str, page: str, results_dir=None) -> str:
    """What a page found, for its opening lines: its claims from the ledger (recomputed from the saved
    CSVs), one bullet each with the status per reading; a page without claims in the ledger says so."""
    frame = ledger(profile, results_dir)
    rows = frame[frame["page"] == page]
    if rows.empty:
        return "This page's claims are not in the ledger."
    lines = []
    for claim, g in rows.groupby("claim", sort=False):
        by = {r.reading: r for r in g.itertuples()}
        cell = lambda r: f"**{r.status}**" + (f" ({r.ours}" + (f"; {r.difference}" if r.difference != "-" else "")  # noqa: E731
                                              + ")" if r.ours != "-" else "")
        same = (by["active"].status, by["active"].ours) == (by["literal"].status, by["literal"].ours)
        lines.append(f"- {claim}: " + (cell(by["active"]) if same else
                                       f"`active` {cell(by['active'])}; `literal` {cell(by['literal'])}"))
    return "\n".join(lines)


def counts(frame: pd.DataFrame, reading: str = "active") -> dict:
    part = frame[frame["reading"] == reading]
    return {s: int((part["status"] == s).sum()) for s in STATUSES}


def to_markdown(table: pd.DataFrame) -> str:
    """A MyST/markdown table (the landing page includes it)."""
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_ledger(profile: str, results_dir=None) -> tuple[pd.DataFrame, Path]:
    """Write `claims_<profile>.csv` (long form) and `claims_<profile>.md` (the display) atomically into the
    results folder; returns (the long frame, the markdown path)."""
    base = Path(results_dir or results.RESULTS_DIR)
    frame = ledger(profile, base)
    results.write_csv(base / f"claims_{profile}.csv", frame)
    summary = f"Of {len(CLAIMS)} claims, at profile `{profile}`: " + "; ".join(
        f"under the `{r}` reading " + ", ".join(f"{n} {s}" for s, n in counts(frame, r).items() if n)
        for r in READINGS) + ".\n\n"
    md = base / f"claims_{profile}.md"
    results.write_text(md, summary + to_markdown(ledger_table(frame)))
    return frame, md


# ---- the pages' verdict sentences: each comparison, its size in SE and its wording decided here -------
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


def compare_with_paper(summary: pd.DataFrame) -> str:
    """Sentences for the page: our ALL-category means against the paper's, and where ALGAN-feature
    ranks among the methods we ran (the paper: comparable to DifferNet, below PatchCore and PaDiM)."""
    ad = summary[(summary["group"] == "ALL") & summary["features"].str.startswith("ADBench")]
    if ad.empty:
        return "No MVTec-AD feature runs on this page."
    lines = ["MVTec-AD, all categories (ours on ADBench ResNet-18 features vs the paper's Table 2):"]
    for r in ad.itertuples():
        theirs = "not printed" if pd.isna(r.paper) else f"{r.paper:.3f} (ours {r.mean - r.paper:+.3f})"
        spread = f" ± {r.std:.3f}" if r.seeds > 1 else " (1 seed)"
        lines.append(f"  {r.label}: ours {r.mean:.3f}{spread}, paper {theirs}")
    means = ad.set_index("label")["mean"]
    if {"ALGAN-feature", "DifferNet"} <= set(means.index):
        ours, theirs = means["ALGAN-feature"] - means["DifferNet"], (
            paper.TABLE2["ALGAN-feature"]["ALL"] - paper.TABLE2["DifferNet"]["ALL"])
        lines.append(f"ALGAN-feature minus DifferNet: ours {ours:+.3f}, the paper's {theirs:+.3f} "
                     "(the paper calls the two comparable).")
    ranked = ad.sort_values("mean", ascending=False)["label"].tolist()
    if "ALGAN-feature" in ranked:
        above = ranked[:ranked.index("ALGAN-feature")]
        lines.append(f"ALGAN-feature ranks {ranked.index('ALGAN-feature') + 1} of {len(ranked)} here"
                     + (f"; above it: {', '.join(above)}." if above else "."))
    return "\n".join(lines)


def feature_scaling_verdict(summary: pd.DataFrame) -> str:
    """One sentence per non-default scaling against "standardise" (Table 2's runs)."""
    if "standardise" not in summary.index:
        return "No standardise runs to compare with."
    base, lines = summary.loc["standardise"], []
    for name, r in summary.drop(index="standardise").iterrows():
        diff = r["test AUROC, ALL (mean)"] - base["test AUROC, ALL (mean)"]
        lines.append(f"{name}: test AUROC over all categories {r['test AUROC, ALL (mean)']:.3f} ± "
                     f"{r['std over seeds']:.3f} against standardise's {base['test AUROC, ALL (mean)']:.3f} ± "
                     f"{base['std over seeds']:.3f} ({diff:+.3f}; paper {r['paper, ALL']:.3f}); starting inverted "
                     f"in {int(r['runs starting inverted'])} of {int(r['runs'])} runs against "
                     f"{int(base['runs starting inverted'])} of {int(base['runs'])}.")
    return "\n".join(lines)


def cell(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "lost"
    return f"{mean:.3f}" if pd.isna(std) else f"{mean:.3f} ± {std:.3f}"


def variant_label(key) -> str:
    """Table 7's name for a (use_buffer, use_anomalous_latent) pair."""
    return {(False, False): "neither", (True, False): "buffered data only", (False, True): "anomalous latent only",
            (True, True): "both"}[key]


def paper_points(name: str) -> pd.DataFrame:
    """The surviving paper numbers of a hyperparameter table (values partly inferred, see paper.py)."""
    table = {"sigma": paper.TABLE8, "n_z": paper.TABLE10}.get(name)
    if table is None:
        return pd.DataFrame(columns=["value", "mean", "std"])
    return pd.DataFrame({"value": table["values"], "mean": table["mean"], "std": table["std"]})


def standard_errors(a, b) -> tuple[float, float]:
    """Mean of `a` minus mean of `b` (rows with mean, std, seeds) and its size in standard errors,
    |d| / sqrt(std_a^2 / n_a + std_b^2 / n_b) (nan without a spread: one seed, or identical runs)."""
    d = a["mean"] - b["mean"]
    se = math.sqrt(a["std"] ** 2 / a["seeds"] + b["std"] ** 2 / b["seeds"])
    return d, abs(d) / se if se > 0 else math.nan


def difference(a, b) -> str:
    """`standard_errors` in words: whether the difference clears SIGNIFICANT_SE."""
    d, k = standard_errors(a, b)
    if math.isnan(k):
        return f"{d:+.3f} (no spread to judge it by)"
    return f"{d:+.3f} ({k:.1f} SE: {'a difference' if k >= SIGNIFICANT_SE else 'within the spread over seeds'})"


def ablation_claims(summary: pd.DataFrame) -> str:
    """The paper: either component helps, both work best and reduce the variance. Checked per data set,
    each difference of means with its size in standard errors (`difference`); one line per comparison."""
    lines, gains = [], []
    paper_gain = paper.TABLE7["both"][0] - paper.TABLE7["neither"][0]
    for (dataset, category), g in summary.groupby(["dataset", "category"], sort=False):
        v = g.set_index(["use_buffer", "use_anomalous_latent"])
        if len(v) < 4:
            continue
        none, both = v.loc[(False, False)], v.loc[(True, True)]
        singles = [(True, False), (False, True)]
        better = max(singles, key=lambda k: v.loc[k, "mean"])
        parts = [f"both minus neither: {difference(both, none)} (the paper: {paper_gain:+.3f})"]
        parts += [f"{variant_label(k)} minus neither: {difference(v.loc[k], none)}" for k in singles]
        parts.append(f"both minus the better single one ({variant_label(better)}): {difference(both, v.loc[better])}")
        if v["std"].notna().all():
            least = v["std"].idxmin()
            parts.append(f"smallest spread over seeds: {variant_label(least)} ({v.loc[least, 'std']:.3f}; both: "
                         f"{both['std']:.3f}, {'as' if least == (True, True) else 'unlike'} the paper)")
        lines.append(f"{category}:" + "".join("\n  " + part for part in parts))
        d, k = standard_errors(both, none)
        gains.append((category, None if math.isnan(k) else d > 0 and k >= SIGNIFICANT_SE))
    if not lines:
        return "Not every variant has finished runs yet."
    found = [c for c, gain in gains if gain]
    unjudged = sum(gain is None for _, gain in gains)
    return "\n".join(lines + [f"Both beats neither by {SIGNIFICANT_SE:g} SE or more on {len(found)} of {len(gains)} "
                              f"data sets{': ' + ', '.join(found) if found else ''}"
                              f"{f' ({unjudged} without a spread to judge by)' if unjudged else ''} (the paper: "
                              f"{paper_gain:+.3f} over the MVTec-AD mean)."])


def hyperparameter_claims(summaries: dict) -> str:
    """The paper's claims for Tables 8-11 checked against ours: `summaries` maps a study name to its
    `study_summary`. Each comparison, on a line of its own, gives the difference of means and its size in
    standard errors (`difference`). Summaries with a `reading` column are checked per reading."""
    if any("reading" in s for s in summaries.values()):
        readings = dict.fromkeys(r for s in summaries.values() for r in s.get("reading", []))
        return "\n".join(f"== the {r} reading ==\n" + hyperparameter_claims(
            {n: s[s["reading"] == r].drop(columns="reading") for n, s in summaries.items()
             if "reading" in s and (s["reading"] == r).any()}) for r in readings)
    blocks = []
    for name, paper_peak, paper_low in (("sigma", 4.0, 2.0), ("n_z", 2, 1)):
        if name not in summaries:
            continue
        s = summaries[name].set_index(name)
        best = s["mean"].idxmax()
        parts = [f"best here: {best:g} ({cell(s.loc[best, 'mean'], s.loc[best, 'std'])})"]
        if paper_peak in s.index and best != paper_peak:
            parts.append(f"the paper's peak {paper_peak:g} minus ours: {difference(s.loc[paper_peak], s.loc[best])}")
        if paper_peak in s.index and paper_low in s.index:
            ref = paper_points(name).set_index("value").assign(seeds=paper.HYPERPARAMETER_RUNS)
            parts.append(f"the paper's low point {paper_low:g} minus {paper_peak:g}: "
                         f"{difference(s.loc[paper_low], s.loc[paper_peak])}; the paper: "
                         f"{difference(ref.loc[paper_low], ref.loc[paper_peak])}")
        blocks.append((name, parts))
    if "alpha_xi" in summaries:
        s = summaries["alpha_xi"].set_index(["alpha", "xi"])
        best = s["mean"].idxmax()
        parts = [f"best here: {best[0]:g} / {best[1]:g} ({cell(s.loc[best, 'mean'], s.loc[best, 'std'])})"]
        if (0.75, 0.75) in s.index and best != (0.75, 0.75):
            parts.append(f"0.75 / 0.75 (the paper's best) minus ours: {difference(s.loc[(0.75, 0.75)], s.loc[best])}")
        if (0.25, 0.25) in s.index and (0.85, 0.85) in s.index:
            parts.append(f"0.25 / 0.25 minus 0.85 / 0.85 (the paper: positive): "
                         f"{difference(s.loc[(0.25, 0.25)], s.loc[(0.85, 0.85)])}")
        blocks.append(("alpha / xi", parts))
    if "n_dis" in summaries and 2 in set(summaries["n_dis"]["n_dis"]):
        s = summaries["n_dis"].set_index("n_dis")
        parts = [f"{v:g} minus 2: {difference(s.loc[v], s.loc[2])}" for v in s.index if v > 2]
        if parts:
            blocks.append(("n_dis (the paper: good from 2 on, slightly worse when very large)", parts))
    return "\n".join(f"{title}:" + "".join("\n  " + part for part in parts) for title, parts in blocks)


def _ratio_range(frame: pd.DataFrame, methods, ref: str) -> tuple[float, float]:
    r = frame.set_index("method").loc[[m for m in methods if m in set(frame["method"])], f"x_{ref}"]
    return (float(r.min()), float(r.max())) if len(r) else (math.nan, math.nan)


def speed_claims(frame: pd.DataFrame) -> str:
    """Our batch-1 speed-ups beside the paper's (Table 5's text)."""
    p = paper.TABLE5
    lines = []
    ref = frame.set_index("method")
    if "algan" in ref.index:
        lo, hi = _ratio_range(frame, [m for m in IMAGE_METHODS if m != "algan"], "algan_image")
        lines.append(f"ALGAN-image: {ref.loc['algan', 'predict_ms_b1']:.2f} ms per image at batch 1 "
                     f"({ref.loc['algan', 'input']}, {ref.loc['algan', 'device']}); the paper: "
                     f"{p['algan_image_ms']} ms ({p['image_size']}x{p['image_size']}, {p['device']}).")
        lines.append(f"The other image-based methods take {lo:.1f} to {hi:.1f} times as long as ALGAN-image "
                     f"(the paper: {p['image_ratio'][0]} to {p['image_ratio'][1]}).")
    if "algan_feature" in ref.index:
        lo, hi = _ratio_range(frame, [m for m in FEATURE_METHODS if m != "algan_feature"], "algan_feature")
        lines.append(f"The other feature-based methods take {lo:.2f} to {hi:.2f} times as long as ALGAN-feature "
                     f"(the paper: {p['feature_ratio'][0]} to {p['feature_ratio'][1]}).")
        faster = ref.loc[[m for m in FEATURE_METHODS if m in ref.index and m != "algan_feature"], "x_algan_feature"]
        slower = list(faster[faster < 1].index)
        if slower:
            lines.append("Faster than ALGAN-feature here: " + ", ".join(SPEED_LABELS[m] for m in slower) + ".")
        pooled = ref.loc[[m for m in ("algan_feature", "spade", "mahalanobis", "differnet") if m in ref.index]]
        patch = ref.loc[[m for m in ("padim", "patchcore_25", "patchcore_10", "patchcore_1") if m in ref.index]]
        if len(pooled) and len(patch):
            lines.append(f"Why: every feature method shares the backbone, which is nearly all of the work. The pooled "
                         f"methods run it to the end on every rotation ({pooled['gflops_per_image'].min():.2f}-"
                         f"{pooled['gflops_per_image'].max():.2f} GFLOP per image), the patch methods only up to "
                         f"its mid-level stages, once ({patch['gflops_per_image'].min():.2f}-"
                         f"{patch['gflops_per_image'].max():.2f} GFLOP); what follows the backbone differs little.")
    if "algan" in ref.index:
        x = ref.loc["algan", "x_floor"]
        lines.append(f"ALGAN-image's batched scoring takes {x:.2f} times its roofline floor (the longer of its "
                     f"FLOPs at this device's sustained rate and its bytes at its memory bandwidth).")
    feature = ref.loc[[m for m in FEATURE_METHODS if m in ref.index]]
    if len(feature):
        worst = feature[["x_floor_b1", "x_floor"]].max(axis=1)
        over = ", ".join(f"{SPEED_LABELS[m]} ({x:.1f}x)" for m, x in worst[worst > 2].items())
        lines.append(f"The feature methods take {feature[['x_floor_b1', 'x_floor']].min().min():.1f} to "
                     f"{worst.max():.1f} times their roofline floor (batch 1 and batched); "
                     + (f"more than 2x: {over}." if over else "every one is within 2x of it."))
    return "\n".join(lines)


def method_order(methods) -> list[str]:
    order = [ALGAN_VAL, ALGAN_LAST] + [PYOD_LABELS[m] for m in PYOD_MODELS]
    return [m for m in order if m in set(methods)] + sorted(set(methods) - set(order))


def auroc_grid(rows: pd.DataFrame) -> pd.DataFrame:
    """Sets x methods: test AUROC, mean over seeds; only sets where every method has a result."""
    wide = rows.pivot_table(index="dataset", columns="method", values="value", aggfunc="mean")
    wide = wide[method_order(wide.columns)].dropna()
    return wide.loc[sorted(wide.index, key=natural_key)]


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
