"""ALGAN-feature: milliseconds per training step (one data batch: n_dis D updates, the buffer, one G update)
at batch 16 and 256, against the FLOP floor of the MLPs (the step's FLOPs at this device's sustained fp32
matmul rate, `algan.timing.device_throughput`).

Usage: python benchmarks/bench_feature_step.py [--dim 1280] [--hidden 512] [--threads 1] [--reading literal]
Prints one line per batch size. Not a test: figures only. A step is timed as an epoch's seconds over its
batches (`history.seconds`), the median over the epochs that neither validate nor measure gradient shares,
and over all epochs (`all`: validation epochs included, with their gradient shares and scoring).
"""
from __future__ import annotations

import argparse
import statistics

import torch

from algan.config import profile
from algan.models.algan_nets import build_networks
from algan.timing import count_flops, device_throughput
from algan.train import train_algan


def run(batch: int, args, epochs: int):
    cfg = profile("cpu", kind="feature", reading=args.reading, **{
        "model.feature_dim": args.dim, "model.feature_hidden": args.hidden, "train.batch_size": batch,
        "train.epochs": epochs, "train.eval_every": args.eval_every})
    n = batch * args.batches
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, args.dim, generator=gen)
    x_val = torch.randn(64, args.dim, generator=gen)
    y_val = (torch.arange(64) >= 48).long().numpy()
    x_val[48:] += 1.0
    torch.manual_seed(0)
    G, D = build_networks(cfg.model)
    return train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=0, x_val=x_val, y_val=y_val,
                       progress=False), cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=1280, help="feature dimension (EfficientNet-Lite0: 1280)")
    parser.add_argument("--hidden", type=int, default=512, help="hidden width (model.feature_hidden)")
    parser.add_argument("--batches", type=int, default=40, help="batches per epoch")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--eval-every", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reading", default="literal")
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = device_throughput(torch.device("cpu"))["matmul_gflops"] * 1e9
    print(f"threads {args.threads}, dim {args.dim}, hidden {args.hidden}, reading {args.reading}; "
          f"sustained matmul {peak / 1e9:.1f} GFLOP/s")
    for batch in args.batch:
        # FLOPs of one epoch without validation, per step (matmuls, forward and backward)
        flops = count_flops(lambda: run(batch, argparse.Namespace(**{**vars(args), "eval_every": 10 ** 6}), 1))
        flops_per_step = flops / args.batches
        result, cfg = run(batch, args, args.epochs)
        h = result.history
        plain = h[(h["epoch"] % args.eval_every != 0) & (h["epoch"] != args.epochs) & (h["epoch"] > 1)]
        ms = 1000 * statistics.median(plain["seconds"]) / args.batches
        ms_all = 1000 * h["seconds"].iloc[1:].mean() / args.batches
        floor = 1000 * flops_per_step / peak
        print(f"batch {batch:4d}: {ms:8.2f} ms/step (all epochs {ms_all:8.2f}), floor {floor:.3f} ms "
              f"({flops_per_step / 1e6:.1f} MFLOP/step), {ms / floor:.0f}x floor")


if __name__ == "__main__":
    main()
