"""The one entry point for image data sets: load_dataset(name, root, ...)."""
from __future__ import annotations

import os

from .coil100 import load_coil100
from .common import DataError, resolve_root
from .folder import FOLDER_AUGMENT, folder_augmentations, load_folder
from .mtd import load_mtd
from .mvtec import load_mvtec
from .splits import Splits

DATASETS = ("mvtec", "mtd", "coil100", "folder")


def load_dataset(name: str, root: str | os.PathLike | None = None, *, category: str | None = None,
                 image_size: int = 64, seed: int = 0, augment: str | None = None) -> Splits:
    """Load, split (seeded) and resize an image data set; root defaults to $ALGAN_DATA (for 'folder': the category
    folder). `augment` is for 'folder' only: flip (the default), none or mvtec:<category> (folder_augmentations);
    the other data sets train with the paper's augmentation of their category."""
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}', expected one of {', '.join(DATASETS)}; pick one of them")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise DataError(f"image_size={image_size!r}, expected an integer >= 4 (the paper uses 256); fix the setting")
    if augment is not None and name != "folder":
        raise DataError(f"augment={augment!r}: only a 'folder' data set takes an augmentation; '{name}' trains with "
                        "the paper's augmentation of its category; drop it")
    if augment is not None:
        folder_augmentations(augment)  # a bad value stops here, before the root is looked at
    path = resolve_root(root)
    seed = int(seed)
    if name == "mvtec":
        return load_mvtec(path, category, image_size, seed)
    if name == "folder":
        return load_folder(path, category, image_size, seed, FOLDER_AUGMENT if augment is None else augment)
    if category not in (None, name):
        raise DataError(f"{path}: data set '{name}' has no categories, got category '{category}'; drop --category")
    if name == "mtd":
        return load_mtd(path, image_size, seed)
    return load_coil100(path, image_size, seed)
