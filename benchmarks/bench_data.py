"""Data-layer timings: cold and cached loads, batch augmentation, the data check.

Usage: ALGAN_DATA=/path/to/data python benchmarks/bench_data.py [--size 64] [--skip-check]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from algan.data import clear_cache, load_dataset, resolve_root
from algan.data.check import check_root


def timed(fn):
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    """Print one JSON line per measurement."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-check", action="store_true")
    args = ap.parse_args()
    root = resolve_root(args.root)
    clear_cache()
    for name, category in (("mvtec", "bottle"), ("mtd", None), ("coil100", None)):
        load = lambda seed: load_dataset(name, root, category=category, image_size=args.size, seed=seed)  # noqa: E731
        splits, cold = timed(lambda: load(0))
        _, warm = timed(lambda: load(1))
        x = splits.train.x[: args.batch]
        gen = torch.Generator().manual_seed(0)
        splits.augment(x, gen)  # warm-up
        reps = 20
        _, aug = timed(lambda: [splits.prepare(splits.augment(x, gen)) for _ in range(reps)])
        print(json.dumps({
            "dataset": name, "category": splits.category, "image_size": args.size,
            "images": sum(len(s) for s in (splits.train, splits.val, splits.test)),
            "cold_load_s": round(cold, 3), "cached_load_other_seed_s": round(warm, 3),
            "augment_prepare_ms_per_batch": round(1000 * aug / reps, 2), "batch": len(x),
            "augmentations": list(splits.augmentations),
        }))
    if not args.skip_check:
        (df, ok), secs = timed(lambda: check_root(root))
        print(json.dumps({"check_root_s": round(secs, 2), "checks": len(df), "ok": ok}))


if __name__ == "__main__":
    main()
