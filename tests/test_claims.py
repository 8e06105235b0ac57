"""The claims ledger: its rules, and its rows from saved page CSVs (synthetic ones here)."""
import math

import pandas as pd
import pytest

from algan import claims


@pytest.mark.parametrize("d, se, sign, want", [
    (0.10, 0.04, 1, "reproduced"), (0.05, 0.04, 1, "inconclusive"), (-0.10, 0.04, 1, "not reproduced"),
    (-0.10, 0.04, -1, "reproduced"), (0.10, math.nan, 1, "inconclusive"), (math.nan, 0.1, 1, "not tested")])
def test_effect_rule(d, se, sign, want):
    assert claims.effect_status(d, se, sign) == want


@pytest.mark.parametrize("d, se, want", [
    (0.01, 0.02, "reproduced"),        # within 2 SE, and 2 SE = 0.04 <= 0.05 could see a 0.05 gap
    (0.01, 0.05, "inconclusive"),      # within 2 SE, but the test is too blunt to call it agreement
    (-0.10, 0.04, "not reproduced")])
def test_value_rule(d, se, want):
    assert claims.value_status(d, se) == want


def test_level_rule():
    sharp = {"mean": 0.99, "std": 0.005, "n": 3}
    assert claims.level_status([sharp], 0.95) == "reproduced"
    assert claims.level_status([sharp, {"mean": 0.80, "std": 0.01, "n": 3}], 0.95) == "not reproduced"
    assert claims.level_status([{"mean": 0.96, "std": 0.05, "n": 3}], 0.95) == "inconclusive"
    assert claims.level_status([], 0.95) == "not tested"


def _auroc(rows):
    return pd.DataFrame([{"dataset": d, "category": c, "method": m, "reading": r, "seed": s, "metric": "test_auroc",
                          "value": v} for d, c, m, r, s, v in rows])


def _image_page(dataset, category, algan, others, reading="literal"):
    rows = [(dataset, category, "algan", reading, s, v) for s, v in enumerate(algan)]
    rows += [(dataset, category, m, reading, s, v) for m, vals in others.items() for s, v in enumerate(vals)]
    return _auroc(rows)


def _status(frame, claim_start, reading):
    row = frame[frame["claim"].str.startswith(claim_start) & (frame["reading"] == reading)]
    assert len(row) == 1
    return row.iloc[0]


def test_ledger_judges_each_claim_under_each_reading():
    gans = {"ganomaly": [0.70, 0.71, 0.69], "skip_ganomaly": [0.75, 0.74, 0.76], "alocc": [0.72, 0.73, 0.71]}
    table1 = _image_page("mvtec", "bottle", [0.950, 0.945, 0.952], gans)
    table1 = pd.concat([table1, _image_page("mvtec", "bottle", [0.60, 0.62, 0.61], {}, reading="active")])
    frame = claims.ledger("cpu", frames={"table1": table1})
    assert _status(frame, "ALGAN-image on MVTec bottle", "literal")["status"] == "reproduced"
    assert _status(frame, "ALGAN-image on MVTec bottle", "active")["status"] == "not reproduced"
    assert _status(frame, "ALGAN-image beats every other GAN", "literal")["status"] == "reproduced"
    beats = _status(frame, "ALGAN-image beats every other GAN", "active")
    assert beats["status"] == "not tested" and "ganomaly" in beats["ours"]  # names the runs it lacks
    assert _status(frame, "ALGAN-image is the best image-based method on MTD", "literal")["status"] == "not tested"
    assert set(frame["status"]) <= set(claims.STATUSES)
    assert len(frame) == 2 * len(claims.CLAIMS)


def test_ablation_and_study_rows():
    rows = [("mtd", None, "algan", "active", s, v, b, a) for b, a, vals in (
        (True, True, [0.60, 0.61, 0.62]), (False, False, [0.50, 0.51, 0.52]),
        (True, False, [0.55, 0.56, 0.57]), (False, True, [0.58, 0.58, 0.59])) for s, v in enumerate(vals)]
    table7 = pd.DataFrame([dict(zip(("dataset", "category", "method", "reading", "seed", "value", "use_buffer",
                                     "use_anomalous_latent"), r), metric="test_auroc") for r in rows])
    table7["category"] = "mtd"
    sigma = _auroc([("mvtec", "bottle", "algan", "literal", s, v) for s, v in enumerate([0.9, 0.91, 0.92])])
    studies = pd.concat([sigma.assign(sigma=4.0), _auroc([("mvtec", "bottle", "algan", "literal", s, v) for s, v in
                                                          enumerate([0.95, 0.96, 0.97])]).assign(sigma=2.0)])
    frame = claims.ledger("cpu", frames={"table7": table7, "tables8_11": studies.assign(study="sigma")})
    assert _status(frame, "Both pseudo-anomaly mechanisms beat neither (MTD)", "active")["status"] == "reproduced"
    assert _status(frame, "Both beat the better single mechanism (MTD)", "active")["status"] == "reproduced"
    assert _status(frame, "Both pseudo-anomaly mechanisms beat neither (MTD)", "literal")["status"] == "not tested"
    assert _status(frame, "sigma = 4 beats sigma = 2", "literal")["status"] == "not reproduced"


def test_write_ledger_writes_the_csv_and_the_landing_page_table(tmp_path):
    _image_page("mvtec", "bottle", [0.95, 0.94, 0.96], {}).to_csv(tmp_path / "table1_smoke.csv", index=False)
    frame, md = claims.write_ledger("smoke", tmp_path)
    assert (tmp_path / "claims_smoke.csv").exists() and md == tmp_path / "claims_smoke.md"
    text = md.read_text()
    body = [line for line in text.splitlines() if line.startswith("| ") and "claim" not in line.split("|")[1]]
    assert len(body) == len(claims.CLAIMS)
    assert "**reproduced**" in text and "**not tested**" in text
    assert pd.read_csv(tmp_path / "claims_smoke.csv")["status"].isin(claims.STATUSES).all()


def test_the_speed_claim_reads_every_feature_method_of_table5():
    from algan import timing

    assert claims.FEATURE_METHODS == timing.FEATURE_METHODS


def test_feature_rows_read_their_source():
    rows = [{"source": src, "category": cat, "method": m, "seed": s, "metric": "test_auroc", "value": v + 0.01 * s}
            for src, cat in (("adbench", "bottle"), ("mvtec", "bottle"), ("mtd", "mtd"))
            for m, v in (("algan", 0.90), ("cutpaste", 0.97 if src == "mvtec" else 0.50), ("padim", 0.98))
            for s in range(3)]
    frame = claims.ledger("cpu", frames={"table2": pd.DataFrame(rows)})
    cut = _status(frame, "ALGAN-feature is below CutPaste", "literal")
    assert cut["status"] == "reproduced" and cut["ours"].startswith("0.910")  # bottle's runs, not MTD's
    assert _status(frame, "ALGAN-feature is below PaDiM", "literal")["status"] == "reproduced"
    none = claims.ledger("cpu", frames={"table2": pd.DataFrame([r for r in rows if r["method"] != "cutpaste"])})
    assert _status(none, "ALGAN-feature is below CutPaste", "literal")["status"] == "not tested"


def test_stability_and_robustness_rows():
    stab = pd.DataFrame([{"category": "mtd", "method": m, "seed": s, "metric": "within_run_std", "value": v}
                         for m, vals in (("ALGAN-image", [0.01, 0.011, 0.012]), ("GANomaly", [0.05, 0.05, 0.06]),
                                         ("Skip-GANomaly", [0.04, 0.045, 0.05]), ("ALOCC", [0.09, 0.1, 0.1]))
                         for s, v in enumerate(vals)])
    rob = pd.DataFrame([{"group": g, "seed": s, "metric": "flagged", "value": v, "images": 10}
                        for g, v in (("fake-anomalous, sigma = 5", 1.0), ("CutPaste (from normal test)", 0.9))
                        for s in range(3)])
    frame = claims.ledger("cpu", frames={"fig7_stability": stab, "robustness": rob})
    steady = _status(frame, "ALGAN-image validates more steadily than the other GAN methods (MTD)", "literal")
    assert steady["status"] == "reproduced" and "Skip-GANomaly" in steady["ours"]  # the steadiest other one
    assert _status(frame, "Every fake-anomalous sample", "literal")["status"] == "reproduced"
    cut = _status(frame, "Every CutPaste-style image", "literal")
    assert cut["status"] == "not reproduced" and cut["ours"].startswith("3 of 30 images not flagged")
    assert _status(frame, "Every CutPaste-style image", "active")["status"] == "not tested"


def test_a_pages_note_row_is_not_a_method():
    table4 = _image_page("coil100", "coil100", [0.99, 0.995, 0.99], {"knn": [0.99, 0.99, 0.995]})
    note = {"dataset": "coil100", "method": "algan,ganomaly", "metric": "missing_data", "value": None}
    frame = claims.ledger("cpu", frames={"table4": pd.concat([table4, pd.DataFrame([note])])})
    assert _status(frame, "Every method is almost perfect", "literal")["status"] == "reproduced"


def test_page_findings_lists_the_pages_claims_per_reading(tmp_path):
    _image_page("mvtec", "bottle", [0.95, 0.94, 0.96], {}).to_csv(tmp_path / "table1_cpu.csv", index=False)
    text = claims.page_findings("cpu", "table1_mvtec", tmp_path)
    lines = text.splitlines()
    assert len(lines) == sum(c.csv == "table1" for c in claims.CLAIMS)
    assert lines[0].startswith("- ALGAN-image on MVTec bottle scores the paper's AUROC: `active` **not tested**; "
                               "`literal` **reproduced** (0.950 ± 0.010 (n=3)")
    assert claims.page_findings("cpu", "fig1_samples", tmp_path) == "This page's claims are not in the ledger."


def test_each_claim_of_the_ledger_has_exactly_one_function():
    """The ledger's claims, from a ledger of no results, are CLAIMS' in order; each is judged by a function of
    its own, named, defined in algan.claims and reachable there by its name."""
    frame = claims.ledger("cpu", frames={})
    listed = list(dict.fromkeys(frame["claim"]))
    assert listed == [c.claim for c in claims.CLAIMS] and len(listed) == len(claims.CLAIMS)
    judges = [c.judge for c in claims.CLAIMS]
    assert len(set(judges)) == len(judges)  # no function judges two claims
    for c in claims.CLAIMS:
        assert c.judge.__module__ == "algan.claims" and not c.judge.__name__.startswith(("_", "<"))
        assert getattr(claims, c.judge.__name__) is c.judge, c.claim
        assert c.csv in claims.PAGES
    assert len({c.judge.__name__ for c in claims.CLAIMS}) == len(judges)


def test_no_status_is_decided_outside_the_claims_module():
    """The statuses the book states come from algan.claims: no other module of the library, and no page's code,
    spells one out or applies the SE rule itself."""
    import json
    import re
    from pathlib import Path

    root = Path(claims.__file__).resolve().parents[1]
    words = re.compile(r"\b(not reproduced|reproduced|inconclusive|not tested|SIGNIFICANT_SE|effect_status|"
                       r"value_status|level_status)\b")
    for path in (root / "algan").rglob("*.py"):
        if path.name != "claims.py":
            assert not words.search(path.read_text()), path
    for path in (root / "notebooks").glob("*.ipynb"):
        code = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                         if c["cell_type"] == "code")
        assert not words.search(code), path
        if "page_findings" in code:
            assert re.search(r"claims\.page_findings\(profile, \"" + path.stem + r"\"\)", code), path


def test_the_pages_verdict_sentences_are_the_claims_modules():
    """Each page's verdict sentence (what it prints of its comparisons against the paper) is a function of
    algan.claims that the pages' modules do not define."""
    from algan.pages import common, features, images, speed, studies, tabular

    for name in ("below_reference", "margin_over_baselines", "near_perfect", "rank_among_gans", "compare_with_paper",
                 "feature_scaling_verdict", "ablation_claims", "hyperparameter_claims", "difference", "speed_claims",
                 "verdict_lines"):
        assert getattr(claims, name).__module__ == "algan.claims"
        for page in (common, features, images, speed, studies, tabular):
            assert getattr(page, name, None) in (None, getattr(claims, name)), (page.__name__, name)
