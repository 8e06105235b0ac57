"""A user's own images in MVTec layout (train/good, test/good, test/<defect>, optional ground_truth/)."""
from __future__ import annotations

from pathlib import Path

from .common import DataError, require_dir
from .mvtec import MVTEC_CATEGORIES, read_layout, split_layout
from .splits import Splits, build_splits
from .transforms import AUGMENTATIONS

FOLDER_AUGMENT = "flip"  # the default: a random horizontal flip
AUGMENT_CHOICES = "flip, none or mvtec:<category>"


def folder_augmentations(spec: str, what: str = "augment") -> tuple[str, ...]:
    """The augmentation ops a folder trains with, named explicitly (never by the folder's name): 'flip' (a
    random horizontal flip), 'none', or 'mvtec:<category>' (that MVTec-AD category's row of the paper's
    table, AUGMENTATIONS). Anything else is a DataError of one line naming `what` and the allowed values."""
    spec = str(spec)
    if spec == "flip":
        return AUGMENTATIONS["folder"]
    if spec == "none":
        return ()
    kind, sep, category = spec.partition(":")
    if kind == "mvtec" and sep and category in MVTEC_CATEGORIES:
        return AUGMENTATIONS[category]
    problem = (f"unknown MVTec-AD category {category!r}" if kind == "mvtec" and sep
               else "unknown augmentation")
    raise DataError(f"{what} {spec!r}: {problem}; expected {AUGMENT_CHOICES}, the category one of "
                    f"{', '.join(MVTEC_CATEGORIES)}")


def load_folder(folder: Path, category: str | None, image_size: int, seed: int,
                augment: str = FOLDER_AUGMENT) -> Splits:
    """A category folder in MVTec layout, split like MVTec-AD; paths are relative to the folder. `category`
    (default: the folder's name) only names the data; the augmentation is `augment` (folder_augmentations),
    and the images keep their channels (one if every image is grayscale, else RGB)."""
    ops = folder_augmentations(augment)  # before any file is read
    require_dir(folder, "train/good", "a category folder in MVTec layout (train/good, test/good, test/<defect>)",
                "point the root at the folder that holds train/ and test/")
    category = category or folder.name
    if not category:
        raise DataError(f"{folder}: cannot name the category from the folder; pass --category")
    train, test = read_layout(folder, folder, require_masks=False)
    # Masks are optional here; when ground_truth/ exists every defect image without a mask gets a blank one.
    with_masks = (folder / "ground_truth").is_dir()
    return build_splits(
        train + test, split_layout(train, test, seed), image_size=image_size, mode="auto", with_masks=with_masks,
        name="folder", category=category, seed=seed, extra_channels=True, augmentations=ops, root=folder,
        info={"augment": str(augment)},
    )
