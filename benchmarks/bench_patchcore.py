"""PatchCore at COIL-100's `cpu` size: greedy coreset selection and nearest-patch scoring.

Synthetic patch maps of the real shape (EfficientNet-Lite0 mid-level maps, 152 channels, 14 x 14;
COIL-100's 432 training images per seed at `cpu`). Prints one JSON line per measurement.
Usage: python benchmarks/bench_patchcore.py [--n-train 432] [--n-test 256] [--fractions 0.25 0.1 0.01]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from algan.models.feature_baselines import PatchCore, coreset_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=432)
    ap.add_argument("--n-test", type=int, default=256)
    ap.add_argument("--channels", type=int, default=152)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.10, 0.01])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.channels, 14, 14)
    train = rng.standard_normal((args.n_train, *shape), dtype=np.float32)
    test = rng.standard_normal((args.n_test, *shape), dtype=np.float32)
    patches = PatchCore._patches(train)
    for fraction in args.fractions:
        t0 = time.perf_counter()
        det = PatchCore(coreset=fraction).fit(train)  # nearly all of it is the greedy coreset
        fit_s = time.perf_counter() - t0
        det.decision_function(test[:8])  # warm-up
        t0 = time.perf_counter()
        det.decision_function(test)
        score_ms = (time.perf_counter() - t0) / len(test) * 1e3
        print(json.dumps({"fraction": fraction, "patches": len(patches), "coreset": coreset_size(fraction, len(patches)),
                          "fit_seconds": round(fit_s, 2), "score_ms_per_image": round(score_ms, 3),
                          "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
