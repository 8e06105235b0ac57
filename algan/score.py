"""Anomaly scores, thresholds and metrics. Higher score = more anomalous, everywhere."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn


@torch.inference_mode()
def discriminator_scores(
    discriminator: nn.Module,
    x: torch.Tensor,
    *,
    prepare: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """-D(x) logits in eval mode, batched. Restores D's train/eval mode afterwards."""
    was_training = discriminator.training
    discriminator.eval()
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].to(device, non_blocking=True)
        if prepare is not None:
            batch = prepare(batch)
        out.append((-discriminator(batch)).float().cpu())
    discriminator.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.float32)


def auroc(labels, scores) -> float:
    """Image-level AUROC (1 = anomalous is the positive class)."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    if len(np.unique(labels)) < 2:
        raise ValueError(f"AUROC needs both normal (0) and anomalous (1) labels; got only {np.unique(labels).tolist()}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or inf: expected finite anomaly scores")
    return float(roc_auc_score(labels, scores))


def threshold_at_fpr(normal_scores, fpr: float) -> float:
    """Threshold such that about `fpr` of these normal scores lie above it (Eq. 8, chosen by the user).

    Uses normal data only, as users rarely have anomalies to tune on.
    """
    normal_scores = np.asarray(normal_scores, dtype=np.float64)
    if normal_scores.size == 0:
        raise ValueError("threshold_at_fpr needs at least one normal score")
    return float(np.quantile(normal_scores, 1.0 - fpr, method="higher"))
