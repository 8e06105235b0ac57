"""Tables 5 and 6 and Figure 6's page: the display of `algan.timing`'s measurements, and the speed beside
the test AUROC of the results CSVs."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import results
from ..timing import IMAGE_METHODS


def table5_display(frame: pd.DataFrame) -> pd.DataFrame:
    """Prediction time per image: batch 1 (median +- spread), batched, FLOPs and bytes moved (batched),
    the time over the roofline floor at batch 1 and batched, memory."""
    f = frame.copy()
    ratio = np.where(f["method"].isin(list(IMAGE_METHODS)), f["x_algan_image"], f["x_algan_feature"])
    return pd.DataFrame({
        "method": f["label"], "input": f["input"],
        "ms / image, batch 1": [f"{m:.2f} ± {s:.2f}" for m, s in zip(f["predict_ms_b1"], f["predict_ms_b1_spread"])],
        "x ALGAN (same kind)": [f"{r:.2f}" for r in ratio],
        f"ms / image, batch {int(f['batch'].iloc[0])}": [f"{m:.3f}" for m in f["predict_ms"]],
        "GFLOP / MB per image": [f"{g:.3f} / {b:.1f}" for g, b in zip(f["gflops_per_image"], f["mb_per_image"])],
        "x floor (batch 1 / batched)": [f"{a:.1f} / {b:.1f}" for a, b in zip(f["x_floor_b1"], f["x_floor"])],
        "peak MiB": [f"{m:.0f}" for m in f["peak_mem_mib"]],
    })


def table6_display(frame: pd.DataFrame) -> pd.DataFrame:
    """Training time: seconds per epoch and per full run at the profile's epochs (projected)."""
    f = frame.copy()
    return pd.DataFrame({"method": f["label"], "input": f["input"],
                         "s / epoch": [("-" if math.isnan(v) else f"{v:.2f}") for v in f["train_s_per_epoch"]],
                         "s / full run": [f"{v:.0f}" for v in f["train_s_full"]],
                         "x ALGAN-image": [f"{v / f.loc[f['method'] == 'algan', 'train_s_full'].iloc[0]:.1f}"
                                           if (f["method"] == "algan").any() else "-" for v in f["train_s_full"]]})


def figure6_frame(frame: pd.DataFrame, profile: str, dataset: str = "mvtec", results_dir=None) -> pd.DataFrame:
    """Batch-1 prediction time beside the mean test AUROC from the results CSVs at the same profile:
    MVTec bottle (Table 1 for the image methods, Table 2's bottle runs for the feature methods) or MTD
    (Table 3, and Table 2's MTD runs). The feature runs use the backbone and rotations timed here; the
    image methods' AUROC is their `literal` reading's, the settings timed here (other readings' rows left out)."""
    image_csv, category = {"mvtec": ("table1", "bottle"), "mtd": ("table3", "mtd")}[dataset]
    base = Path(results_dir or results.RESULTS_DIR)
    aucs = {}
    t1, t2 = base / f"{image_csv}_{profile}.csv", base / f"table2_{profile}.csv"
    if t1.exists():
        t = pd.read_csv(t1).query("metric == 'test_auroc' and category == @category")
        t = t[t["reading"] != "active"] if "reading" in t else t
        aucs.update(t.groupby("method")["value"].agg(["mean", "std", "count"]).T.to_dict())
    if t2.exists():
        t = pd.read_csv(t2).query("metric == 'test_auroc' and source == @dataset and category == @category")
        for m, g in t.groupby("method"):
            aucs["algan_feature" if m == "algan" else m] = {"mean": g["value"].mean(), "std": g["value"].std(),
                                                            "count": len(g)}
    out = frame[["method", "label", "predict_ms_b1"]].copy()
    for k in ("mean", "std", "count"):
        out[f"auroc_{k}"] = [aucs.get(m, {}).get(k, math.nan) for m in out["method"]]
    out["kind"] = np.where(out["method"].isin(list(IMAGE_METHODS)), "image", "feature")
    return out.assign(dataset=category)
