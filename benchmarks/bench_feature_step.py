"""ALGAN-feature: milliseconds per training step (one data batch: n_dis D updates, the buffer, one G update)
at batch 16 and 256, against the FLOP floor of the MLPs (the step's FLOPs at this device's sustained fp32
matmul rate, `algan.timing.device_throughput`).

Usage: python benchmarks/bench_feature_step.py [--dim 21 166 512 1280] [--batch 16 256] [--hidden 512]
       [--threads 1] [--mode default fast_step] [--breakdown [--compiled] [--repeats 3]] [--auroc]
Prints one line per feature dimension and batch size: ms per step of the default step and of `train.fast_step`
(ALGAN-feature's updates written out by hand, `algan.models.feature_step`: no autograd, one D pass per D step on all
its rows, torch's fused Adam kernel), each as a multiple of the floor, and the speed-up. A step is timed as the
difference between a run of 1 + E epochs and one of 1 epoch, over E x the batches per epoch: setup, the first epoch
(no buffer yet) and the last (the gradient shares) cancel out. CPU time (`time.process_time`, one thread) is the
figure to compare on a busy machine; wall time is printed beside it.

--breakdown: where a `fast_step` step's time goes (batch and dimensions as given; CPU time, each figure the least of
--repeats; figures, not a test): per step, the time of its matmuls, of Adam's kernel and of the power iterations'
matrix-vector products (each operation timed by a `TorchDispatchMode` in a run of 2 + E epochs, summed over epochs 2
to 1 + E: sums of times, never below zero, where a difference of two runs' kernels is noise on small nets), the last
timed step's kernels of each kind replayed one by one on operands of the same shapes and strides, each repeated while
it stays in cache (their sum: what the step would take if every operand stayed in cache and nothing else ran), and the
rest (the step's time without the mode less those kernels: the other operations, counted in the last
step, and the Python around them). --compiled adds the core of a step (x', the D updates, the G update, on fixed rows)
eager, and with Adam as tensor operations eager and under `torch.compile` (inductor, which needs a C++ compiler; its
Python and its C++ wrapper), with the compile's seconds.

--auroc: what train.fast_step does to the test AUROC: the cached ALGAN-feature runs at the profile with
train.fast_step beside the default step's with the same set and seed (the tabular page's and Table 2's runs; the
others: `algan sweep benchmarks/fast_step.yaml`), per data set (mean over seeds) and over all pairs (mean
difference, its SE over the pairs, and the median seconds per run of each). Not a test: figures only.
"""
from __future__ import annotations

import argparse
import collections
import json
import math
import time
from pathlib import Path

import numpy as np

import torch
from torch.optim.adam import adam as single_tensor_adam
from torch.utils._python_dispatch import TorchDispatchMode

from algan.config import profile
from algan.models.algan_nets import build_networks
from algan.models.feature_step import FeatureSteps
from algan.timing import count_flops
from algan.train import _row_weights_on, train_algan


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


def _cfg(batch: int, dim: int, fast: bool, args, epochs: int):
    return profile("cpu", kind="feature", reading=args.reading, **{
        "model.feature_dim": dim, "model.feature_hidden": args.hidden, "train.batch_size": batch,
        "train.epochs": epochs, "train.fast_step": fast, "train.select": "last"})


def run(batch: int, dim: int, fast: bool, args, epochs: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of `train_algan` for `epochs` epochs on random features, no validation."""
    cfg = _cfg(batch, dim, fast, args, epochs)
    x = torch.randn(batch * args.batches, dim, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    G, D = build_networks(cfg.model)
    cpu, wall = time.process_time(), time.perf_counter()
    train_algan(G, D, x, cfg.train, latent_dim=cfg.model.latent_dim, seed=0, progress=False)
    return time.process_time() - cpu, time.perf_counter() - wall


KINDS = {"mm": "matmul", "addmm": "matmul", "_fused_adam_": "Adam", "mv": "power iteration",
         "addmv_": "power iteration"}


class _OpTimes(TorchDispatchMode):
    """Every tensor operation in order, as (kind (`KINDS`, else "other"), the op, for the kinds of `KINDS` its
    operands (`_spec`: tensors as shape, stride and dtype) and keyword arguments, its CPU seconds measured around
    the operation itself: the mode's own Python is outside)."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = KINDS.get(func.overloadpacket.__name__, "other")
        start = time.process_time()
        out = func(*args, **(kwargs or {}))
        seconds = time.process_time() - start
        operands = None if kind == "other" else (_spec(args), kwargs or {})
        self.ops.append((kind, func, operands, seconds))
        return out

    def span(self, after: int, adams: int) -> list[tuple]:
        """The operations after the first `after` Adam kernels, up to and with the next `adams`: whole steps, for
        multiples of the Adam kernels per step (n_dis for D and 1 for G, which ends a step)."""
        adam = [i for i, (kind, *_) in enumerate(self.ops) if kind == "Adam"]
        return self.ops[adam[after - 1] + 1 if after else 0:adam[after + adams - 1] + 1]


def _spec(a):
    """Tensors (also in lists and tuples) as ("tensor", shape, stride, dtype), for `_fresh`; other values as they are."""
    if isinstance(a, torch.Tensor):
        return ("tensor", tuple(a.shape), a.stride(), a.dtype)
    if isinstance(a, (list, tuple)):
        return type(a)(_spec(x) for x in a)
    return a


def _fresh(spec):
    """New tensors for a `_spec`, filled with values in [0.5, 1): positive (Adam's second moments), never subnormal."""
    if isinstance(spec, tuple) and spec[:1] == ("tensor",):
        return torch.empty_strided(spec[1], spec[2], dtype=spec[3]).uniform_(0.5, 1.0)
    if isinstance(spec, (list, tuple)):
        return type(spec)(_fresh(x) for x in spec)
    return spec


def _hot(func, operands, reps: int = 30) -> float:
    """CPU seconds of one kernel on new operands of these shapes and strides (`_OpTimes`' record), best of `reps`
    back-to-back calls."""
    args, kwargs = _fresh(operands[0]), operands[1]
    func(*args, **kwargs)
    best = math.inf
    for _ in range(reps):
        start = time.process_time()
        func(*args, **kwargs)
        best = min(best, time.process_time() - start)
    return best


def breakdown(args) -> None:
    """Where the time of a `fast_step` step goes, per kind of operation (see the module's docstring)."""
    peak = matmul_rate()
    for dim in args.dim:
        for batch in args.batch:
            steps = args.epochs * args.batches
            run(batch, dim, True, args, 1)  # warm-up
            step = min(run(batch, dim, True, args, 1 + args.epochs)[0] - run(batch, dim, True, args, 1)[0]
                       for _ in range(args.repeats)) / steps
            per_step = _cfg(batch, dim, True, args, 1).train.n_dis + 1  # Adam kernels
            seconds = collections.Counter({kind: math.inf for kind in KINDS.values()})
            for _ in range(args.repeats):  # the operations of epochs 2 to 1 + E of a run of 2 + E epochs
                with _OpTimes() as times:
                    run(batch, dim, True, args, 2 + args.epochs)
                timed = times.span(per_step * args.batches, per_step * steps)
                for kind in seconds:
                    seconds[kind] = min(seconds[kind], sum(s for k, *_, s in timed if k == kind) / steps)
            last = times.span(per_step * (args.batches + steps - 1), per_step)
            calls = collections.Counter(kind for kind, *_ in last)
            hot = collections.Counter()
            for kind, func, operands, _ in last:
                if kind != "other":
                    hot[kind] += _hot(func, operands)
            floor = count_flops(lambda: run(batch, dim, True, args, 1)) / args.batches / peak
            kernels = sum(seconds[k] for k in ("matmul", "Adam", "power iteration"))
            print(f"fast_step, {dim}-d features, batch {batch}: {1000 * step:.2f} ms per step, FLOP floor "
                  f"{1000 * floor:.2f} ms")
            for kind, name in (("matmul", "matmuls"), ("Adam", "Adam"), ("power iteration", "power iteration")):
                print(f"  {name:16s} {1000 * seconds[kind]:5.2f} ms  ({calls[kind]} per step; "
                      f"{1000 * hot[kind]:.2f} ms when each runs alone, in cache)")
            print(f"  the rest         {1000 * (step - kernels):5.2f} ms  ({calls['other']} other operations per "
                  f"step and the Python around them)")
            print(f"  these kernels, each alone in cache: {1000 * sum(hot.values()):.2f} ms per step")
            if args.compiled:
                compiled(batch, dim, args)


def compiled(batch: int, dim: int, args) -> None:
    """The core of one step (x' for D, n_dis D updates on the rows [real, x', buffered], the G update; rows and
    latents held fixed) eager as `train.fast_step` runs it, then with Adam written as tensor operations
    (`_adam_as_ops`: inductor cannot see into the fused kernel), eager and under torch.compile (inductor, its Python
    wrapper and its C++ wrapper). CPU ms per step, the least of 5 blocks of 20."""
    cfg = _cfg(batch, dim, True, args, 1)
    torch.manual_seed(0)
    G, D = build_networks(cfg.model)
    opts = [torch.optim.Adam(m.parameters(), lr=lr, betas=(cfg.train.beta1, cfg.train.beta2), fused=True)
            for m, lr in ((G, cfg.train.lr_g), (D, cfg.train.lr_d))]
    steps = FeatureSteps(G.train(), D.train(), *opts)
    gen = torch.Generator().manual_seed(1)
    x, x_buf = torch.randn(batch, dim, generator=gen), torch.randn(batch, dim, generator=gen)
    z_d, z_g = (torch.randn(batch, cfg.model.latent_dim, generator=gen) for _ in range(2))
    n_anom = batch // 4
    weights = _row_weights_on(torch.device("cpu"), (batch, batch - n_anom, n_anom, batch - n_anom, n_anom),
                              cfg.train.alpha, cfg.train.xi)
    bn_stats = "running" if cfg.train.fake_bn_stats == "separate" else cfg.train.fake_bn_stats

    def core():
        x_fake = steps.fakes(z_d, bn_stats)
        for _ in range(cfg.train.n_dis):
            steps.d_step(torch.cat([x, x_fake, x_buf]), *weights)
        return steps.g_step(z_g, cfg.train.generator_loss)

    def timed(fn) -> float:
        fn()
        best = math.inf
        for _ in range(5):
            start = time.process_time()
            for _ in range(20):
                fn()
            best = min(best, (time.process_time() - start) / 20)
        return 1000 * best

    figures = [f"eager {timed(core):.2f} ms"]  # its first step creates Adam's state
    steps._adam = _adam_as_ops(steps)
    figures.append(f"with Adam as tensor operations: eager {timed(core):.2f} ms")
    import torch._inductor.config as inductor
    for wrapper in ("Python", "C++"):
        torch._dynamo.reset()
        fn, start = torch.compile(core, dynamic=False), time.perf_counter()
        with inductor.patch(cpp_wrapper=wrapper == "C++"):
            fn()
        compile_s = time.perf_counter() - start
        figures.append(f"torch.compile, {wrapper} wrapper {timed(fn):.2f} ms (compiled in {compile_s:.0f} s)")
    print(f"  the step's core ({cfg.train.n_dis} D updates on {3 * batch} rows, the G update, x'): " + "; ".join(figures))


def _adam_as_ops(steps: FeatureSteps):
    """`FeatureSteps._adam` as torch's single-tensor Adam (`torch.optim.adam.adam`, foreach=False), tensor operations
    that torch.compile can fuse, on the optimiser's state with step counts of its own: the same update as the fused
    kernel up to rounding."""
    counts = {}

    def adam(opt, grads):
        params, group = steps._params[opt], opt.param_groups[0]
        states = [opt.state[p] for p in params]
        single_tensor_adam(params, grads, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
                           counts.setdefault(opt, [s["step"].clone() for s in states]), foreach=False,
                           amsgrad=False, beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
                           weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
    return adam


def auroc(args) -> None:
    """The fast-step runs of the run cache beside the default-step runs of the same set and seed."""
    runs: dict[tuple, dict] = {}
    for path in Path(args.runs).glob("*/metrics.json"):
        a = json.loads((path.parent / "config.json").read_text()).get("args", {})
        if not (path.parent / "done").exists() or a.get("method") != "algan" or a.get("profile") != args.profile \
                or a.get("task") not in ("tabular_run", "feature_run") or a.get("source", "adbench") != "adbench":
            continue
        mode = {"{}": "default", '{"train.fast_step": true}': "fast_step"}.get(json.dumps(a["overrides"], sort_keys=True))
        if mode:
            group = "tabular" if a["task"] == "tabular_run" else "adbench"
            runs.setdefault((group, a["category"], a["seed"]), {})[mode] = json.loads(path.read_text())
    pairs = {key: r for key, r in sorted(runs.items()) if len(r) == 2}
    print(f"ALGAN-feature at {args.profile}: test AUROC (validation-chosen checkpoint) of the default step and of "
          f"train.fast_step, same set and seed (run cache {args.runs}); {len(pairs)} pairs")
    for group in ("tabular", "adbench"):
        keys = [k for k in pairs if k[0] == group]
        if not keys:
            print(f"  {group}: no pairs")
            continue
        print(f"  {group}:")
        for category in sorted({k[1] for k in keys}):
            seeds = [k for k in keys if k[1] == category]
            a, b = ([pairs[k][m]["test_auroc"] for k in seeds] for m in ("default", "fast_step"))
            print(f"    {category:28s} default {np.mean(a):.3f}  fast_step {np.mean(b):.3f}  ({len(seeds)} seeds)")
        for metric in ("test_auroc", "test_auroc_last"):
            have = [k for k in keys if all(metric in pairs[k][m] for m in ("default", "fast_step"))]
            if not have:  # runs recorded before the last epoch's scores were
                print(f"  {group} {metric}: not recorded by the default step's runs")
                continue
            d = np.array([pairs[k]["fast_step"][metric] - pairs[k]["default"][metric] for k in have])
            se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else math.nan
            print(f"  {group} {metric}: fast_step minus default {d.mean():+.4f} (SE {se:.4f}, {abs(d.mean()) / se:.1f} SE; "
                  f"{len(d)} pairs); means {np.mean([pairs[k]['default'][metric] for k in have]):.3f} vs "
                  f"{np.mean([pairs[k]['fast_step'][metric] for k in have]):.3f}")
        secs = [np.median([pairs[k][m].get("fit_and_score_seconds", math.nan) for k in keys]) for m in ("default", "fast_step")]
        print(f"  {group} median seconds per run (fit and score, as recorded): default {secs[0]:.1f}, fast_step {secs[1]:.1f}")


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
    parser.add_argument("--breakdown", action="store_true", help="where a fast_step step's time goes")
    parser.add_argument("--repeats", type=int, default=3, help="with --breakdown: runs per figure (the least is kept)")
    parser.add_argument("--compiled", action="store_true", help="with --breakdown: the step's core under torch.compile")
    parser.add_argument("--auroc", action="store_true", help="compare the cached runs' AUROC instead of timing")
    parser.add_argument("--runs", default="results/runs")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    if args.auroc:
        return auroc(args)
    torch.set_num_threads(args.threads)
    if args.breakdown:
        return breakdown(args)
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
