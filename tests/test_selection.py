"""The selection page's arithmetic (algan.pages.selection) and its ledger claims, on made-up runs."""
import math

import pandas as pd
import pytest

from algan import claims
from algan.pages import selection as S


def _runs(gap: dict) -> pd.DataFrame:
    """Two families, two sets, three seeds; each rule's AUROC = val_labels' (0.8 + set and seed offsets) + gap."""
    rows = []
    for family in ("image", "feature"):
        for i, dataset in enumerate(("a", "b")):
            for seed in range(3):
                for rule in S.RULES:
                    base = 0.8 + 0.05 * i + 0.01 * seed
                    rows.append({"family": family, "dataset": dataset, "seed": seed, "rule": rule, "metric": "test_auroc",
                                 "value": base + gap.get((family, rule), 0.0) + (0.002 * seed if rule == "ema" else 0),
                                 "epoch": 4, "epochs": 8, "run": f"{family}{dataset}{seed}"})
    return pd.DataFrame(rows)


def test_summary_measures_each_rule_against_val_labels():
    runs = _runs({("image", "last"): -0.10, ("feature", "last"): -0.02, ("image", "proxy"): -0.01,
                  ("feature", "proxy"): -0.03})
    table = S.summary(runs).set_index(["family", "rule"])
    assert table.loc[("image", "last"), "minus val_labels"] == pytest.approx(-0.10)
    assert table.loc[("image", "val_labels"), "minus val_labels"] == 0
    assert table.loc[("image", "ema"), "minus val_labels"] == pytest.approx(0.002)  # 0, 0.002, 0.004 over seeds
    assert table.loc[("image", "ema"), "SE"] == pytest.approx(0.002 / math.sqrt(3))
    assert table.loc[("image", "last"), "sets >= val_labels"] == "0 of 2"
    rule, why = S.choose_default(table.reset_index())
    assert rule == "ema" and "2 families" in why  # +0.002 on both beats proxy (-0.02) and last (-0.06)


def test_the_claims_judge_the_last_epoch_against_the_labelled_choice():
    same = claims.image_needs_no_labels({"selection": _runs({})}, "literal")
    assert same["status"] == "reproduced"  # equal means, and the seeds' spread sharp enough (2 SE < 0.05)
    worse = _runs({("image", "last"): -0.10})
    worse.loc[(worse["rule"] == "last") & (worse["seed"] == 1), "value"] -= 0.01  # some spread
    row = claims.image_needs_no_labels({"selection": worse}, "literal")
    assert row["status"] == "not reproduced" and "2 sets" in row["ours"]
    assert claims.image_needs_no_labels({"selection": worse}, "active")["status"] == "not tested"
    assert claims.feature_needs_no_labels({}, "literal") == claims.NOT_TESTED
