"""Shared pieces of the data layer: the error type, the data root, file listing and layout diagnosis."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "ALGAN_DATA"
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
# Folder names that only occur inside a data set; a root that is one of them was pointed too low.
_INNER_NAMES = frozenset({"train", "test", "good", "ground_truth", "imgs"})


class DataError(ValueError):
    """A data problem the user can fix; the message is one line: path, what was expected, how to fix it."""

    def __init__(self, message: str):
        # One line, so a CLI can print it as is and a log line stays grep-able.
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Record:
    """One image of a data set: its path relative to the base, its file, its label and its mask file."""

    rel: str
    path: Path
    label: int
    mask: Path | None = None


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: the argument, else $ALGAN_DATA, else a DataError; it must be an existing folder."""
    if root is None or str(root) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise DataError(
                f"no data root given: expected a folder holding mvtec/, mtd/, coil-100/ or adbench/; "
                f"pass it as the root argument (--root) or set {ENV_VAR}=/path/to/data"
            )
        root = env
    path = Path(root).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data root does not exist; pass an existing folder as the root or fix {ENV_VAR}")
    if not path.is_dir():
        raise DataError(f"{path}: data root is a file, expected a folder; pass the folder that holds the data sets")
    return path


def is_image(path: Path) -> bool:
    """A visible file with an image extension (hidden files such as .DS_Store are not data)."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTS


def list_images(folder: Path, what: str) -> list[Path]:
    """The image files of a class folder, sorted by name; an empty folder is a DataError."""
    files = sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: p.name)
    if not files:
        raise DataError(
            f"{folder}: empty class folder, expected {what} images "
            f"({'/'.join(sorted(e[1:] for e in IMAGE_EXTS))}); add the images or remove the folder"
        )
    return files


def subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders, sorted by name."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def rel_posix(path: Path, base: Path) -> str:
    """POSIX path of `path` relative to `base`, so recorded file lists do not depend on the machine."""
    return path.relative_to(base).as_posix()


def diagnose(root: Path, rel: str) -> str | None:
    """A hint when `root` is one or two levels too high or too low for `root/rel`, else None."""
    root = Path(os.path.abspath(root))
    first = Path(rel).parts[0]
    for ancestor in list(root.parents)[:5]:
        if (ancestor / rel).is_dir() or (root.name.lower() in _INNER_NAMES and (ancestor / first).is_dir()):
            return f"the root points inside the data (too low); use {ancestor} as the root"
        if (ancestor / first).is_dir() and root.is_relative_to(ancestor / first):
            return f"the root points inside the data (too low); use {ancestor} as the root"
    children = subdirs(root) if root.is_dir() else []
    for child in children:
        if (child / rel).is_dir():
            return f"the root is one level too high; use {child} as the root"
    for child in children[:50]:
        for grandchild in subdirs(child)[:50]:
            if (grandchild / rel).is_dir():
                return f"the root is two levels too high; use {grandchild} as the root"
    return None


def require_dir(root: Path, rel: str, what: str, fix: str) -> Path:
    """`root/rel` as a folder, else a DataError that says whether the root is too high or too low."""
    target = root / rel
    if target.is_dir():
        return target
    hint = diagnose(root, rel) or fix
    raise DataError(f"{target}: folder not found, expected {what}; {hint}")
