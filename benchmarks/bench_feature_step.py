"""ALGAN-feature: milliseconds per training step (one data batch: n_dis D updates, the buffer, one G update)
at batch 16 and 256, against the FLOP floor of the MLPs (the step's FLOPs at this device's sustained fp32
matmul rate, `algan.timing.device_throughput`).

Usage: python benchmarks/bench_feature_step.py [--dim 21 166 512 1280] [--batch 16 256] [--hidden 512]
       [--threads 1] [--mode default fast_step]
Prints one line per feature dimension and batch size: ms per step of the default step and of `train.fast_step`
(one D call per D step, fused Adam, fused spectral-norm layers), each as a multiple of the floor, and the
speed-up. A step is timed as the difference between a run of 1 + E epochs and one of 1
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


def run(batch: int, dim: int, fast: bool, args, epochs: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `train_algan` for `epochs` epochs on random features, no validation."""
    cfg = profile("cpu", kind="feature", reading=args.reading, **{
        "model.feature_dim": dim, "model.feature_hidden": args.hidden, "train.batch_size": batch,
        "train.epochs": epochs, "train.fast_step": fast, "train.select": "last"})
    x = torch.randn(batch * args.batches, dim, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    G, D = build_networks(cfg.model)
    cpu, wall = time.process_time(), time.perf_counter()
    train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=0, progress=False)
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, nargs="+", default=[21, 166, 512, 1280],
                        help="feature dimensions (tabular sets: 21 cardio, 166 musk; ResNet-18 512; EfficientNet 1280)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden width (model.feature_hidden)")
    parser.add_argument("--batches", type=int, default=20, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="E: timed epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reading", default="literal")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--mode", nargs="+", default=["default", "fast_step"], choices=["default", "fast_step"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_rate()
    print(f"ALGAN-feature, {args.threads} thread(s), hidden {args.hidden}, reading {args.reading}; sustained "
          f"matmul {peak / 1e9:.1f} GFLOP/s; ms per step in CPU time (wall time in brackets)")
    print(f"{'dim':>5} {'batch':>5} {'floor ms':>9} " + " ".join(f"{m:>22}" for m in args.mode) + "  speed-up")
    for dim in args.dim:
        for batch in args.batch:
            one = lambda fast: run(batch, dim, fast, args, 1)  # noqa: E731
            flops = count_flops(lambda: one(False)) / args.batches  # matmuls, forward and backward, per step
            floor, cells, ms = 1000 * flops / peak, [], []
            for mode in args.mode:
                fast = mode == "fast_step"
                one(fast)  # warm-up
                (cpu1, wall1), (cpu2, wall2) = one(fast), run(batch, dim, fast, args, 1 + args.epochs)
                steps = args.epochs * args.batches
                ms.append(1000 * (cpu2 - cpu1) / steps)
                cells.append(f"{ms[-1]:7.2f} ({1000 * (wall2 - wall1) / steps:7.2f}) {ms[-1] / floor:4.0f}x")
            print(f"{dim:5d} {batch:5d} {floor:9.3f} " + " ".join(f"{c:>22}" for c in cells)
                  + (f"  {ms[0] / ms[-1]:5.2f}x" if len(ms) > 1 else ""))


if __name__ == "__main__":
    main()
