"""COIL-100: 100 objects x 72 poses, flat folder of obj{k}__{angle}.png; 10 seeded objects are normal."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .common import DataError, Record, rel_posix, require_dir
from .splits import NORMAL_60_20_20, VAL_TEST_HALVES, Splits, build_splits, stratified_assign
from .transforms import AUGMENTATIONS

FILE_RE = re.compile(r"^obj(\d+)__(\d+)\.png$")
N_NORMAL_OBJECTS = 10
N_OBJECTS, N_POSES = 100, 72


def read_coil(root: Path) -> list[tuple[int, int, Path]]:
    """(object, angle, file) for every obj{k}__{angle}.png, sorted numerically by object then angle."""
    folder = require_dir(root, "coil-100", "the COIL-100 folder of obj{k}__{angle}.png files",
                         "set the root to the folder that contains coil-100/")
    found = []
    for p in folder.iterdir():
        m = FILE_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(1)), int(m.group(2)), p))
    if not found:
        raise DataError(f"{folder}: no obj{{k}}__{{angle}}.png files, expected the 7,200 COIL-100 images; restore them")
    return sorted(found, key=lambda t: (t[0], t[1]))


def load_coil100(root: Path, image_size: int, seed: int) -> Splits:
    """COIL-100 split as in the paper: 10 seeded normal objects 60/20/20, the other objects 50/50 val/test."""
    found = read_coil(root)
    objects = sorted({obj for obj, _, _ in found})
    if len(objects) <= N_NORMAL_OBJECTS:
        raise DataError(
            f"{root / 'coil-100'}: only {len(objects)} objects, expected more than {N_NORMAL_OBJECTS} "
            f"(COIL-100 has {N_OBJECTS}); restore the missing obj{{k}}__{{angle}}.png files"
        )
    rng = np.random.default_rng(seed)
    normal = sorted(int(o) for o in rng.choice(objects, N_NORMAL_OBJECTS, replace=False))
    normal_set = set(normal)
    records = [Record(rel_posix(p, root), p, 0 if obj in normal_set else 1) for obj, _, p in found]
    labels = np.array([r.label for r in records])
    assignment = stratified_assign(labels, {0: NORMAL_60_20_20, 1: VAL_TEST_HALVES}, rng)
    return build_splits(
        records, assignment, image_size=image_size, mode="RGB", with_masks=False,
        name="coil100", category="coil100", seed=seed, extra_channels=False,
        augmentations=AUGMENTATIONS["coil100"], root=root, info={"normal_objects": normal},
    )
