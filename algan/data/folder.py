"""A user's own images in MVTec layout (train/good, test/good, test/<defect>, optional ground_truth/)."""
from __future__ import annotations

from pathlib import Path

from .common import DataError, require_dir
from .mvtec import MVTEC_CATEGORIES, read_layout, split_layout
from .splits import Splits, build_splits
from .transforms import AUGMENTATIONS, GRAYSCALE


def load_folder(folder: Path, category: str | None, image_size: int, seed: int) -> Splits:
    """A category folder in MVTec layout, split like MVTec-AD; paths are relative to the folder."""
    require_dir(folder, "train/good", "a category folder in MVTec layout (train/good, test/good, test/<defect>)",
                "point the root at the folder that holds train/ and test/")
    category = category or folder.name
    if not category:
        raise DataError(f"{folder}: cannot name the category from the folder; pass --category")
    train, test = read_layout(folder, folder, require_masks=False)
    # Masks are optional here; when ground_truth/ exists every defect image without a mask gets a blank one.
    with_masks = (folder / "ground_truth").is_dir()
    known = category in MVTEC_CATEGORIES
    return build_splits(
        train + test, split_layout(train, test, seed), image_size=image_size,
        mode="L" if category in GRAYSCALE else "auto", with_masks=with_masks,
        name="folder", category=category, seed=seed, extra_channels=True,
        augmentations=AUGMENTATIONS[category] if known else AUGMENTATIONS["folder"], root=folder,
    )
