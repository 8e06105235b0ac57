"""The claims ledger: one row per claim of the paper, judged from the tidy CSVs the pages save
(`results/<page>_<profile>.csv`) by one stated rule, so it changes when the results do.

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
from pathlib import Path
from typing import Callable, Optional

import pandas as pd

from . import paper

SIGNIFICANT_SE = 2.0
VALUE_TOLERANCE = 0.05
STATUSES = ("reproduced", "not reproduced", "inconclusive", "not tested")
READINGS = ("active", "literal")  # the ledger's columns: the mechanisms' reading first
PAGES = {"table1": "table1_mvtec", "table2": "table2_features", "table3": "table3_mtd", "table4": "table4_coil100",
         "table5_speed": "table5_speed", "fig7_stability": "fig7_stability", "table7": "table7_ablation",
         "tables8_11": "tables8_11_hyperparameters", "robustness": "robustness", "tabular": "tabular",
         "selection": "selection"}
GANS = ("ganomaly", "skip_ganomaly", "alocc")
FEATURE_METHODS = ("algan_feature", "patchcore_25", "patchcore_10", "patchcore_1", "padim", "spade", "mahalanobis",
                   "differnet")  # Table 5's feature rows (algan.timing.FEATURE_METHODS, which imports the models)


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
    from .experiments import RESULTS_DIR

    base, frames = Path(results_dir or RESULTS_DIR), {}
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


# ---- the claims --------------------------------------------------------------------------------------
def _bottle_value(f, reading):
    ours = _per_seed(f.get("table1"), reading, method="algan", category="bottle")
    ref = {"mean": paper.BOTTLE_DEFAULT["mean"], "std": paper.BOTTLE_DEFAULT["std"], "n": paper.HYPERPARAMETER_RUNS}
    if not ours["n"]:
        return NOT_TESTED
    d, se = ours["mean"] - ref["mean"], se_of(ours, ref)
    return _row(value_status(d, se), fmt(ours), d, se)


def _beats_best_other(name: str, others) -> Callable:
    def judge(f, reading):
        frame = f.get(name)
        ours = _per_seed(frame, reading, method="algan")
        rivals = {m: _per_seed(frame, reading, method=m) for m in others}
        missing = [m for m, p in {"algan": ours, **rivals}.items() if not p["n"]]
        if missing:
            return _missing(missing)
        best = max(rivals, key=lambda m: rivals[m]["mean"])
        d, se = ours["mean"] - rivals[best]["mean"], se_of(ours, rivals[best])
        return _row(effect_status(d, se), f"{fmt(ours)}; best other: {best} {fmt(rivals[best])}", d, se)
    return judge


def _coil_level(f, reading, level: float = 0.95):
    frame = f.get("table4")
    if frame is None:
        return NOT_TESTED
    methods = dict.fromkeys(frame.loc[frame["metric"] == "test_auroc", "method"])  # not the pages' notes
    parts = {m: _per_seed(frame, reading, method=m) for m in methods}
    if not all(p["n"] for p in parts.values()):
        return _missing(m for m, p in parts.items() if not p["n"])
    worst = min(parts, key=lambda m: parts[m]["mean"])
    return _row(level_status(list(parts.values()), level), f"lowest: {worst} {fmt(parts[worst])}")


def _feature_pair(other: str, kind: str, source: str = "adbench", category: Optional[str] = None) -> Callable:
    """ALGAN-feature against `other` on Table 2's runs of `source` (and `category`): the pooled ADBench
    features of all 15 MVTec-AD categories, or our images through the backbone (CutPaste trains on images)."""
    def judge(f, reading):
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
    return judge


def _speed(column: str, method: str, group) -> Callable:
    def judge(f, reading):
        frame = f.get("table5_speed")
        if frame is None or method not in set(frame["method"]):
            return NOT_TESTED
        ratios = frame[frame["method"].isin(group) & (frame["method"] != method)][column]
        if ratios.empty:
            return NOT_TESTED
        status = "reproduced" if (ratios > 1).all() else "not reproduced"
        return _row(status, f"{ratios.min():.1f}-{ratios.max():.1f} x (one measuring run, "
                            f"{frame['device'].iloc[0]})")
    return judge


def _ablation(category: str, a: tuple, b: Optional[tuple]) -> Callable:
    """Variant `a` (use_buffer, use_anomalous_latent) beats `b` (None: the better single one)."""
    def judge(f, reading):
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
    return judge


def _study(study: str, better: dict, worse: dict) -> Callable:
    """On the Tables 8-11 CSV, study `study`: the runs at the settings `better` beat those at `worse`."""
    def judge(f, reading):
        frame = f.get("tables8_11")
        if frame is None or not set(better) <= set(frame):
            return NOT_TESTED
        part = frame[frame["study"] == study]
        x, y = _per_seed(part, reading, **better), _per_seed(part, reading, **worse)
        if not x["n"] or not y["n"]:
            return NOT_TESTED
        d, se = x["mean"] - y["mean"], se_of(x, y)
        return _row(effect_status(d, se), f"{fmt(x)} vs {fmt(y)}", d, se)
    return judge


def _steadier(category: str) -> Callable:
    """ALGAN-image's validation AUROC moves less within a run (std over its second half) than that of the
    steadiest other GAN method: the difference, theirs minus ours, should be positive."""
    def judge(f, reading):
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
    return judge


def _all_flagged(prefix: str) -> Callable:
    """Every image of the groups named `prefix...` flagged as anomalous, in every seed."""
    def judge(f, reading):
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
    return judge


def _tabular_comparable(f, reading):
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


def _needs_no_labels(family: str) -> Callable:
    """Figure 7's stability, as a user without labelled anomalies meets it: the last epoch (no labels) scores
    as the checkpoint of best labelled validation AUROC: a value claim of a difference of 0 in mean test AUROC
    over the family's data sets (the selection page's runs, which record both checkpoints)."""
    def judge(f, reading):
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
    return judge


def _ablation_claims():
    out = []
    for category, data in (("bottle", "MVTec bottle"), ("mtd", "MTD")):
        out += [
            ("table7", f"Both pseudo-anomaly mechanisms beat neither ({data})", "0.878 vs 0.643 (MVTec-AD mean)",
             _ablation(category, (True, True), (False, False))),
            ("table7", f"The buffer alone beats neither ({data})", "0.761 or 0.779 vs 0.643",
             _ablation(category, (True, False), (False, False))),
            ("table7", f"The anomalous latent alone beats neither ({data})", "0.761 or 0.779 vs 0.643",
             _ablation(category, (False, True), (False, False))),
            ("table7", f"Both beat the better single mechanism ({data})", "0.878 vs 0.779",
             _ablation(category, (True, True), None)),
        ]
    return out


# (csv, the claim, the paper's number or words, judge(frames, reading) -> row)
CLAIMS = [
    ("table1", "ALGAN-image on MVTec bottle scores the paper's AUROC", "0.948 ± 0.024 (Tables 8, 10)", _bottle_value),
    ("table1", "ALGAN-image beats every other GAN method on MVTec-AD", "> 10 % above each on average (text)",
     _beats_best_other("table1", GANS)),
    ("table3", "ALGAN-image is the best image-based method on MTD", "state of the art (text)",
     _beats_best_other("table3", (*GANS, "knn"))),
    ("table4", "Every method is almost perfect on COIL-100 (AUROC at least 0.95)", "all almost perfect (text)",
     _coil_level),
    ("table2", "ALGAN-feature is comparable to DifferNet (MVTec-AD, all categories)", "0.911 vs 0.927",
     _feature_pair("differnet", "comparable")),
    ("table2", "ALGAN-feature is below PatchCore-25 (MVTec-AD)", "0.911 vs 0.991",
     _feature_pair("patchcore_25", "below")),
    ("table2", "ALGAN-feature is below PaDiM (MVTec-AD)", "0.911 vs 0.979", _feature_pair("padim", "below")),
    ("table2", "ALGAN-feature is below CutPaste (MVTec-AD; ours: bottle, through the backbone)", "0.911 vs 0.961",
     _feature_pair("cutpaste", "below", source="mvtec", category="bottle")),
    ("table5_speed", "The other image methods take longer per image than ALGAN-image (batch 1)",
     "10.4-54.6 x (A100)", _speed("x_algan_image", "algan", ("algan", *GANS))),
    ("table5_speed", "The other feature methods take longer per image than ALGAN-feature (batch 1)",
     "1.3-2.2 x (A100)", _speed("x_algan_feature", "algan_feature", FEATURE_METHODS)),
    ("fig7_stability", "ALGAN-image validates more steadily than the other GAN methods (MVTec bottle)",
     "stable, the others not (Figure 7, transistor)", _steadier("bottle")),
    ("fig7_stability", "ALGAN-image validates more steadily than the other GAN methods (MTD)",
     "stable, the others not (Figure 7, transistor)", _steadier("mtd")),
    *_ablation_claims(),
    ("tables8_11", "sigma = 4 beats sigma = 2 (bottle)", "0.948 vs 0.859",
     _study("sigma", {"sigma": 4.0}, {"sigma": 2.0})),
    ("tables8_11", "alpha = xi = 0.25 beats alpha = xi = 0.85 (bottle)", "text only (Table 9 lost)",
     _study("alpha_xi", {"alpha": 0.25, "xi": 0.25}, {"alpha": 0.85, "xi": 0.85})),
    ("tables8_11", "n_z = 2 beats n_z = 1 (bottle)", "0.948 vs 0.813 (n_z = 1 a guess)",
     _study("n_z", {"n_z": 2}, {"n_z": 1})),
    ("tables8_11", "n_dis = 2 beats a very large n_dis (8; bottle)", "text: slightly worse when very large",
     _study("n_dis", {"n_dis": 2}, {"n_dis": 8})),
    ("robustness", "Every fake-anomalous sample of sigma 5-8 is flagged (bottle, trained at sigma 4)", "all (Sec. V-G)",
     _all_flagged("fake-anomalous")),
    ("robustness", "Every CutPaste-style image is flagged (bottle)", "all (Sec. V-G)", _all_flagged("CutPaste")),
    ("selection", "ALGAN-image trains stably enough to need no labels: its last epoch scores as its best-validated "
     "checkpoint (MVTec bottle, MTD, COIL-100)", "stable (Figure 7; selected on labelled validation data)",
     _needs_no_labels("image")),
    ("selection", "ALGAN-feature trains stably enough to need no labels: its last epoch scores as its best-validated "
     "checkpoint (ADBench's MVTec-AD features)", "stable (Figure 7; selected on labelled validation data)",
     _needs_no_labels("feature")),
    ("tabular", "Beyond the paper: ALGAN-feature, applied directly to tabular data, is comparable to the best of "
     "PyOD's detectors (ADBench's classical sets; last epoch, no labels)",
     "\"can be directly applied to ... features\" (Sec. VI; no numbers)", _tabular_comparable),
]


def ledger(profile: str, results_dir=None, frames: Optional[dict] = None) -> pd.DataFrame:
    """One row per claim and reading: page, claim, the paper's number, reading, status, ours, difference."""
    frames = load(profile, results_dir) if frames is None else frames
    rows = []
    for name, claim, theirs, judge in CLAIMS:
        for reading in READINGS:
            rows.append({"page": PAGES[name], "claim": claim, "paper": theirs, "reading": reading,
                         **judge(frames, reading), "profile": profile})
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
    from .experiments import RESULTS_DIR
    from .results import write_csv, write_text

    base = Path(results_dir or RESULTS_DIR)
    frame = ledger(profile, base)
    write_csv(base / f"claims_{profile}.csv", frame)
    summary = f"Of {len(CLAIMS)} claims, at profile `{profile}`: " + "; ".join(
        f"under the `{r}` reading " + ", ".join(f"{n} {s}" for s, n in counts(frame, r).items() if n)
        for r in READINGS) + ".\n\n"
    md = base / f"claims_{profile}.md"
    write_text(md, summary + to_markdown(ledger_table(frame)))
    return frame, md

