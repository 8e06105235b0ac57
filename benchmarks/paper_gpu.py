"""One prepared accelerator run (issue 19): the `paper` profile of ALGAN-image on MVTec bottle and MTD under
both readings (literal, active), the "neither" ablation variant (no buffer, no anomalous latent) under the
active reading, and the raw-pixel kNN; 10 seeds each, seed 0 of everything first, then seed 1, ...

    algan pack --for paper-gpu PACK                                   # here: the data, 256 x 256
    benchmarks/paper_gpu.sh --data PACK --out OUT --budget-min 9      # there: one NVIDIA GPU
    benchmarks/paper_gpu.sh --data PACK --out OUT --dry-run           # CPU, `smoke` profile, 1 seed (CI)

Runs go through the run cache into OUT/runs (cached: a finished run is not redone), tidy CSVs into OUT:
paper_gpu_runs.csv (one row per run and metric), paper_gpu_summary.csv (test AUROC mean / std / count
per data set and variant) and paper_gpu_status.csv (done / checkpointed / todo per planned run). At the
budget the running GAN finishes its epoch, writes its training state (algan.resume) and stops; run the
same command again to continue it. Imports only torch, torchvision, pandas, scikit-learn (scipy),
numpy and pillow: tests/test_paper_gpu.py runs the dry run with every other package blocked.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

from algan import results, resume
from algan.config import reading_overrides
from algan.data import DataError
from algan.pack import check_pack
from algan.runs import image as RI

PACK = "paper-gpu"
DATA = (("mvtec", "bottle"), ("mtd", None))
NEITHER = {"train.use_buffer": False, "train.use_anomalous_latent": False}
# (variant, method, reading, overrides beyond the reading's), in the order each seed runs them
VARIANTS = (("knn", "knn", None, {}), ("algan active", "algan", "active", {}),
            ("algan literal", "algan", "literal", {}), ("neither active", "algan", "active", NEITHER))


def plan(seeds) -> list[dict]:
    """Every run, most informative first: seed 0 of every variant and data set, then seed 1, ..."""
    return [{"variant": v, "method": m, "reading": r, "dataset": d, "category": c, "seed": s,
             "overrides": {**(reading_overrides(r) if r else {}), **extra}}
            for s in seeds for v, m, r, extra in VARIANTS for d, c in DATA]


def folder_of(job: dict, profile: str, runs_dir: Path) -> Path:
    return results.run_dir(RI.image_run_args(job["method"], job["dataset"], job["category"], profile,
                                             job["seed"], job["overrides"]), runs_dir)


class Budget:
    """At the deadline, SIGINT to this process: a training loop (algan.resume) then checkpoints at the end of
    its epoch and raises KeyboardInterrupt; outside one, `over` is set and no further run starts."""

    def __init__(self, minutes):
        self.over = False
        self.timer = None
        signal.signal(signal.SIGINT, self._handler)
        if minutes is not None:
            self.timer = threading.Timer(max(0.0, minutes * 60), os.kill, (os.getpid(), signal.SIGINT))
            self.timer.daemon = True
            self.timer.start()

    def _handler(self, signum, frame):
        self.over = True
        print("budget reached (or interrupted): the running run completes, no other starts", flush=True)

    def cancel(self):
        if self.timer is not None:
            self.timer.cancel()


def count_syncs(data_root, device: str) -> str:
    """Host syncs while ALGAN trains a smoke-sized run on the device (torch.cuda.set_sync_debug_mode): a
    loop without per-step syncs makes a few per epoch, not one or more per step."""
    from algan.config import profile
    from algan.data import load_dataset
    from algan.detector import ALGAN

    splits = load_dataset("mvtec", data_root, category="bottle", image_size=32, seed=0)
    lines = []
    for reading in ("literal", "active"):
        cfg = profile("smoke", reading=reading, **{"train.epochs": 4, "train.eval_every": 100})
        det = ALGAN(cfg.override(**{"model.extra_channels": splits.extra_channels}), device=device, progress=False)
        det.fit(splits.train.x[:cfg.train.batch_size], augment=splits.augment)  # warm-up: cuDNN, allocator
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                det.fit(splits.train.x, augment=splits.augment)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        steps = cfg.train.epochs * (len(splits.train) // cfg.train.batch_size + 1) * cfg.train.n_dis
        lines.append(f"{reading} reading: {syncs} host syncs in ALGAN.fit ({cfg.train.epochs} epochs, about {steps} "
                     "D steps, with fit's final threshold scoring)")
    return "\n".join(lines)


def run_job(job: dict, profile: str, data_root, runs_dir: Path, device: str, checkpoint_every: int,
            deadline) -> dict:
    """One run, in this process or a worker's (--jobs > 1). At `deadline` (time.time(); None: none) the process
    sends itself SIGINT, as Budget does: a training loop checkpoints at the end of its epoch and stops; a run
    not yet started at the deadline is left for the next call."""
    if deadline is not None and time.time() >= deadline:
        return {"state": "not started"}
    timer = None
    try:
        if deadline is not None:
            timer = threading.Timer(max(0.0, deadline - time.time()), os.kill, (os.getpid(), signal.SIGINT))
            timer.daemon = True
            timer.start()
        t0, was_done = time.monotonic(), results.is_done(folder_of(job, profile, runs_dir))
        run = RI.run_image(job["method"], job["dataset"], category=job["category"], profile=profile,
                           seed=job["seed"], overrides=job["overrides"], data_root=data_root,
                           runs_dir=runs_dir, device=device, checkpoint_every=checkpoint_every)
        if timer is not None:
            timer.cancel()
        return {"state": "cached" if was_done else "done", "seconds": time.monotonic() - t0,
                "auroc": run["metrics"]["test_auroc"]}
    except KeyboardInterrupt:
        return {"state": "stopped"}


def label_of(i: int, jobs: list[dict]) -> str:
    job = jobs[i - 1]
    return f"[{i}/{len(jobs)}] seed {job['seed']} {job['category'] or job['dataset']} {job['variant']}"


def report(label: str, r: dict, start: float, budget_min) -> None:
    took = "cached" if r["state"] == "cached" else f"{r['seconds']:.1f} s"
    print(f"{label}: {took}, test AUROC {r['auroc']:.3f} | {(time.monotonic() - start) / 60:.1f} min"
          + (f" of {budget_min:g}" if budget_min is not None else ""), flush=True)


def run_parallel(jobs: list[dict], n: int, profile: str, args, runs_dir: Path, device: str, start: float) -> str | None:
    """The jobs on `n` worker processes sharing the device, in plan order; returns why it stopped, if it did."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    deadline = None if args.budget_min is None else time.time() + args.budget_min * 60
    stopped = []
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_job, job, profile, args.data, runs_dir, device, args.checkpoint_every, deadline)
                   for job in jobs]
        for i, future in enumerate(futures, 1):
            r = future.result()
            if r["state"] in ("stopped", "not started"):
                stopped.append(f"{label_of(i, jobs)} {r['state']}")
            else:
                report(label_of(i, jobs), r, start, args.budget_min)
    if stopped:
        return (f"stopped at the budget: {len(stopped)} runs unfinished (checkpointed ones resume on the next call), "
                f"first {stopped[0]}")
    return None


def tidy(jobs: list[dict], profile: str, runs_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of the finished runs (RI.tidy_rows + the variant) and every run's state."""
    rows, states = [], []
    for job in jobs:
        folder = folder_of(job, profile, runs_dir)
        state = ("done" if results.is_done(folder) else
                 "checkpointed" if (folder / resume.TRAINING_STATE).is_file() else "todo")
        states.append({k: job[k] for k in ("variant", "dataset", "category", "seed")} | {"state": state,
                                                                                        "run": folder.name})
        if state == "done":
            rows += [{"variant": job["variant"], **r} for r in RI.tidy_rows(results.load_run(folder))]
    return pd.DataFrame(rows), pd.DataFrame(states)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame(columns=["dataset", "category", "variant", "profile", "seeds", "mean", "std"])
    test = frame[frame["metric"] == "test_auroc"]
    return (test.groupby(["dataset", "category", "variant", "profile"], sort=False)["value"]
            .agg(seeds="count", mean="mean", std="std").reset_index())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("ALGAN_DATA"), help="the pack (algan pack --for paper-gpu; default: $ALGAN_DATA)")
    p.add_argument("--out", required=True, help="folder for the run folders (OUT/runs) and the CSVs")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)), help="default: 0 1 ... 9")
    p.add_argument("--budget-min", type=float, help="stop cleanly after this many minutes (default: no limit)")
    p.add_argument("--device", default="cuda", help="default: cuda (--dry-run: cpu)")
    p.add_argument("--checkpoint-every", type=int, default=64,
                   help="epochs between training-state writes (the budget's stop always writes one; default: 64)")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs at once, one process each, all on the one device (default: 1; a small GAN leaves "
                        "most of a GPU idle, so several runs share it)")
    p.add_argument("--dry-run", action="store_true", help="the same runs on CPU at the smoke profile, seed 0 only")
    args = p.parse_args(argv)
    profile, seeds, device = ("smoke", args.seeds[:1], "cpu") if args.dry_run else ("paper", args.seeds, args.device)
    if args.jobs < 1:
        print(f"paper_gpu: --jobs {args.jobs}: expected 1 or more", file=sys.stderr)
        return 2
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"paper_gpu: --device {device}: no CUDA GPU here; use --dry-run on a CPU", file=sys.stderr)
        return 2
    try:
        if not args.data:
            raise DataError("no pack given: pass --data PACK (made by: algan pack --for paper-gpu PACK)")
        manifest = check_pack(args.data, PACK)
    except DataError as err:
        print(f"paper_gpu: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    runs_dir = out / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan(seeds)
    print(f"paper_gpu: {len(jobs)} runs ({profile} profile, seeds {seeds[0]}..{seeds[-1]}) on "
          f"{results.device_name(device)}; data {args.data} ({manifest['pack']} pack, {manifest['image_size']} px); "
          f"runs in {runs_dir}", flush=True)
    if device.startswith("cuda"):
        results.write_text(out / "sync_check.txt", count_syncs(args.data, device) + "\n")
        print((out / "sync_check.txt").read_text(), end="", flush=True)
    budget, start = Budget(args.budget_min if args.jobs == 1 else None), time.monotonic()
    stopped = None
    try:
        for i, job in enumerate(jobs if args.jobs == 1 else [], 1):  # in this process, under `budget`
            if budget.over:
                stopped = f"stopped before {label_of(i, jobs)}"
                break
            r = run_job(job, profile, args.data, runs_dir, device, args.checkpoint_every, None)
            if r["state"] == "stopped":
                stopped = f"stopped in {label_of(i, jobs)}: its training state is saved, and the next call resumes it"
                break
            report(label_of(i, jobs), r, start, args.budget_min)
        if args.jobs > 1:
            stopped = run_parallel(jobs, args.jobs, profile, args, runs_dir, device, start)
    finally:
        budget.cancel()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        frame, states = tidy(jobs, profile, runs_dir)
        frame["data"] = f"{manifest['pack']} pack, {manifest['image_size']} px, JPEGs at quality {manifest['jpeg_quality']}"
        results.write_csv(out / "paper_gpu_runs.csv", frame)
        results.write_csv(out / "paper_gpu_summary.csv", summary(frame))
        results.write_csv(out / "paper_gpu_status.csv", states)
    counts = states["state"].value_counts().to_dict()
    print(f"paper_gpu: {stopped or 'all runs done'}; {counts}; CSVs in {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
