"""Seeded train/val/test splits (Section IV-B-4) and the containers that carry them."""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .common import DataError, Record
from .decode import Decoder, stack, stack_unit
from .transforms import add_extra_channels, augment

SPLIT_NAMES = ("train", "val", "test")
Plan = Sequence[tuple[str, float]]
# The paper's fractions per label. MVTec-AD's fixed train set is handled by its loader.
NORMAL_HALF_QUARTERS: Plan = (("train", 0.5), ("val", 0.25), ("test", 0.25))  # MTD normals
NORMAL_60_20_20: Plan = (("train", 0.6), ("val", 0.2), ("test", 0.2))  # COIL-100 and feature normals
VAL_TEST_HALVES: Plan = (("val", 0.5), ("test", 0.5))  # anomalies everywhere; MVTec-AD's test set


def fraction_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Floor of n * f for all but the last part, which takes the rest (so 63 -> 31/32 for halves)."""
    counts = [math.floor(n * f + 1e-9) for f in fractions[:-1]]
    return counts + [n - sum(counts)]


def stratified_assign(labels: np.ndarray, plans: dict[int, Plan], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Indices per split: each label's items are permuted by `rng` (labels in ascending order) and cut by its plan."""
    labels = np.asarray(labels)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    for label in sorted(plans):
        idx = np.flatnonzero(labels == label)
        idx = idx[rng.permutation(len(idx))]
        plan = plans[label]
        start = 0
        for (name, _), count in zip(plan, fraction_counts(len(idx), [f for _, f in plan])):
            parts[name].append(idx[start:start + count])
            start += count
    # Sorted within a split, so file lists read in path order.
    return {name: np.sort(np.concatenate(p)) if p else np.zeros(0, dtype=np.int64) for name, p in parts.items()}


def hash_lists(file_lists: dict, labels: dict) -> str:
    """First 16 hex chars of sha256 over the sorted-key JSON of file lists and labels."""
    blob = json.dumps({"files": file_lists, "labels": labels}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sizes(splits: dict) -> dict:
    """Counts per split and label."""
    return {
        name: {"total": int(len(s.y)), "normal": int((s.y == 0).sum()), "anomalous": int((s.y == 1).sum())}
        for name, s in splits.items()
    }


MIN_NORMAL, MIN_ANOMALOUS = 2, 1  # per validation and test split (an AUROC needs both labels)


def require_evaluable(data, where: str) -> None:
    """Before training: the validation and test splits of `data` (Splits or FeatureSplits) each hold at
    least MIN_NORMAL normal and MIN_ANOMALOUS anomalous samples, else model selection, the threshold or
    the test AUROC would fail (or be NaN) after the training; a DataError naming `where` otherwise."""
    for name, size in _sizes({"val": data.val, "test": data.test}).items():
        if size["normal"] < MIN_NORMAL or size["anomalous"] < MIN_ANOMALOUS:
            raise DataError(f"{where}: the {name} split has {size['normal']} normal and {size['anomalous']} "
                            f"anomalous samples, expected at least {MIN_NORMAL} normal and {MIN_ANOMALOUS} "
                            "anomalous in validation and test each; add test images (or rows)")


@dataclass
class ImageSplit:
    """One split: images in [-1, 1] (N, C, H, W), labels (1 = anomalous), relative paths and optional masks."""

    x: torch.Tensor
    y: torch.Tensor
    paths: list[str]
    masks: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class Splits:
    """An image data set split by the paper's rules, with its augmentation and input preparation."""

    name: str
    category: str
    image_size: int
    seed: int
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    channels: int
    extra_channels: bool
    augmentations: tuple[str, ...]
    root: Path | None = None
    info: dict = field(default_factory=dict)

    @property
    def input_channels(self) -> int:
        """Channels the model sees: base channels, plus max and mean channels for ALGAN-image on MVTec-AD."""
        return self.channels + (2 if self.extra_channels else 0)

    def augment(self, x: torch.Tensor, generator: torch.Generator, fill: str = "black") -> torch.Tensor:
        """Batch augmentation of base-channel images, by this category's row of AUGMENTATIONS; `fill`
        is what rotation puts in the corners it uncovers (train.rotate_fill)."""
        return augment(x, self.augmentations, generator, fill)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Model input from base-channel images: adds the extra channels where this data set uses them."""
        return add_extra_channels(x) if self.extra_channels else x

    def _parts(self) -> dict[str, ImageSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def file_lists(self) -> dict[str, list[str]]:
        """The exact files of each split, to save with a run's results."""
        return {name: list(s.paths) for name, s in self._parts().items()}

    def split_hash(self) -> str:
        """A short fingerprint of the file lists and labels; equal hashes mean equal splits."""
        return hash_lists(self.file_lists(), {n: s.y.tolist() for n, s in self._parts().items()})

    def describe(self) -> dict:
        """JSON-ready summary: data set, seed, sizes per split and label, channels and augmentation."""
        return {
            "name": self.name,
            "category": self.category,
            "image_size": self.image_size,
            "seed": self.seed,
            "channels": self.channels,
            "input_channels": self.input_channels,
            "extra_channels": self.extra_channels,
            "augmentations": list(self.augmentations),
            "sizes": _sizes(self._parts()),
            "split_hash": self.split_hash(),
            **self.info,
        }


def build_splits(records: list[Record], assignment: dict[str, np.ndarray], *, image_size: int, mode: str,
                 with_masks: bool, **meta) -> Splits:
    """Decode the records once, cut them by `assignment`, and wrap them in Splits (`meta` fills the other fields)."""
    decoder = Decoder()
    images = decoder.decode([r.path for r in records], image_size, mode)
    channels = 1 if all(t.shape[0] == 1 for t in images) else 3
    masks = None
    if with_masks:
        mask_records = [i for i, r in enumerate(records) if r.mask is not None]
        decoded = decoder.decode([records[i].mask for i in mask_records], image_size, kind="mask")  # type: ignore[misc]
        blank = np.zeros((1, image_size, image_size), dtype=np.uint8)
        masks = [blank] * len(records)
        for i, m in zip(mask_records, decoded):
            masks[i] = m
    parts = {}
    for name in SPLIT_NAMES:
        idx = [int(i) for i in assignment[name]]
        parts[name] = ImageSplit(
            x=stack_unit([images[i] for i in idx], channels, image_size),
            y=torch.tensor([records[i].label for i in idx], dtype=torch.int64),
            paths=[records[i].rel for i in idx],
            masks=stack([masks[i] for i in idx], 1, image_size) if masks is not None else None,
        )
    decoder.commit()  # only now: a load that failed above leaves the cache as it was
    return Splits(image_size=image_size, channels=channels, **parts, **meta)
