"""Small host tensors (random draws, indices) moved to the training device without a host sync.

The training loops draw every random number from one CPU generator, so a seed gives the same draws on
any device; what a step draws is moved to the device by `to_device`. A plain `.to("cuda")` of a CPU
tensor waits for the GPU's queued work to finish (a host sync); from pinned memory the copy is queued
like a kernel and the host runs on.
"""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """`t` on `device`: asynchronous from pinned memory to a CUDA device, an ordinary `.to` elsewhere."""
    device = torch.device(device)
    if t.device.type != "cpu" or device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
