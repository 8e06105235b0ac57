"""Anomaly scores, thresholds and metrics. Higher score = more anomalous, everywhere."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.nn.utils import parametrize


@torch.inference_mode()
def discriminator_scores(
    discriminator: nn.Module,
    x: torch.Tensor,
    *,
    prepare: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    channels_last: bool = False,
    amp_dtype: Optional[torch.dtype] = None,
) -> np.ndarray:
    """-D(x) logits in eval mode, batched. Restores D's train/eval mode afterwards.

    Fast paths (benchmarks/bench_timing.py measures each): spectral-norm weights are computed once
    per call, not once per batch; `channels_last` feeds 4-d batches of 2+ in NHWC order; `amp_dtype`
    (e.g. torch.bfloat16 on CUDA) runs D under autocast. Scores come back as float32 either way.
    """
    was_training = discriminator.training
    discriminator.eval()
    device = torch.device(device)
    out = []
    with parametrize.cached(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for start in range(0, len(x), batch_size):
            batch = x[start:start + batch_size].to(device, non_blocking=True)
            if prepare is not None:
                batch = prepare(batch)
            if channels_last and batch.dim() == 4 and len(batch) > 1:  # measured: a gain batched, a loss at 1
                batch = batch.contiguous(memory_format=torch.channels_last)
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

    Uses normal data only, as users rarely have anomalies to tune on. The normal scores above it are
    those above their (1 - fpr) quantile (numpy's "higher" method); the threshold sits midway in the
    gap to the next normal score, so no normal score lies on it and a backend that reproduces the
    scores to float precision (ONNX, bf16 autocast) flags the same samples.
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("threshold_at_fpr needs at least one normal score")
    upper = float(np.quantile(scores, 1.0 - fpr, method="higher"))
    s = np.unique(scores)  # sorted
    above, below = s[s > upper], s[s < upper]
    if above.size:
        return float((upper + above[0]) / 2)
    gap = (upper - below[-1]) if below.size else abs(upper) + 1.0
    return float(upper + gap / 2)
