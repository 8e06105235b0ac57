"""Speed of every method, measured side by side in one process (Tables 5 and 6, Figure 6): a runs-level
measurement, one run of the run cache per profile and device (`timing_run`); the page is `algan.pages.speed`.

Per method: prediction ms per image at batch 1 and at a large batch (median of `reps` timed calls
after a warm-up, and the spread max - min), FLOPs and bytes moved per image, the roofline floor (the
larger of the FLOPs at the device's sustained throughput and the bytes at its memory bandwidth, both
measured in the same run) and the time as a multiple of it, peak memory while scoring the large batch,
and training seconds per epoch and per full run at the profile's epochs.

Speed does not depend on what the weights are, so the inputs are random tensors of the real shapes:
images at the profile's resolution for the image methods; for the feature methods the backbone's
224-px input, with the backbone's forward pass (and the profile's rotations) inside the prediction
time, and training sets of `n_train` samples (MVTec bottle's 209 by default). Full training runs are
projected from measured parts: epochs x seconds per epoch (+ validation passes), and for the feature
methods the extraction of the training set at the measured batched rate.
"""
from __future__ import annotations

import gc
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from . import results
from .config import profile as make_profile
from .detector import ALGAN
from .models import feature_baselines as fb
from .models.alocc import ALOCC
from .models.ganomaly import GANomaly
from .models.skip_ganomaly import SkipGANomaly

IMAGE_METHODS = {"algan": ALGAN, "ganomaly": GANomaly, "skip_ganomaly": SkipGANomaly, "alocc": ALOCC}
FEATURE_METHODS = ("algan_feature", "patchcore_25", "patchcore_10", "patchcore_1", "padim", "spade",
                   "mahalanobis", "differnet")
# Table 2's CutPaste: it fine-tunes the backbone on images, so it is timed on images at its own input size
# (algan.models.cutpaste.SETTINGS) and kept out of the paper's feature-method ratio (its Table 5 rows are lost).
IMAGE_TRAINED_METHODS = ("cutpaste",)
METHODS = tuple(IMAGE_METHODS) + FEATURE_METHODS + IMAGE_TRAINED_METHODS
LABELS = {"algan": "ALGAN-image", "ganomaly": "GANomaly", "skip_ganomaly": "Skip-GANomaly", "alocc": "ALOCC",
          "algan_feature": "ALGAN-feature", **fb.LABELS, "cutpaste": "CutPaste"}
BOTTLE_TRAIN, BOTTLE_VAL = 209, 41  # MVTec bottle's training / validation images in our split


# ---- measuring ------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call_times(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> list[float]:
    """Seconds of each of `reps` calls of `fn()` after `warmup` untimed calls (GPU work included)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def time_call(fn: Callable[[], object], device: torch.device, reps: int, warmup: int = 1) -> tuple[float, float]:
    """Median and spread (max - min) in seconds of `fn()` over `reps` calls after `warmup` calls."""
    times = call_times(fn, device, reps, warmup)
    return statistics.median(times), max(times) - min(times)


class _Global:
    """Stands in for FlopCounterMode's per-module tracker, whose backward hooks fail on parameters
    used under torch.inference_mode (as every scorer here is): all FLOPs go to one total."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def best_time(fn: Callable[[], object], device: torch.device, reps: int) -> float:
    """The fastest of `reps` calls after one warm-up: what the device sustains when nothing interferes."""
    return min(call_times(fn, device, reps))


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the torch operations inside `fn()` (matmuls and convolutions; a multiply-add is 2)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _Global()
    with counter:
        fn()
    return int(counter.get_total_flops())


class _ByteCounter(TorchDispatchMode):
    """Bytes every torch operation reads (its tensor inputs, weights included) and writes (its outputs),
    views left out: the memory traffic of a call if nothing stays in cache between operations, which is
    the roofline's assumption for layers whose activations exceed the caches."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            flat = torch.utils._pytree.tree_leaves((args, kwargs or {}, out))
            self.bytes += sum(t.numel() * t.element_size() for t in flat if isinstance(t, torch.Tensor))
        return out


def count_bytes(fn: Callable[[], object]) -> int:
    """Bytes moved by the torch operations inside `fn()` (`_ByteCounter`: inputs read, outputs written)."""
    with _ByteCounter() as counter:
        fn()
    return counter.bytes


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator statistics on a GPU, else the process's
    resident set sampled every millisecond (Linux /proc; NaN elsewhere). `.mib` after the block."""

    def __init__(self, device: torch.device):
        self.device, self.mib = device, math.nan

    @staticmethod
    def _rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        except (OSError, ValueError):
            return math.nan

    def __enter__(self) -> "PeakMemory":
        gc.collect()  # garbage of earlier work, freed inside the block, would hide what the block allocates
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2 ** 20
        else:
            self.base = self.peak = self._rss()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mib = torch.cuda.max_memory_allocated(self.device) / 2 ** 20 - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.mib = max(self.peak, self._rss()) - self.base


def device_throughput(device: torch.device, reps: int = 5) -> dict[str, float]:
    """Sustained fp32 GFLOP/s (best of `reps`) of a 2048^3 matmul and of a 3x3 convolution on this device,
    and its memory bandwidth in GB/s: a copy of 256 MiB (read + written), far beyond any cache."""
    a = torch.randn(2048, 2048, device=device)
    mm_s = best_time(lambda: a @ a, device, reps)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device).eval()
    x = torch.randn(32, 256, 32, 32, device=device)
    with torch.inference_mode():
        conv_s = best_time(lambda: conv(x), device, reps)
    conv_flops = 2 * 32 * 256 * 256 * 9 * 32 * 32
    src = torch.ones(2 ** 26, device=device)
    dst = torch.empty_like(src)
    copy_s = best_time(lambda: dst.copy_(src), device, reps)
    return {"matmul_gflops": 2 * 2048 ** 3 / mm_s / 1e9, "conv_gflops": conv_flops / conv_s / 1e9,
            "mem_gbs": 2 * 4 * 2 ** 26 / copy_s / 1e9}


def roofline_ms(flops: float, nbytes: float, throughput: dict) -> float:
    """The roofline floor in ms: the larger of `flops` at the device's best GFLOP/s and `nbytes` at its
    memory bandwidth (GB/s), both from `device_throughput`."""
    peak = max(throughput["matmul_gflops"], throughput["conv_gflops"]) * 1e9
    return 1000 * max(flops / peak, nbytes / (throughput["mem_gbs"] * 1e9))


# ---- the methods: a scorer on a batch of inputs, and a training measurement ----------------------
@dataclass
class Timed:
    """What the harness needs of one method."""

    label: str
    inputs: Callable[[int], torch.Tensor]      # a batch of random inputs
    predict: Callable[[torch.Tensor], object]  # the full prediction (extraction included)
    train: Callable[[], dict]                  # {"train_s_per_epoch", "train_s_full"}
    extra_flops: Callable[[], int] = lambda: 0  # per image, for work torch does not see (faiss, numpy)
    extra_bytes: Callable[[], int] = lambda: 0  # per call, the same work's reads (a memory bank, a matrix)
    counted: Optional[Callable[[torch.Tensor], object]] = None  # `predict` in PyTorch ops, if it runs elsewhere
    note: str = ""


def _image_method(name: str, profile: str, n_train: int, n_val: int, device: torch.device) -> Timed:
    cfg = make_profile(profile)
    size, cls = cfg.model.image_size, IMAGE_METHODS[name]

    def inputs(batch: int) -> torch.Tensor:
        return torch.rand(batch, 3, size, size, device=device) * 2 - 1

    det = cls.initialised(cfg, image_channels=3, device=str(device))

    def train() -> dict:
        x = inputs(n_train).cpu()
        fitted = cls(cfg.override(**{"train.epochs": 2}), seed=0, device=str(device), progress=False)
        fitted.fit(x)
        per_epoch = float(fitted.history_["seconds"].iloc[-1])  # epoch 2: warm (and ALGAN's buffer in use)
        val_s = n_val * _batched_seconds(det.decision_function, inputs(n_val), device)
        n_evals = math.ceil(cfg.train.epochs / cfg.train.eval_every)
        return {"train_s_per_epoch": per_epoch, "train_s_full": per_epoch * cfg.train.epochs + n_evals * val_s}

    return Timed(LABELS[name], inputs, lambda x: det.decision_function(x, batch_size=len(x)), train,
                 note=f"{size}x{size} image, widths {cfg.model.g_width}/{cfg.model.d_width}")


def _batched_seconds(fn: Callable, x: torch.Tensor, device: torch.device) -> float:
    """Seconds per sample of `fn(x)` (one warm call)."""
    fn(x)
    sync(device)
    t0 = time.perf_counter()
    fn(x)
    sync(device)
    return (time.perf_counter() - t0) / len(x)


def _feature_method(name: str, profile: str, n_train: int, n_val: int, device: torch.device) -> Timed:
    from .extract import default_engine, load_backbone, load_extractor, rotate_batch, rotation_angles
    from .runs.feature import PATCH_METHODS, settings

    s = settings(profile)
    engine = default_engine(device)
    backbone, torch_backbone = load_extractor(s["backbone"], device=device), load_backbone(s["backbone"]).to(device)
    train_rot, pred_rot = s["rotations"]
    patches = name in PATCH_METHODS
    rng = np.random.default_rng(0)

    def inputs(batch: int) -> torch.Tensor:
        return torch.rand(batch, 3, 224, 224, device=device) * 2 - 1

    def extract(x: torch.Tensor, n_rot: int, model=backbone) -> np.ndarray:
        if patches:
            return model.maps(x).float().cpu().numpy()
        return torch.stack([model.pooled(rotate_batch(x, a)) for a in rotation_angles(n_rot)], 1).cpu().numpy()

    sample = extract(inputs(1), 1)
    shape = sample.shape[1:]  # (C, 14, 14) maps or (1, D) pooled
    train_x = rng.standard_normal((n_train, *shape) if patches else (n_train, train_rot, shape[-1])).astype(np.float32)

    if name == "algan_feature":
        cfg = make_profile(profile, kind="feature")
        det = ALGAN(cfg.override(**{"train.epochs": 2}), seed=0, device=str(device), progress=False).fit(train_x)
        score = det.decision_function
        epochs = cfg.train.epochs
    else:
        kwargs = {"epochs": 2} if name == "differnet" else {}
        det = fb.FEATURE_BASELINES[name](seed=0, **kwargs)
        epochs = s["differnet_epochs"] if name == "differnet" else None
        fit_start = time.perf_counter()
        (det.fit(train_x) if patches else fb.fit_rotations(det, train_x))
        fit_seconds = time.perf_counter() - fit_start
        score = det.decision_function if patches else partial(fb.score_rotations, det)

    def predict(x: torch.Tensor):
        return score(extract(x, pred_rot))

    def counted(x: torch.Tensor):  # the same work in PyTorch, whose operations the counters see
        return score(extract(x, pred_rot, torch_backbone))

    def train() -> dict:
        extract_s = n_train * train_rot * _batched_seconds(lambda v: extract(v, 1), inputs(16), device)
        if name == "algan_feature":
            per_epoch = float(det.history_["seconds"].iloc[-1])
            val_s = n_val * _batched_seconds(predict, inputs(16), device)
            fit_s = per_epoch * epochs + math.ceil(epochs / cfg.train.eval_every) * val_s
        elif name == "differnet":
            start = time.perf_counter()
            fb.fit_rotations(fb.DifferNet(seed=0, epochs=2), train_x)
            per_epoch = (time.perf_counter() - start) / 2
            fit_s = per_epoch * epochs
        else:
            per_epoch, fit_s = math.nan, fit_seconds
        return {"train_s_per_epoch": per_epoch, "train_s_full": extract_s + fit_s}

    def extra_flops() -> int:  # per image, the distance computations faiss / numpy do (PatchCore's: torch, counted)
        if name == "spade":
            return 2 * det.index_.ntotal * shape[-1] * pred_rot
        if name == "mahalanobis":
            return 2 * shape[-1] ** 2 * pred_rot
        if name == "padim":
            return 2 * len(det.channels_) ** 2 * shape[1] * shape[2]
        return 0

    def extra_bytes() -> int:  # per call: the memory bank or matrix those computations read (fp32)
        if name == "spade":
            return 4 * det.index_.ntotal * shape[-1]
        if name == "mahalanobis":
            return 4 * shape[-1] ** 2
        if name == "padim":
            return 4 * len(det.channels_) ** 2 * shape[1] * shape[2]
        return 0

    what = f"{s['backbone']} 224 px ({engine}), " + ("patch maps" if patches else f"{pred_rot} rotations")
    return Timed(LABELS[name], inputs, predict, train, extra_flops, extra_bytes, counted, note=what)


def _cutpaste_method(name: str, profile: str, n_train: int, n_val: int, device: torch.device) -> Timed:
    from .models.cutpaste import CutPaste, settings

    s = settings(profile)
    size = s["image_size"]

    def inputs(batch: int) -> torch.Tensor:
        return torch.rand(batch, 3, size, size, device=device) * 2 - 1

    det = CutPaste(profile, seed=0, device=str(device), steps=2).fit(inputs(n_train).cpu())

    def train() -> dict:
        per_step = float(det.history[-1]["seconds"])  # step 2; a step unfreezes the backbone after freeze_steps
        frozen = CutPaste(profile, seed=0, device=str(device), steps=2, freeze_steps=2).fit(inputs(n_train).cpu())
        per_frozen = float(frozen.history[-1]["seconds"])
        embed_s = n_train * _batched_seconds(det.embed, inputs(min(n_train, 64)), device)  # the Gaussian's fit
        warm = min(s["freeze_steps"], s["steps"])
        return {"train_s_per_epoch": per_step,
                "train_s_full": warm * per_frozen + (s["steps"] - warm) * per_step + embed_s}

    return Timed(LABELS[name], inputs, det.decision_function, train,
                 lambda: 2 * det.embedding_dim_ ** 2,  # the Mahalanobis distance (numpy) ...
                 lambda: 4 * det.embedding_dim_ ** 2,  # ... reads the precision matrix
                 note=f"{det.settings['backbone']} {size} px, fine-tuned {s['steps']} steps ('s / epoch': s / step)")


def build(name: str, profile: str, n_train: int = BOTTLE_TRAIN, n_val: int = BOTTLE_VAL,
          device: str | torch.device = "cpu") -> Timed:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}: expected one of {METHODS}")
    maker = (_image_method if name in IMAGE_METHODS else
             _cutpaste_method if name in IMAGE_TRAINED_METHODS else _feature_method)
    return maker(name, profile, n_train, n_val, torch.device(device))


# ---- the table ------------------------------------------------------------------------------
def measure(name: str, profile: str, *, batch: int = 64, reps: int = 5, n_train: int = BOTTLE_TRAIN,
            n_val: int = BOTTLE_VAL, device: str | torch.device = "cpu", throughput: Optional[dict] = None,
            train: bool = True) -> dict:
    """One row: prediction ms per image at batch 1 and `batch`, FLOPs, bytes moved, the roofline floor at
    each batch size (`roofline_ms`), memory, training time."""
    device = torch.device(device)
    m = build(name, profile, n_train, n_val, device)
    throughput = throughput or device_throughput(device)
    one, big = m.inputs(1), m.inputs(batch)
    b1, b1_spread = time_call(lambda: m.predict(one), device, reps)
    bb, bb_spread = time_call(lambda: m.predict(big), device, reps)
    with PeakMemory(device) as mem:
        m.predict(big)
    work = m.counted or m.predict
    flops = count_flops(lambda: work(one)) + m.extra_flops()
    bytes_b1 = count_bytes(lambda: work(one)) + m.extra_bytes()
    bytes_big = (count_bytes(lambda: work(big)) + m.extra_bytes()) / batch  # weights shared by the batch
    floor_b1, floor_ms = roofline_ms(flops, bytes_b1, throughput), roofline_ms(flops, bytes_big, throughput)
    row = {"method": name, "label": m.label, "input": m.note, "batch": batch,
           "predict_ms_b1": 1000 * b1, "predict_ms_b1_spread": 1000 * b1_spread,
           "predict_ms": 1000 * bb / batch, "predict_ms_spread": 1000 * bb_spread / batch,
           "gflops_per_image": flops / 1e9, "mb_per_image_b1": bytes_b1 / 1e6, "mb_per_image": bytes_big / 1e6,
           "floor_ms_b1": floor_b1, "floor_ms": floor_ms,
           "x_floor_b1": 1000 * b1 / floor_b1 if floor_b1 > 0 else math.nan,
           "x_floor": 1000 * bb / batch / floor_ms if floor_ms > 0 else math.nan,
           "peak_mem_mib": mem.mib}
    if train:
        row.update(m.train())
    return row


def timing_table(profile: str = "smoke", *, methods=METHODS, batch: int = 64, reps: int = 5,
                 n_train: int = BOTTLE_TRAIN, n_val: int = BOTTLE_VAL, device: Optional[str] = None,
                 train: bool = True, progress: bool = False) -> pd.DataFrame:
    """A row per method, all measured in this process on one device; provenance in every row."""
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: expected some of {METHODS}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    throughput = device_throughput(device)
    rows = []
    for name in methods:
        if progress:
            print(f"timing {name} ...", flush=True)
        rows.append(measure(name, profile, batch=batch, reps=reps, n_train=n_train, n_val=n_val,
                            device=device, throughput=throughput, train=train))
    prov = results.provenance(device)
    frame = pd.DataFrame(rows)
    ref = frame.loc[frame["method"] == "algan", "predict_ms_b1"]
    frame["x_algan_image"] = frame["predict_ms_b1"] / ref.iloc[0] if len(ref) else math.nan
    ref = frame.loc[frame["method"] == "algan_feature", "predict_ms_b1"]
    frame["x_algan_feature"] = frame["predict_ms_b1"] / ref.iloc[0] if len(ref) else math.nan
    return frame.assign(profile=profile, device=prov["device"], torch=prov["torch"], commit=prov["commit"],
                        matmul_gflops=throughput["matmul_gflops"], conv_gflops=throughput["conv_gflops"],
                        mem_gbs=throughput["mem_gbs"],
                        measured_utc=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"))


# ---- the pages (Tables 5 and 6, Figure 6) --------------------------------------------------------
SMOKE_TRAIN, SMOKE_VAL = 32, 8  # the smoke profile only checks that the page runs


def timing_run(profile: str = "smoke", *, batch: int = 64, reps: int = 5, device: Optional[str] = None,
               runs_dir=None, methods=METHODS) -> pd.DataFrame:
    """`timing_table` once per (profile, device, batch, reps, methods), kept in the run cache. Training
    sets have bottle's sizes, except at `smoke` (32 / 8 samples)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    n_train, n_val = (SMOKE_TRAIN, SMOKE_VAL) if profile == "smoke" else (BOTTLE_TRAIN, BOTTLE_VAL)
    args = {"task": "timing", "profile": profile, "device": results.device_name(device), "batch": batch,
            "reps": reps, "methods": list(methods), "n_train": n_train, "n_val": n_val, "floor": "roofline"}

    def execute(folder) -> dict:
        frame = timing_table(profile, methods=methods, batch=batch, reps=reps, n_train=n_train, n_val=n_val,
                             device=device)
        results.write_csv(folder / "timing.csv", frame)
        return {"methods": len(frame)}

    # the machine as it is (its thread count is in `args`), not pinned to the runs' thread count
    run = results.cached_run(args, execute, runs_dir, device=device, pin_threads=False)
    return pd.read_csv(run["folder"] / "timing.csv").assign(run=run["folder"].name)
