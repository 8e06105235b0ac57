"""ALGAN-image's training options for accelerators, `train.amp` (bf16 autocast) and `train.channels_last`:
milliseconds per training step under each, and what each does to the test AUROC.

Usage: python benchmarks/bench_train_options.py [--profile cpu] [--device cpu] [--threads 1] [--epochs 3]
       python benchmarks/bench_train_options.py --auroc [--runs results/runs]

Timing: one line per option, the mean milliseconds per step (one data batch: n_dis D updates, the buffer, one G
update) as the difference between a run of 1 + E epochs and one of 1 epoch on random images of the profile's
size, so setup and the first epoch cancel out; CPU time beside wall time on a CPU (a busy machine inflates the
wall time). On CUDA the wall time is the figure (synchronised at the end of each run).

--auroc: the test AUROC (mean ± std over seeds) of the cached runs of MVTec bottle at the profile under each
option beside the float32 runs with the same seeds (Table 1's; the others: `algan sweep
benchmarks/train_options.yaml`), and the difference in standard errors. Not a test: figures only.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from algan.config import profile
from algan.models.algan_nets import build_networks
from algan.train import train_algan

OPTIONS = {"float32": {}, "bf16": {"train.amp": "bf16"}, "channels_last": {"train.channels_last": True},
           "bf16 + channels_last": {"train.amp": "bf16", "train.channels_last": True}}


def run(options: dict, args, epochs: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `train_algan` for `epochs` epochs on random images, no validation."""
    cfg = profile(args.profile, **{**options, "train.epochs": epochs})
    size, n = cfg.model.image_size, 4 * cfg.train.batch_size
    x = torch.rand(n, cfg.model.channels if not cfg.model.extra_channels else 3, size, size,
                   generator=torch.Generator().manual_seed(0)) * 2 - 1
    cfg = cfg.override(**{"model.extra_channels": False, "model.channels": x.shape[1]})
    torch.manual_seed(0)
    G, D = build_networks(cfg.model)
    start_cpu, start = time.process_time(), time.perf_counter()
    train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=0, device=args.device, progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.process_time() - start_cpu, time.perf_counter() - start


def timing(args) -> None:
    steps = 4 * args.epochs  # 4 batches an epoch
    print(f"ALGAN-image, profile {args.profile}, device {args.device}, {torch.get_num_threads()} thread(s): "
          f"ms per training step (mean of {steps} steps)")
    base = None
    for name, options in OPTIONS.items():
        run(options, args, 1)  # warm-up: kernels, allocator
        one, more = run(options, args, 1), run(options, args, 1 + args.epochs)
        cpu_ms, wall_ms = (1e3 * (b - a) / steps for a, b in zip(one, more))
        ms = wall_ms if args.device.startswith("cuda") else cpu_ms  # a busy CPU inflates the wall time
        base = base or ms
        print(f"  {name:22s} wall {wall_ms:8.1f} ms   cpu {cpu_ms:8.1f} ms   speed-up {base / ms:5.2f}x")


def auroc(args) -> None:
    root = Path(args.runs)
    found: dict[str, dict[int, float]] = {name: {} for name in OPTIONS}
    for path in root.glob("*/metrics.json"):
        config = json.loads((path.parent / "config.json").read_text())
        a = config.get("args", {})
        if (a.get("task"), a.get("method"), a.get("category"), a.get("profile")) != \
                ("image_run", "algan", "bottle", args.profile) or not (path.parent / "done").exists():
            continue
        for name, options in OPTIONS.items():
            if a["overrides"] == options:
                found[name][a["seed"]] = json.loads(path.read_text())["test_auroc"]
    ref = found["float32"]
    print(f"ALGAN-image on MVTec bottle, profile {args.profile}: test AUROC over seeds (run cache {root})")
    for name, by_seed in found.items():
        seeds = sorted(set(by_seed) & set(ref))
        if not seeds:
            print(f"  {name:22s} no runs")
            continue
        v, r = np.array([by_seed[s] for s in seeds]), np.array([ref[s] for s in seeds])
        se = math.sqrt(v.var(ddof=1) / len(v) + r.var(ddof=1) / len(r)) if len(seeds) > 1 else math.nan
        d = v.mean() - r.mean()
        print(f"  {name:22s} {v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else math.nan:.3f} (seeds {seeds}); "
              f"minus float32 {d:+.3f}" + (f" ({abs(d) / se:.1f} SE)" if se == se and se > 0 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--auroc", action="store_true")
    parser.add_argument("--runs", default="results/runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    auroc(args) if args.auroc else timing(args)


if __name__ == "__main__":
    main()
