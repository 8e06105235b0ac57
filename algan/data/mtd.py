"""Magnetic Tile Defects: grayscale JPEGs of varying size with PNG masks beside them."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import DataError, Record, rel_posix, require_dir, subdirs
from .splits import NORMAL_HALF_QUARTERS, VAL_TEST_HALVES, Splits, build_splits, stratified_assign
from .transforms import AUGMENTATIONS

NORMAL_TYPE = "MT_Free"
# Official counts per folder (Huang et al. 2020).
MTD_COUNTS = {"MT_Free": 952, "MT_Blowhole": 115, "MT_Break": 85, "MT_Crack": 57, "MT_Fray": 32, "MT_Uneven": 103}


def pair_files(imgs_dir: Path) -> list[tuple[Path, Path]]:
    """(image .jpg, mask .png) pairs of one MT_*/Imgs folder, sorted; unpaired files are a DataError."""
    jpgs = {p.stem: p for p in imgs_dir.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg")}
    pngs = {p.stem: p for p in imgs_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
    if not jpgs:
        raise DataError(f"{imgs_dir}: empty class folder, expected *.jpg images with *.png masks; restore the images")
    for stem in sorted(set(pngs) - set(jpgs)):
        raise DataError(f"{pngs[stem]}: mask without its image, expected {imgs_dir / (stem + '.jpg')}; restore the image or delete the mask")
    for stem in sorted(set(jpgs) - set(pngs)):
        raise DataError(f"{jpgs[stem]}: image without its mask, expected {imgs_dir / (stem + '.png')}; restore the mask")
    return [(jpgs[s], pngs[s]) for s in sorted(jpgs)]


def read_mtd(root: Path) -> list[Record]:
    """All MTD records (MT_Free label 0, defect types label 1) with masks, sorted by relative path."""
    mtd_dir = require_dir(root, "mtd", "the MTD folder with MT_Free/ and MT_<defect>/",
                          "set the root to the folder that contains mtd/")
    types = [d for d in subdirs(mtd_dir) if d.name.startswith("MT_")]
    names = [d.name for d in types]
    if NORMAL_TYPE not in names or len(types) < 2:
        raise DataError(
            f"{mtd_dir}: found {names}, expected {NORMAL_TYPE}/ and at least one MT_<defect>/ folder "
            f"({', '.join(MTD_COUNTS)}); restore the missing folders"
        )
    records = []
    for d in types:
        imgs = require_dir(d, "Imgs", "the Imgs/ folder of images and masks", "restore the MTD layout MT_*/Imgs/")
        label = 0 if d.name == NORMAL_TYPE else 1
        records += [Record(rel_posix(img, root), img, label, mask) for img, mask in pair_files(imgs)]
    return sorted(records, key=lambda r: r.rel)


def load_mtd(root: Path, image_size: int, seed: int) -> Splits:
    """MTD split as in the paper: normals 50/25/25 train/val/test, defectives 50/50 val/test."""
    records = read_mtd(root)
    labels = np.array([r.label for r in records])
    assignment = stratified_assign(labels, {0: NORMAL_HALF_QUARTERS, 1: VAL_TEST_HALVES}, np.random.default_rng(seed))
    return build_splits(
        records, assignment, image_size=image_size, mode="L", with_masks=True,
        name="mtd", category="mtd", seed=seed, extra_channels=False,
        augmentations=AUGMENTATIONS["mtd"], root=root,
    )
