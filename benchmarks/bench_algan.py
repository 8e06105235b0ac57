"""ALGAN-image speed: scoring ms/image at 256x256 (batch 1 and 64), seconds per training step at
64/128/256, and the share of a cpu-profile epoch spent in data loading + augmentation.

Usage: ALGAN_DATA=/path/to/data python benchmarks/bench_algan.py [--device cuda] [--reps 5]
Prints a table and writes benchmarks/out/bench_algan_<device>.csv. Not a test: figures only.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from algan import results
from algan.config import profile
from algan.data import load_dataset
from algan.models.algan_nets import build_networks
from algan.models.alocc import ALOCC
from algan.models.ganomaly import GANomaly
from algan.models.skip_ganomaly import SkipGANomaly
from algan.score import discriminator_scores
from algan.train import train_algan


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def ms_per_image(score, x, device, reps: int) -> tuple[float, float]:
    """Median and spread (max - min) of ms per image for `score(x)` over `reps` runs after a warm-up."""
    score(x)
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        score(x)
        sync(device)
        times.append((time.perf_counter() - t0) * 1000 / len(x))
    return statistics.median(times), max(times) - min(times)


def algan_scoring_ms(device, size: int, batch: int, reps: int) -> tuple[float, float]:
    """-D(x) of ALGAN-image at the paper's widths (5 input channels)."""
    cfg = profile("paper", **{"model.image_size": size}).model
    _, d = build_networks(cfg)
    d.to(device)
    x = torch.rand(batch, cfg.channels, size, size, device=device) * 2 - 1
    return ms_per_image(lambda v: discriminator_scores(d, v, device=device, batch_size=batch), x, device, reps)


def baseline_scoring_ms(cls, device, size: int, batch: int, reps: int) -> tuple[float, float]:
    """A baseline's decision_function on plain 3-channel images (it appends max/mean itself)."""
    det = cls.initialised(profile("paper", **{"model.image_size": size}), device=device)
    x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
    return ms_per_image(lambda v: det.decision_function(v, batch_size=batch), x, device, reps)


def train_step_seconds(device, size: int, n_batches: int = 3) -> float:
    """Seconds per Alg. 1 step (n_dis D updates + 1 G update) at the paper's widths and batch 16."""
    cfg = profile("paper", **{"model.image_size": size, "train.epochs": 2})
    g, d = build_networks(cfg.model)
    x = torch.rand(16 * n_batches, cfg.model.channels, size, size) * 2 - 1
    res = train_algan(g, d, x, cfg.train, latent_dim=100, device=device, progress=False)
    return float(res.history["seconds"].iloc[-1]) / n_batches  # epoch 2: warm, with the buffer term


def data_share(device) -> dict:
    """Share of one cpu-profile bottle epoch spent in fetching + augmenting + preparing batches."""
    t0 = time.perf_counter()
    splits = load_dataset("mvtec", category="bottle", image_size=profile("cpu").model.image_size, seed=0)
    load_s = time.perf_counter() - t0
    spent = [0.0]

    def timed_augment(x, gen):
        t = time.perf_counter()
        out = splits.prepare(splits.augment(x, gen))
        spent[0] += time.perf_counter() - t
        return out

    cfg = profile("cpu", **{"train.epochs": 2, "model.channels": splits.input_channels})
    g, d = build_networks(cfg.model)
    res = train_algan(g, d, splits.train.x, cfg.train, latent_dim=100, augment=timed_augment, device=device,
                      progress=False)
    epoch_s = float(res.history["seconds"].sum())
    return {"load_s": load_s, "epoch_s": epoch_s / 2, "augment_s": spent[0] / 2,
            "share": spent[0] / epoch_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    dev = args.device
    where = results.device_name(dev)
    rows = []
    for batch in (1, 64):
        med, spread = algan_scoring_ms(dev, 256, batch, args.reps)
        rows.append({"what": f"score ALGAN-image 256x256, batch {batch}", "value": med, "unit": "ms/image",
                     "spread": spread})
    for cls in (GANomaly, SkipGANomaly, ALOCC):
        med, spread = baseline_scoring_ms(cls, dev, 256, 64, args.reps)
        rows.append({"what": f"score {cls.__name__} 256x256, batch 64", "value": med, "unit": "ms/image",
                     "spread": spread})
    for size in (64, 128, 256):
        rows.append({"what": f"train step {size}x{size}, batch 16 (paper widths)",
                     "value": train_step_seconds(dev, size), "unit": "s/step", "spread": float("nan")})
    share = data_share(dev)
    rows.append({"what": "cpu profile bottle: cold load of all splits", "value": share["load_s"], "unit": "s",
                 "spread": float("nan")})
    rows.append({"what": "cpu profile bottle: one epoch", "value": share["epoch_s"], "unit": "s",
                 "spread": float("nan")})
    rows.append({"what": "cpu profile bottle: batch fetch+augment+prepare share of an epoch",
                 "value": 100 * share["share"], "unit": "%", "spread": float("nan")})
    frame = pd.DataFrame(rows).assign(device=where, torch=torch.__version__, commit=results.git_commit())
    print(f"device: {where}, torch {torch.__version__}")
    print(frame[["what", "value", "unit", "spread"]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    out = Path(__file__).parent / "out" / f"bench_algan_{torch.device(dev).type}.csv"
    results.write_csv(out, frame)
    print(f"written {out}")


if __name__ == "__main__":
    main()
