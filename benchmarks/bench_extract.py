"""Feature extraction against its roofline floor: ms per image of the backbone's pooled and patch-map
passes at several batch sizes, on each engine (PyTorch, ONNX Runtime), beside the floor
(`algan.timing.roofline_ms`: the longer of the pass's FLOPs at the device's measured throughput and its
bytes at the measured memory bandwidth).

    python benchmarks/bench_extract.py [--threads 2] [--batches 1 16 64] [--reps 5]

Run it on a quiet machine: the floor and the times are measured in the same process, side by side.
"""
from __future__ import annotations

import argparse

import pandas as pd
import torch

from algan import timing
from algan.extract import DEFAULT_BACKBONE, ENGINES, load_backbone, load_extractor


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--backbone", default=DEFAULT_BACKBONE)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cpu = torch.device("cpu")
    machine = timing.device_throughput(cpu)
    print(f"{a.threads} threads | matmul {machine['matmul_gflops']:.0f} GFLOP/s, conv {machine['conv_gflops']:.0f} "
          f"GFLOP/s, memory {machine['mem_gbs']:.1f} GB/s")
    reference = load_backbone(a.backbone)
    rows = []
    for kind in ("pooled", "maps"):
        for batch in a.batches:
            x = torch.rand(batch, 3, 224, 224) * 2 - 1
            run = (lambda m: m.pooled(x)) if kind == "pooled" else (lambda m: m.maps(x))
            flops = timing.count_flops(lambda: run(reference)) / batch
            nbytes = timing.count_bytes(lambda: run(reference)) / batch
            floor = timing.roofline_ms(flops, nbytes, machine)
            for engine in ENGINES:
                model = load_extractor(a.backbone, engine=engine)
                ms = 1000 * timing.best_time(lambda: run(model), cpu, a.reps) / batch
                rows.append({"pass": kind, "batch": batch, "engine": engine, "ms_per_image": round(ms, 2),
                             "gflop": round(flops / 1e9, 3), "mb_moved": round(nbytes / 1e6, 1),
                             "floor_ms": round(floor, 2), "x_floor": round(ms / floor, 2)})
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
