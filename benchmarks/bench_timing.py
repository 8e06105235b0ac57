"""Speed of every method side by side (the harness behind Tables 5 and 6), the scoring fast paths of
ALGAN-image against the FLOP floor, and training several seeds at once.

Usage: ALGAN_DATA=/path/to/data python benchmarks/bench_timing.py [--profile cpu] [--device cuda]
       [--reps 5] [--batch 64] [--seeds-at-once 2] [--skip-table]
Prints the figures and writes benchmarks/out/bench_timing_<profile>_<device>.csv. Not a test.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from algan import claims, results, timing
from algan.config import profile as make_profile
from algan.detector import ALGAN
from algan.score import discriminator_scores

OUT = Path(__file__).parent / "out"


def fast_paths(profile: str, device: torch.device, batch: int, reps: int) -> pd.DataFrame:
    """ALGAN-image scoring per variant: ms per image at batch 1 and `batch`, x floor, max relative score change."""
    det = ALGAN.initialised(make_profile(profile), device=str(device))
    D, size = det.discriminator, det.config.model.image_size
    D.train()
    with torch.no_grad():  # a few power iterations so spectral norm's sigma (and the score scale) is settled
        for _ in range(20):
            D(torch.rand(16, det.config.model.channels, size, size, device=device) * 2 - 1)
    D.eval()
    throughput = timing.device_throughput(device)
    peak = max(throughput.values()) * 1e9
    flops = timing.count_flops(lambda: discriminator_scores(D, torch.zeros(1, 3, size, size, device=device),
                                                            prepare=det._prepare, device=device))
    variants = {"fp32 (NCHW)": {}, "channels_last": {"channels_last": True}}
    if device.type == "cuda" or torch.backends.mkldnn.is_available():
        variants["bf16 autocast"] = {"amp_dtype": torch.bfloat16}
        variants["bf16 autocast + channels_last"] = {"amp_dtype": torch.bfloat16, "channels_last": True}
    x = {b: torch.rand(b, 3, size, size, device=device) * 2 - 1 for b in (1, batch)}
    ref = discriminator_scores(D, x[batch], prepare=det._prepare, batch_size=batch, device=device)

    def variant(name: str, net, **kw) -> dict:
        score = lambda b: discriminator_scores(net, x[b], prepare=det._prepare, batch_size=b,  # noqa: E731
                                               device=device, **kw)
        row = {"variant": name, **{f"ms_b{b}": 1000 * timing.time_call(lambda: score(b), device, reps)[0] / b
                                   for b in (1, batch)}}
        return {**row, "max_rel_change": float(np.abs(score(batch) - ref).max() / np.abs(ref).max())}

    rows = [variant(name, D, **kw) for name, kw in variants.items()]
    try:  # torch.compile: opt-in, needs a working compiler toolchain
        rows.append(variant("torch.compile + channels_last", torch.compile(D), channels_last=True))
    except Exception as err:  # noqa: BLE001 - report and go on: compile is optional
        print(f"torch.compile skipped: {type(err).__name__}: {str(err).splitlines()[0][:120]}")
    frame = pd.DataFrame(rows)
    frame["floor_ms"] = 1000 * flops / peak
    frame[f"x_floor_b{batch}"] = frame[f"ms_b{batch}"] / frame["floor_ms"]
    frame["gflops_per_image"] = flops / 1e9
    return frame.assign(**{k: v for k, v in throughput.items()})


def _train_one(args) -> float:
    profile, device, seed, threads = args
    torch.set_num_threads(threads)
    cfg = make_profile(profile, **{"train.epochs": 3})
    x = torch.rand(timing.BOTTLE_TRAIN, 3, cfg.model.image_size, cfg.model.image_size) * 2 - 1
    det = ALGAN(cfg, seed=seed, device=device, progress=False).fit(x)
    return float(det.history_["seconds"].iloc[1:].mean())  # epochs 2-3: warm


def seeds_at_once(profile: str, device: str, k: int) -> pd.DataFrame:
    """Seconds per epoch of one seed alone, and of each of k seeds trained concurrently (one process each,
    the cores split between them; on CUDA the processes share the GPU)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    ctx = mp.get_context("spawn")
    rows = []
    for n in (1, k):
        threads = max(1, cores // n) if device == "cpu" else 1
        start = time.perf_counter()
        with ctx.Pool(n) as pool:
            per_epoch = pool.map(_train_one, [(profile, device, s, threads) for s in range(n)])
        rows.append({"seeds_at_once": n, "threads_each": threads, "s_per_epoch_each": float(np.mean(per_epoch)),
                     "epochs_per_s_total": n / float(np.mean(per_epoch)), "wall_s": time.perf_counter() - start})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds-at-once", type=int, default=2)
    ap.add_argument("--skip-table", action="store_true", help="only the fast paths and seeds at once")
    args = ap.parse_args()
    device = torch.device(args.device)
    prov = results.provenance(device)
    print(f"device: {prov['device']}, torch {prov['torch']}, commit {prov['commit']}, profile {args.profile}")
    pd.set_option("display.width", 200)
    fmt = lambda v: f"{v:.3f}"  # noqa: E731
    frames = []
    for prof in dict.fromkeys((args.profile, "paper")):
        fp = fast_paths(prof, device, args.batch, args.reps)
        print(f"\nALGAN-image scoring fast paths ({prof} profile, {make_profile(prof).model.image_size} px):")
        print(fp.to_string(index=False, float_format=fmt))
        frames.append(fp.assign(what=f"fast paths, {prof}"))
    sa = seeds_at_once(args.profile, args.device, args.seeds_at_once)
    print(f"\ntraining ALGAN-image ({args.profile} profile), one seed vs {args.seeds_at_once} at once:")
    print(sa.to_string(index=False, float_format=fmt))
    frames.append(sa.assign(what="seeds at once"))
    if not args.skip_table:
        table = timing.timing_table(args.profile, batch=args.batch, reps=args.reps, device=args.device, progress=True)
        cols = ["label", "input", "predict_ms_b1", "predict_ms", "gflops_per_image", "x_floor", "peak_mem_mib",
                "train_s_per_epoch", "train_s_full", "x_algan_image", "x_algan_feature"]
        print("\nevery method (Tables 5 and 6):")
        print(table[cols].to_string(index=False, float_format=fmt))
        print(claims.speed_claims(table))
        frames.append(table.assign(what="methods"))
    out = OUT / f"bench_timing_{args.profile}_{device.type}.csv"
    results.write_csv(out, pd.concat(frames, ignore_index=True).assign(
        device=prov["device"], torch=prov["torch"], commit=prov["commit"]))
    print(f"written {out}")


if __name__ == "__main__":
    main()
