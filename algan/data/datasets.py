"""The one entry point for image data sets: load_dataset(name, root, ...)."""
from __future__ import annotations

import os

from .coil100 import load_coil100
from .common import DataError, resolve_root
from .folder import load_folder
from .mtd import load_mtd
from .mvtec import load_mvtec
from .splits import Splits

DATASETS = ("mvtec", "mtd", "coil100", "folder")


def load_dataset(name: str, root: str | os.PathLike | None = None, *, category: str | None = None,
                 image_size: int = 64, seed: int = 0) -> Splits:
    """Load, split (seeded) and resize an image data set; root defaults to $ALGAN_DATA (for 'folder': the category folder)."""
    if name not in DATASETS:
        raise DataError(f"unknown data set '{name}', expected one of {', '.join(DATASETS)}; pick one of them")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
        raise DataError(f"image_size={image_size!r}, expected an integer >= 4 (the paper uses 256); fix the setting")
    path = resolve_root(root)
    seed = int(seed)
    if name == "mvtec":
        return load_mvtec(path, category, image_size, seed)
    if name == "folder":
        return load_folder(path, category, image_size, seed)
    if category not in (None, name):
        raise DataError(f"{path}: data set '{name}' has no categories, got category '{category}'; drop --category")
    if name == "mtd":
        return load_mtd(path, image_size, seed)
    return load_coil100(path, image_size, seed)
