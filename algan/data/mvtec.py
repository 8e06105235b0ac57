"""MVTec-AD: the standard category layout, read for any of the 15 categories (and for a user's own folder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import DataError, Record, is_image, list_images, rel_posix, require_dir, subdirs
from .splits import VAL_TEST_HALVES, Splits, build_splits, stratified_assign
from .transforms import AUGMENTATIONS, GRAYSCALE

# Official counts (train good, test good, test defective), from the MVTec-AD paper / shared README.
MVTEC_COUNTS: dict[str, tuple[int, int, int]] = {
    "bottle": (209, 20, 63), "cable": (224, 58, 92), "capsule": (219, 23, 109), "carpet": (280, 28, 89),
    "grid": (264, 21, 57), "hazelnut": (391, 40, 70), "leather": (245, 32, 92), "metal_nut": (220, 22, 93),
    "pill": (267, 26, 141), "screw": (320, 41, 119), "tile": (230, 33, 84), "toothbrush": (60, 12, 30),
    "transistor": (213, 60, 40), "wood": (247, 19, 60), "zipper": (240, 32, 119),
}
MVTEC_CATEGORIES = tuple(MVTEC_COUNTS)
TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
MASK_SUFFIX = "_mask"


def _mask_index(gt_dir: Path, test_dir: Path) -> dict[Path, Path]:
    """Image file -> mask file for every mask under ground_truth/; a mask without its image is a DataError."""
    index: dict[Path, Path] = {}
    for cls_dir in subdirs(gt_dir):
        images = {p.stem: p for p in (test_dir / cls_dir.name).glob("*") if is_image(p)} if (test_dir / cls_dir.name).is_dir() else {}
        for mask in sorted(p for p in cls_dir.iterdir() if is_image(p)):
            stem = mask.stem[: -len(MASK_SUFFIX)] if mask.stem.endswith(MASK_SUFFIX) else None
            image = images.get(stem) if stem is not None else None
            if image is None:
                raise DataError(
                    f"{mask}: mask without its image, expected test/{cls_dir.name}/{stem or mask.stem}.png "
                    f"(masks are named <image>{MASK_SUFFIX}.png); restore the image or delete the mask"
                )
            index[image] = mask
    return index


def read_layout(cat_dir: Path, base: Path, require_masks: bool) -> tuple[list[Record], list[Record]]:
    """Train and test records of a folder in MVTec layout; paths relative to `base`; test/good is label 0."""
    fix = "a category folder holds train/good, test/good, test/<defect> and ground_truth/<defect>"
    train_dir = require_dir(cat_dir, "train/good", "normal training images", fix)
    test_dir = require_dir(cat_dir, "test", "test/good and test/<defect> class folders", fix)
    classes = subdirs(test_dir)
    if "good" not in [c.name for c in classes] or len(classes) < 2:
        raise DataError(
            f"{test_dir}: found classes {[c.name for c in classes]}, expected test/good and at least one "
            f"test/<defect> folder; add the missing class folders"
        )
    gt_dir = cat_dir / "ground_truth"
    if require_masks and not gt_dir.is_dir():
        raise DataError(f"{gt_dir}: folder not found, expected ground_truth/<defect>/*{MASK_SUFFIX}.png; restore the masks")
    masks = _mask_index(gt_dir, test_dir) if gt_dir.is_dir() else {}
    train = [Record(rel_posix(p, base), p, 0) for p in list_images(train_dir, "normal training")]
    test = []
    for cls in classes:
        label = 0 if cls.name == "good" else 1
        for p in list_images(cls, "normal test" if label == 0 else f"'{cls.name}' defect"):
            if label == 1 and p not in masks and require_masks:
                raise DataError(
                    f"{p}: defect image without mask, expected {gt_dir / cls.name / (p.stem + MASK_SUFFIX + '.png')}; "
                    f"restore the mask"
                )
            test.append(Record(rel_posix(p, base), p, label, masks.get(p)))
    return train, test


def split_layout(train: list[Record], test: list[Record], seed: int) -> dict[str, np.ndarray]:
    """Paper: train = train/good; the test set halved into val and test, stratified by label."""
    rng = np.random.default_rng(seed)
    labels = np.array([r.label for r in test])
    cut = stratified_assign(labels, {0: VAL_TEST_HALVES, 1: VAL_TEST_HALVES}, rng)
    return {"train": np.arange(len(train)), "val": cut["val"] + len(train), "test": cut["test"] + len(train)}


def load_mvtec(root: Path, category: str | None, image_size: int, seed: int) -> Splits:
    """MVTec-AD category under root/mvtec/<category>, split and pre-processed as in the paper."""
    if not category:
        raise DataError(f"{root / 'mvtec'}: no category given, expected one of {', '.join(MVTEC_CATEGORIES)}; pass --category")
    if category not in MVTEC_COUNTS:
        raise DataError(
            f"{root / 'mvtec' / category}: unknown MVTec-AD category '{category}', expected one of "
            f"{', '.join(MVTEC_CATEGORIES)}; for your own images in MVTec layout use the 'folder' data set"
        )
    present = [d.name for d in subdirs(root / "mvtec")] if (root / "mvtec").is_dir() else []
    fix = (f"found only {', '.join(present) or 'no categories'} in {root / 'mvtec'}; add the category there"
           if present or (root / "mvtec").is_dir() else "set the root to the folder that contains mvtec/<category>/")
    cat_dir = require_dir(root, f"mvtec/{category}", f"MVTec-AD category '{category}'", fix)
    train, test = read_layout(cat_dir, root, require_masks=True)
    records = train + test
    return build_splits(
        records, split_layout(train, test, seed), image_size=image_size,
        mode="L" if category in GRAYSCALE else "auto", with_masks=True,
        name="mvtec", category=category, seed=seed, extra_channels=True,
        augmentations=AUGMENTATIONS[category], root=root,
    )
