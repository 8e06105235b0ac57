"""Robustness runs (Sec. V-G, Fig. 8): a trained ALGAN-image model of MVTec bottle scores fake-anomalous
samples of larger sigmas and CutPaste images; one run of the run cache per profile and seed."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from .. import results
from ..config import profile as make_profile
from ..data.transforms import cutpaste
from ..score import auroc, discriminator_scores
from .common import default_device
from .image import fit_estimator, run_image


def robustness_run_args(profile: str, seed: int, sigmas, n_fake: int) -> dict[str, Any]:
    return {"task": "robustness", "dataset": "mvtec", "category": "bottle", "profile": profile, "seed": int(seed),
            "sigmas": [float(s) for s in sigmas], "n_fake": int(n_fake)}


def run_robustness(profile: str = "cpu", seed: int = 0, *, sigmas=(5.0, 6.0, 7.0, 8.0), n_fake: int = 256,
                   data_root=None, runs_dir=None, device: Optional[str] = None) -> dict[str, Any]:
    """Sec. V-G on bottle: the default (sigma = 4) model scores fake-anomalous samples from larger sigmas
    and CutPaste images made from the normal test images; cached like every run.

    The model is the Table 1 run's (`model.pt` of the same profile and seed) when its weights are on disk,
    else one trained here the same way. The threshold is the model's own: 5 % false positives on the
    normal validation images (Eq. 8, `train.threshold_fpr`)."""
    from ..data import load_dataset
    from ..detector import ALGAN

    device = device or default_device()
    args = robustness_run_args(profile, seed, sigmas, n_fake)
    size = make_profile(profile).model.image_size

    def execute(folder: Path) -> dict[str, Any]:
        splits = load_dataset("mvtec", data_root, category="bottle", image_size=size, seed=seed)
        table_run = run_image("algan", "mvtec", category="bottle", profile=profile, seed=seed, data_root=data_root,
                              runs_dir=runs_dir, device=device)
        weights = table_run["folder"] / "model.pt"
        if weights.is_file():
            det, source = ALGAN.load(weights, device=device), f"run {table_run['folder'].name}"
        else:
            det = fit_estimator(ALGAN, splits, profile, seed, {}, device, False)[0]
            source = f"retrained here (the weights of run {table_run['folder'].name} are not on disk)"
        gen = torch.Generator().manual_seed(seed)
        normal = splits.test.x[splits.test.y == 0]
        groups = {"normal test": det.decision_function(normal),
                  "real anomalies (test)": det.decision_function(splits.test.x[splits.test.y == 1])}
        for sigma in sigmas:  # D sees G's output as in training (the model's max/mean channel rule)
            z = torch.randn(n_fake, det.config.model.latent_dim, generator=gen) * sigma
            with torch.inference_mode():
                det.generator.eval()
                fakes = det._prepare_fake(det.generator(z.to(det.device)))
            groups[f"fake-anomalous, sigma = {sigma:g}"] = discriminator_scores(det.discriminator, fakes,
                                                                               device=det.device)
        pasted = cutpaste(normal, gen)
        groups["CutPaste (from normal test)"] = det.decision_function(pasted)
        results.write_scores(folder, pd.concat(
            [pd.DataFrame({"group": k, "score": v}) for k, v in groups.items()], ignore_index=True))
        pairs = torch.stack([normal[:8], pasted[:8]])  # (2, n, C, H, W): Figure 8's two rows
        np.save(folder / "cutpaste_examples.npy",
                ((pairs.permute(0, 1, 3, 4, 2) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
        metrics = {"model": source, "threshold": det.threshold_, "threshold_fpr": det.config.train.threshold_fpr,
                   "n_normal_test": len(normal), "groups": list(groups)}
        for name, s in groups.items():
            metrics[f"flagged: {name}"] = float((s > det.threshold_).mean())
            if name != "normal test":
                metrics[f"auroc: {name}"] = auroc(np.r_[np.zeros(len(groups["normal test"])), np.ones(len(s))],
                                                  np.r_[groups["normal test"], s])
        return metrics

    return results.cached_run(args, execute, runs_dir, device=device)
