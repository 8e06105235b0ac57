"""ALGAN-feature: milliseconds per training step (one data batch: n_dis D updates, the buffer, one G update)
at batch 16 and 256, against the FLOP floor of the MLPs (the step's FLOPs at this device's sustained fp32
matmul rate, `algan.timing.device_throughput`).

Usage: python benchmarks/bench_feature_step.py [--dim 1280] [--hidden 512] [--threads 1] [--reading literal]
Prints one line per batch size. A step is timed as the difference between a run of 1 + E epochs and one of 1
epoch, over E x the batches per epoch: setup, the first epoch (no buffer yet) and the last (the gradient shares)
cancel out. CPU time (`time.process_time`, one thread) is the figure to compare on a busy machine; wall time is
printed beside it. Not a test: figures only.
"""
from __future__ import annotations

import argparse
import math
import time

import torch

from algan.config import profile
from algan.models.algan_nets import build_networks
from algan.timing import count_flops
from algan.train import train_algan


def matmul_rate(reps: int = 5) -> float:
    """Sustained fp32 FLOP/s of a 2048^3 matmul in CPU time (best of `reps`): the FLOP floor's rate, as
    `algan.timing.device_throughput` measures it in wall time (which a busy machine inflates)."""
    a = torch.randn(2048, 2048)
    best = math.inf
    for _ in range(reps + 1):
        start = time.process_time()
        a @ a
        best = min(best, time.process_time() - start)
    return 2 * 2048 ** 3 / best


def run(batch: int, args, epochs: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `train_algan` for `epochs` epochs on random features, no validation."""
    cfg = profile("cpu", kind="feature", reading=args.reading, **{
        "model.feature_dim": args.dim, "model.feature_hidden": args.hidden, "train.batch_size": batch,
        "train.epochs": epochs})
    x = torch.randn(batch * args.batches, args.dim, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    G, D = build_networks(cfg.model)
    cpu, wall = time.process_time(), time.perf_counter()
    train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=0, progress=False)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1280, help="feature dimension (EfficientNet-Lite0: 1280)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden width (model.feature_hidden)")
    parser.add_argument("--batches", type=int, default=20, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="E: timed epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reading", default="literal")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_rate()
    print(f"threads {args.threads}, dim {args.dim}, hidden {args.hidden}, reading {args.reading}; "
          f"sustained matmul {peak / 1e9:.1f} GFLOP/s")
    for batch in args.batch:
        one = lambda: run(batch, args, 1)  # noqa: E731
        flops_per_step = count_flops(one) / args.batches  # matmuls, forward and backward, per step
        one()  # warm-up
        (cpu1, wall1), (cpu2, wall2) = one(), run(batch, args, 1 + args.epochs)
        steps = args.epochs * args.batches
        ms, ms_wall = 1000 * (cpu2 - cpu1) / steps, 1000 * (wall2 - wall1) / steps
        floor = 1000 * flops_per_step / peak
        print(f"batch {batch:4d}: {ms:8.2f} ms/step CPU ({ms_wall:8.2f} wall), floor {floor:.3f} ms "
              f"({flops_per_step / 1e6:.1f} MFLOP/step), {ms / floor:.0f}x floor")


if __name__ == "__main__":
    main()
